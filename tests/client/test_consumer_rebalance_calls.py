"""What ``on_assign`` and ``on_revoke`` may ask of the consumer. The fetch thread runs them
(inside librdkafka's ``consume()``) and waits for them; a call that awaited that thread from
inside them waited for itself: ``seek`` and ``commit`` in ``on_assign``, ``commit`` in an
``on_revoke`` for partitions lost, hung until the application gave up (each test below did,
every time, before the fix)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import pytest
from prometheus_client import CollectorRegistry

from sluice.client import (
    Consumer,
    ConsumerError,
    ConsumerRecord,
    PartitionRevokedError,
    RebalanceCallbackError,
)
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


def test_a_commit_inside_on_assign_returns_once_committed_and_raises_its_failure(
    tmp_path: Path,
) -> None:
    """``await commit()`` inside a rebalance callback was kept for the callback's end and
    returned at once, saying committed what was not yet (the broker had nothing when it
    returned), and a failure then was only logged. The fetch thread, which waits for the
    callback, now makes the commits it is asked for while it waits: the commit returns once
    made, and its failure is raised where it was asked for. Both asserts failed before."""
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        produce(Target(broker.bootstrap_servers), "t", [str(i).encode() for i in range(10)])
        failed: list[BaseException] = []
        seen: list[int] = []

        async def on_assign(c: Consumer, tps: list[tuple[str, int]]) -> None:
            await asyncio.to_thread(broker.faults.fail, "OffsetCommit", "OFFSET_METADATA_TOO_LARGE")
            try:
                await c.commit({TP0: 5})
            except ConsumerError as exc:
                failed.append(exc)
            assert await c.commit({TP0: 7}) == {TP0: 7}
            seen.append(await asyncio.to_thread(committed, broker.bootstrap_servers, "g"))

        got = _run_until(broker, "range", on_assign, last=9)
        assert seen == [7], "commit() returned before the commit was made"
        assert len(failed) == 1 and "commit failed" in str(failed[0]), failed
        assert got == [7, 8, 9]


@pytest.mark.parametrize("callback", ["on_assign", "on_lost"])
def test_close_inside_a_rebalance_callback_fails_at_once(tmp_path: Path, callback: str) -> None:
    """``close()`` stops the fetch thread, which waits for the callback: from inside one it
    waited for itself until ``close_timeout`` (30 s here). It raises
    :class:`RebalanceCallbackError` at once; ``stop()`` there ends ``run``, and leaving
    ``async with`` closes the consumer."""
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        produce(Target(broker.bootstrap_servers), "t", [str(i).encode() for i in range(50)])
        outcome: list[BaseException] = []
        lost: list[bool] = []

        async def close_in(c: Consumer) -> None:
            if outcome:
                return
            try:
                await asyncio.wait_for(c.close(), 5.0)
            except (RebalanceCallbackError, TimeoutError) as exc:
                outcome.append(exc)
            c.stop()

        async def main() -> Consumer:
            async def on_assign(tps: list[tuple[str, int]]) -> None:
                if callback == "on_assign":
                    await close_in(c)

            async def on_revoke(tps: list[tuple[str, int]]) -> None:
                if callback == "on_lost":
                    if not outcome:  # the lost path, not an ordinary revocation
                        lost.append(bool(c._rebalance_lost))
                    await close_in(c)

            async def handler(r: ConsumerRecord) -> None:
                await asyncio.sleep(0.02)
                if r.offset == 10 and callback == "on_lost":  # the member is lost next
                    await asyncio.to_thread(broker.faults.fail, "Heartbeat", "UNKNOWN_MEMBER_ID")

            c = Consumer(broker.bootstrap_servers, group_id="g", topics="t",
                         on_assign=on_assign, on_revoke=on_revoke, close_timeout=30.0,
                         metrics_registry=CollectorRegistry(), **SETTINGS)
            async with c:
                await asyncio.wait_for(c.run(handler), BOUND)
            return c

        c = asyncio.run(asyncio.wait_for(main(), DEADLINE))
        assert len(outcome) == 1 and isinstance(outcome[0], RebalanceCallbackError), outcome
        assert "stop()" in str(outcome[0])
        assert c.closed
        assert lost == ([True] if callback == "on_lost" else [])


@pytest.mark.parametrize("where", ["handler", "handler, uncaught", "on_revoke"])
def test_a_seek_on_a_partition_being_revoked_is_refused_and_its_drain_committed(
    tmp_path: Path, where: str
) -> None:
    """A second member joins while a's handler holds t[0]@3; during the revocation's drain
    (from that handler) or in ``on_revoke``, a seeks t[0] back to 0. The partition is leaving:
    the seek cannot apply to it (its next owner starts at the commit), so it is refused with
    :class:`PartitionRevokedError`, and the drained watermark (4) is committed all the same.
    Before the fix the handler's seek dropped that watermark (nothing was committed: the next
    owner processed 0..3 again), and ``on_revoke``'s was applied after the callback, to the
    partition assigned back or to none. A handler that lets the refusal out has not failed
    its record: it is not retried (a retry cannot succeed while the partition leaves), and is
    left unfinished, so the drained commit stops at it and its next owner processes it (it was
    retried, and a retry that sought again went to the dead-letter topic)."""
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        total = 20
        produce(Target(broker.bootstrap_servers), "t", [str(i).encode() for i in range(total)])
        processed: list[int] = []
        refused: list[BaseException] = []
        members: dict[str, Consumer] = {}

        async def seek_back(c: Consumer) -> None:
            try:
                await c.seek("t", 0, 0)
            except PartitionRevokedError as exc:
                refused.append(exc)

        async def main() -> None:
            joined = asyncio.Event()

            def make(name: str) -> tuple[Consumer, Callable[[ConsumerRecord], Awaitable[None]]]:
                async def on_revoke(tps: list[tuple[str, int]]) -> None:
                    if name == "a" and where == "on_revoke" and TP0 in tps and not refused:
                        await seek_back(members["a"])

                async def handler(r: ConsumerRecord) -> None:
                    if name == "a" and r.offset == 3 and not joined.is_set():
                        joined.set()
                        while members["a"].metrics()["revocations"] == 0:
                            await asyncio.sleep(0.01)  # polling the revocation's start
                        if where == "handler":
                            await seek_back(members["a"])  # during the drain, which waits
                        elif where == "handler, uncaught":
                            try:
                                await members["a"].seek("t", 0, 0)
                            except PartitionRevokedError as exc:
                                refused.append(exc)
                                raise
                    processed.append(r.offset)
                    if len(set(processed)) == total:
                        for m in members.values():
                            m.stop()

                members[name] = Consumer(
                    broker.bootstrap_servers, group_id="g", topics="t", on_revoke=on_revoke,
                    commit_interval=60.0, metrics_registry=CollectorRegistry(),
                    config={**SETTINGS, "partition.assignment.strategy": "range"})
                return members[name], handler

            a, handle_a = make("a")
            async with a:
                task_a = asyncio.create_task(a.run(handle_a))
                await joined.wait()
                b, handle_b = make("b")
                async with b:
                    await asyncio.gather(task_a, b.run(handle_b))

        asyncio.run(asyncio.wait_for(main(), DEADLINE))
        again = sorted(o for o, n in Counter(processed).items() if n > 1)
        assert not again, f"processed twice: {again}"
        assert sorted(processed) == list(range(total))
        assert len(refused) == 1, refused
        a = members["a"].metrics()
        assert (a["retries"], a["failed"]) == (0, 0), a


def test_a_partition_back_from_a_member_that_committed_it_back_is_committed_again(
    tmp_path: Path,
) -> None:
    """a reads t[0] and t[1] to their ends (10); b joins, and in ``on_assign`` commits its
    partition back to 2 (a replay), then leaves. a gets it back at 2 and processes 2..9
    again. a kept the offset it had committed when the partition left (10) as "committed",
    so its commits of 10 were skipped as done, the last one included: the group stayed at 2,
    and every restart processed 2..9 again (the lag never cleared). Failed before the fix
    (b's partition committed at 2)."""
    with EmbeddedBroker(tmp_path, topics={"t": 2}) as broker:
        for p in (0, 1):
            produce(Target(broker.bootstrap_servers), "t", [str(i).encode() for i in range(10)],
                    partition=p)
        seen: list[tuple[int, int]] = []
        b_has: list[tuple[str, int]] = []

        async def main() -> None:
            caught_up = asyncio.Event()
            b_left = asyncio.Event()

            async def handler(r: ConsumerRecord) -> None:
                seen.append((r.partition, r.offset))
                if len(seen) == 20:
                    caught_up.set()
                if b_left.is_set() and (r.topic, r.partition, r.offset) == (*b_has[0], 9):
                    a.stop()

            async def b_on_assign(tps: list[tuple[str, int]]) -> None:
                if tps:
                    b_has.extend(tps)
                    await b.commit({tp: 2 for tp in tps})

            a = Consumer(broker.bootstrap_servers, group_id="g", topics="t", commit_interval=0.05,
                         metrics_registry=CollectorRegistry(), **SETTINGS)
            b = Consumer(broker.bootstrap_servers, group_id="g", topics="t",
                         on_assign=b_on_assign, metrics_registry=CollectorRegistry(), **SETTINGS)
            async with a:
                running = asyncio.create_task(a.run(handler))
                await caught_up.wait()
                async with b:
                    while not b_has:
                        await b.getmany(timeout=0.1)
                b_left.set()
                await asyncio.wait_for(running, BOUND)

        asyncio.run(asyncio.wait_for(main(), DEADLINE))
        assert len(b_has) == 1, b_has
        again = [o for p, o in seen[20:] if p == b_has[0][1]]
        assert again == list(range(2, 10)), seen
        c = ck.Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "g"})
        try:
            got = c.committed([ck.TopicPartition("t", p) for p in (0, 1)], timeout=10)
        finally:
            c.close()
        assert {x.partition: x.offset for x in got} == {0: 10, 1: 10}


