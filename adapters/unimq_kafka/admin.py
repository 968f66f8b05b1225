"""Topics on demand: connectivity check, idempotent creation, per-instance clean-up.

Kafka would auto-create a topic on first use with the broker's defaults (often 1 partition),
or refuse it when ``auto.create.topics.enable`` is off. unimq instead creates every topic it
touches explicitly, with ``num_partitions``/``replication_factor`` from the options, and waits
until the metadata shows it, so the first publish or subscribe never races the creation. All
AdminClient calls block, so they run in worker threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka import admin as kafka_admin
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from unimq.errors import (
    AuthenticationError,
    BrokerUnreachableError,
    ConnectionFailedError,
    TLSError,
)
from unimq.tls_diagnosis import diagnose

from . import security
from .errors import (
    AUTHORIZATION_CODES,
    ErrorLog,
    LibrdkafkaLog,
    describe,
    error_code,
    not_allowed,
    translate_error,
)
from .names import check_topic

__all__ = ["ErrorLog", "LibrdkafkaLog", "TopicAdmin", "translate_error"]

logger = logging.getLogger("unimq.kafka")

#: Each connectivity probe waits this long; the core's connect_timeout bounds the whole.
_PROBE_SECONDS = 2.0
_CONNECT_LIMIT = 60.0
#: Public, but untyped and not re-exported explicitly by confluent_kafka.admin.
_OffsetSpec: Any = kafka_admin.OffsetSpec  # type: ignore[attr-defined]
_AclOperation: Any = kafka_admin.AclOperation  # type: ignore[attr-defined]
_READ_OPERATIONS = frozenset({_AclOperation.READ, _AclOperation.ALL})
#: Each metadata or offset request of :meth:`TopicAdmin.log_ends` waits at most this long.
_REQUEST_SECONDS = 15.0
#: librdkafka's own timeout for requests routed to a consumer group's coordinator
#: (DescribeConsumerGroups): its maximum, one hour, so that librdkafka never times such a
#: request out itself. A coordinator request that times out inside librdkafka while it still
#: waits for the coordinator, which then turns up, makes librdkafka free the request's state
#: twice and abort the whole process ("rd_kafka_enq_once_del_source_return: Assertion
#: `eonce->refcnt > 0' failed"; librdkafka issue 4605, still in librdkafka 2.16). A fresh
#: multi-node cluster takes that long to elect a coordinator (``__consumer_offsets`` being
#: created). unimq bounds the wait itself instead (``future.result(timeout=...)``) and leaves
#: an unanswered request pending: it completes, or is dropped with the client, harmlessly.
_COORDINATOR_REQUEST_SECONDS = 3600.0
#: How long unimq waits for a coordinator-routed answer.
_COORDINATOR_WAIT_SECONDS = _REQUEST_SECONDS + 5


class TopicAdmin:
    """Creates topics once per transport; concurrent callers share one creation."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        url: str,
        num_partitions: int,
        replication_factor: int,
        topic_config: Mapping[str, str],
    ) -> None:
        self._errors = ErrorLog("admin", raised=True)
        self._config = dict(config)
        self._user = None if config.get("sasl.username") is None else str(config["sasl.username"])
        client_config: dict[str, Any] = {
            **config,
            "error_cb": self._errors,
            "logger": LibrdkafkaLog("admin"),
        }
        self._client = AdminClient(client_config)
        self._url = url
        self._partitions = num_partitions
        self._replication = replication_factor
        self._topic_config = dict(topic_config)
        self._known: set[str] = set()
        self._creating: dict[str, asyncio.Future[None]] = {}
        self._lock = threading.Lock()

    def known(self, topic: str) -> bool:
        return topic in self._known

    async def check_connection(self) -> None:
        """Ask for the cluster metadata until it answers (the core bounds the wait).

        A refused password or a TLS failure ends the wait at once with its own error; a TLS
        mismatch librdkafka cannot name (a plaintext client on a TLS port sees only closed
        connections) is found by :func:`unimq.tls_diagnosis.diagnose` after a failed probe.
        """
        deadline = time.monotonic() + _CONNECT_LIMIT
        probe = security.tls_probe(self._config, timeout=_PROBE_SECONDS)
        while True:
            try:
                await asyncio.to_thread(self._client.list_topics, timeout=_PROBE_SECONDS)
                return
            except KafkaException as exc:
                await asyncio.to_thread(self._client.poll, 0)
                errors = self._errors
                if errors.auth_error is not None:
                    raise AuthenticationError(
                        f"kafka broker {self._url} refused the credentials: {errors.auth_error}"
                    ) from None
                reason = None if probe is None else await asyncio.to_thread(diagnose, probe)
                if reason is None and errors.ssl_error is not None:
                    reason = f"TLS handshake failed: {errors.ssl_error}"
                if reason is not None:
                    raise TLSError(f"kafka broker {self._url}: {reason}") from None
                if time.monotonic() > deadline:
                    raise BrokerUnreachableError(
                        f"could not reach the kafka broker at {self._url}: {describe(exc)}"
                    ) from None

    async def check_read(self, topic: str, group: str) -> None:
        """Raise :class:`~unimq.errors.AuthorizationError` if the broker's ACLs would refuse
        reading ``topic`` as ``group``: checked before the consumer starts, because a consumer
        refused later only logs and receives nothing."""
        await asyncio.to_thread(self._check_read, topic, group)

    def _check_read(self, topic: str, group: str) -> None:
        client: Any = self._client
        checks: tuple[tuple[Callable[[], Any], str, float], ...] = (
            (
                lambda: client.describe_topics(
                    TopicCollection([topic]),
                    include_authorized_operations=True,
                    request_timeout=_REQUEST_SECONDS,
                )[topic],
                f"read kafka topic {topic!r}",
                _REQUEST_SECONDS + 5,
            ),
            (
                lambda: client.describe_consumer_groups(
                    [group],
                    include_authorized_operations=True,
                    request_timeout=_COORDINATOR_REQUEST_SECONDS,
                )[group],
                f"read as kafka consumer group {group!r}",
                _COORDINATOR_WAIT_SECONDS,
            ),
        )
        for request, action, wait in checks:
            try:
                description = request().result(timeout=wait)
            except KafkaException as exc:
                if error_code(exc) in AUTHORIZATION_CODES:
                    raise not_allowed(self._user, action, describe(exc)) from None
                continue  # not an ACL answer: the consumer reports what it finds itself
            except concurrent.futures.TimeoutError:
                continue  # no coordinator yet: the consumer waits for it and reports itself
            operations = getattr(description, "authorized_operations", None)
            if operations is not None and not _READ_OPERATIONS.intersection(operations):
                raise not_allowed(self._user, action, "no READ permission")

    async def ensure(self, topic: str, *, config: Mapping[str, str] | None = None) -> None:
        """Make sure ``topic`` exists (creating it if needed); cheap once it is known."""
        if topic in self._known:
            return
        check_topic(topic)
        pending = self._creating.get(topic)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._creating[topic] = pending
            try:
                await asyncio.to_thread(self._create, topic, config or {})
                self._known.add(topic)
                pending.set_result(None)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: waiters (if any) re-raise it themselves
                raise
            finally:
                del self._creating[topic]
        else:
            await asyncio.shield(pending)

    def _create(self, topic: str, config: Mapping[str, str]) -> None:
        # One topic creation at a time per admin client. It was added for a native abort seen
        # while six threads created a cluster's topics; that abort was librdkafka's
        # coordinator-request bug instead (see _COORDINATOR_REQUEST_SECONDS), which the
        # creations only happened to overlap. Creation is rare: the lock costs nothing.
        with self._lock:
            self._create_locked(topic, config)

    def _create_locked(self, topic: str, config: Mapping[str, str]) -> None:
        if self._exists(topic):
            return
        new = NewTopic(
            topic,
            num_partitions=self._partitions,
            replication_factor=self._replication,
            config={**self._topic_config, **config},
        )
        future = self._client.create_topics([new], operation_timeout=30, request_timeout=30)[topic]
        try:
            future.result(timeout=60)
            logger.info("created kafka topic %r (%d partitions)", topic, self._partitions)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is None or error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise translate_error(
                    exc,
                    f"could not create kafka topic {topic!r}",
                    user=self._user,
                    action=f"create kafka topic {topic!r}",
                ) from None
        deadline = time.monotonic() + 30
        while not self._exists(topic):
            if time.monotonic() > deadline:
                raise ConnectionFailedError(
                    f"kafka topic {topic!r} was created but its metadata did not show up in 30s"
                )
            time.sleep(0.05)

    def _exists(self, topic: str) -> bool:
        try:
            # Not list_topics(topic=...): a metadata request naming a missing topic makes a
            # broker with auto.create.topics.enable create it, with the broker's defaults.
            metadata = self._client.list_topics(timeout=10)
        except KafkaException as exc:
            what = f"could not read the metadata of kafka topic {topic!r}"
            raise translate_error(exc, what) from None
        info = metadata.topics.get(topic)
        return bool(info is not None and info.error is None and info.partitions)

    def log_ends(self, topic: str) -> dict[int, tuple[int, int]] | None:
        """Blocking: ``{partition: (low, high)}`` watermarks of ``topic`` (its first retained
        offset and its log end); ``None`` if there is no such topic (it is not created)."""
        # The whole cluster's metadata, not list_topics(topic=...): see _exists.
        metadata = self._client.list_topics(timeout=_REQUEST_SECONDS)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return None
        tps = [KafkaTopicPartition(topic, partition) for partition in sorted(info.partitions)]
        low = self._list_offsets(tps, _OffsetSpec.earliest())
        high = self._list_offsets(tps, _OffsetSpec.latest())
        return {tp.partition: (low[tp.partition], high[tp.partition]) for tp in tps}

    def offsets_at(self, topic: str, partitions: list[int], epoch_ms: int) -> dict[int, int]:
        """Blocking: per partition, the first offset whose record timestamp is at or after
        ``epoch_ms``, ``-1`` where there is none (``list_offsets`` by timestamp)."""
        tps = [KafkaTopicPartition(topic, partition) for partition in partitions]
        return self._list_offsets(tps, _OffsetSpec.for_timestamp(epoch_ms))

    def active_members(self, group: str) -> int:
        """Blocking: how many members ``group`` has now (0 for an empty or unknown group)."""
        future = self._client.describe_consumer_groups(
            [group], request_timeout=_COORDINATOR_REQUEST_SECONDS
        )
        what = f"could not describe kafka consumer group {group!r}"
        try:
            description = future[group].result(timeout=_COORDINATOR_WAIT_SECONDS)
        except KafkaException as exc:
            raise translate_error(exc, what) from None
        except concurrent.futures.TimeoutError:
            raise ConnectionFailedError(
                f"{what}: its coordinator did not answer within {_COORDINATOR_WAIT_SECONDS:g}s"
            ) from None
        return len(description.members or [])

    def _list_offsets(self, tps: list[KafkaTopicPartition], spec: Any) -> dict[int, int]:
        futures = self._client.list_offsets(
            {tp: spec for tp in tps}, request_timeout=_REQUEST_SECONDS
        )
        return {tp.partition: future.result().offset for tp, future in futures.items()}

    async def delete(self, topic: str) -> None:
        """Best effort: remove a per-instance topic (broadcast retry topics)."""
        self._known.discard(topic)
        try:
            future = self._client.delete_topics([topic], operation_timeout=10)[topic]
            await asyncio.to_thread(future.result, 15)
        except Exception as exc:
            logger.warning("could not delete kafka topic %r: %s", topic, exc)
