"""The producer toolkit against a real broker (sluice by default; any Kafka through the
environment, see conftest.py): every strategy stores each record once and in order, with its
key, headers, timestamp and partition; the ordered window keeps its bound; bad records and
failed records fail alone; the dead-letter topic; cancellation and close; metrics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import gc
import json
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import msgspec
import pydantic
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluice.client import (
    ConfigurationError,
    DeliveryError,
    Producer,
    ProducerClosedError,
    QueueFullError,
    Record,
    RecordMetadata,
    SerializationError,
    UndeliveredError,
)
from sluice.client import dlq as headers
from sluice.testing.process import free_port
from tests.client.conftest import DEADLINE, Target, read_topic, stderr_by_ending
from tests.clients.conftest import stored_batches

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, DEADLINE))


def producer(target: Target, **options: Any) -> Producer:
    """A producer for the target broker, its metrics in a registry of its own."""
    options.setdefault("metrics_registry", CollectorRegistry())
    return Producer(target.bootstrap, **target.options(**options))


STRATEGIES = ["send", "send_nowait", "submit", "send_ordered", "send_batch"]


async def send_all(p: Producer, strategy: str, records: list[Record]) -> list[RecordMetadata]:
    """Every record through one strategy, the results in record order."""
    if strategy == "send":
        return [
            await p.send(r.topic, r.value, r.key, r.headers, r.partition, r.timestamp)
            for r in records
        ]
    if strategy == "send_nowait":
        futures = [
            p.send_nowait(r.topic, r.value, r.key, r.headers, r.partition, r.timestamp)
            for r in records
        ]
        return list(await asyncio.gather(*futures))
    if strategy == "submit":
        futures = [
            await p.submit(r.topic, r.value, r.key, r.headers, r.partition, r.timestamp)
            for r in records
        ]
        return list(await asyncio.gather(*futures))
    if strategy == "send_ordered":
        return [r async for r in p.send_ordered(records, max_in_flight=16)]
    assert strategy == "send_batch"
    return list(await p.send_batch(records))


def workload(target: Target, topic: str, partitions: int, n: int) -> list[Record]:
    """Keyed records over every partition, each with headers and a timestamp where the broker
    keeps them; every fifth leaves the partition to librdkafka's partitioner (by key)."""
    base = int(time.time() * 1000) - 60_000
    return [
        Record(
            topic,
            f"value-{i:04d}".encode(),
            key=f"key-{i % 7}".encode(),
            headers=[("n", str(i).encode()), ("kind", b"test")] if target.headers else None,
            partition=None if i % 5 == 4 else i % partitions,
            timestamp=base + i if target.timestamps else None,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_stores_each_record_once_in_order(target: Target, strategy: str) -> None:
    topic, partitions = target.topic(f"strategy-{strategy}", 3)
    records = workload(target, topic, partitions, 200)

    async def go() -> list[RecordMetadata]:
        async with producer(target) as p:
            return await send_all(p, strategy, records)

    results = run(go())
    assert [r.error for r in results] == [None] * len(records)
    stored = read_topic(target, topic)
    assert sorted(s.value or b"" for s in stored) == sorted(r.value for r in records)  # once
    at = {(s.partition, s.offset): s for s in stored}
    for record, result in zip(records, results, strict=True):
        assert result.topic == topic
        if record.partition is not None:
            assert result.partition == record.partition
        s = at[(result.partition, result.offset)]  # the result names where the record is
        assert (s.key, s.value) == (record.key, record.value)
        assert s.headers == list(record.headers or [])
        if target.timestamps:
            assert s.timestamp == result.timestamp == record.timestamp
        assert result.latency is not None and result.latency > 0
    for p in range(partitions):  # each partition holds its records in the order they were sent
        sent = [r.value for r, res in zip(records, results, strict=True) if res.partition == p]
        assert [s.value for s in stored if s.partition == p] == sent
    if target.data_dir is not None:  # the default producer is idempotent
        ids = {h.producer_id for p in range(partitions)
               for h in stored_batches(target.data_dir, topic, p)}
        assert len(ids) == 1 and min(ids) >= 0, ids


def test_send_ordered_keeps_at_most_its_bound_in_flight(target: Target) -> None:
    topic, _ = target.topic("ordered-bound")
    records = [Record(topic, f"{i:05d}".encode()) for i in range(1000)]
    bound = 7

    async def go() -> tuple[list[RecordMetadata], list[int], int]:
        async with producer(target) as p:
            window = p.send_ordered(records, max_in_flight=bound)
            results, seen = [], []
            async for result in window:
                seen.append(window.outstanding)
                assert window.in_flight <= window.outstanding <= bound
                results.append(result)
            return results, seen, window.peak_in_flight

    results, seen, peak = run(go())
    assert max(seen) == bound - 1  # the window was full when each result was taken
    assert peak == bound  # and the count saw it reach its bound, never more
    stored = read_topic(target, topic)
    assert [s.value for s in stored] == [r.value for r in records]
    assert [r.offset for r in results] == [s.offset for s in stored]  # in submission order


def test_waiting_for_every_record_in_flight_does_not_wait_for_the_linger(target: Target) -> None:
    """A full window, a submitted batch and ``flush`` produce nothing more until results come:
    the poll thread flushes then, so lingering records leave at once (each wait here would
    otherwise take the whole ``linger.ms``, 5 s). The window of 2 waits ~200 times: were the
    poll thread inside a ``poll()`` when a wait began, each would cost its 50 ms interval."""
    topic, _ = target.topic("urgent")
    linger = 5.0
    records = [Record(topic, f"{i:03d}".encode()) for i in range(200)]

    async def go() -> dict[str, float]:
        took: dict[str, float] = {}
        async with producer(target, **{"linger.ms": int(linger * 1000)}) as p:
            await p.send_batch([Record(topic, b"connect")])  # the connection is up
            started = time.monotonic()
            results = [r async for r in p.send_ordered(records, max_in_flight=2)]
            took["send_ordered"] = time.monotonic() - started
            assert all(r.ok for r in results)
            started = time.monotonic()
            assert all(r.ok for r in await p.send_batch(records))
            took["send_batch"] = time.monotonic() - started
            started = time.monotonic()
            future = p.send_nowait(topic, b"last")
            assert await p.flush(DEADLINE) == 0 and future.result().ok
            took["flush"] = time.monotonic() - started
        return took

    took = run(go())
    assert all(seconds < linger / 2 for seconds in took.values()), took
    assert len(read_topic(target, topic)) == 1 + 2 * len(records) + 1


def test_send_ordered_counts_every_record_it_hands_over_once(target: Target) -> None:
    """The window counts the records it hands straight to librdkafka at the end of each fill,
    and the others through the producer's submit: every record counted once, so nothing
    is left in flight once every result is out (a record counted twice would never be)."""
    topic, _ = target.topic("ordered-accounting")
    records: list[Any] = []
    for i in range(400):
        kind = i % 5
        if kind == 0:
            records.append({"topic": topic, "value": b"m%d" % i})  # a mapping: the submit path
        elif kind == 1:
            records.append(Record(topic, b"h%d" % i, headers=[("h", b"1")]))  # all arguments
        else:
            records.append(Record(topic, b"r%d" % i))  # straight to librdkafka
    records[7] = Record(topic, 7)  # not bytes and no serializer: settled at once, never sent

    async def go() -> tuple[list[RecordMetadata], dict[str, Any], int]:
        async with producer(target, close_timeout=5) as p:
            results = [r async for r in p.send_ordered(records, max_in_flight=32)]
            snapshot = p.metrics()  # every result is out: nothing can be in flight
            return results, snapshot, await p.flush(1)

    results, snapshot, left = run(go())
    assert [i for i, r in enumerate(results) if r.error is not None] == [7]
    assert snapshot["sent"] == 399
    assert snapshot["in_flight"] == 0 and snapshot["in_flight_bytes"] == 0
    assert left == 0


def test_send_ordered_yields_a_failed_record_in_its_place(target: Target) -> None:
    topic, _ = target.topic("ordered-failure")
    records = [Record(topic, f"{i:04d}".encode()) for i in range(300)]
    records[150] = Record(topic, b"x" * 20_000)  # over message.max.bytes below

    async def go() -> list[RecordMetadata]:
        async with producer(target, **{"message.max.bytes": 10_000}) as p:
            return [r async for r in p.send_ordered(records, max_in_flight=50)]

    results = run(go())
    failed = [i for i, r in enumerate(results) if r.error is not None]
    assert failed == [150]
    error = results[150].error
    assert isinstance(error, DeliveryError)
    assert (error.code, error.name, error.retriable) == (10, "MSG_SIZE_TOO_LARGE", False)
    assert error.record is records[150]
    assert (results[150].offset, results[150].topic) == (-1, topic)
    stored = read_topic(target, topic)
    assert [s.value for s in stored] == [r.value for i, r in enumerate(records) if i != 150]


@pytest.mark.parametrize("source", ["list", "generator", "async generator"])
def test_send_batch_lets_other_tasks_run_while_it_submits(target: Target, source: str) -> None:
    """A ticker sleeping 1 ms runs throughout a big batch's submission: the batch path lets the
    loop run every few milliseconds. (It used to hold the loop for the whole submission: a
    second and more here, with a queue big enough that it never waits for space; a generator's
    records were all made first, with the loop held as well; an async generator that never
    suspends held it as long.) The bound is generous: the yields come every 5 ms."""
    topic, _ = target.topic(f"batch-yields-{source.replace(' ', '-')}")
    n = 300_000
    record = Record(topic, b"v")

    def generate() -> Any:
        return (record for _ in range(n))

    async def agenerate() -> AsyncIterator[Record]:
        for _ in range(n):
            yield record

    async def go() -> tuple[float, float, int, int]:
        async with producer(target, **{"queue.buffering.max.messages": 2 * n}) as p:
            await p.send_batch([Record(topic, b"connect")])
            gaps: list[float] = []

            async def ticker() -> None:
                last = time.perf_counter()
                while True:
                    await asyncio.sleep(0.001)
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last = now

            task = asyncio.ensure_future(ticker())
            await asyncio.sleep(0.01)  # the ticker is running
            records = [record] * n if source == "list" else (
                generate() if source == "generator" else agenerate())
            gaps.clear()
            started = time.perf_counter()
            results = await p.send_batch(records)
            took = time.perf_counter() - started
            task.cancel()
            return took, max(gaps), len(gaps), sum(r.ok for r in results)

    took, largest, ticks, ok = run(go())
    print(f"{source}: send_batch took {took * 1000:.0f} ms, largest loop gap "
          f"{largest * 1000:.1f} ms, {ticks} ticks")
    assert ok == n
    # Relative to the batch's own time, so a slower or loaded machine does not fail it: held
    # for the whole submission, the largest gap was the batch's time and there was one tick.
    assert ticks >= 10, f"the ticker ran {ticks} times in {took:.2f} s"
    assert largest < took / 3, f"the loop was held {largest:.2f} s of {took:.2f} s"


@pytest.mark.parametrize("source", ["list", "generator", "async generator"])
def test_close_during_send_batch_reports_every_record_taken(target: Target, source: str) -> None:
    """``close()`` while a big batch is being submitted: ``send_batch`` still returns a result
    for every record it took, delivered or ``NotSentError``, whatever its source (with a
    generator it used to raise ProducerClosedError at the next chunk, losing every result,
    though thousands were delivered). What a generator still held is not taken."""
    from sluice.client import NotSentError

    topic, _ = target.topic(f"batch-close-{source.replace(' ', '-')}")
    n = 200_000

    def generate() -> Any:
        return (Record(topic, b"v%d" % i) for i in range(n))

    async def agenerate() -> AsyncIterator[Record]:
        for i in range(n):
            yield Record(topic, b"v%d" % i)

    async def go() -> tuple[int, int, int]:
        p = producer(target)
        await p.start()
        await p.send_batch([Record(topic, b"connect")])
        records = [Record(topic, b"v%d" % i) for i in range(n)] if source == "list" else (
            generate() if source == "generator" else agenerate())
        sending = asyncio.ensure_future(p.send_batch(records))
        await asyncio.sleep(0.02)  # the submission is under way
        with contextlib.suppress(Exception):
            await p.close(10)
        results = await sending
        ok = sum(1 for r in results if r.ok)
        unsent = sum(1 for r in results if isinstance(r.error, NotSentError))
        return len(results), ok, unsent

    total, ok, unsent = run(go())
    assert ok + unsent == total  # every record taken has its outcome
    assert ok > 0 and unsent > 0  # the close came in the middle
    if source == "list":
        assert total == n
    stored = read_topic(target, topic)
    assert len(stored) == ok + 1  # the delivered ones, and the connect record


def test_an_abandoned_window_logs_each_failure_nobody_took_once(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller breaks out of ``send_ordered`` with a failure in its window: reported before
    the window is dropped (it waits in the ring), or after (nobody holds the window). Each is
    logged once, when it can no longer be taken."""
    topic, _ = target.topic("ordered-abandoned")
    # One failure in before the drop (flush waits for it), one after: librdkafka waits for a
    # topic that does not exist (and is not created) until message.timeout.ms.
    early = [Record(topic, b"0"), Record(topic, b"1"), Record("bad topic!", b"early")]
    late = [Record(topic, b"0"), Record(topic, b"1"), Record(f"{topic}-absent", b"late")]

    def warnings() -> list[str]:
        return [
            r.getMessage() for r in caplog.records
            if r.name == "sluice.client" and "abandoned send_ordered" in r.getMessage()
        ]

    async def go() -> tuple[list[str], list[str], list[str], dict[str, Any]]:
        async with producer(target, **{
            "allow.auto.create.topics": False, "message.timeout.ms": 1500,
        }) as p:
            window = p.send_ordered(early + [Record(topic, b"more")] * 50, max_in_flight=100)
            taken = 0
            async for _ in window:
                taken += 1
                if taken == 2:  # the failure is the next one
                    break
            assert await p.flush(DEADLINE) == 0  # the failure is in, waiting in the window
            held = warnings()
            del window
            gc.collect()
            first = warnings()
            async for _ in p.send_ordered(late, max_in_flight=10):
                break  # dropped now; the failure comes after message.timeout.ms
            assert await p.flush(DEADLINE) == 0
            gc.collect()
            return held, first, warnings(), p.metrics()

    with caplog.at_level("WARNING", logger="sluice.client"):
        held, first, every, metrics = run(go())
    assert held == []  # the caller could still take it
    assert len(first) == 1 and "bad topic!" in first[0]
    assert len(every) == 2 and f"{topic}-absent" in every[1]
    assert sum(metrics["failed_by_error"].values()) == 2
    assert (metrics["sent"], metrics["in_flight"]) == (52 + 2, 0)


def test_a_dropped_window_still_counts_its_deliveries(target: Target) -> None:
    """Records delivered after their window was dropped (their topic is created only then)
    are counted: sent, and not left in flight."""
    topic, _ = target.topic("ordered-dropped")
    later = f"{topic}-later"

    async def go() -> dict[str, Any]:
        async with producer(target, **{"allow.auto.create.topics": False}) as p:
            records = [Record(topic, b"0")] + [Record(later, b"%d" % i) for i in range(5)]
            async for _ in p.send_ordered(records, max_in_flight=10):
                break  # dropped, five records waiting for their topic
            assert p.metrics()["in_flight"] == 5
            await asyncio.to_thread(target.make, later)
            assert await p.flush(DEADLINE) == 0
            return p.metrics()

    metrics = run(go())
    assert (metrics["sent"], metrics["failed"], metrics["in_flight"]) == (6, 0, 0)


def test_records_from_mappings_and_async_iterables(target: Target) -> None:
    topic, _ = target.topic("mappings")

    async def source(start: int, n: int) -> AsyncIterator[dict[str, Any]]:
        for i in range(start, start + n):
            await asyncio.sleep(0)
            yield {"topic": topic, "value": f"{i:04d}".encode(), "key": b"k"}

    async def go() -> tuple[list[RecordMetadata], list[RecordMetadata]]:
        async with producer(target) as p:
            batch = list(await p.send_batch(source(0, 2500)))  # more than one chunk
            ordered = [r async for r in p.send_ordered(source(2500, 100), max_in_flight=10)]
            return batch, ordered

    batch, ordered = run(go())
    assert all(r.ok for r in batch + ordered)
    stored = read_topic(target, topic)
    assert [s.value for s in stored] == [f"{i:04d}".encode() for i in range(2600)]
    assert [r.offset for r in batch + ordered] == list(range(2600))


def test_bad_records_fail_alone(target: Target) -> None:
    """Every kind of bad input is that record's error, in every strategy; the others are
    delivered."""
    topic, _ = target.topic("bad-input")
    records: list[Any] = [
        Record(topic, b"first"),
        Record(topic, object()),  # not bytes, and no serializer
        {"value": b"no topic"},  # a mapping without a topic
        "not a record",
        Record(topic, b"x" * 20_000),  # over message.max.bytes
        Record(topic, b"v", headers=42),  # type: ignore[arg-type]  # headers of the wrong type
        Record("bad topic!", b"v"),  # a topic name the broker refuses
        Record(topic, b"last"),
    ]

    async def go() -> tuple[list[RecordMetadata], list[RecordMetadata], list[Any]]:
        async with producer(target, **{"message.max.bytes": 10_000}) as p:
            batch = list(await p.send_batch(records))
            ordered = [r async for r in p.send_ordered(records, max_in_flight=3)]
            raised = []
            for call in (
                lambda: p.send(topic, object()),
                lambda: p.send(topic, b"x" * 20_000),
                lambda: p.send("bad topic!", b"v"),
                lambda: p.send_nowait(topic, 12.5),
            ):
                with pytest.raises((SerializationError, DeliveryError)) as info:
                    await call()
                raised.append(info.value)
            return batch, ordered, raised

    batch, ordered, raised = run(go())
    for results in (batch, ordered):
        errors = [type(r.error) for r in results]
        assert errors == [type(None), SerializationError, SerializationError,
                          SerializationError, DeliveryError, SerializationError, DeliveryError,
                          type(None)]
        too_large, refused = results[4].error, results[6].error
        assert isinstance(too_large, DeliveryError) and too_large.code == 10
        # The broker's answer (17, TOPIC_EXCEPTION) the first time; librdkafka remembers it
        # and refuses the topic itself (-188, _UNKNOWN_TOPIC) from then on.
        assert isinstance(refused, DeliveryError) and refused.code in (17, -188)
        assert refused.record.topic == "bad topic!"
        assert "value is of type object" in str(results[1].error)
    assert [type(e) for e in raised] == [SerializationError, DeliveryError, DeliveryError,
                                         SerializationError]
    assert [s.value for s in read_topic(target, topic)] == [b"first", b"last"] * 2


@pytest.mark.parametrize("strategy", ["send_batch", "send_ordered"])
def test_one_record_or_no_records_where_records_are_wanted_is_refused(
    target: Target, strategy: str
) -> None:
    """A str, bytes, a lone record or mapping, or a number is a TypeError at the call, before
    anything is sent: iterated, they would be one failing record per character, byte or key."""
    topic, _ = target.topic("not-records")
    given: list[Any] = ["abc", b"abc", Record(topic, b"x"), {"topic": topic, "value": b"x"}, 5]

    async def go() -> list[str]:
        messages = []
        async with producer(target) as p:
            for records in given:
                with pytest.raises(TypeError) as info:
                    if strategy == "send_batch":
                        await p.send_batch(records)
                    else:
                        [r async for r in p.send_ordered(records)]
                messages.append(str(info.value))
            assert p.metrics()["sent"] == p.metrics()["failed"] == 0
        return messages

    messages = run(go())
    assert all(m.startswith("records must be an iterable") for m in messages), messages
    assert "pass a list of it" in messages[2] and "pass a list of it" in messages[3]
    assert read_topic(target, topic) == []


@pytest.mark.parametrize("registry", [5, "default", object()])
def test_a_metrics_registry_that_is_not_one_is_refused(target: Target, registry: Any) -> None:
    """At once, before a librdkafka client is made (it was a TypeError about weak references)."""
    with pytest.raises(ConfigurationError, match="metrics_registry must be a prometheus_client"):
        Producer(target.bootstrap, metrics_registry=registry)


@pytest.mark.parametrize(
    "options",
    [
        {"close_timeout": float("nan")}, {"close_timeout": -1}, {"close_timeout": "30"},
        {"dead_letter_topic": ""}, {"dead_letter_topic": "bad name!"},
        {"dead_letter_topic": "{topic} dlq"}, {"dead_letter_topic": 5}, {"config": 5},
        {"bootstrap_servers": ""}, {"bootstrap_servers": " "},
        # no transaction calls: every send failed with _STATE ("Erroneous state")
        {"transactional.id": "orders-tx"},
    ],
)
def test_a_bad_option_is_refused_at_once(target: Target, options: dict[str, Any]) -> None:
    """A ConfigurationError naming the option, before a librdkafka client is made. Each was
    taken before: a NaN or negative close timeout (a NaN timer never fires), an empty or
    invalid dead-letter topic (an empty one meant none, silently; an invalid name failed
    every copy at run time), a non-mapping config or dead_letter_topic failed with bare
    TypeError/AttributeError, and an empty bootstrap list (an unset environment variable) left
    every record waiting out its timeout, "Purged in queue" at close."""
    name = next(iter(options))
    options.setdefault("bootstrap_servers", target.bootstrap)
    with pytest.raises(ConfigurationError, match=name):
        Producer(metrics_registry=None, **options)


@pytest.mark.parametrize("bound", [2.5, True, "3"])
def test_a_window_bound_that_is_not_an_int_is_refused(target: Target, bound: Any) -> None:
    topic, _ = target.topic("bound")

    async def go() -> None:
        async with producer(target) as p:
            with pytest.raises(TypeError, match="max_in_flight must be an int"):
                p.send_ordered([Record(topic, b"x")], max_in_flight=bound)

    run(go())


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Model(pydantic.BaseModel):
    name: str
    size: int


class Struct(msgspec.Struct):
    name: str
    tags: list[str]


def test_serializers(target: Target) -> None:
    topic, _ = target.topic("serializers")
    values: list[Any] = [{"a": 1}, [1, "two"], "text", Point(1, 2), Model(name="m", size=3),
                         Struct(name="s", tags=["t"]), b'{"raw":true}']
    expected = [{"a": 1}, [1, "two"], "text", {"x": 1, "y": 2}, {"name": "m", "size": 3},
                {"name": "s", "tags": ["t"]}, {"raw": True}]

    async def go() -> None:
        for serializer in ("json", "msgspec", "pydantic"):
            async with producer(target, value_serializer=serializer,
                                key_serializer=json.dumps) as p:
                results = await p.send_batch(Record(topic, v, key={"k": serializer})
                                             for v in values)
                assert all(r.ok for r in results), [r.error for r in results]

    run(go())
    stored = read_topic(target, topic)
    assert [json.loads(s.value or b"") for s in stored] == expected * 3
    assert [json.loads(s.key or b"") for s in stored] == [
        {"k": s} for s in ("json", "msgspec", "pydantic") for _ in values
    ]


def test_send_nowait_never_overflows_librdkafkas_queue(target: Target) -> None:
    """A full queue is QueueFullError from send_nowait (never librdkafka's BufferError), and
    a wait for space in submit and send."""
    topic, _ = target.topic("queue-full")

    async def go() -> list[RecordMetadata]:
        # Ten records fill the queue and sit there for the linger.
        async with producer(target, **{"queue.buffering.max.messages": 10,
                                       "linger.ms": 200}) as p:
            futures = [p.send_nowait(topic, f"{i}".encode()) for i in range(10)]
            with pytest.raises(QueueFullError, match="submit"):
                p.send_nowait(topic, b"refused")
            futures.append(await p.submit(topic, b"10"))
            futures.append(asyncio.ensure_future(p.send(topic, b"11")))
            return list(await asyncio.gather(*futures))

    results = run(go())
    assert all(r.ok for r in results)
    assert [s.value for s in read_topic(target, topic)] == [f"{i}".encode() for i in range(12)]


def test_cancelling_send_cancels_the_wait_not_the_record(target: Target) -> None:
    topic, _ = target.topic("cancel-send")

    async def go() -> None:
        async with producer(target, **{"linger.ms": 200}) as p:
            task = asyncio.ensure_future(p.send(topic, b"cancelled"))
            await asyncio.sleep(0)  # the task runs until it waits for the delivery
            assert p.metrics()["in_flight"] == 1  # librdkafka has the record
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await p.flush(DEADLINE) == 0

    run(go())
    assert [s.value for s in read_topic(target, topic)] == [b"cancelled"]


def test_cancelling_a_send_waiting_for_queue_space_sends_nothing(target: Target) -> None:
    topic, _ = target.topic("cancel-waiting")

    async def go() -> None:
        async with producer(target, **{"queue.buffering.max.messages": 1,
                                       "linger.ms": 200}) as p:
            first = p.send_nowait(topic, b"first")
            task = asyncio.ensure_future(p.send(topic, b"never"))
            await asyncio.sleep(0)  # the task runs until it waits for space
            assert not task.done() and p.metrics()["in_flight"] == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await first).ok
            assert await p.flush(DEADLINE) == 0

    run(go())
    assert [s.value for s in read_topic(target, topic)] == [b"first"]


def test_close_waits_for_records_in_flight(target: Target) -> None:
    topic, _ = target.topic("close-flushes")

    async def go() -> list[asyncio.Future[RecordMetadata]]:
        p = producer(target, **{"linger.ms": 100})
        await p.start()
        futures = [p.send_nowait(topic, f"{i}".encode()) for i in range(100)]
        assert p.metrics()["in_flight"] == 100
        await p.close(DEADLINE)
        await p.close()  # again: nothing
        with pytest.raises(ProducerClosedError):
            p.send_nowait(topic, b"late")
        with pytest.raises(ProducerClosedError):
            await p.send_batch([Record(topic, b"late")])
        return futures

    futures = run(go())
    assert all(f.done() and f.result().ok for f in futures)
    assert len(read_topic(target, topic)) == 100


def test_a_closed_producer_does_not_start_again(target: Target) -> None:
    async def go() -> None:
        p = producer(target)
        async with p:
            pass
        with pytest.raises(ProducerClosedError, match="cannot be started again"):
            await p.start()
        with pytest.raises(ProducerClosedError):
            async with p:
                pytest.fail("a closed producer's block ran")
        never = producer(target)
        await never.close()
        with pytest.raises(ProducerClosedError):
            await never.start()

    run(go())


def test_close_reports_every_record_it_could_not_deliver() -> None:
    """Nothing listens at the address, so the records stay queued: close(timeout) purges them,
    fails each one's future, and raises naming them all."""

    async def go() -> tuple[list[asyncio.Future[RecordMetadata]], UndeliveredError]:
        p = Producer(f"127.0.0.1:{free_port()}", metrics_registry=None)
        await p.start()
        futures = [p.send_nowait("nowhere", f"{i}".encode()) for i in range(5)]
        window = p.send_ordered([Record("nowhere", b"ordered")], max_in_flight=1)
        ordered = asyncio.ensure_future(anext(window))
        await asyncio.sleep(0)
        with pytest.raises(UndeliveredError) as info:
            await p.close(0.2)
        results = [await ordered]
        assert results[0].error is not None and results[0].error.purged  # type: ignore[attr-defined]
        return futures, info.value

    futures, error = run(go())
    assert sorted(r.value for r in error.records) == [b"0", b"1", b"2", b"3", b"4", b"ordered"]
    for f in futures:
        exc = f.exception()
        assert isinstance(exc, DeliveryError) and exc.purged and exc.name == "_PURGE_QUEUE"


def test_a_waiting_window_does_not_spin_while_nothing_can_be_delivered() -> None:
    """A window waiting for records no broker takes keeps the poll thread flushing (nothing is
    worth lingering for); each flush slice blocks, so a second of it costs little CPU, where a
    spinning thread would burn the whole second."""

    async def go() -> float:
        p = Producer(f"127.0.0.1:{free_port()}", metrics_registry=None)
        await p.start()
        window = p.send_ordered([Record("nowhere", b"x")] * 4, max_in_flight=4)
        first = asyncio.ensure_future(anext(window))
        while not window.waiting:
            await asyncio.sleep(0)
        started = time.process_time()
        await asyncio.sleep(1.0)  # the span measured, not a wait for readiness
        cpu = time.process_time() - started
        assert window.waiting and not first.done()
        with pytest.raises(UndeliveredError):
            await p.close(0.1)
        assert (await first).error is not None
        return cpu

    cpu = run(go())
    assert cpu < 0.3, f"{cpu:.2f} s of CPU in 1 s of waiting"


def test_an_exception_in_the_block_still_closes(target: Target) -> None:
    topic, _ = target.topic("close-on-error")

    async def go() -> Producer:
        p = producer(target)
        with pytest.raises(RuntimeError, match="boom"):
            async with p:
                p.send_nowait(topic, b"sent before the error")
                raise RuntimeError("boom")
        return p

    assert run(go()).closed
    assert [s.value for s in read_topic(target, topic)] == [b"sent before the error"]


# -- the dead-letter topic ------------------------------------------------------------------


def header_map(stored: list[tuple[str, bytes]]) -> dict[str, bytes]:
    return dict(stored)


def test_a_record_over_the_size_limit_is_dead_lettered(target: Target) -> None:
    target.require_headers()
    topic, _ = target.topic("dlq-size")
    letters_topic = f"{topic}.dlq"
    target.make(letters_topic)
    records = [
        Record(topic, b"before"),
        Record(topic, b"x" * 20_000, key=b"big", headers={"trace": b"abc"}),
        Record(topic, b"after"),
    ]

    async def go() -> tuple[list[RecordMetadata], dict[str, Any]]:
        async with producer(target, dead_letter_topic="{topic}.dlq",
                            **{"message.max.bytes": 10_000}) as p:
            results = list(await p.send_batch(records))
            return results, p.metrics()

    started = int(time.time() * 1000)
    results, metrics = run(go())
    assert [r.ok for r in results] == [True, False, True]
    error, copy = results[1].error, results[1].dead_letter
    assert isinstance(error, DeliveryError) and error.code == 10
    assert copy is not None and copy.topic == letters_topic and copy.ok
    assert [s.value for s in read_topic(target, topic)] == [b"before", b"after"]
    (letter,) = read_topic(target, letters_topic)
    assert (letter.partition, letter.offset) == (copy.partition, copy.offset)
    assert letter.key == b"big"
    assert letter.value is None  # it would be too large again; the header says what it was
    h = header_map(letter.headers)
    assert h["trace"] == b"abc"  # the original headers travel along
    assert h[headers.TOPIC] == topic.encode()
    assert headers.PARTITION not in h  # librdkafka refused it before choosing one
    assert h[headers.ERROR_CODE] == b"10"
    assert h[headers.ERROR_NAME] == b"MSG_SIZE_TOO_LARGE"
    assert b"too large" in h[headers.EXCEPTION_MESSAGE]
    assert h[headers.EXCEPTION_CLASS_NAME] == b"sluice.client.errors.DeliveryError"
    assert h[headers.STAGE] == b"KAFKA_PRODUCE"
    assert h[headers.ATTEMPTS] == b"0"
    assert h[headers.KEY] == b"big"
    assert h[headers.VALUE_SIZE] == b"20000"
    assert started <= int(h[headers.TIMESTAMP]) <= int(time.time() * 1000)
    assert metrics["dead_lettered"] == 1 and metrics["failed_by_error"] == {"MSG_SIZE_TOO_LARGE": 1}


def test_records_failed_for_a_neighbours_size_keep_their_value_in_the_dead_letter_topic(
    target: Target,
) -> None:
    """A topic whose max.message.bytes is below librdkafka's batch.size: the broker refuses a
    whole batch over it, so the small records batched with an oversized one fail with it
    (MSG_SIZE_TOO_LARGE, the Kafka Java producer would split the batch; librdkafka does not).
    Their dead-letter copies were written without their values, as if each were too large
    itself: the records were lost while counted as dead-lettered. A size failure from the
    broker now keeps the value in the copy, and the error says what to set; with batch.size and
    message.max.bytes at the topic's limit (the remedy docs/client.md gives) only the oversized
    record fails, refused by librdkafka on the spot, and its copy carries no value."""
    target.require_headers()
    if not target.sluice:
        pytest.skip("creates a topic with its own max.message.bytes (CreateTopics)")
    from sluice.testing import create_topic, unique_topic_name

    topic = create_topic(target.bootstrap, unique_topic_name("dlq-batch-size"),
                         configs={"max.message.bytes": 4000})
    letters_topic = f"{topic}.dlq"
    target.make(letters_topic)
    small = [Record(topic, b"s%03d" % i * 8) for i in range(100)]  # 32 bytes each
    big = Record(topic, b"x" * 6000, key=b"big")

    async def go(**options: Any) -> list[RecordMetadata]:
        async with producer(target, dead_letter_topic="{topic}.dlq", **options) as p:
            return list(await p.send_batch([*small[:50], big, *small[50:]]))

    results = run(go())
    errors = [r.error for r in results if not r.ok]
    assert all(isinstance(e, DeliveryError) for e in errors)
    failed = [(e.record.value, r.dead_letter) for r in results
              if isinstance(e := r.error, DeliveryError)]
    assert big.value in [value for value, _ in failed]
    assert len(failed) > 1  # neighbours of the big record went down with it
    for e in errors:
        assert isinstance(e, DeliveryError) and e.name == "MSG_SIZE_TOO_LARGE"
        assert "batch.size" in str(e)
    letters = {s.offset: s for s in read_topic(target, letters_topic)}
    for value, copy in failed:
        assert copy is not None and copy.ok
        assert letters[copy.offset].value == value  # the value is kept
    delivered = [s.value for s in read_topic(target, topic)]
    assert sorted(delivered + [value for value, _ in failed]) == sorted(
        x.value for x in [*small, big]
    )

    results = run(go(**{"batch.size": 4000, "message.max.bytes": 4000}))
    assert [r.ok for r in results] == [True] * 50 + [False] + [True] * 50
    error = results[50].error
    assert isinstance(error, DeliveryError) and "batch.size" not in str(error)
    copy = results[50].dead_letter
    assert copy is not None
    letter = {s.offset: s for s in read_topic(target, letters_topic)}[copy.offset]
    assert letter.value is None and dict(letter.headers)[headers.VALUE_SIZE] == b"6000"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_record_over_its_topics_limit_is_dead_lettered_without_its_value_if_need_be(
    target: Target, strategy: str,
) -> None:
    """A record refused by the broker for its own size (over the topic's max.message.bytes,
    under librdkafka's message.max.bytes), its dead-letter topic with the same limit: since
    broker size failures keep the value (it may be a neighbour's), the copy was refused too and
    the record was in no topic at all (before, its copy was written without its value). The
    copy is written once more without it, as one librdkafka refused on the spot is."""
    target.require_headers()
    if not target.sluice:
        pytest.skip("creates topics with their own max.message.bytes (CreateTopics)")
    from sluice.testing import create_topic, unique_topic_name

    topic = create_topic(target.bootstrap, unique_topic_name("dlq-own-size"),
                         configs={"max.message.bytes": 4000})
    letters_topic = create_topic(target.bootstrap, f"{topic}.dlq",
                                 configs={"max.message.bytes": 4000})

    async def go() -> tuple[list[RecordMetadata], dict[str, Any]]:
        async with producer(target, dead_letter_topic="{topic}.dlq") as p:
            results = await send_all(p, strategy, [Record(topic, b"x" * 6000, key=b"big")])
            return results, p.metrics()

    (result,), metrics = run(go())
    assert (metrics["dead_lettered"], metrics["dead_letter_failed"]) == (1, 0)
    assert metrics["in_flight"] == 0  # the copy refused, and the one written, both counted out
    assert not result.ok and isinstance(result.error, DeliveryError)
    assert result.error.name == "MSG_SIZE_TOO_LARGE"
    assert result.error.record.value == b"x" * 6000  # the caller still has it
    copy = result.dead_letter
    assert copy is not None and copy.ok
    (letter,) = read_topic(target, letters_topic)
    assert letter.offset == copy.offset and letter.key == b"big" and letter.value is None
    h = header_map(letter.headers)
    assert h[headers.VALUE_SIZE] == b"6000"
    assert h[headers.ATTEMPTS] == b"1"  # the broker's refusal, not librdkafka's
    assert read_topic(target, topic) == []


def test_a_record_for_a_topic_the_broker_refuses_is_dead_lettered(target: Target) -> None:
    target.require_headers()
    topic, _ = target.topic("dlq-refused")
    letters_topic, _ = target.topic("dlq-refused-letters")
    records = [
        Record(topic, b"1"),
        Record("bad topic!", b"2", key=b"k", headers=[("h", b"v")], partition=0),
        Record(topic, b"3"),
    ]

    async def go() -> list[RecordMetadata]:
        async with producer(target, dead_letter_topic=letters_topic) as p:
            return [r async for r in p.send_ordered(records, max_in_flight=3)]

    results = run(go())
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].dead_letter is not None and results[1].dead_letter.topic == letters_topic
    assert [s.value for s in read_topic(target, topic)] == [b"1", b"3"]
    (letter,) = read_topic(target, letters_topic)
    assert (letter.key, letter.value) == (b"k", b"2")
    h = header_map(letter.headers)
    assert h["h"] == b"v"
    assert h[headers.TOPIC] == b"bad topic!"
    assert h[headers.PARTITION] == b"0"
    assert h[headers.ERROR_CODE] == b"17"
    assert h[headers.ATTEMPTS] == b"1"


def test_a_failed_dead_letter_copy_is_reported_and_never_retried(target: Target) -> None:
    topic, _ = target.topic("dlq-fails")
    # A legal template that makes, for this topic, a name past Kafka's 249 characters: the
    # broker refuses it (a name no topic may have is refused at construction).
    template = "{topic}." + "d" * 240
    letters = template.format(topic=topic)
    assert len(letters) > 249

    async def go() -> tuple[DeliveryError, dict[str, Any]]:
        async with producer(target, dead_letter_topic=template,
                            **{"message.max.bytes": 10_000}) as p:
            with pytest.raises(DeliveryError) as info:
                await p.send(topic, b"x" * 20_000)
            return info.value, p.metrics()

    error, metrics = run(go())
    assert error.code == 10
    assert error.dead_letter_error is not None and error.dead_letter_error.code == 17
    assert "dead-letter topic failed too" in str(error)
    # The copy's failure names the topic it could not be written to, not the original's.
    assert error.dead_letter_error.record.topic == letters
    assert str(error.dead_letter_error).startswith(f"{letters}: ")
    assert (metrics["dead_letter_failed"], metrics["dead_lettered"]) == (1, 0)
    assert metrics["failed_by_error"] == {"MSG_SIZE_TOO_LARGE": 1}  # the copy is no new failure


def test_a_dead_letter_topic_that_is_the_records_own_is_refused(target: Target) -> None:
    """The "copy" would go back to the topic the record failed to reach (without its value,
    for a size failure: a tombstone on a compacted topic). A template that always is the
    record's topic is refused at once; a name that happens to be is refused per record, which
    fails with an error saying so, and nothing is written."""
    with pytest.raises(ConfigurationError, match="own topic"):
        producer(target, dead_letter_topic="{topic}")
    topic, _ = target.topic("dlq-own")
    big = Record(topic, b"x" * 20_000, key=b"k")

    async def go() -> tuple[DeliveryError, RecordMetadata, dict[str, Any]]:
        async with producer(target, dead_letter_topic=topic,
                            **{"message.max.bytes": 10_000}) as p:
            with pytest.raises(DeliveryError) as info:
                await p.send(big.topic, big.value, big.key)
            (result,) = await p.send_batch([big])
            return info.value, result, p.metrics()

    error, result, metrics = run(go())
    for e in (error, result.error):
        assert isinstance(e, DeliveryError) and e.name == "MSG_SIZE_TOO_LARGE"
        assert e.dead_letter_error is not None
        assert "the dead-letter topic is the record's own topic" in str(e)
    assert result.dead_letter is None
    assert (metrics["dead_lettered"], metrics["dead_letter_failed"]) == (0, 2)
    assert read_topic(target, topic) == []  # nothing written back


# -- metrics --------------------------------------------------------------------------------


def test_metrics_snapshot_and_prometheus(target: Target) -> None:
    topic, _ = target.topic("metrics")
    registry = CollectorRegistry()
    client_id = f"metrics-{topic}"

    async def go() -> tuple[dict[str, Any], str, dict[str, Any] | None]:
        async with producer(target, metrics_registry=registry, **{
            "client.id": client_id, "statistics.interval.ms": 100, "message.max.bytes": 10_000,
        }) as p:
            records = [Record(topic, b"v")] * 100 + [Record(topic, b"x" * 20_000)]
            await p.send_batch(records)
            deadline = time.monotonic() + DEADLINE
            while p.metrics()["librdkafka"] is None:  # the first statistics, within 100 ms
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            snapshot = p.metrics()
            exported = generate_latest(registry).decode()
        return snapshot, exported, None

    snapshot, exported, _ = run(go())
    assert snapshot["sent"] == 100
    assert snapshot["failed"] == 1 and snapshot["failed_by_error"] == {"MSG_SIZE_TOO_LARGE": 1}
    assert snapshot["latency"]["count"] == 100
    assert 0 < snapshot["latency"]["p50"] <= snapshot["latency"]["p99"]
    assert snapshot["in_flight"] == 0 and snapshot["in_flight_bytes"] == 0
    assert snapshot["peak_in_flight"] >= 1
    assert isinstance(snapshot["retried"], int)
    assert snapshot["librdkafka"]["client_id"] == client_id
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exported)
        for s in family.samples
    }

    def sample(name: str, **labels: str) -> float:
        labels.update(messaging_client_id=client_id, messaging_system="kafka")
        return samples[(name, tuple(sorted(labels.items())))]

    assert sample("messaging_client_sent_messages_total", error_type="") == 100
    assert sample("messaging_client_sent_messages_total", error_type="MSG_SIZE_TOO_LARGE") == 1
    assert sample("messaging_client_operation_duration_seconds_count",
                  messaging_operation_name="send") == 100
    assert sample("messaging_client_operation_duration_seconds_bucket",
                  messaging_operation_name="send", le="+Inf") == 100
    assert sample("sluice_client_in_flight_messages") == 0
    assert sample("sluice_client_queue_fill_ratio") == 0
    assert sample("sluice_client_retried_requests_total") == snapshot["retried"]
    assert client_id not in generate_latest(registry).decode()  # closed: no longer exported


def test_queue_fill_counts_records_not_librdkafkas_pending_events(target: Target) -> None:
    """librdkafka's queue length also counts events waiting for a poll (a statistics document
    here): with nothing in flight, the fill is 0 all the same (it read 1e-05, now and then)."""
    topic, _ = target.topic("fill")

    async def go() -> tuple[int, float, float]:
        async with producer(target, **{"statistics.interval.ms": 10}) as p:
            await p.send(topic, b"x")
            bridge = p._bridge
            assert bridge is not None
            bridge.hold()  # the poll thread stays out of poll(): the next statistics wait
            try:
                await asyncio.sleep(0)  # (the thread may be inside a poll() now: its next
                deadline = time.monotonic() + DEADLINE  # one waits for the release)
                while len(p._producer) == 0:  # a statistics event, unserved
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.01)
                registry_fill = p.metrics()["queue_fill"]
                return len(p._producer), registry_fill, p._metrics.queue_fill()
            finally:
                bridge.release()

    pending, snapshot_fill, fill = run(go())
    assert pending >= 1
    assert snapshot_fill == fill == 0