def test_a_revocation_does_not_commit_again_what_on_revoke_committed(tmp_path: Path) -> None:
    """``on_revoke`` commits the drained watermark itself (10); the revocation then committed
    the same offset again, a second round trip inside the rebalance, counted twice in the
    metrics. It is made once (failed before the fix: 2 commits)."""
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        produce(Target(broker.bootstrap_servers), "t", [str(i).encode() for i in range(10)])
        said: list[dict[tuple[str, int], int]] = []

        async def main() -> dict[str, Any]:
            done = asyncio.Event()

            async def on_revoke(tps: list[tuple[str, int]]) -> None:
                if TP0 in tps and not said:
                    said.append(await a.commit({TP0: 10}))
                    a.stop()

            async def handler(r: ConsumerRecord) -> None:
                if r.offset == 9:
                    done.set()

            a = Consumer(broker.bootstrap_servers, group_id="g", topics="t", on_revoke=on_revoke,
                         commit_interval=60.0, metrics_registry=CollectorRegistry(), **SETTINGS)
            b = Consumer(broker.bootstrap_servers, group_id="g", topics="t",
                         metrics_registry=CollectorRegistry(), **SETTINGS)
            async with a:
                running = asyncio.create_task(a.run(handler))
                await done.wait()
                async with b:  # joins: a's partition is revoked
                    reading = asyncio.create_task(b.getmany(timeout=BOUND))
                    await asyncio.wait_for(running, BOUND)
                    reading.cancel()
                return a.metrics()

        metrics = asyncio.run(asyncio.wait_for(main(), DEADLINE))
        assert said == [{TP0: 10}]
        assert metrics["commits"] == 1, metrics["commits"]
        assert committed(broker.bootstrap_servers, "g") == 10
