"""The consumer toolkit against a real broker (sluice by default; any Kafka through the
environment, see conftest.py): reading one at a time and in batches, commits, seek, pause that
keeps what was fetched, run's key ordering and watermark commits, retries then the dead-letter
topic (poison pills included), failure without one, the overload policy, metrics."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
import types
from collections.abc import Coroutine
from typing import Any, TypeVar

import confluent_kafka as ck
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sluice.client import (
    Consumer,
    ConsumerRecord,
    DeserializationError,
    ProcessingError,
    Shed,
    records,
)
from sluice.client import dlq as headers
from sluice.testing import create_topic, unique_topic_name
from tests.client.conftest import DEADLINE, Target, read_topic, stderr_by_ending

T = TypeVar("T")
MIB = 1 << 20


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, DEADLINE))


def produce(
    target: Target,
    topic: str,
    values: list[bytes],
    keys: list[bytes | None] | None = None,
    partition: int | None = None,
    timestamp: int | None = None,
) -> None:
    p = ck.Producer({"bootstrap.servers": target.bootstrap, "linger.ms": 5,
                     "partitioner": "murmur2_random", **target.client})
    for i, v in enumerate(values):
        kw: dict[str, Any] = {"value": v}
        if keys is not None:
            kw["key"] = keys[i]
        if partition is not None:
            kw["partition"] = partition
        if timestamp is not None:
            kw["timestamp"] = timestamp
        p.produce(topic, **kw)
        if i % 1000 == 999:
            p.poll(0)
    assert p.flush(DEADLINE) == 0


def consumer(target: Target, topic: str, group: str | None = None, **options: Any) -> Consumer:
    options.setdefault("metrics_registry", CollectorRegistry())
    return Consumer(
        target.bootstrap,
        group_id=group or f"g-{topic}",
        topics=[topic],
        **options,
        # within every broker's group.max.session.timeout.ms (30 s on Kafka 0.9, librdkafka asks 45)
        **{"auto.offset.reset": "earliest", "session.timeout.ms": 10000, **target.client},
    )


def committed(target: Target, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = ck.Consumer({"bootstrap.servers": target.bootstrap, "group.id": group, **target.client})
    try:
        got = c.committed([ck.TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def test_async_for_and_getmany_read_everything_and_commit_resumes(target: Target) -> None:
    topic, n = target.topic("c-read", 2)
    values = [f"v{i}".encode() for i in range(300)]
    produce(target, topic, values, keys=[f"k{i % 7}".encode() for i in range(300)])

    async def main() -> None:
        seen: list[ConsumerRecord] = []
        async with consumer(target, topic) as c:
            async for r in c:
                seen.append(r)
                if len(seen) == 100:
                    break
            await c.commit()
        assert all(isinstance(r.value, bytes) for r in seen)
        async with consumer(target, topic) as c:
            while len(seen) < 300:
                seen.extend(await c.getmany(50, timeout=1.0))
            assert await c.getmany(50, timeout=0.2) == []
        assert sorted(r.value for r in seen) == sorted(values)  # nothing twice, nothing lost
        for p in range(n):
            offsets = [r.offset for r in seen if r.partition == p]
            assert offsets == sorted(offsets)

    run(main())


def test_seek_reads_again_from_the_offset(target: Target) -> None:
    topic, _ = target.topic("c-seek", 1)
    produce(target, topic, [f"v{i}".encode() for i in range(50)])

    async def main() -> None:
        async with consumer(target, topic) as c:
            got: list[ConsumerRecord] = []
            while len(got) < 50:
                got += await c.getmany(100, 1.0)
            await c.seek(topic, 0, 10)
            again: list[ConsumerRecord] = []
            while len(again) < 40:
                again += await c.getmany(100, 1.0)
            assert [r.offset for r in again] == list(range(10, 50))
            assert c.position(topic, 0) == 50

    run(main())


def test_deserializer_failure_is_raised_for_that_record_alone(target: Target) -> None:
    topic, _ = target.topic("c-poison-read", 1)
    produce(target, topic, [b'{"a": 1}', b"not json", b'{"a": 3}'])

    async def main() -> None:
        async with consumer(target, topic, value_deserializer="json") as c:
            first = await c.getmany(10, 5.0)
            while not first:
                first = await c.getmany(10, 1.0)
            assert first[0].value == {"a": 1}
            rest = list(first[1:])
            with pytest.raises(DeserializationError) as info:
                while True:
                    rest += await c.getmany(10, 1.0)
            assert info.value.record.offset == 1
            assert info.value.record.raw_value == b"not json"
            while not rest:
                rest += await c.getmany(10, 1.0)
            assert [r.value for r in rest] == [{"a": 3}]
            assert c.metrics()["deserialization_errors"] == 1

    run(main())


@pytest.mark.parametrize("then", ["async for", "run"])
def test_a_poison_pill_ending_a_batch_is_not_passed_before_it_is_met(
    target: Target, then: str
) -> None:
    """``getmany`` hands out the records before one its deserializer cannot read. That record
    used to be passed already (the position after it) while its error waited for the next
    ``getmany``: a commit after the batch, as the docs advise, committed past it, and
    ``async for`` or ``run`` next went on after it, the poison pill never raised, retried nor
    dead-lettered. It now stays first in line, the position before it."""
    topic, _ = target.topic("c-poison-batch", 1)
    produce(target, topic, [b'{"a": 0}', b'{"a": 1}', b"not json", b'{"a": 3}'], partition=0)
    group = f"g-{topic}"

    async def main() -> tuple[list[int], dict[int, int], int | None, object]:
        async with consumer(target, topic, group, value_deserializer="json",
                            max_retries=0) as c:
            first: list[ConsumerRecord] = []
            while len(first) < 2:
                first += await c.getmany(10, 1.0)
            committed_now = await c.commit()
            position = c.position(topic, 0)
            met: object = None
            if then == "async for":
                with pytest.raises(DeserializationError) as info:
                    await asyncio.wait_for(anext(aiter(c)), DEADLINE)
                met = info.value.record.offset
            else:
                with pytest.raises(ProcessingError) as failed:
                    await asyncio.wait_for(c.run(lambda r: None), DEADLINE)
                met = failed.value.record.offset
            return ([r.offset for r in first], {p: o for (_, p), o in committed_now.items()},
                    position, met)

    offsets, committed_now, position, met = run(main())
    assert offsets == [0, 1]
    assert committed_now == {0: 2}  # not past the poison pill, which nobody has met yet
    assert position == 2
    assert met == 2


def test_run_keeps_key_order_under_concurrency_and_commits_the_end(target: Target) -> None:
    topic, n = target.topic("c-run", 4)
    total = 2000
    keys: list[bytes | None] = [f"k{i % 40}".encode() for i in range(total)]
    values = [str(i).encode() for i in range(total)]
    produce(target, topic, values, keys=keys)
    group = f"g-{topic}"

    async def main() -> dict[bytes, list[int]]:
        by_key: dict[bytes, list[int]] = {}
        active: set[bytes] = set()
        overlap = []
        running = 0
        peak = 0

        async def handler(r: ConsumerRecord) -> None:
            nonlocal running, peak
            assert r.raw_key is not None
            if r.raw_key in active:
                overlap.append(r.raw_key)
            active.add(r.raw_key)
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(random.random() * 0.002)
            by_key.setdefault(r.raw_key, []).append(int(r.raw_value or b"0"))
            running -= 1
            active.discard(r.raw_key)
            if sum(len(v) for v in by_key.values()) == total:
                c.stop()

        async with consumer(target, topic, group) as c:
            await c.run(handler, concurrency=16, ordering="key")
        assert not overlap
        assert 1 < peak <= 16
        return by_key

    by_key = run(main())
    for key, got in by_key.items():
        sent = [int(v) for k, v in zip(keys, values, strict=True) if k == key]
        assert got == sent, key  # each key in production order, once
    ends = {p: 0 for p in range(n)}
    for s in read_topic(target, topic):
        ends[s.partition] = s.offset + 1
    assert committed(target, group, topic, n) == ends


def test_watermark_never_passes_an_unfinished_record(target: Target) -> None:
    """Record 5 is slow; the others finish: the committed offset stays at 5 until it does."""
    topic, _ = target.topic("c-watermark", 1)
    produce(target, topic, [str(i).encode() for i in range(20)], keys=[str(i).encode() for i in range(20)])
    group = f"g-{topic}"

    async def main() -> None:
        release = asyncio.Event()
        done: set[int] = set()

        async def handler(r: ConsumerRecord) -> None:
            if r.offset == 5:
                await release.wait()
            done.add(r.offset)

        async with consumer(target, topic, group, commit_interval=0.05) as c:
            task = asyncio.create_task(c.run(handler, concurrency=8, ordering="key"))
            while len(done) < 19:
                await asyncio.sleep(0.01)
            await c.commit()
            assert committed(target, group, topic, 1) == {0: 5}
            release.set()
            while len(done) < 20:
                await asyncio.sleep(0.01)
            c.stop()
            await task
        assert committed(target, group, topic, 1) == {0: 20}

    run(main())


def test_retries_then_dead_letter_with_headers_poison_pill_included(target: Target) -> None:
    target.require_headers()
    topic, _ = target.topic("c-dlq", 1)
    dlq = f"{topic}.dlq"
    target.make(dlq, 1)
    values = [json.dumps({"i": i}).encode() for i in range(30)]
    values[7] = b"\xffpoison"
    produce(target, topic, values, keys=[f"k{i}".encode() for i in range(30)])
    failing = {3, 11, 20}

    async def main() -> tuple[dict[int, int], list[int], dict[str, Any]]:
        calls: dict[int, int] = {}
        processed: list[int] = []

        async def handler(r: ConsumerRecord) -> None:
            calls[r.offset] = calls.get(r.offset, 0) + 1
            if r.value["i"] in failing:
                raise RuntimeError(f"no thanks {r.offset}")
            processed.append(r.offset)
            if len(processed) == 26:
                c.stop()

        async with consumer(
            target, topic, max_retries=2, retry_backoff=0.001, dead_letter_topic="{topic}.dlq",
            dead_letter_options=target.options(), value_deserializer="json",
        ) as c:
            await c.run(handler, concurrency=4, ordering="none")
            return calls, processed, c.metrics()

    calls, processed, metrics = run(main())
    assert sorted(processed) == sorted(set(range(30)) - failing - {7})
    assert all(calls[o] == 3 for o in failing)  # the first call and two retries
    assert 7 not in calls  # the poison pill never reached the handler
    letters = read_topic(target, dlq)
    assert sorted(int(dict(s.headers)[headers.OFFSET]) for s in letters) == sorted([*failing, 7])
    for s in letters:
        h = dict(s.headers)
        offset = int(h[headers.OFFSET])
        assert s.value == values[offset]
        assert s.key == f"k{offset}".encode()
        assert h[headers.TOPIC] == topic.encode()
        assert h[headers.PARTITION] == b"0"
        assert h[headers.ATTEMPTS] == b"3"
        assert h[headers.CLASS_NAME] == b"sluice.client.Consumer"
        if offset == 7:
            assert h[headers.STAGE] == b"VALUE_CONVERTER"
            assert h[headers.EXCEPTION_CLASS_NAME] == b"sluice.client.errors.DeserializationError"
        else:
            assert h[headers.STAGE] == b"TASK_PUT"
            assert h[headers.EXCEPTION_CLASS_NAME] == b"builtins.RuntimeError"
            assert f"no thanks {offset}".encode() in h[headers.EXCEPTION_MESSAGE]
        assert int(h[headers.TIMESTAMP]) > 0
    assert metrics["dead_lettered"] == 4
    assert metrics["retries"] == 4 * 2
    assert metrics["failed"] == 4
    # one record the deserializer could not read (its retries counted it three times)
    assert metrics["deserialization_errors"] == 1


def test_without_dead_letter_topic_run_stops_with_the_record(target: Target) -> None:
    topic, _ = target.topic("c-fail", 1)
    produce(target, topic, [str(i).encode() for i in range(10)])
    group = f"g-{topic}"

    async def main() -> None:
        async def handler(r: ConsumerRecord) -> None:
            if r.offset == 4:
                raise ValueError("bad record")

        async with consumer(target, topic, group, max_retries=1, retry_backoff=0.001) as c:
            with pytest.raises(ProcessingError) as info:
                await c.run(handler)
        assert info.value.record.offset == 4
        assert info.value.attempts == 2
        assert isinstance(info.value.__cause__, ValueError)
        assert "the handler failed 2 times" in str(info.value)

    run(main())
    assert committed(target, group, topic, 1) == {0: 4}


def test_a_poison_pill_without_dead_letter_topic_names_the_deserializer(target: Target) -> None:
    topic, _ = target.topic("c-poison-stop", 1)
    produce(target, topic, [b'{"ok": 1}', b"not json"])

    async def main() -> None:
        async def handler(r: ConsumerRecord) -> None:
            pass

        async with consumer(target, topic, max_retries=1, retry_backoff=0.001,
                            value_deserializer="json") as c:
            with pytest.raises(ProcessingError) as info:
                await c.run(handler)
        assert info.value.record.offset == 1
        assert "the deserializer failed 2 times" in str(info.value)
        assert isinstance(info.value.__cause__, DeserializationError)

    run(main())


def test_shedding_skips_old_records_counts_and_dead_letters_them(target: Target) -> None:
    target.require_headers()
    topic, _ = target.topic("c-shed", 1)
    target.make(f"{topic}.dlq", 1)
    old = int(time.time() * 1000) - 3_600_000
    produce(target, topic, [b"old"] * 10, timestamp=old)
    produce(target, topic, [b"new"] * 5)

    async def main() -> tuple[list[bytes], dict[str, Any]]:
        got: list[bytes] = []

        async def handler(r: ConsumerRecord) -> None:
            got.append(r.raw_value or b"")
            if len(got) == 5:
                c.stop()

        async with consumer(
            target, topic, shed=Shed(max_age=60, dead_letter=True),
            dead_letter_topic="{topic}.dlq", dead_letter_options=target.options(),
        ) as c:
            await c.run(handler)
            return got, c.metrics()

    got, metrics = run(main())
    assert got == [b"new"] * 5
    assert metrics["shed_by_reason"] == {"max_age": 10}
    letters = read_topic(target, f"{topic}.dlq")
    assert len(letters) == 10
    assert all(dict(s.headers)[headers.STAGE] == b"SHED" for s in letters)


def test_pause_keeps_fetched_records_and_resume_serves_them_without_refetch(
    target: Target,
) -> None:
    """Everything is fetched, partition 0 paused and resumed: librdkafka's statistics count
    each record fetched once, and every record is served once."""
    topic, n = target.topic("c-pause", 2)
    if n < 2:
        pytest.skip("needs two partitions; this broker auto-creates topics with one")
    per = 200
    produce(target, topic, [b"x" * 100] * per, partition=0)
    produce(target, topic, [b"y" * 100] * per, partition=1)

    async def main() -> None:
        async with consumer(target, topic, config={"statistics.interval.ms": 100}) as c:
            got = await c.getmany(10, 5.0)
            while c.metrics()["buffered_records"] + len(got) < 2 * per:
                got += await c.getmany(1, 0.05)
            c.pause((topic, 0))
            others: list[ConsumerRecord] = []
            while len(others) < per - sum(1 for r in got if r.partition == 1):
                others += await c.getmany(1000, 1.0)
            assert all(r.partition == 1 for r in others)
            assert await c.getmany(1000, 0.3) == []  # partition 0's records are held
            held = c.metrics()["buffered_records"]
            assert held == per - sum(1 for r in got if r.partition == 0) > 0
            c.resume((topic, 0))
            after = await c.getmany(1000, 1.0)
            assert [r.offset for r in after] == list(range(per - held, per))
            # every record fetched exactly once (librdkafka's count, a second later)
            t0 = time.monotonic()
            while True:
                stats = c.metrics()["librdkafka"]
                parts = stats["topics"][topic]["partitions"] if stats else {}
                fetched = sum(parts[str(p)]["rxmsgs"] for p in (0, 1) if str(p) in parts)
                if time.monotonic() - t0 > 1.5:
                    break
                await asyncio.sleep(0.1)
            assert fetched == 2 * per, parts

    run(main())


def test_metrics_snapshot_and_prometheus(target: Target) -> None:
    topic, _ = target.topic("c-metrics", 1)
    produce(target, topic, [b"m"] * 20, keys=[b"k"] * 20)
    registry = CollectorRegistry()

    async def main() -> dict[str, Any]:
        async def handler(r: ConsumerRecord) -> None:
            if r.offset == 19:
                c.stop()

        async with consumer(target, topic, metrics_registry=registry) as c:
            await c.run(handler)
            text = generate_latest(registry).decode()
            assert "messaging_process_duration_seconds_bucket" in text
            assert "messaging_client_consumed_messages_total" in text
            assert "sluice_client_consumer_lag_messages" in text
            assert "sluice_client_consumer_commits_total" in text
            # A consumer that kept its partition throughout: no rebalance took anything yet.
            assert 'sluice_client_consumer_revocations_total{' in text
            assert c.metrics()["revocations"] == 0
            return c.metrics()

    m = run(main())
    assert m["consumed"] == 20 and m["processed"] == 20
    assert m["process_duration"]["count"] == 20
    assert m["commits"] >= 1
    assert m["lag"] == {f"{topic}/0": 0}


def test_every_assigned_partition_has_its_high_watermark_and_lag(target: Target) -> None:
    """The fetch thread read the high watermark only of the partitions at a batch's two ends:
    with several partitions in one fetch, those in the middle had none, so ``lag`` left them
    out (and a ``Shed``'s ``min_lag`` read their lag as 0: never shed), or kept a stale one."""
    topic, n = target.topic("c-hwm", 6)
    if n < 3:
        pytest.skip("needs three partitions")
    per = 50
    for p in range(n):
        produce(target, topic, [b"v"] * per, partition=p)

    async def main() -> tuple[dict[str, int], list[int | None]]:
        async with consumer(target, topic) as c:
            got = 0
            while got < per * n:
                got += len(await c.getmany(1000, 1.0))
            deadline = time.monotonic() + DEADLINE / 4
            while len(c.metrics()["lag"]) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return c.metrics()["lag"], [c.high_watermark(topic, p) for p in range(n)]

    lag, hwms = run(main())
    assert lag == {f"{topic}/{p}": 0 for p in range(n)}
    assert hwms == [per] * n


@pytest.mark.parametrize("max_buffer_bytes", [64 * 1024, 32 << 20])
def test_a_record_larger_than_a_fetch_is_still_read(target: Target, max_buffer_bytes: int) -> None:
    """A record batch larger than ``fetch.max.bytes`` comes whole (KIP-74): the derived
    ``receive.message.max.bytes`` (``fetch.max.bytes`` + 512, at least 1,000,512) refused that
    response, every fetch failed, and the consumer read nothing past it, silently, where a
    plain librdkafka consumer reads it (its default is 100,000,000)."""
    if not target.sluice:
        pytest.skip("makes a topic with max.message.bytes raised (sluice's CreateTopics)")
    topic = unique_topic_name("c-large")
    create_topic(target.bootstrap, topic, 1, configs={"max.message.bytes": "10000000"})
    big = 1_500_000 if max_buffer_bytes < MIB else 5_000_000
    p = ck.Producer({"bootstrap.servers": target.bootstrap, "message.max.bytes": 10_000_000})
    p.produce(topic, b"x" * big)
    p.produce(topic, b"after")
    assert p.flush(DEADLINE) == 0

    async def main() -> list[int]:
        async with consumer(target, topic, max_buffer_bytes=max_buffer_bytes) as c:
            got: list[ConsumerRecord] = []
            deadline = time.monotonic() + DEADLINE / 4
            while len(got) < 2 and time.monotonic() < deadline:
                got += await c.getmany(10, 0.5)
            return [len(r.value) for r in got]

    assert run(main()) == [big, len(b"after")]


def test_run_times_each_record_by_itself_at_concurrency_1(target: Target) -> None:
    """The sequential path reads the clock once a record: a record's duration runs from the
    previous record's end to its own, so a slow record, even the last, counts as slow and
    its successor does not."""
    topic, _ = target.topic("c-durations", 1)
    produce(target, topic, [b"d"] * 6, partition=0)
    slow = {1, 5}

    async def main() -> dict[str, Any]:
        async def handler(r: ConsumerRecord) -> None:
            if r.offset in slow:
                await asyncio.sleep(0.06)
            if r.offset == 5:
                c.stop()

        async with consumer(target, topic) as c:
            await c.run(handler)
            counts = list(c._metrics.latency_counts)
            return {"counts": counts, **c.metrics()["process_duration"]}

    got = run(main())
    assert got["count"] == 6
    # bucket 7 is (0.05, 0.1]: the two slow records, nothing else above 0.05 s
    assert got["counts"][7] == 2, got
    assert sum(got["counts"][:6]) == 4, got
    assert 0.12 <= got["sum"] < 0.12 + 4 * 0.05


def test_fetched_records_carry_every_field_and_count_their_real_size(target: Target) -> None:
    """What the fetch thread makes of a batch: keys, values (a tombstone among them),
    headers and timestamps as produced, and each record's size its key, value and headers
    plus the per-record overhead."""
    topic, _ = target.topic("c-fields", 1)
    p = ck.Producer({"bootstrap.servers": target.bootstrap, **target.client})
    p.produce(topic, b"v" * 100, b"key-0", partition=0, timestamp=1_700_000_000_000)
    p.produce(topic, None, b"key-1", partition=0, timestamp=1_700_000_000_001)
    p.produce(topic, b"w" * 7, None, partition=0, headers=[("h", b"12345"), ("n", None)],
              timestamp=1_700_000_000_002)
    assert p.flush(DEADLINE) == 0

    async def main() -> list[ConsumerRecord]:
        async with consumer(target, topic) as c:
            got: list[ConsumerRecord] = []
            while len(got) < 3:
                got += await c.getmany(10, 1.0)
            return got

    got = run(main())
    assert [(r.topic, r.partition, r.offset) for r in got] == [(topic, 0, i) for i in range(3)]
    assert [(r.key, r.value, r.raw_key, r.raw_value) for r in got] == [
        (b"key-0", b"v" * 100, b"key-0", b"v" * 100), (b"key-1", None, b"key-1", None),
        (None, b"w" * 7, None, b"w" * 7)]
    assert [r.headers for r in got] == [None, None, [("h", b"12345"), ("n", None)]]
    assert [r.timestamp for r in got] == [1_700_000_000_000 + i for i in range(3)]
    overhead = records.RECORD_OVERHEAD
    assert [r.size for r in got] == [
        overhead + 105, overhead + 5, overhead + 7 + (1 + 5 + 64) + (1 + 64)]


@pytest.mark.parametrize("how", ["run c=1", "run c=4", "getmany"])
def test_every_byte_counted_in_is_counted_out(target: Target, how: str) -> None:
    """The memory accounting after reading a whole topic: nothing buffered, nothing held,
    and everything the handler saw counted as consumed (the fetch thread hands each batch's
    byte count to the buffer; run and getmany release a batch's bytes at once)."""
    topic, _ = target.topic("c-accounting", 2)
    total = 300
    produce(target, topic, [b"x" * (i % 50) for i in range(total)],
            keys=[None if i % 3 else str(i).encode() for i in range(total)])

    async def main() -> tuple[int, dict[str, Any]]:
        sizes: list[int] = []
        async with consumer(target, topic, group=f"g-{topic}-{how[-1]}") as c:
            if how == "getmany":
                while len(sizes) < total:
                    sizes += [r.size for r in await c.getmany(64, 1.0)]
            else:
                async def handler(r: ConsumerRecord) -> None:
                    sizes.append(r.size)
                    if len(sizes) == total:
                        c.stop()

                await c.run(handler, concurrency=int(how[-1]))
            return c.held_bytes(), {**c.metrics(), "sizes": sum(sizes)}

    held, m = run(main())
    assert (held, m["buffered_bytes"], m["buffered_records"]) == (0, 0, 0), m
    assert m["consumed_bytes"] == m["sizes"] and m["consumed"] == total


def test_manual_assignment_reads_from_the_given_offset(target: Target) -> None:
    topic, n = target.topic("c-assign", 2)
    last = n - 1
    produce(target, topic, [f"a{i}".encode() for i in range(30)], partition=last)

    registry = CollectorRegistry()

    async def main() -> list[int]:
        async with Consumer(target.bootstrap, assign=[(topic, last, 12)],
                            metrics_registry=registry, **target.client) as c:
            assert c.assignment() == [(topic, last)]
            got: list[ConsumerRecord] = []
            while len(got) < 18:
                got += await c.getmany(100, 1.0)
            # no group: no group label either (not the group id librdkafka is given)
            assert c.metrics()["group_id"] is None
            client = c.config["client.id"]
            labels = {"messaging_system": "kafka", "messaging_client_id": client,
                      "messaging_consumer_group_name": ""}
            assert registry.get_sample_value(
                "messaging_client_consumed_messages_total", labels) == 18
            groups = {s.labels.get("messaging_consumer_group_name")
                      for m in registry.collect() for s in m.samples}
            assert groups == {""}, groups
            return [r.offset for r in got]

    assert run(main()) == list(range(12, 30))


def test_bad_options_are_refused_at_once(target: Target) -> None:
    from sluice.client import ConfigurationError

    with pytest.raises(ConfigurationError, match="exactly one of"):
        Consumer(target.bootstrap, group_id="g", metrics_registry=None)
    with pytest.raises(ConfigurationError, match="group_id"):
        Consumer(target.bootstrap, topics=["t"], metrics_registry=None)
    with pytest.raises(ConfigurationError, match="max_buffer_bytes"):
        Consumer(target.bootstrap, group_id="g", topics=["t"], max_buffer_bytes=1000,
                 metrics_registry=None)
    with pytest.raises(ConfigurationError, match="dead_letter_topic"):
        Consumer(target.bootstrap, group_id="g", topics=["t"], dead_letter_topic="{nope}",
                 metrics_registry=None)
    with pytest.raises(ConfigurationError, match="on_commit"):
        Consumer(target.bootstrap, group_id="g", topics=["t"], metrics_registry=None,
                 config={"on_commit": print})
    with pytest.raises(ConfigurationError, match="librdkafka refused"):
        Consumer(target.bootstrap, group_id="g", topics=["t"], metrics_registry=None,
                 config={"no.such.setting": 1})
    with pytest.raises(ConfigurationError, match="metrics_registry must be a prometheus_client"):
        Consumer(target.bootstrap, group_id="g", topics=["t"], metrics_registry=5)  # type: ignore[arg-type]
    # Each was taken before: a float or huge budget (2**70 failed inside librdkafka as
    # "queued.max.messages.kbytes value 0"), a commit interval of 0 or less (a loop committing
    # without pause) or NaN, a NaN close timeout, a fractional or bool retry count, a
    # negative backoff, an invalid dead-letter topic name (every copy failed at run time),
    # config=5 (a bare TypeError).
    bad: list[dict[str, Any]] = [
        {"max_buffer_bytes": 1.5e6}, {"max_buffer_bytes": 2**70}, {"max_buffer_bytes": "32M"},
        {"commit_interval": 0}, {"commit_interval": -1}, {"commit_interval": float("nan")},
        {"commit_interval": float("inf")}, {"close_timeout": float("nan")},
        {"close_timeout": -1}, {"max_retries": 1.5}, {"max_retries": True},
        {"retry_backoff": -0.1}, {"retry_backoff_max": "1"}, {"dead_letter_topic": "bad name!"},
        {"dead_letter_topic": 5}, {"dead_letter_topic": ""}, {"config": 5},
        {"bootstrap_servers": ""}, {"bootstrap_servers": None}, {"bootstrap_servers": ","},
        # a bare TypeError/ValueError, and a dead-letter producer with no broker (at run time)
        {"dead_letter_options": 5}, {"dead_letter_options": "linger.ms=5"},
        {"dead_letter_options": {"bootstrap.servers": ""}},
    ]
    for options in bad:
        name = next(iter(options))
        options.setdefault("bootstrap_servers", target.bootstrap)
        with pytest.raises(ConfigurationError, match=name):
            Consumer(group_id="g", topics=["t"], metrics_registry=None, **options)
    # A blank group id aborted the process in librdkafka's consumer (SIGABRT); 5 was taken.
    for group in ("", " ", 5):
        with pytest.raises(ConfigurationError, match="group_id"):
            Consumer(target.bootstrap, group_id=group, topics=["t"], metrics_registry=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="group_id"):
        Consumer(target.bootstrap, topics=["t"], metrics_registry=None, config={"group.id": ""})
    # Both given: librdkafka took the setting's group while the toolkit took group_id's, and a
    # blank setting still aborted the process (the check read group_id alone). The "b" case
    # comes first: without the check it is made, and the test fails before the abort.
    for setting in ("b", "", " "):
        with pytest.raises(ConfigurationError, match="disagree"):
            Consumer(target.bootstrap, group_id="a", topics=["t"], metrics_registry=None,
                     config={"group.id": setting})
    agreeing = Consumer(target.bootstrap, group_id="a", topics=["t"], metrics_registry=None,
                        config={"group.id": "a"})
    assert agreeing.group_id == "a" and agreeing.config["group.id"] == "a"
    run(agreeing.close())
    # The overload policy: a negative max_age shed every record, NaN none, a predicate that
    # is not callable failed every record, Shed() sheds nothing, shed=60 failed at run time.
    from sluice.client import Shed

    policies: list[Any] = [
        lambda: Shed(max_age=-1), lambda: Shed(max_age=float("nan")), lambda: Shed(),
        lambda: Shed(predicate=5),  # type: ignore[arg-type]
        lambda: Shed(max_age=60, min_lag=-1),
        lambda: Shed(max_age=60, min_lag=2.5),  # type: ignore[arg-type]
    ]
    for policy in policies:
        with pytest.raises(ConfigurationError, match="Shed"):
            policy()
    with pytest.raises(ConfigurationError, match="shed=60"):
        Consumer(target.bootstrap, group_id="g", topics=["t"], metrics_registry=None,
                 shed=60)  # type: ignore[arg-type]

    async def bad_ordering() -> None:
        async with Consumer(target.bootstrap, group_id="g", topics=["t"],
                            metrics_registry=None) as c:
            async def handler(r: ConsumerRecord) -> None:
                pass

            with pytest.raises(ConfigurationError, match="ordering"):
                await c.run(handler, ordering="sorted")

    run(bad_ordering())


def test_partition_ordering_runs_one_record_of_a_partition_at_a_time(target: Target) -> None:
    topic, n = target.topic("c-part-order", 3)
    if n < 2:
        pytest.skip("needs several partitions; this broker auto-creates topics with one")
    produce(target, topic, [str(i).encode() for i in range(600)],
            keys=[f"k{i}".encode() for i in range(600)])

    async def main() -> tuple[list[Any], dict[int, list[int]], int]:
        busy: dict[int, int] = {}
        clashes: list[Any] = []
        seen: dict[int, list[int]] = {}
        peak = 0

        async def handler(r: ConsumerRecord) -> None:
            nonlocal peak
            if busy.get(r.partition):
                clashes.append(r.partition)
            busy[r.partition] = 1
            peak = max(peak, sum(busy.values()))
            await asyncio.sleep(random.random() * 0.001)
            busy[r.partition] = 0
            seen.setdefault(r.partition, []).append(r.offset)
            if sum(len(v) for v in seen.values()) == 600:
                c.stop()

        async with consumer(target, topic) as c:
            await c.run(handler, concurrency=8, ordering="partition")
        return clashes, seen, peak

    clashes, seen, peak = run(main())
    assert not clashes
    assert peak > 1  # partitions did run concurrently
    for offsets in seen.values():
        assert offsets == sorted(offsets) == list(range(len(offsets)))


def test_cancelling_run_commits_what_finished(target: Target) -> None:
    topic, _ = target.topic("c-cancel", 1)
    produce(target, topic, [str(i).encode() for i in range(200)])
    group = f"g-{topic}"

    async def main() -> int:
        done: list[int] = []

        async def handler(r: ConsumerRecord) -> None:
            await asyncio.sleep(0.001)
            done.append(r.offset)

        async with consumer(target, topic, group, commit_interval=60) as c:
            task = asyncio.create_task(c.run(handler))
            while len(done) < 50:
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert done == list(range(len(done)))
        return len(done)

    finished = run(main())
    assert committed(target, group, topic, 1) == {0: finished}


def test_a_waiting_lane_gets_a_worker_while_busy_lanes_keep_getting_records(
    target: Target,
) -> None:
    """More keys than workers: a key whose lane waits for a worker starts within a few records,
    not once another key's records run out. (A worker used to stay on its lane while the
    lane had records: with records of the busy keys still coming, the waiting key starved,
    its partition's watermark with it: nothing past it was committed, and after a rebalance
    or a restart the next owner processed everything after it again.)"""
    topic, _ = target.topic("c-fair", 1)
    total = 1500
    keys: list[bytes | None] = [f"k{i % 3}".encode() for i in range(total)]
    produce(target, topic, [str(i).encode() for i in range(total)], keys=keys, partition=0)

    async def main() -> list[bytes]:
        order: list[bytes] = []

        async def handler(r: ConsumerRecord) -> None:
            await asyncio.sleep(0)
            assert r.raw_key is not None
            order.append(r.raw_key)
            if len(order) == total:
                c.stop()

        async with consumer(target, topic) as c:
            await c.run(handler, concurrency=2, ordering="key")
        return order

    order = run(main())
    assert len(order) == total
    # The longest stretch of records done without a record of some key, from the start
    # (a key with records waiting for a worker all along): two workers, three keys, a worker
    # handing its lane over after a record while another waits: a few records.
    gaps = []
    for key in (b"k0", b"k1", b"k2"):
        at = [-1, *(i for i, k in enumerate(order) if k == key)]
        gaps.append(max(b - a for a, b in itertools.pairwise(at)))
    print(f"longest stretch without a key's record: {gaps}")
    assert max(gaps) < 20, gaps


@pytest.mark.parametrize("concurrency", [1, 16])
def test_a_cancelled_run_gives_back_what_it_had_not_finished(
    target: Target, concurrency: int
) -> None:
    """``run`` cancelled in the middle of a batch: the batch's records that had not started,
    and the one whose handler the cancel interrupted, go back to the consumer, so what reads
    it next (here ``getmany``) gets them. (They used to be dropped with the batch: the next
    reader went on after it, and a commit after that one would skip them for good.)"""
    topic, _ = target.topic("c-cancel-run", 1)
    total = 2000
    produce(target, topic, [str(i).encode() for i in range(total)],
            keys=[f"k{i % 50}".encode() for i in range(total)], partition=0)

    async def main() -> tuple[list[int], list[int]]:
        processed: list[int] = []
        ran = asyncio.Event()

        async def handler(r: ConsumerRecord) -> None:
            await asyncio.sleep(0.0005)
            processed.append(r.offset)
            if len(processed) == 100:
                ran.set()

        read: list[int] = []
        async with consumer(target, topic) as c:
            task = asyncio.create_task(c.run(handler, concurrency=concurrency))
            await ran.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert len(processed) < total
            while total - 1 not in read:  # one partition: getmany hands out in offset order
                read += [r.offset for r in await c.getmany(500, timeout=DEADLINE)]
        return processed, read

    processed, read = run(main())
    missing = sorted(set(range(total)) - set(processed) - set(read))
    assert not missing, f"{len(missing)} records never handed out again, from {missing[:3]}"
    assert len(read) == len(set(read))


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_run_cancelled_during_a_retry_backoff_gives_the_record_back(
    target: Target, concurrency: int
) -> None:
    """Cancelled while a failed record waits out its retry's backoff, ``run`` gives that
    record back before the position, as one cancelled in its first call. At concurrency 1 it
    was counted as used: the position stayed past it and the next ``getmany`` (and a commit
    of the positions) went on after it."""
    topic, _ = target.topic("c-cancel-backoff", 1)
    produce(target, topic, [str(i).encode() for i in range(20)], partition=0)

    async def main() -> tuple[int | None, list[int], dict[str, Any]]:
        async with consumer(target, topic, max_retries=3, retry_backoff=30) as c:
            failing = asyncio.Event()

            async def handler(r: ConsumerRecord) -> None:
                if r.offset == 5:
                    failing.set()
                    raise ValueError("cannot process yet")

            task = asyncio.create_task(c.run(handler, concurrency=concurrency,
                                             ordering="partition"))
            await asyncio.wait_for(failing.wait(), DEADLINE)
            await asyncio.sleep(0.05)  # into the backoff
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            position = c.position(topic, 0)
            again = await c.getmany(5, timeout=DEADLINE)
            return position, [r.offset for r in again], c.metrics()

    position, again, metrics = run(main())
    assert position == 5
    assert again[0] == 5
    assert (metrics["processed"], metrics["failed"]) == (5, 0)


@pytest.mark.parametrize(
    ("name", "value"),
    [("enable.auto.commit", True), ("enable.auto.commit", "true"), ("enable.auto.commit", 1),
     ("enable.partition.eof", True)],
)
def test_settings_the_toolkit_owns_are_refused_unless_they_agree(
    target: Target, name: str, value: object
) -> None:
    """librdkafka's auto-commit would commit records fetched and not processed: refused at
    construction, as keyword or in ``config``; the toolkit's own value is accepted."""
    from sluice.client import ConfigurationError

    given: dict[str, Any] = {name: value}
    with pytest.raises(ConfigurationError, match=name):
        Consumer(target.bootstrap, group_id="g", topics=["t"], metrics_registry=None, **given)
    with pytest.raises(ConfigurationError, match=name):
        Consumer(target.bootstrap, group_id="g", topics=["t"], metrics_registry=None,
                 config={name: value})
    for agreeing in (False, "false"):
        toolkits: dict[str, Any] = {name: agreeing}
        c = Consumer(target.bootstrap, group_id="g", topics=["t"], metrics_registry=None,
                     **toolkits)
        assert c.config[name] == agreeing
        run(c.close())


def test_one_topic_given_as_a_str_is_that_topic(target: Target) -> None:
    topic, _ = target.topic("c-str-topic")
    produce(target, topic, [f"s{i}".encode() for i in range(10)])

    async def main() -> list[bytes | None]:
        async with Consumer(target.bootstrap, group_id=f"g-{topic}", topics=topic,
                            metrics_registry=None,
                            **{"auto.offset.reset": "earliest", **target.client}) as c:
            got: list[ConsumerRecord] = []
            deadline = time.monotonic() + 20
            while len(got) < 10 and time.monotonic() < deadline:
                got += await c.getmany(100, 0.5)
            assert c._topics == [topic]
            return [r.raw_value for r in got]

    assert run(main()) == [f"s{i}".encode() for i in range(10)]


def test_one_partition_given_as_a_tuple_is_that_partition(target: Target) -> None:
    from sluice.client import ConfigurationError

    topic, _ = target.topic("c-tuple-assign")
    produce(target, topic, [f"t{i}".encode() for i in range(5)])

    async def main() -> list[bytes | None]:
        async with Consumer(target.bootstrap, assign=(topic, 0, 0), metrics_registry=None,
                            **target.client) as c:
            got: list[ConsumerRecord] = []
            deadline = time.monotonic() + 20
            while len(got) < 5 and time.monotonic() < deadline:
                got += await c.getmany(100, 0.5)
            return [r.raw_value for r in got]

    assert run(main()) == [f"t{i}".encode() for i in range(5)]
    for bad in ([(topic, "0")], [(topic,)], [topic], [(0, topic)]):
        with pytest.raises(ConfigurationError, match="assign"):
            Consumer(target.bootstrap, assign=bad, metrics_registry=None)  # type: ignore[arg-type]


def test_commit_refuses_offsets_that_are_not_offsets(target: Target) -> None:
    """``commit(offsets)`` with a negative offset, a bool, a str, a float, a malformed
    (topic, partition) or a non-mapping raises :class:`InvalidArgumentError` naming it and
    commits nothing of the call; numpy-style integers are taken. Before, librdkafka answered
    ``{tp: -1}`` with "nothing to commit" and commit() returned ``{}`` as if done (counted as a
    failed commit), and the rest failed with bare TypeError/ValueError from deep inside."""
    from sluice.client import InvalidArgumentError

    topic, _ = target.topic("c-commit-bad", 2)
    produce(target, topic, [b"x"] * 4, partition=0)
    bad: list[Any] = [
        {(topic, 0): -1},
        {(topic, 0): 2, (topic, 1): -1001},  # one bad entry: none of the call is committed
        {(topic, 0): True},
        {(topic, 0): "3"},
        {(topic, 0): 3.0},
        {(topic, -1): 3},
        {(topic, "0"): 3},
        {("", 0): 3},
        {topic: 3},
        [(topic, 0)],
    ]

    class Index:  # an integer type of another library (numpy's int64 is one)
        def __init__(self, n: int) -> None:
            self.n = n

        def __index__(self) -> int:
            return self.n

    async def main() -> None:
        async with consumer(target, topic) as c:
            got: list[ConsumerRecord] = []
            while len(got) < 4:  # in the group, with its partitions
                got += await c.getmany(100, 1.0)
            for offsets in bad:
                with pytest.raises(InvalidArgumentError, match=r"nothing was committed|mapping"):
                    await c.commit(offsets)
            assert c.metrics()["commit_failures"] == 0
            three = {(topic, Index(0)): Index(3)}
            assert await c.commit(three) == {(topic, 0): 3}  # type: ignore[arg-type]
            assert await c.commit({(topic, 0): 4}) == {(topic, 0): 4}

    run(main())
    assert committed(target, f"g-{topic}", topic, 2) == {0: 4, 1: -1001}


def test_calls_refuse_arguments_that_are_not_what_they_name(target: Target) -> None:
    """seek, pause, resume, getmany, run and ``assign=`` refuse a malformed (topic, partition),
    a negative offset, partition or count, a bool, and a handler that is not callable, at the
    call, with a typed error, and change nothing. Before, ``seek(t, 0, "x")`` never returned
    (its TypeError was only logged on the fetch thread), ``seek(t, 0, True)`` made the
    position True (committed as 1), ``pause("t")`` put ``"t"`` among the paused partitions,
    ``assign=[(t, -1)]`` consumed nothing, silently, and ``run(None)`` ran without a handler."""
    from sluice.client import ConfigurationError, InvalidArgumentError

    topic, _ = target.topic("c-bad-calls")
    produce(target, topic, [f"v{i}".encode() for i in range(5)])

    async def noop(r: ConsumerRecord) -> None:
        pass

    async def main() -> None:
        entries: list[Any] = [(topic, -1), (topic, 0, -5), ("", 0), (topic, "0"), (topic, True)]
        for entry in entries:
            with pytest.raises(ConfigurationError, match="is not"):
                Consumer(target.bootstrap, assign=[entry], metrics_registry=None, **target.client)
        async with consumer(target, topic) as c:
            got: list[ConsumerRecord] = []
            while len(got) < 5:
                got += await c.getmany(100, 1.0)
            calls: list[Any] = [
                lambda: c.seek(topic, 0, "x"),  # type: ignore[arg-type]
                lambda: c.seek(topic, 0, True),
                lambda: c.seek(topic, 0, -5),
                lambda: c.seek(topic, 0, ck.OFFSET_STORED),
                lambda: c.seek(topic, -1, 0),
                lambda: c.getmany(0, 0.1),
                lambda: c.getmany("5", 0.1),  # type: ignore[arg-type]
            ]
            for call in calls:
                with pytest.raises(InvalidArgumentError):
                    await asyncio.wait_for(call(), 5)
            bad_partitions: list[Any] = ["t", [(topic, 0)], (topic,), (topic, -1)]
            for bad in bad_partitions:
                with pytest.raises(InvalidArgumentError, match="nothing was paused"):
                    c.pause(bad)
                with pytest.raises(InvalidArgumentError, match="nothing was resumed"):
                    c.resume(bad)
            assert c.paused() == []
            assert c.position(topic, 0) == 5
            for kwargs in ({"concurrency": True}, {"concurrency": 2.5}, {"concurrency": 0}):
                with pytest.raises(ConfigurationError, match="concurrency"):
                    await c.run(noop, **kwargs)
            with pytest.raises(ConfigurationError, match="handler"):
                await c.run(None)  # type: ignore[arg-type]
            await c.seek(topic, 0, 3)  # the calls still work
            again: list[ConsumerRecord] = []
            while len(again) < 2:
                again += await c.getmany(100, 1.0)
            assert [r.offset for r in again] == [3, 4]
            assert await c.commit() == {(topic, 0): 5}

    run(main())


def test_manual_assignment_without_a_group_commits_nothing(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """No group_id: ``commit()`` refuses (there is no group to commit to), and ``run`` works
    without committing (no failed-commit warnings). With a group_id the assigned partition's
    offsets are committed to that group."""
    from sluice.client import ConsumerError

    topic, _ = target.topic("c-assign-commit")
    produce(target, topic, [f"a{i}".encode() for i in range(10)])
    caplog.set_level(logging.WARNING, logger="sluice.client")

    async def main() -> int:
        processed = 0
        async with Consumer(target.bootstrap, assign=[(topic, 0, 0)], commit_interval=0.05,
                            metrics_registry=None, **target.client) as c:

            async def handler(r: ConsumerRecord) -> None:
                nonlocal processed
                processed += 1
                if processed == 10:
                    c.stop()

            await c.run(handler)
            with pytest.raises(ConsumerError, match="no group"):
                await c.commit()
            with pytest.raises(ConsumerError, match="no group"):
                await c.commit({(topic, 0): 5})
        group = f"g-{topic}"
        async with Consumer(target.bootstrap, group_id=group, assign=[(topic, 0, 0)],
                            metrics_registry=None, **target.client) as c:
            got: list[ConsumerRecord] = []
            while len(got) < 10:
                got += await c.getmany(100, 1.0)
            assert await c.commit() == {(topic, 0): 10}
        return processed

    assert run(main()) == 10
    assert not [r.getMessage() for r in caplog.records if "commit" in r.getMessage()]
    assert committed(target, f"g-{topic}", topic, 1) == {0: 10}


@pytest.mark.parametrize("how", ["await", "wait_for"])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_handler_that_closes_its_consumer_does_not_wait_for_itself(
    target: Target, concurrency: int, how: str
) -> None:
    """``close()`` from a handler returns at once; ``run`` returns after the handlers in
    processing, commits what finished, and librdkafka is closed after it (waiting for ``run``
    inside the handler would wait for itself: it hung until the test's deadline). Also
    through ``asyncio.wait_for(consumer.close(), 5)``, which before Python 3.12 runs the
    close in a task of its own: that task was not known as the handler's, the close waited
    for run, which waited for the handler, until wait_for's TimeoutError (before the fix: 5 s
    later, the record failed then, and was not committed)."""
    topic, _ = target.topic("c-close-inside")
    produce(target, topic, [f"h{i}".encode() for i in range(50)])
    group = f"g-{topic}"

    async def main() -> int:
        c = consumer(target, topic, group)
        processed = 0

        async def handler(r: ConsumerRecord) -> None:
            nonlocal processed
            processed += 1
            if processed == 10:
                if how == "await":
                    await c.close()
                else:
                    await asyncio.wait_for(c.close(), 5)

        await asyncio.wait_for(c.run(handler, concurrency=concurrency), 20)
        while not c.closed:  # librdkafka closes on a thread of its own once run returned
            await asyncio.sleep(0.01)
        return processed

    processed = run(main())
    assert 10 <= processed <= 50
    assert committed(target, group, topic, 1) == {0: processed}


def test_a_record_stored_with_a_negative_timestamp_is_still_dead_lettered(
    target: Target,
) -> None:
    """Another producer stored a record with timestamp -5 (librdkafka sends it; the toolkit's
    producer refuses it): run's dead-letter copy of it is sent without the timestamp (stamped
    with the time of sending), not refused, so run does not stop."""
    if not target.timestamps:
        pytest.skip(f"Kafka {target.version} keeps no timestamps (0.10 and later)")
    topic, _ = target.topic("c-negative-ts")
    dlq, _ = target.topic("c-negative-ts-dlq")
    produce(target, topic, [b"old"], timestamp=-5)

    async def main() -> None:
        async with consumer(target, topic, dead_letter_topic=dlq, max_retries=0) as c:

            async def handler(r: ConsumerRecord) -> None:
                assert r.timestamp == -5
                c.stop()
                raise RuntimeError("no thanks")

            await c.run(handler)
            assert c.metrics()["dead_lettered"] == 1

    before = int(time.time() * 1000)
    run(main())
    [letter] = read_topic(target, dlq)
    assert letter.value == b"old" and letter.timestamp >= before


def test_a_consumer_belongs_to_the_loop_it_started_on(target: Target) -> None:
    """Used from another event loop (an asyncio.run of its own on another thread), a started
    consumer's reads, run, commit, seek and close raise WrongEventLoopError (asyncio's "bound
    to a different event loop", before); on its own loop it goes on."""
    from sluice.client import ConsumerError, WrongEventLoopError

    topic, _ = target.topic("c-wrong-loop")
    produce(target, topic, [b"a", b"b"])

    async def elsewhere(c: Consumer) -> None:
        async def handler(r: ConsumerRecord) -> None:
            pass

        for call in (
            lambda: c.getmany(10, 0.1),
            lambda: c.run(handler),
            lambda: c.commit({(topic, 0): 1}),
            lambda: c.seek(topic, 0, 0),
            lambda: c.close(),
        ):
            with pytest.raises(WrongEventLoopError, match="belongs to the loop") as info:
                await call()
            assert isinstance(info.value, ConsumerError)

    async def go() -> list[bytes | None]:
        async with consumer(target, topic) as c:
            got = await c.getmany(1, DEADLINE)
            await asyncio.to_thread(asyncio.run, elsewhere(c))
            while len(got) < 2:
                got += await c.getmany(10, 1.0)
            return [r.value for r in got]

    assert run(go()) == [b"a", b"b"]


def test_no_headers_sent_in_any_form_arrive_as_none(target: Target) -> None:
    """The toolkit's producer sends ``headers=None``, ``[]`` and ``{}`` alike (no headers:
    Kafka stores nothing to tell them apart); its consumer reads each as None, and headers
    that were sent as they were sent."""
    target.require_headers()
    from sluice.client import Producer, Record

    topic, _ = target.topic("c-no-headers")
    # any Mapping or sequence of pairs (the Headers type): a tuple, a read-only mapping were
    # refused (librdkafka takes a dict or a list only)
    sent: list[Any] = [None, [], {}, (), [("a", b"1")], {"b": b"2"}, (("c", b"3"),),
                       types.MappingProxyType({"d": b"4"})]

    async def main() -> list[Any]:
        async with Producer(target.bootstrap, metrics_registry=None,
                            **target.options()) as p:
            results = await p.send_batch(
                [Record(topic, b"%d" % i, headers=h) for i, h in enumerate(sent)])
            assert [r.error for r in results] == [None] * len(sent)
        async with consumer(target, topic) as c:
            got: list[ConsumerRecord] = []
            while len(got) < len(sent):
                got += await c.getmany(10, 1.0)
            return [r.headers for r in got]

    assert run(main()) == [None, None, None, None, [("a", b"1")], [("b", b"2")], [("c", b"3")],
                           [("d", b"4")]]


def test_a_bootstrap_list_under_librdkafkas_alias_reaches_the_dead_letter_producer(
    target: Target,
) -> None:
    """``metadata.broker.list`` (librdkafka's alias of ``bootstrap.servers``) and a trailing
    comma were refused by the construction check; and ``run``'s dead-letter producer took over
    ``bootstrap.servers`` alone, so a consumer given the alias could not write its copies."""
    topic, _ = target.topic("c-alias", 1)
    dlq = f"{topic}.dlq"
    target.make(dlq, 1)
    produce(target, topic, [b"0", b"1"])

    async def main() -> list[bytes]:
        seen: list[bytes] = []

        async def handler(r: ConsumerRecord) -> None:
            seen.append(r.value)
            if r.value == b"0":
                raise RuntimeError("no thanks")
            c.stop()

        async with Consumer(
            group_id=f"g-{topic}", topics=[topic], metrics_registry=None, max_retries=0,
            dead_letter_topic="{topic}.dlq", dead_letter_options=target.options(),
            config={"metadata.broker.list": f"{target.bootstrap},",
                    "auto.offset.reset": "earliest", **target.client},
        ) as c:
            await c.run(handler)
        return seen

    assert run(main()) == [b"0", b"1"]
    assert [s.value for s in read_topic(target, dlq)] == [b"0"]


def test_options_take_any_numeric_type_that_is_a_number(target: Target) -> None:
    """numpy's integers and floats, a Decimal, a Fraction: each worked as a count or a number
    of seconds before the construction checks, which refused all but ``int`` and ``float``
    (``max_buffer_bytes=np.int64(...)`` was "an integer, from 65536 to ..."). They are taken,
    as int or float, and a whole run works with them."""
    import decimal
    import fractions

    import numpy

    from sluice.client import Producer, Shed

    np: Any = numpy  # the annotations say int and float; these are what they take too
    five: Any = decimal.Decimal("5")

    topic, _ = target.topic("c-numeric")
    produce(target, topic, [b"0", b"1", b"2"])

    async def main() -> tuple[list[int], dict[tuple[str, int], int], float]:
        seen: list[int] = []

        async def handler(r: ConsumerRecord) -> None:
            seen.append(r.offset)
            if len(seen) == 3:
                c.stop()

        async with Producer(target.bootstrap, metrics_registry=None,
                            close_timeout=five, **target.options()) as p:
            closing = p.close_timeout
        async with consumer(
            target, topic, max_buffer_bytes=np.int64(64 * 1024 * 1024),
            commit_interval=decimal.Decimal("0.5"), close_timeout=np.float32(5),
            max_retries=np.int64(1), retry_backoff=fractions.Fraction(1, 1000),
            shed=Shed(max_age=np.int64(3600), min_lag=np.int64(0)),
        ) as c:
            await c.run(handler, concurrency=np.int64(2))
            return sorted(seen), await c.commit({(topic, 0): np.int64(3)}), closing

    seen, commit, closing = run(main())
    assert seen == [0, 1, 2]
    assert commit == {(topic, 0): 3}
    assert closing == 5.0
    assert committed(target, f"g-{topic}", topic, 1) == {0: 3}
    policy = Shed(max_age=np.float32(1.5), min_lag=np.int8(2))
    assert (type(policy.max_age), type(policy.min_lag)) == (float, int)


def test_the_largest_buffer_the_check_allows_is_one_librdkafka_takes(target: Target) -> None:
    """The check named 8 GiB as its top, which librdkafka refused (a quarter of it is past
    ``queued.max.messages.kbytes``'s 2097151 KiB); its top now makes a consumer, one byte more
    is the check's ConfigurationError naming the option."""
    from sluice.client import ConfigurationError
    from sluice.client.consumer import MAX_MAX_BUFFER_BYTES

    assert MAX_MAX_BUFFER_BYTES > 8 * 1024**3 - 1024**2  # still about 8 GiB
    c = Consumer(target.bootstrap, group_id="g", topics=["t"], metrics_registry=None,
                 max_buffer_bytes=MAX_MAX_BUFFER_BYTES)
    run(c.close())
    with pytest.raises(ConfigurationError, match=r"max_buffer_bytes=\d+: an integer"):
        Consumer(target.bootstrap, group_id="g", topics=["t"], metrics_registry=None,
                 max_buffer_bytes=MAX_MAX_BUFFER_BYTES + 1)


def test_assign_takes_any_integer_type_as_seek_and_commit_do(target: Target) -> None:
    """``assign=[(topic, np.int64(0), np.int64(1))]`` was refused as "not (topic, partition,
    offset)" while seek, pause and commit take numpy's integers; it reads from offset 1 now."""
    import numpy

    np: Any = numpy
    topic, _ = target.topic("c-assign-numpy", 1)
    produce(target, topic, [b"0", b"1", b"2"])

    async def main() -> list[int]:
        got: list[ConsumerRecord] = []
        async with Consumer(target.bootstrap, assign=[(topic, np.int64(0), np.int64(1))],
                            metrics_registry=None, **target.client) as c:
            while len(got) < 2:
                got += await c.getmany(10, 1.0)
            assert c.assignment() == [(topic, 0)]
        return [r.offset for r in got]

    assert run(main()) == [1, 2]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_plain_function_handler_and_callbacks_run_once_per_record(
    target: Target, concurrency: int
) -> None:
    """``run(handler)`` with a plain ``def`` or a lambda (the first thing a newcomer tries), and
    plain ``on_assign``/``on_revoke``: each record is handled once and counts as processed.
    Before, the handler's ``None`` was awaited: its work done, the record "failed" with
    TypeError, was handled again on each of ``max_retries`` retries, then stopped ``run`` (or
    went to the dead-letter topic); a plain ``on_assign`` was logged as an error."""
    topic, _ = target.topic(f"c-plain-handler-{concurrency}")
    produce(target, topic, [f"v{i}".encode() for i in range(10)], keys=[b"k"] * 10)
    group = f"g-{topic}"
    events: list[Any] = []
    from sluice.client import ConfigurationError

    with pytest.raises(ConfigurationError, match="on_assign=5"):
        consumer(target, topic, on_assign=5)

    async def generator(r: ConsumerRecord) -> Any:  # its body would never run: refused
        yield r

    with pytest.raises(ConfigurationError, match="generator function"):
        consumer(target, topic, on_revoke=generator)

    async def main() -> None:
        async with consumer(target, topic, group, retry_backoff=0.001,
                            on_assign=lambda tps: events.append(("assign", tps)),
                            on_revoke=lambda tps: events.append(("revoke", tps))) as c:
            seen: list[int] = []

            def handle(r: ConsumerRecord) -> None:
                seen.append(r.offset)
                if len(seen) == 10:
                    c.stop()

            with pytest.raises(ConfigurationError, match="generator function"):
                await c.run(generator)
            await c.run(handle, concurrency=concurrency)
            assert seen == list(range(10))
            m = c.metrics()
            assert (m["processed"], m["retries"], m["failed"]) == (10, 0, 0)
            # the accessors docs/client.md lists; high_watermark takes the partition either way
            assert c.assignment() == [(topic, 0)] and c.position(topic, 0) == 10
            assert c.high_watermark(topic, 0) == c.high_watermark((topic, 0)) == 10
            more: list[int] = []
            async with consumer(target, topic, f"{group}-lambda") as c2:

                def note(r: ConsumerRecord) -> None:
                    more.append(r.offset)
                    if len(more) == 10:
                        c2.stop()

                await c2.run(lambda r: note(r))
                assert more == list(range(10)) and c2.metrics()["retries"] == 0
        assert events[0] == ("assign", [(topic, 0)]) and events[-1] == ("revoke", [(topic, 0)])

    run(main())
    assert committed(target, group, topic, 1) == {0: 10}


def test_a_consumer_never_closed_says_so_at_exit(target: Target) -> None:
    """A script that reads without ``async with`` or ``close()`` leaves its consumer in the
    group until ``session.timeout.ms``: run again, it waited 45 s for its first record, with
    no word why. At exit it now logs one WARNING saying so; a closed one logs nothing."""
    topic, _ = target.topic("c-never-closed")
    produce(target, topic, [b"x"])
    script = (
        "import asyncio, sys\n"
        "from sluice.client import Consumer\n"
        "async def main():\n"
        "    c = Consumer(sys.argv[1], group_id=sys.argv[2], topics=[sys.argv[2]],\n"
        "                 metrics_registry=None, **{'auto.offset.reset': 'earliest'})\n"
        "    assert len(await c.getmany(timeout=30)) == 1\n"
        "    if sys.argv[3] == 'close':\n"
        "        await c.close()\n"
        "asyncio.run(main())\n"
    )
    out = stderr_by_ending(script, target.bootstrap, topic)
    assert f"sluice-consumer-1 was never closed: it stays a member of group '{topic}'" in out[
        "leave"]
    assert "never closed" not in out["close"]


def test_a_subscribed_topic_that_does_not_exist_is_logged_naming_the_consumer(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in ``topics`` is the first error a newcomer meets: one WARNING on
    ``sluice.client`` naming the consumer, the topic and the error, as the docs describe the
    error lines (it was ``consumer error: KafkaError{code=UNKNOWN_TOPIC_OR_PART,val=3,...}``)."""
    from sluice.testing import unique_topic_name

    topic = unique_topic_name("c-no-such-topic")

    async def main() -> None:
        async with consumer(target, topic, **{"client.id": "typo-reader"}) as c:
            deadline = time.monotonic() + DEADLINE / 4
            while "typo-reader:" not in caplog.text and time.monotonic() < deadline:
                assert await c.getmany(timeout=0.5) == []

    with caplog.at_level(logging.WARNING, logger="sluice.client"):
        run(main())
    (line,) = [r.getMessage() for r in caplog.records if topic in r.getMessage()]
    assert line.startswith("typo-reader: ") and line.endswith("(UNKNOWN_TOPIC_OR_PART)"), line


def test_an_async_shed_predicate_is_refused() -> None:
    """``Shed(predicate=...)`` is called without await: an ``async def`` predicate's coroutine
    is always true, and every record past ``min_lag`` was shed (counted, never processed)."""
    from sluice.client import ConfigurationError

    async def stale(r: ConsumerRecord) -> bool:
        return False

    with pytest.raises(ConfigurationError, match="is an async function"):
        Shed(predicate=stale)  # type: ignore[arg-type]
    assert Shed(predicate=lambda r: False).predicate is not None  # a plain one is taken



def test_async_serializers_and_deserializers_are_refused() -> None:
    """(De)serializers are called without await: an ``async def`` value_deserializer made
    every record's value a coroutine (the handler got it, "never awaited" warnings followed),
    and an ``async def`` value_serializer failed every record as not bytes."""
    from sluice.client import ConfigurationError, Producer

    async def decode(raw: bytes) -> Any:
        return json.loads(raw)

    async def encode(value: Any) -> bytes:
        return json.dumps(value).encode()

    given: dict[str, Any]
    for option in ("value_deserializer", "key_deserializer"):
        given = {option: decode}
        with pytest.raises(ConfigurationError, match=f"{option}=.* is an async function"):
            Consumer("127.0.0.1:9092", group_id="g", topics=["t"], metrics_registry=None,
                     **given)
    for option in ("value_serializer", "key_serializer"):
        given = {option: encode}
        with pytest.raises(ConfigurationError, match=f"{option}=.* is an async function"):
            Producer("127.0.0.1:9092", metrics_registry=None, **given)
    Consumer("127.0.0.1:9092", group_id="g", topics=["t"], metrics_registry=None,
             value_deserializer=json.loads)  # a plain one is taken