def test_latencies_are_bucketed_as_prometheus_le_bounds() -> None:
    """The tokens only append latencies; bucketing them a poll at a time must count each where
    a per-record ``le`` bound puts it (a value equal to a bound belongs to that bound)."""
    from bisect import bisect_left

    from sluice.client.metrics import LATENCY_BUCKETS, ProducerMetrics

    metrics = ProducerMetrics(
        "buckets", queue_max_messages=1, queue_max_bytes=1
    )
    values = [*LATENCY_BUCKETS, 0.0, 0.0001, 0.003, 0.003, 0.0049, 7.5, 299.9, 301.0, 1e6]
    expected = [0] * (len(LATENCY_BUCKETS) + 1)
    for v in values:
        expected[bisect_left(LATENCY_BUCKETS, v)] += 1
    metrics.latencies.extend(values[:10])
    metrics.bucket_latencies()  # in two polls' worth, unsorted
    metrics.latencies.extend(reversed(values[10:]))
    assert metrics.latency_counts == expected
    assert metrics.latency_sum == pytest.approx(sum(values))
    assert metrics.latencies == []
    assert metrics.snapshot()["latency"]["count"] == len(values)


def test_a_window_waiting_for_queue_space_keeps_its_records_counted(target: Target) -> None:
    """librdkafka's queue is smaller than the window, so the window fills it and waits for
    space, over and over. The records it handed over count as in flight meanwhile (the
    snapshot never goes below 0), and ``close`` then settles them and returns as soon as
    they are delivered. (Counted only when the fill ended, the records delivered while it
    waited made ``in_flight`` negative: ``flush``/``close`` waited out their whole timeout, or,
    at 0 by chance, returned with records still in flight.)"""
    topic, _ = target.topic("p-queue-space", 1)

    async def go() -> tuple[int, float, int]:
        p = Producer(target.bootstrap, metrics_registry=None, config=target.options(**{
            "queue.buffering.max.messages": 200, "linger.ms": 20,
        }))
        await p.start()
        window = p.send_ordered((Record(topic, b"v") for _ in range(20_000)), max_in_flight=1000)
        results: list[RecordMetadata] = []

        async def iterate() -> None:
            with contextlib.suppress(ProducerClosedError):  # the source outlives the close
                async for r in window:
                    results.append(r)

        task = asyncio.ensure_future(iterate())
        lowest = 0
        while len(results) < 500:
            lowest = min(lowest, p.metrics()["in_flight"])
            # A sample a millisecond, a sampling interval, not a wait for readiness (a task
            # that never sleeps slows the window down many times over).
            await asyncio.sleep(0.001)
        started = time.monotonic()
        await p.close(20)
        took = time.monotonic() - started
        await task
        assert all(r.error is None for r in results)
        return lowest, took, window.in_flight

    lowest, took, left = run(go())
    print(f"lowest in_flight {lowest}; close took {took:.2f} s")
    assert lowest >= 0
    assert took < 10, f"close took {took:.1f} s with every record delivered"
    assert left == 0


