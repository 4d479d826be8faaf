"""The producer's windows and batches under a caller's cancellation, and at close: giving up a
wait (``asyncio.wait_for`` around a step of ``send_ordered``, a cancelled ``send_batch``) gives
up on the wait, never on a record, and every record sent has its result for the caller.

These need a broker that answers slowly on request (``faults``), so they run against the
embedded sluice broker (skipped with ``--kafka-bootstrap``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sluice.client import Producer, ProducerClosedError, Record, RecordMetadata
from sluice.testing import EmbeddedBroker, unique_topic_name
from sluice.testing.topics import create_topic
from tests.client.conftest import DEADLINE, Target, read_topic


async def _source(records: list[Record]) -> AsyncIterator[Record]:
    for record in records:
        yield record


@pytest.mark.parametrize("kind", ["list", "async generator"])
def test_a_window_step_cancelled_while_the_queue_is_full_loses_no_record(
    sluice_broker: EmbeddedBroker, kind: str
) -> None:
    """librdkafka's queue holds 4 records and the broker answers late, so the window's fill
    waits for space at the 5th; ``wait_for(anext(window), ...)`` times out there. The 5th
    record was dropped (a list) or its slot left empty, the window then waiting for it for
    ever (an async source)."""
    topic = create_topic(sluice_broker.bootstrap_servers, unique_topic_name("ordered-cancel"))
    records = [Record(topic, b"%d" % i) for i in range(12)]

    async def go() -> tuple[bool, list[RecordMetadata], int]:
        p = Producer(sluice_broker.bootstrap_servers, metrics_registry=None, config={
            "queue.buffering.max.messages": 4, "linger.ms": 0,
        })
        async with p:
            sluice_broker.faults.delay("Produce", 1.0)
            window = p.send_ordered(
                records if kind == "list" else _source(records), max_in_flight=16
            )
            results: list[RecordMetadata] = []
            try:
                results.append(await asyncio.wait_for(anext(window), 0.1))
                timed_out = False
            except TimeoutError:
                timed_out = True
            sluice_broker.faults.clear()
            async with asyncio.timeout(DEADLINE / 2):
                results.extend([r async for r in window])
            return timed_out, results, p.metrics()["in_flight"]

    timed_out, results, in_flight = asyncio.run(go())
    assert timed_out  # the step was cancelled while the fill waited for space
    assert [r.offset for r in results] == list(range(12))
    assert all(r.error is None for r in results)
    assert in_flight == 0
    stored = read_topic(Target(sluice_broker.bootstrap_servers), topic)
    assert [s.value for s in stored] == [r.value for r in records]


def test_a_batch_cancelled_while_its_records_are_in_flight_still_counts_them(
    sluice_broker: EmbeddedBroker,
) -> None:
    """Cancelling ``send_batch`` while it waits for outcomes (the broker answers late) gives
    up the waiting, not the records: they are delivered, counted in ``sent``, and ``flush``
    and ``close`` see them settled. The batch's delivery counter was retired at the cancel,
    so in_flight stayed at 100 for good: flush waited out its timeout and returned 100, and
    close logged 100 records unsettled and skipped closing librdkafka."""
    topic = create_topic(sluice_broker.bootstrap_servers, unique_topic_name("batch-cancel"))
    records = [Record(topic, b"%d" % i) for i in range(100)]

    async def go() -> tuple[int, int, dict[str, object]]:
        async with Producer(sluice_broker.bootstrap_servers, metrics_registry=None) as p:
            sluice_broker.faults.delay("Produce", 1.0)
            task = asyncio.ensure_future(p.send_batch(records))
            while p.metrics()["in_flight"] < len(records):  # all handed over: it waits now
                await asyncio.sleep(0.01)  # a sampling interval, not a readiness wait
            waiting = p.metrics()["in_flight"]
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            sluice_broker.faults.clear()
            left = await p.flush(10)  # about 1 s: the delay left
            return waiting, left, p.metrics()

    waiting, left, metrics = asyncio.run(go())
    assert waiting == 100
    assert left == 0
    assert (metrics["sent"], metrics["failed"], metrics["in_flight"]) == (100, 0, 0)
    stored = read_topic(Target(sluice_broker.bootstrap_servers), topic)
    assert [s.value for s in stored] == [r.value for r in records]


def test_a_window_open_at_close_hands_out_what_was_sent_then_raises(
    sluice_broker: EmbeddedBroker,
) -> None:
    """``close()`` with a ``send_ordered`` window open: iterating on, the caller gets the result
    of every record the window sent, in order, then ``ProducerClosedError`` for those it did
    not. The window raised at its next refill, withholding the results in its ring: records
    stored with the caller never told (a pipeline committing per result redoes them)."""
    topic = create_topic(sluice_broker.bootstrap_servers, unique_topic_name("ordered-close"))

    async def go() -> list[RecordMetadata]:
        p = Producer(sluice_broker.bootstrap_servers, metrics_registry=None)
        await p.start()
        window = p.send_ordered(
            (Record(topic, b"%d" % i) for i in range(10_000)), max_in_flight=100
        )
        results = []
        async for r in window:
            results.append(r)
            if len(results) == 50:
                break
        await p.close(DEADLINE / 2)
        with pytest.raises(ProducerClosedError, match="the producer is closing or closed"):
            async for r in window:
                results.append(r)
        return results

    results = asyncio.run(go())
    stored = read_topic(Target(sluice_broker.bootstrap_servers), topic)
    assert len(stored) > 50  # the window had sent more than the caller took before close
    assert [r.offset for r in results] == [s.offset for s in stored]
    assert all(r.error is None for r in results)


def test_a_window_takes_nothing_from_an_async_source_once_close_began(
    sluice_broker: EmbeddedBroker,
) -> None:
    """An async source that yields while ``close()`` runs: the window took its records and
    handed them straight to librdkafka (the fast path checked nothing), 15 records stored
    after close began, which stops taking records. Now the window hands out the results of
    the 5 sent before, then raises ``ProducerClosedError``."""
    topic = create_topic(sluice_broker.bootstrap_servers, unique_topic_name("ordered-closing"))
    gate = asyncio.Event()

    async def source() -> AsyncIterator[Record]:
        for i in range(20):
            if i == 5:
                await gate.wait()
            yield Record(topic, b"%d" % i)

    async def go() -> tuple[list[RecordMetadata], BaseException | None]:
        p = Producer(sluice_broker.bootstrap_servers, metrics_registry=None)
        await p.start()
        results: list[RecordMetadata] = []

        async def iterate() -> BaseException | None:
            try:
                async for r in p.send_ordered(source(), max_in_flight=50):
                    results.append(r)
            except ProducerClosedError as exc:
                return exc
            return None

        task = asyncio.ensure_future(iterate())
        while p.metrics()["sent"] < 5:  # the first five delivered, the source at the gate
            await asyncio.sleep(0.01)  # a sampling interval, not a readiness wait
        closing = asyncio.ensure_future(p.close(DEADLINE / 2))
        await asyncio.sleep(0)  # close began: it waits for the poll thread to stop
        gate.set()
        await closing
        return results, await task

    results, raised = asyncio.run(go())
    stored = read_topic(Target(sluice_broker.bootstrap_servers), topic)
    assert [s.value for s in stored] == [b"%d" % i for i in range(5)]
    assert [r.offset for r in results] == list(range(5))
    assert isinstance(raised, ProducerClosedError)


@pytest.mark.parametrize("how", ["cancelled", "source raised"])
def test_a_failure_in_a_batch_given_up_on_is_logged(
    sluice_broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """A record of a ``send_batch`` its caller gave up on (cancelled while it waits for the
    outcomes, or its async source raised after the records went) that fails later has nobody
    to take its result: it is logged, as a failed record of a cancelled ``send`` or a dropped
    window is. It went unseen."""
    topic = create_topic(sluice_broker.bootstrap_servers, unique_topic_name("batch-given-up"))
    records = [Record(topic, b"ok"), Record(f"{topic}-absent", b"fails")] * 600  # > a chunk

    async def source() -> AsyncIterator[Record]:
        for record in records:
            yield record
        await asyncio.sleep(0.2)  # the chunks before went out meanwhile
        raise RuntimeError("the source broke")

    async def go() -> dict[str, object]:
        async with Producer(sluice_broker.bootstrap_servers, metrics_registry=None, config={
            "allow.auto.create.topics": False, "message.timeout.ms": 1500,
        }) as p:
            if how == "cancelled":
                task = asyncio.ensure_future(p.send_batch(records))
                while p.metrics()["in_flight"] + p.metrics()["sent"] < len(records):
                    await asyncio.sleep(0.01)  # a sampling interval, not a readiness wait
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                with pytest.raises(RuntimeError, match="the source broke"):
                    await p.send_batch(source())
            assert await p.flush(DEADLINE / 2) == 0
            return p.metrics()

    with caplog.at_level("WARNING", logger="sluice.client"):
        metrics = asyncio.run(go())
    logged = [r.getMessage() for r in caplog.records if "send_batch given up on" in r.getMessage()]
    sent = 600 if how == "cancelled" else 512  # a source's last partial chunk is not sent
    assert len(logged) == sent and f"{topic}-absent" in logged[0]
    assert (metrics["sent"], metrics["failed"], metrics["in_flight"]) == (sent, sent, 0)


def test_a_second_task_iterating_a_window_is_refused_not_left_hanging(
    sluice_broker: EmbeddedBroker,
) -> None:
    """Two tasks pulling from one window: the second's waiter replaced the first's, and the
    first waited for ever (every record delivered). The second is refused, as an async
    generator refuses a second ``anext`` while one runs; the first gets every result."""
    topic = create_topic(sluice_broker.bootstrap_servers, unique_topic_name("ordered-two-tasks"))

    async def go() -> tuple[list[int], BaseException | None]:
        async with Producer(sluice_broker.bootstrap_servers, metrics_registry=None) as p:
            window = p.send_ordered([Record(topic, b"%d" % i) for i in range(50)], max_in_flight=8)
            offsets: list[int] = []

            async def iterate() -> None:
                async for r in window:
                    offsets.append(r.offset)

            first = asyncio.ensure_future(iterate())
            while not window.waiting:  # the first task waits in the window for a result
                await asyncio.sleep(0)
            refused = None
            try:
                offsets.append((await asyncio.wait_for(anext(window), 5)).offset)
            except RuntimeError as exc:
                refused = exc
            await asyncio.wait_for(first, DEADLINE / 2)
            return offsets, refused

    offsets, refused = asyncio.run(go())
    assert isinstance(refused, RuntimeError) and "one task at a time" in str(refused)
    assert offsets == list(range(50))
