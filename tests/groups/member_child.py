"""A confluent-kafka group member in a process of its own, so a test can SIGKILL it.

Usage: ``python -m tests.groups.member_child BOOTSTRAP TOPIC GROUP [STRATEGY]``. It consumes,
"processes" each message by reporting it, then commits synchronously (at-least-once: a crash
between the two re-delivers, never loses). Reports are JSON lines on stdout::

    {"event": "assigned", "partitions": [..]}     the full assignment after each change
    {"event": "processed", "partition": p, "offset": o, "value": "..."}
    {"event": "closed"}

A line "stop" on stdin makes it close cleanly (final commit, LeaveGroup).
"""

from __future__ import annotations

import json
import select
import sys
from typing import Any

import confluent_kafka as ck


def report(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:
    bootstrap, topic, group = sys.argv[1:4]
    strategy = sys.argv[4] if len(sys.argv) > 4 else "range"
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": f"child-{group}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 300,
            "partition.assignment.strategy": strategy,
            "topic.metadata.refresh.interval.ms": 1000,
            "fetch.wait.max.ms": 50,
            "log_level": 3,
        }
    )
    owned: set[int] = set()

    def on_assign(c: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        owned.update(tp.partition for tp in partitions)
        report(event="assigned", partitions=sorted(owned))

    def on_revoke(c: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        owned.difference_update(tp.partition for tp in partitions)
        report(event="assigned", partitions=sorted(owned))

    def on_lost(c: ck.Consumer, partitions: list[ck.TopicPartition]) -> None:
        on_revoke(c, partitions)

    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    try:
        while True:
            ready, _, _ = select.select([sys.stdin], [], [], 0)
            if ready and sys.stdin.readline().strip() in ("stop", ""):
                break
            msg = consumer.poll(0.1)
            if msg is None or msg.error() is not None:
                continue
            value = msg.value()
            report(
                event="processed",
                partition=msg.partition(),
                offset=msg.offset(),
                value=value.decode() if value is not None else None,
            )
            try:
                consumer.commit(message=msg, asynchronous=False)
            except ck.KafkaException as exc:
                # A commit refused mid-rebalance: the message will be re-delivered to whoever
                # owns the partition next (at-least-once).
                report(event="commit_failed", error=str(exc))
    finally:
        consumer.close()
        report(event="closed")


if __name__ == "__main__":
    main()