class _Millis(enum.IntEnum):
    MINUS_SEVEN = -7


@pytest.mark.parametrize("strategy", [*STRATEGIES, "send_ordered async", "send_batch async"])
def test_a_negative_timestamp_is_refused_for_that_record_and_0_means_now(
    target: Target, strategy: str
) -> None:
    """A timestamp below 0 (-1, Kafka's "no timestamp", included: a producer cannot send it,
    librdkafka would store it as a CreateTime of -1) or past int64, and a partition past C's
    range, is that record's SerializationError in every strategy and fast path, the others
    delivered; 0 is librdkafka's "not given": the
    record is stamped with the time of sending (docs/client.md)."""
    if not target.timestamps:
        pytest.skip(f"Kafka {target.version} keeps no timestamps (0.10 and later)")
    topic, _ = target.topic("timestamps")
    records = [
        Record(topic, b"minus-5", timestamp=-5),
        Record(topic, b"minus-1", key=b"k", headers=[("h", b"1")], timestamp=-1),
        # any integer librdkafka takes (numpy's int64 is one): it stored these
        Record(topic, b"minus-7", timestamp=_Millis.MINUS_SEVEN),
        # past int64: librdkafka's OverflowError took the whole send_batch down with it
        Record(topic, b"past-int64", timestamp=1 << 63),
        Record(topic, b"partition-past-int64", partition=1 << 70),
        Record(topic, b"zero", timestamp=0),
        Record(topic, b"one", timestamp=1),
        Record(topic, b"none"),
    ]

    async def source() -> AsyncIterator[Record]:
        for r in records:
            yield r

    async def go() -> list[Any]:
        async with producer(target) as p:
            if strategy == "send_ordered async":
                return [r.error async for r in p.send_ordered(source(), max_in_flight=4)]
            if strategy == "send_batch async":
                return [r.error for r in await p.send_batch(source())]
            if strategy in ("send_ordered", "send_batch"):
                return [r.error for r in await send_all(p, strategy, records)]
            out: list[Any] = []
            for r in records:
                try:
                    await send_all(p, strategy, [r])
                    out.append(None)
                except SerializationError as exc:
                    out.append(exc)
            return out

    before = int(time.time() * 1000)
    errors = run(go())
    after = int(time.time() * 1000)
    assert [type(e) for e in errors] == [SerializationError] * 5 + [type(None)] * 3, errors
    assert "timestamp=-5" in str(errors[0]) and "timestamp=-1" in str(errors[1])
    assert "0 to 2**63-1" in str(errors[3])
    stored = {s.value: s.timestamp for s in read_topic(target, topic)}
    assert set(stored) == {b"zero", b"one", b"none"}
    assert stored[b"one"] == 1
    assert before <= stored[b"zero"] <= after and before <= stored[b"none"] <= after


