"""What ``on_assign`` and ``on_revoke`` may ask of the consumer. The fetch thread runs them
(inside librdkafka's ``consume()``) and waits for them; a call that awaited that thread from
inside them waited for itself: ``seek`` and ``commit`` in ``on_assign``, ``commit`` in an
``on_revoke`` for partitions lost, hung until the application gave up (each test below did,
every time, before the fix)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
from prometheus_client import CollectorRegistry

from sluice.client import Consumer, ConsumerRecord
from sluice.testing import EmbeddedBroker
from tests.client.conftest import DEADLINE, Target
from tests.client.test_consumer import produce

TP0 = ("t", 0)
SETTINGS: dict[str, Any] = {
    "auto.offset.reset": "earliest", "heartbeat.interval.ms": 100, "session.timeout.ms": 6000,
}
BOUND = 20.0
"""Seconds a run in these tests may take (each takes about 1 s; one that hangs, the whole)."""


def committed(bootstrap: str, group: str) -> int:
    """The group's committed offset of t[0] (-1001: none), as the broker has it."""
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = c.committed([ck.TopicPartition(*TP0)], timeout=10)
        return int(got[0].offset)
    finally:
        c.close()


def _run_until(
    broker: EmbeddedBroker,
    strategy: str,
    on_assign: Callable[[Consumer, list[tuple[str, int]]], Awaitable[None]],
    last: int,
) -> list[int]:
    """The offsets ``run`` hands to its handler, in group ``g`` on topic ``t``, until the
    record at ``last``; ``on_assign`` gets the consumer too."""
    got: list[int] = []

    async def main() -> None:
        async def handler(r: ConsumerRecord) -> None:
            got.append(r.offset)
            if r.offset == last:
                c.stop()

        c = Consumer(broker.bootstrap_servers, group_id="g", topics="t",
                     on_assign=lambda tps: on_assign(c, tps),
                     metrics_registry=CollectorRegistry(),
                     config={**SETTINGS, "partition.assignment.strategy": strategy})
        async with c:
            await asyncio.wait_for(c.run(handler), BOUND)

    asyncio.run(main())
    return got


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_seek_inside_on_assign_starts_there(tmp_path: Path, strategy: str) -> None:
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        produce(Target(broker.bootstrap_servers), "t", [str(i).encode() for i in range(20)])

        async def on_assign(c: Consumer, tps: list[tuple[str, int]]) -> None:
            await c.seek("t", 0, 15)

        got = _run_until(broker, strategy, on_assign, last=19)
        assert got == [15, 16, 17, 18, 19]
        assert committed(broker.bootstrap_servers, "g") == 20


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_commit_inside_on_assign_is_committed_before_fetching(tmp_path: Path, strategy: str) -> None:
    """A commit in ``on_assign`` is made when it returns, before librdkafka asks the
    coordinator where to start: the partition is read from there."""
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        produce(Target(broker.bootstrap_servers), "t", [str(i).encode() for i in range(10)])
        said: list[dict[tuple[str, int], int]] = []

        async def on_assign(c: Consumer, tps: list[tuple[str, int]]) -> None:
            said.append(await c.commit({TP0: 7}))

        got = _run_until(broker, strategy, on_assign, last=9)
        assert said == [{TP0: 7}]
        assert got == [7, 8, 9]


def test_commit_inside_on_revoke_of_lost_partitions_commits_nothing(tmp_path: Path) -> None:
    """Partitions lost (the coordinator no longer knows the member: a session that timed
    out) may be another member's already: ``commit()`` in ``on_revoke`` leaves them out (a
    commit sent later moved the new owner's commits back), and returns at once."""
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        produce(Target(broker.bootstrap_servers), "t", [str(i).encode() for i in range(50)])
        said: list[dict[tuple[str, int], int]] = []
        before: list[int] = []

        async def main() -> None:
            async def on_revoke(tps: list[tuple[str, int]]) -> None:
                if not said:  # the first: the loss
                    before.append(await asyncio.to_thread(
                        committed, broker.bootstrap_servers, "g"))
                    said.append(await c.commit({TP0: 0}))
                    c.stop()

            async def handler(r: ConsumerRecord) -> None:
                await asyncio.sleep(0.02)
                if r.offset == 10:  # the next heartbeat hears the member is unknown
                    await asyncio.to_thread(broker.faults.fail, "Heartbeat", "UNKNOWN_MEMBER_ID")

            c = Consumer(broker.bootstrap_servers, group_id="g", topics="t", on_revoke=on_revoke,
                         commit_interval=0.05, metrics_registry=CollectorRegistry(), **SETTINGS)
            async with c:
                await asyncio.wait_for(c.run(handler), BOUND)

        asyncio.run(asyncio.wait_for(main(), DEADLINE))
        assert said == [{}]
        assert before and before[0] > 0
        assert committed(broker.bootstrap_servers, "g") >= before[0]
