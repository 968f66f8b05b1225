"""A consumer group's coordinator answering late must never abort the process.

librdkafka (issue 4605, still in 2.16) aborts the whole process when a request routed to a
group's coordinator (DescribeConsumerGroups) times out inside librdkafka while it still waits
for the coordinator, and the coordinator then turns up: "rd_kafka_enq_once_del_source_return:
Assertion `eonce->refcnt > 0' failed". unimq asks for the coordinator before every subscriber
starts (``TopicAdmin.check_read``) and before a rewind (``active_members``). On a fresh 3-node
cluster the coordinator took longer than unimq's 15 s wait, and CI's xdist worker died with
"Fatal Python error: Aborted" during test_cluster_kafka.py.

Here the coordinator of a brand-new group is "late" because unimq's waits are shortened to
10 ms in a child process (a new group's coordinator lookup takes longer than that even on an
idle single node); the child must finish normally. It runs in a child so that an abort fails
this test instead of killing the pytest worker.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest

pytest.importorskip("confluent_kafka")

CHILD = textwrap.dedent(
    """
    import gc, sys, time, uuid
    from unimq.errors import ConnectionFailedError
    from unimq_kafka import admin as admin_module

    # unimq's waits, shortened: the coordinator of a new group answers after them
    admin_module._REQUEST_SECONDS = 0.01
    admin_module._COORDINATOR_WAIT_SECONDS = 0.01
    admin = admin_module.TopicAdmin(
        {"bootstrap.servers": sys.argv[1]},
        url="kafka://" + sys.argv[1],
        num_partitions=1,
        replication_factor=-1,
        topic_config={},
    )
    for _ in range(3):
        group = f"late-coordinator-{uuid.uuid4().hex[:8]}"
        admin._check_read(f"late.{group}", group)  # a late answer: the check passes
        try:
            admin.active_members(group)
        except ConnectionFailedError:
            pass  # a late answer: a typed error
        time.sleep(1.5)  # the coordinator turns up meanwhile
    del admin  # dropped while a request may still wait for its coordinator
    gc.collect()
    time.sleep(1.0)
    print("finished")
    """
)


def test_a_late_group_coordinator_does_not_abort_the_process(kafka_broker: Any) -> None:
    bootstrap = kafka_broker.url.removeprefix("kafka://")
    child = subprocess.run(
        [sys.executable, "-c", CHILD, bootstrap],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0 and "finished" in child.stdout, (
        f"the child process ended with {child.returncode} "
        f"(-6 is SIGABRT: librdkafka's coordinator-request abort)\n"
        f"stdout: {child.stdout[-2000:]}\nstderr: {child.stderr[-2000:]}"
    )
