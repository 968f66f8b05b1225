"""``python -m unimq_rocketmq.provision``: create what a unimq subscriber needs, without Java.

Examples::

    # topic + retry topic + DLQ topic + group (+ the dead-letter browsing group unimq-dlq),
    # for subscriber ("orders.created", "inventory")
    python -m unimq_rocketmq.provision --namesrv 127.0.0.1:9876 \\
        subscriber orders.created inventory [--ordered]
    python -m unimq_rocketmq.provision --namesrv 127.0.0.1:9876 topic orders.created
    python -m unimq_rocketmq.provision --namesrv 127.0.0.1:9876 group inventory [--ordered]
    # print the RocketMQ names (and mqadmin commands) instead of creating anything
    python -m unimq_rocketmq.provision --print subscriber orders.created inventory

unimq names are mapped to RocketMQ names (``names.encode``) here exactly as the transport does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from unimq.naming import dead_letter_topic, retry_topic

from . import dead_letters, names
from .provisioning import RemotingProvisioner


def plan(
    kind: str, name: str, group: str | None, *, ordered: bool, message_type: str
) -> list[tuple[str, str, dict[str, object]]]:
    """(kind, RocketMQ name, attrs) for each resource to create."""
    if kind == "topic":
        return [("topic", names.topic_name(name), {"message_type": message_type})]
    if kind == "group":
        return [("group", names.group_name(name), {"orderly": ordered})]
    assert group is not None
    # Retries and dead letters are plain (delayed) publishes, never half messages.
    side_type = "DELAY" if message_type == "TRANSACTION" else message_type
    return [
        ("topic", names.topic_name(name), {"message_type": "FIFO" if ordered else message_type}),
        ("topic", names.topic_name(retry_topic(name, group)), {"message_type": side_type}),
        (
            "topic",
            names.topic_name(dead_letter_topic(name, group)),
            {"message_type": side_type},
        ),
        ("group", names.group_name(group), {"orderly": ordered}),
        (
            "group",
            names.group_name(dead_letters.GROUP),
            {"orderly": False, "retry_max_times": dead_letters.GROUP_RETRY_MAX_TIMES},
        ),
    ]


def _mqadmin(kind: str, name: str, attrs: dict[str, object]) -> str:
    if kind == "topic":
        kind_of = attrs["message_type"]
        return f"mqadmin updateTopic -c DefaultCluster -t {name} -a +message.type={kind_of}"
    orderly = " -o true" if attrs.get("orderly") else ""
    retries = f" -r {attrs['retry_max_times']}" if "retry_max_times" in attrs else ""
    return f"mqadmin updateSubGroup -c DefaultCluster -g {name}{orderly}{retries}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unimq_rocketmq.provision", description=__doc__)
    parser.add_argument("--namesrv", action="append", default=[], help="name server host:port")
    parser.add_argument("--broker", action="append", default=[], help="broker host:port")
    parser.add_argument("--cluster", default=None)
    parser.add_argument("--queues", type=int, default=8)
    parser.add_argument(
        "--message-type",
        default="DELAY",
        choices=["DELAY", "MIXED", "TRANSACTION"],
        help="TRANSACTION for a topic published to with broker.transaction() (half messages)",
    )
    parser.add_argument("--ordered", action="store_true", help="FIFO topic and orderly group")
    parser.add_argument("--print", action="store_true", help="only print names and commands")
    parser.add_argument("kind", choices=["subscriber", "topic", "group"])
    parser.add_argument("name")
    parser.add_argument("group", nargs="?")
    args = parser.parse_args(argv)
    if args.kind == "subscriber" and not args.group:
        parser.error("subscriber needs a topic and a group")
    resources = plan(
        args.kind, args.name, args.group, ordered=args.ordered, message_type=args.message_type
    )
    if args.print:
        for kind, name, attrs in resources:
            print(f"{kind:5} {name:40} {_mqadmin(kind, name, attrs)}")
        return 0
    if not args.namesrv and not args.broker:
        parser.error("give --namesrv or --broker (or --print)")
    provisioner = RemotingProvisioner(
        namesrv=args.namesrv, broker_addresses=args.broker, cluster=args.cluster, queues=args.queues
    )

    async def run() -> None:
        for kind, name, attrs in resources:
            await provisioner(kind, name, **attrs)
            print(f"created {kind} {name}")

    try:
        asyncio.run(run())
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
