"""mqadmin-based topic and subscription-group helpers for RocketMQ handles."""

from __future__ import annotations

import time

MESSAGE_TYPES = ("NORMAL", "FIFO", "DELAY", "TRANSACTION", "MIXED")
CLUSTER = "DefaultCluster"


class RocketMQAdmin:
    """Mixin: the class must provide ``self.mqadmin(*args) -> str`` (raising
    RuntimeError on failure); it is deliberately not declared here, so that it
    cannot shadow the implementation later in the MRO."""

    def _admin_retry(self, args: list[str], expect: str, deadline_s: float = 60) -> str:
        # Right after (re)start the broker may not be registered with the name
        # server yet ("clusterName not exist"): retry for a while.
        t0 = time.monotonic()
        while True:
            try:
                out = self.mqadmin(*args)
                if expect in out:
                    return out
                err = out
            except RuntimeError as e:
                err = str(e)
            if time.monotonic() - t0 > deadline_s:
                raise RuntimeError(
                    f"mqadmin {' '.join(args)} did not succeed within {deadline_s:.0f}s: {err}"
                )
            time.sleep(1.0)

    def create_topic(
        self, name: str, message_type: str = "NORMAL", *, queues: int | None = None
    ) -> None:
        """Create (or update) topic ``name`` with ``message.type`` NORMAL|FIFO|DELAY|TRANSACTION|MIXED.

        Create topics *before* any client asks for their route: the proxy caches
        a "no such topic" answer for about 20 seconds.
        """
        mt = message_type.upper()
        if mt not in MESSAGE_TYPES:
            raise ValueError(f"message_type must be one of {MESSAGE_TYPES}, not {message_type!r}")
        args = ["updateTopic", "-t", name, "-c", CLUSTER, "-a", f"+message.type={mt}"]
        if queues:
            args += ["-r", str(queues), "-w", str(queues)]
        self._admin_retry(args, "success")

    def create_group(self, name: str, orderly: bool = False) -> None:
        """Create (or update) subscription group ``name``; ``orderly=True`` for FIFO consumption."""
        args = ["updateSubGroup", "-g", name, "-c", CLUSTER]
        if orderly:
            args += ["-o", "true"]
        self._admin_retry(args, "success")

    def delete_topic(self, name: str) -> None:
        self._admin_retry(["deleteTopic", "-t", name, "-c", CLUSTER], "success")