def test_a_producer_belongs_to_the_loop_it_started_on(target: Target) -> None:
    """Used from another event loop (an asyncio.run of its own, here on another thread while
    the first loop still owns the producer), every entry point raises WrongEventLoopError
    (asyncio's own error, "attached to a different loop", before); the producer still works,
    and closes, on its own loop."""
    from sluice.client import ProducerError, WrongEventLoopError

    topic, _ = target.topic("wrong-loop")

    async def elsewhere(p: Producer) -> list[BaseException]:
        raised: list[BaseException] = []
        for call in (
            lambda: p.send(topic, b"x"),
            lambda: p.submit(topic, b"x"),
            lambda: p.send_batch([Record(topic, b"x")]),
            lambda: p.flush(),
            lambda: p.close(),
        ):
            with pytest.raises(WrongEventLoopError, match="belongs to the loop") as info:
                await call()
            raised.append(info.value)
        with pytest.raises(WrongEventLoopError):
            p.send_nowait(topic, b"x")
        with pytest.raises(WrongEventLoopError):
            p.send_ordered([Record(topic, b"x")])
        return raised

    async def go() -> None:
        async with producer(target) as p:
            await p.send(topic, b"before")
            raised = await asyncio.to_thread(asyncio.run, elsewhere(p))
            assert all(isinstance(e, ProducerError | RuntimeError) for e in raised)
            await p.send(topic, b"after")

    run(go())
    assert [s.value for s in read_topic(target, topic)] == [b"before", b"after"]


