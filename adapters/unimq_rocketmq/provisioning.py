"""Creating the topics and consumer groups a unimq application needs.

RocketMQ 5's gRPC proxy cannot create resources, and a topic must exist (with the right
``message.type``) before a producer or consumer asks the proxy for its route: the proxy caches
a "topic not found" answer for about 20 seconds. So the transport provisions *before* first
use, through one of:

- :class:`RemotingProvisioner` (transport option ``auto_provision=true`` plus ``namesrv=`` or
  ``broker_addresses=``): speaks the broker's admin protocol directly (see ``remoting``);
- a user callable (transport option ``provisioner=``) ``(kind, name, **attrs)``, sync or async,
  with ``kind`` ``"topic"`` (attrs ``message_type="DELAY"|"MIXED"|"FIFO"|"TRANSACTION"``)
  or ``"group"`` (attrs ``orderly=bool``; the dead-letter browsing group also
  ``retry_max_times=int``), e.g. a wrapper around ``mqadmin`` or a dashboard API;
- nothing (the default, for production): topics and groups are created by operators with
  ``mqadmin``/the dashboard, as ``docs/backends/rocketmq.md`` lists.

Each resource is provisioned once per transport (the cache below); creating an existing one
is an idempotent update on the broker.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from . import remoting
from .admin import RemotingAdmin

logger = logging.getLogger("unimq.rocketmq.provision")

Provisioner = Callable[..., Any]
"""``(kind, name, **attrs) -> None | Awaitable[None]``."""


class RemotingProvisioner:
    """Creates topics and groups on every master broker of ``cluster``.

    Broker addresses come from ``broker_addresses`` when given, else from the name server's
    cluster table (GET_BROKER_CLUSTER_INFO), looked up once per call so that a broker that
    moved is found again (see :class:`~unimq_rocketmq.admin.RemotingAdmin`).
    """

    def __init__(
        self,
        *,
        namesrv: Iterable[str] = (),
        broker_addresses: Iterable[str] = (),
        cluster: str | None = None,
        queues: int = 8,
        timeout: float = 5.0,
    ) -> None:
        try:
            self.admin = RemotingAdmin(
                namesrv=namesrv, broker_addresses=broker_addresses, cluster=cluster, timeout=timeout
            )
        except ValueError:
            raise ValueError("RemotingProvisioner needs a name server or broker address") from None
        self.namesrv = self.admin.namesrv
        self.broker_addresses = self.admin.broker_addresses
        self.cluster = cluster
        self.queues = queues
        self.timeout = timeout

    async def brokers(self) -> list[str]:
        return await self.admin.brokers()

    async def __call__(self, kind: str, name: str, **attrs: Any) -> None:
        addresses = await self.brokers()
        if not addresses:
            raise remoting.RemotingError(f"no master broker found (cluster {self.cluster!r})")
        for address in addresses:
            if kind == "topic":
                await self.create_topic(address, name, str(attrs.get("message_type", "MIXED")))
            elif kind == "group":
                await self.create_group(
                    address,
                    name,
                    orderly=bool(attrs.get("orderly")),
                    retry_max_times=int(attrs.get("retry_max_times", 16)),
                )
            else:
                raise ValueError(f"unknown resource kind {kind!r}")

    async def create_topic(self, broker: str, topic: str, message_type: str) -> None:
        fields = {
            "topic": topic,
            "defaultTopic": "TBW102",
            "readQueueNums": str(self.queues),
            "writeQueueNums": str(self.queues),
            "perm": "6",  # read | write
            "topicFilterType": "SINGLE_TAG",
            "topicSysFlag": "0",
            "order": "false",
            "attributes": f"+message.type={message_type}",
        }
        remoting.checked(
            await remoting.call(
                broker, remoting.UPDATE_AND_CREATE_TOPIC, fields, timeout=self.timeout
            ),
            f"creating topic {topic!r} on {broker}",
        )

    async def create_group(
        self, broker: str, group: str, *, orderly: bool, retry_max_times: int = 16
    ) -> None:
        body = json.dumps(
            {
                "groupName": group,
                "consumeEnable": True,
                "consumeFromMinEnable": True,
                "consumeBroadcastEnable": False,
                "consumeMessageOrderly": orderly,
                "retryQueueNums": 1,
                "retryMaxTimes": retry_max_times,
                "brokerId": 0,
                "whichBrokerWhenConsumeSlowly": 1,
                "notifyConsumerIdsChangedEnable": True,
                "groupSysFlag": 0,
                "consumeTimeoutMinute": 15,
            }
        ).encode()
        remoting.checked(
            await remoting.call(
                broker,
                remoting.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
                {},
                body,
                timeout=self.timeout,
            ),
            f"creating consumer group {group!r} on {broker}",
        )


class ProvisionCache:
    """Calls the provisioner once per resource, and lets concurrent callers share the call."""

    def __init__(self, provisioner: Provisioner | None) -> None:
        self.provisioner = provisioner
        self._done: dict[tuple[str, str], asyncio.Future[None]] = {}

    @property
    def enabled(self) -> bool:
        return self.provisioner is not None

    async def ensure(self, kind: str, name: str, **attrs: Any) -> bool:
        """Provision ``name`` unless done; True when a call was made now (the caller may wait
        for the proxy to see it)."""
        provisioner = self.provisioner
        if provisioner is None:
            return False
        key = (kind, name)
        pending = self._done.get(key)
        if pending is not None:
            await asyncio.shield(pending)
            return False
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done[key] = future
        try:
            result = provisioner(kind, name, **attrs)
            if inspect.isawaitable(result):
                await result
        except BaseException as exc:
            del self._done[key]
            future.set_exception(exc)
            future.exception()  # retrieved: waiting callers re-raise it themselves
            raise
        future.set_result(None)
        logger.debug("provisioned %s %r %s", kind, name, attrs)
        return True


def from_sync(function: Callable[..., Any]) -> Callable[..., Awaitable[None]]:
    """Wrap a blocking provisioner (e.g. one running ``mqadmin``) to run off the event loop."""

    async def run(kind: str, name: str, **attrs: Any) -> None:
        await asyncio.to_thread(function, kind, name, **attrs)

    return run
