"""What the gRPC proxy does not tell, read over the brokers' admin (remoting) protocol:
a consumer group's backlog (``lag``, the dead-letter count) and its starting offsets.

How RocketMQ 5 pop consumption (the proxy's SimpleConsumer) shows in consumer offsets,
checked against broker 5.3.3 (``PopMessageProcessor``, ``PopBufferMergeService``):

- a *receive* moves the group's consumer offset past the messages it returned at once (a
  checkpoint in the revive topic remembers which of them are not acked yet). So the offset
  reports what was *received*, not what was acked: a message received and not acked yet is in
  neither count (RocketMQ keeps that "in flight" count in memory for its metrics only);
- a message whose invisible duration runs out (never acked, or given back with
  ``ChangeInvisibleDuration(0)``) is re-put by the broker's revive service (measured ~2.5 s)
  on the group's *pop retry topic* ``%RETRY%<group>_<topic>`` (``+`` instead of ``_`` with
  ``enableRetryTopicV2``), from which the next receives take it.

So a group's backlog on a topic is, over every master broker, the sum over the queues of the
topic *and* of its pop retry topics of ``max(0, brokerOffset - consumerOffset)``, as
GET_CONSUME_STATS reports them; messages in flight are not counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import remoting


@dataclass(frozen=True)
class QueueOffsets:
    """One queue of a GET_CONSUME_STATS answer."""

    broker: str
    topic: str
    queue_id: int
    broker_offset: int
    consumer_offset: int

    @property
    def backlog(self) -> int:
        return max(0, self.broker_offset - self.consumer_offset)


def pop_retry_topics(topic: str, group: str) -> list[str]:
    """Where the broker re-puts ``group``'s unacked pop messages of ``topic`` (v1 and v2
    names; the one the broker does not use simply does not exist)."""
    return [f"%RETRY%{group}_{topic}", f"%RETRY%{group}+{topic}"]


def masters(cluster_info: Any, cluster: str | None) -> list[str]:
    """Master (broker id 0) addresses from a ClusterInfo body, optionally of one cluster."""
    table: dict[str, Any] = cluster_info.get("brokerAddrTable") or {}
    names: Iterable[str] = table.keys()
    if cluster is not None:
        names = (cluster_info.get("clusterAddrTable") or {}).get(cluster) or []
    found: list[str] = []
    for name in names:
        addresses = (table.get(name) or {}).get("brokerAddrs") or {}
        master = addresses.get("0") or addresses.get(0)
        if master:
            found.append(str(master))
    return found


class RemotingAdmin:
    """Admin calls on every master broker of ``cluster``.

    Broker addresses come from ``broker_addresses`` when given, else from the name server's
    cluster table (GET_BROKER_CLUSTER_INFO), looked up once per call so that a broker that
    moved is found again. Names are the brokers' own (namespaced: ``ns%name``).
    """

    def __init__(
        self,
        *,
        namesrv: Iterable[str] = (),
        broker_addresses: Iterable[str] = (),
        cluster: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.namesrv = [address for address in namesrv if address]
        self.broker_addresses = [address for address in broker_addresses if address]
        if not self.namesrv and not self.broker_addresses:
            raise ValueError("the RocketMQ admin protocol needs a name server or broker address")
        self.cluster = cluster
        self.timeout = timeout

    async def brokers(self) -> list[str]:
        if self.broker_addresses:
            return list(self.broker_addresses)
        errors: list[str] = []
        for address in self.namesrv:
            try:
                response = remoting.checked(
                    await remoting.call(
                        address, remoting.GET_BROKER_CLUSTER_INFO, {}, timeout=self.timeout
                    ),
                    "GET_BROKER_CLUSTER_INFO",
                )
            except remoting.RemotingError as exc:
                errors.append(str(exc))
                continue
            return masters(remoting.loads_fastjson(response.body), self.cluster)
        raise remoting.RemotingError("; ".join(errors) or "no name server answered")

    async def _masters(self) -> list[str]:
        addresses = await self.brokers()
        if not addresses:
            raise remoting.RemotingError(f"no master broker found (cluster {self.cluster!r})")
        return addresses

    async def _call(self, broker: str, code: int, fields: dict[str, str]) -> remoting.Response:
        return await remoting.call(broker, code, fields, timeout=self.timeout)

    # -- offsets -----------------------------------------------------------------------------

    async def consume_stats(self, group: str, topics: list[str]) -> list[QueueOffsets]:
        """The queues of ``topics`` (those that exist) on every master, with ``group``'s offsets.

        ``topicList`` (rather than ``topic``) makes the broker skip its check that the group's
        online consumers subscribe to the topic, which would hide the pop retry topics.
        """
        brokers = await self._masters()
        answers = await asyncio.gather(
            *(self._consume_stats(broker, group, topics) for broker in brokers)
        )
        return [queue for answer in answers for queue in answer]

    async def _consume_stats(
        self, broker: str, group: str, topics: list[str]
    ) -> list[QueueOffsets]:
        response = remoting.checked(
            await self._call(
                broker,
                remoting.GET_CONSUME_STATS,
                {"consumerGroup": group, "topicList": ";".join(topics)},
            ),
            f"GET_CONSUME_STATS of group {group!r} on {broker}",
        )
        stats = remoting.loads_fastjson(response.body) if response.body else {}
        found: list[QueueOffsets] = []
        for key, offsets in (stats.get("offsetTable") or {}).items():
            queue = dict(key) if isinstance(key, tuple) else {}
            if "topic" not in queue or not isinstance(offsets, dict):
                continue
            found.append(
                QueueOffsets(
                    broker=broker,
                    topic=str(queue["topic"]),
                    queue_id=int(queue.get("queueId", 0)),
                    broker_offset=int(offsets.get("brokerOffset", 0)),
                    consumer_offset=int(offsets.get("consumerOffset", 0)),
                )
            )
        return found

    async def backlog(self, group: str, topic: str) -> int | None:
        """``group``'s backlog on ``topic`` and its pop retry topics; ``None`` when ``topic``
        exists on no master broker."""
        queues = await self.consume_stats(group, [topic, *pop_retry_topics(topic, group)])
        if not any(queue.topic == topic for queue in queues):
            return None
        return sum(queue.backlog for queue in queues)

    async def knows_group(self, group: str, topic: str) -> bool:
        """Whether ``group`` exists: it has offsets on ``topic`` (or consumes it now), or a
        subscription group config on some master. Neither call creates anything (unlike
        GET_SUBSCRIPTIONGROUP_CONFIG on brokers with ``autoCreateSubscriptionGroup``)."""
        brokers = await self._masters()
        for broker in brokers:
            response = await self._call(
                broker, remoting.QUERY_TOPIC_CONSUME_BY_WHO, {"topic": topic}
            )
            if response.code != remoting.SUCCESS or not response.body:
                continue
            if group in (remoting.loads_fastjson(response.body).get("groupList") or ()):
                return True
        for broker in brokers:
            response = remoting.checked(
                await self._call(broker, remoting.GET_ALL_SUBSCRIPTIONGROUP_CONFIG, {}),
                f"GET_ALL_SUBSCRIPTIONGROUP_CONFIG on {broker}",
            )
            table = remoting.loads_fastjson(response.body).get("subscriptionGroupTable") or {}
            if group in table:
                return True
        return False

    async def start_at_earliest(self, group: str, topic: str) -> int:
        """Set ``group``'s offset on each queue of ``topic`` that has none yet to the queue's
        earliest message; returns how many queues were set.

        A pop consumer without an offset starts at the *last* message of the queue unless the
        first one is still in memory (``ConsumeInitMode.MAX``, the only mode the proxy uses),
        so without this a group created after its topic filled up would miss what was there.
        Queues with an offset are left alone. A group that does not exist yet is skipped (the
        broker refuses offsets for it).
        """
        queues = await self.consume_stats(group, [topic])
        queues = [queue for queue in queues if queue.topic == topic]
        done = await asyncio.gather(*(self._start_queue(group, queue) for queue in queues))
        return sum(done)

    async def _start_queue(self, group: str, queue: QueueOffsets) -> bool:
        where = {"topic": queue.topic, "queueId": str(queue.queue_id)}
        found = await self._call(
            queue.broker,
            remoting.QUERY_CONSUMER_OFFSET,
            {"consumerGroup": group, **where, "setZeroIfNotFound": "false"},
        )
        if found.code == remoting.SUCCESS:
            return False
        if found.code != remoting.QUERY_NOT_FOUND:
            remoting.checked(found, f"QUERY_CONSUMER_OFFSET of {group!r} on {queue.topic!r}")
        earliest = remoting.checked(
            await self._call(queue.broker, remoting.GET_MIN_OFFSET, where),
            f"GET_MIN_OFFSET of {queue.topic!r}/{queue.queue_id}",
        )
        offset = int(earliest.ext_fields.get("offset") or 0)
        update = await self._call(
            queue.broker,
            remoting.UPDATE_CONSUMER_OFFSET,
            {"consumerGroup": group, **where, "commitOffset": str(offset)},
        )
        if update.code == remoting.SUBSCRIPTION_GROUP_NOT_EXIST:
            return False
        remoting.checked(update, f"UPDATE_CONSUMER_OFFSET of {group!r} on {queue.topic!r}")
        return True