def test_every_bootstrap_form_librdkafka_takes_is_taken(target: Target) -> None:
    """The construction check refuses only what librdkafka cannot use: its alias
    ``metadata.broker.list``, empty entries it skips (a trailing comma) and its in-process mock
    cluster (``test.mock.num.brokers``, no bootstrap list at all) all worked before the check
    and were refused by it as a missing or malformed bootstrap list."""
    topic, _ = target.topic("bootstrap-forms", 1)
    forms: list[dict[str, Any]] = [
        {"metadata.broker.list": target.bootstrap},
        {"bootstrap.servers": f"{target.bootstrap},"},
        {"bootstrap.servers": f" , {target.bootstrap},,"},
    ]

    async def go() -> list[int]:
        offsets = []
        for form in forms:
            async with Producer(metrics_registry=None, config=target.options(**form)) as p:
                offsets.append((await p.send(topic, b"v")).offset)
        async with Producer(metrics_registry=None, config={"test.mock.num.brokers": 1}) as p:
            assert (await p.send("mocked", b"v")).error is None
        return offsets

    assert run(go()) == [0, 1, 2]
    for servers in (",", " , "):  # nothing but empty entries: no broker at all
        with pytest.raises(ConfigurationError, match="bootstrap_servers"):
            Producer(servers, metrics_registry=None)
    with pytest.raises(ConfigurationError, match=r"metadata\.broker\.list"):
        Producer(metrics_registry=None, config={"metadata.broker.list": ""})


def test_a_producer_never_closed_says_so_at_exit(target: Target) -> None:
    """A script that sends with ``send_nowait`` and ends without ``async with`` or ``close()``
    loses the records librdkafka still holds (linger.ms is 5 ms); it used to exit silently,
    the topic empty. It now logs one WARNING naming the producer; a closed one logs nothing."""
    topic, _ = target.topic("p-never-closed")
    script = (
        "import asyncio, sys\n"
        "from sluice.client import Producer\n"
        "async def main():\n"
        "    p = Producer(sys.argv[1], metrics_registry=None, **{'linger.ms': 10000})\n"
        "    for i in range(100):\n"
        "        p.send_nowait(sys.argv[2], b'x')\n"
        "    if sys.argv[3] == 'close':\n"
        "        await p.close()\n"
        "asyncio.run(main())\n"
    )
    out = stderr_by_ending(script, target.bootstrap, topic)
    assert "sluice-producer-1 was never closed: 100 records" in out["leave"]
    assert "never closed" not in out["close"]
    assert len(read_topic(target, topic)) == 100  # the closed one's records, none of the other's


@pytest.mark.parametrize("how", ["a second close", "a cancelled first close"])
def test_a_close_in_progress_is_waited_for_and_not_cut_short(target: Target, how: str) -> None:
    """A close from a shutdown hook's task while ``async with`` closes too, or a first close
    whose caller gave up on it (``asyncio.timeout``): the second close returned at once, the
    first was flushing (or had been cut short), the loop ended, and the records librdkafka
    held (lingering here) were in no topic, with no error and no warning. Now the close runs
    on in a task of its own and a second close waits for it."""
    topic, _ = target.topic("close-twice")

    async def go() -> int:
        p = producer(target, **{"linger.ms": 500})
        futures = [p.send_nowait(topic, b"v%d" % i) for i in range(100)]
        if how == "a second close":
            hook = asyncio.create_task(p.close(DEADLINE))
            await asyncio.sleep(0)  # the hook's close begins
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.01):
                    await p.close(DEADLINE)
        await p.close(DEADLINE)  # async with's, say
        assert p.closed
        if how == "a second close":
            await hook
        return sum(f.done() and f.exception() is None for f in futures)

    assert run(go()) == 100
    assert len(read_topic(target, topic)) == 100
