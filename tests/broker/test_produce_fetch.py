"""Produce and Fetch semantics at the handler level: acks, errors, KIP-74 limits, long polls."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from sluice.broker.broker import INLINE_ELEMENTS, Client
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, Request
from sluice.protocol import messages as m
from sluice.protocol.codec import encode_request
from sluice.protocol.records import decode_records, iter_stored_batches
from tests.broker.conftest import BrokerHarness, batch, value


def fetch_request(
    topic: str,
    partitions: dict[int, int],
    *,
    max_bytes: int = 1 << 20,
    partition_max: int = 1 << 20,
    min_bytes: int = 1,
    max_wait_ms: int = 0,
) -> m.FetchRequest:
    return m.FetchRequest(
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        topics=[
            m.FetchTopic(
                topic=topic,
                partitions=[
                    m.FetchPartition(partition=p, fetch_offset=o, partition_max_bytes=partition_max)
                    for p, o in partitions.items()
                ],
            )
        ],
        forgotten_topics_data=[],
    )


def values(records: object) -> list[bytes | None]:
    assert isinstance(records, bytes)
    out: list[bytes | None] = []
    for h in iter_stored_batches(records):
        if h.position + h.size <= len(records):
            out.extend(r.value for r in decode_records(records[h.position : h.position + h.size]))
    return out


def test_produce_assigns_offsets_and_fetch_returns_them(harness: Callable[..., BrokerHarness]) -> None:
    h = harness(num_partitions="2")
    h.run(h.broker.logs.create_topic("t", 2))
    first = h.produce("t", 1, batch(3, "a"))
    second = h.produce("t", 1, batch(2, "b"))
    assert first is not None and second is not None
    assert first.responses[0].partition_responses[0].base_offset == 0
    assert second.responses[0].partition_responses[0].base_offset == 3
    resp: m.FetchResponse = h.call(ApiKey.FETCH, 12, fetch_request("t", {1: 0, 0: 0}))
    by_partition = {p.partition_index: p for p in resp.responses[0].partitions}
    assert by_partition[1].high_watermark == 5
    assert values(by_partition[1].records) == [
        value("a", 0), value("a", 1), value("a", 2), value("b", 0), value("b", 1)
    ]
    assert by_partition[0].records == b"" and by_partition[0].error_code == 0


def test_acks_zero_answers_nothing_and_stores(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    assert h.produce("t", 0, batch(4, "z"), acks=0) is None
    # The writer is FIFO: once a later acks=1 append is acknowledged, the first is written too.
    later = h.produce("t", 0, batch(1, "w"), acks=1)
    assert later is not None and later.responses[0].partition_responses[0].base_offset == 4
    assert h.broker.logs.get_log("t", 0).log_end_offset == 5


def test_acks_all_answers_request_timed_out_but_keeps_the_append(
    harness: Callable[..., BrokerHarness],
) -> None:
    """acks=all waits for the topic's durability (here fsynced) for at most timeout_ms; an fsync
    held past 5 ms gets REQUEST_TIMED_OUT, and the append still lands."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1, {"sluice.append.ack": "fsynced"}))
    h.produce("t", 0, batch(1, "first"), acks=-1)  # creates the segment file
    segment = h.broker.logs.get_log("t", 0).active_segment
    release = threading.Event()
    real_fsync = segment.fsync

    def held_fsync() -> None:
        release.wait(10)
        real_fsync()

    segment.fsync = held_fsync  # type: ignore[method-assign]
    try:
        late = h.produce("t", 0, batch(3, "a"), acks=-1, timeout_ms=5)
    finally:
        release.set()
    assert late is not None
    part = late.responses[0].partition_responses[0]
    assert (part.error_code, part.base_offset) == (ErrorCode.REQUEST_TIMED_OUT, -1)
    in_time = h.produce("t", 0, batch(2, "b"), acks=-1)
    assert in_time is not None
    part = in_time.responses[0].partition_responses[0]
    assert (part.error_code, part.base_offset) == (ErrorCode.NONE, 4)
    resp: m.FetchResponse = h.call(ApiKey.FETCH, 12, fetch_request("t", {0: 0}))
    assert values(resp.responses[0].partitions[0].records) == [
        value("first", 0), value("a", 0), value("a", 1), value("a", 2), value("b", 0), value("b", 1)
    ]


@pytest.mark.parametrize("timeout_ms", [0, -1])
def test_acks_all_without_a_timeout_answers_once_durable(
    harness: Callable[..., BrokerHarness], timeout_ms: int
) -> None:
    """A timeout of 0 or less does not mean "already too late": Kafka's single-replica leader
    answers such a request with success once it has appended; sluice answers once the append
    has the topic's durability."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1, {"sluice.append.ack": "fsynced"}))
    for i in range(3):
        resp = h.produce("t", 0, batch(2, f"v{i}"), acks=-1, timeout_ms=timeout_ms)
        assert resp is not None
        part = resp.responses[0].partition_responses[0]
        assert (part.error_code, part.base_offset) == (ErrorCode.NONE, 2 * i)
    plog = h.broker.logs.get_log("t", 0)
    assert plog.flushed_offset == plog.log_end_offset == 6


def test_produce_errors_are_per_partition(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    bad = bytearray(batch(2, "x"))
    bad[-1] ^= 0xFF  # CRC no longer matches
    corrupt = h.produce("t", 0, bytes(bad))
    unknown = h.produce("t", 7, batch(1, "x"))
    invalid_acks = h.produce("t", 0, batch(1, "x"), acks=5)
    assert corrupt is not None and unknown is not None and invalid_acks is not None
    assert corrupt.responses[0].partition_responses[0].error_code == ErrorCode.CORRUPT_MESSAGE
    assert unknown.responses[0].partition_responses[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert invalid_acks.responses[0].partition_responses[0].error_code == ErrorCode.INVALID_REQUIRED_ACKS
    assert h.broker.logs.get_log("t", 0).log_end_offset == 0


def test_fetch_limits_keep_the_first_batch_whole(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 3))
    for p in range(3):
        h.produce("t", p, batch(5, f"p{p}", size=200))  # one ~1.1 KB batch
        h.produce("t", p, batch(5, f"q{p}", size=200))
    batch_size = len(batch(5, "p0", size=200))
    # Limits smaller than one batch: the first partition still gets its first batch whole, the
    # other partitions wait for the next fetch.
    tiny = h.call(ApiKey.FETCH, 12, fetch_request("t", {0: 0, 1: 0, 2: 0}, max_bytes=10, partition_max=10))
    parts = tiny.responses[0].partitions
    assert len(parts[0].records) == batch_size
    assert [len(p.records) for p in parts[1:]] == [0, 0]
    # A response limit of 1.5 batches: partition 0 gets a batch and a half (a partial tail is
    # allowed), the rest nothing.
    half = h.call(ApiKey.FETCH, 12, fetch_request("t", {0: 0, 1: 0, 2: 0}, max_bytes=batch_size * 3 // 2))
    sizes = [len(p.records) for p in half.responses[0].partitions]
    assert sizes == [batch_size * 3 // 2, 0, 0]
    assert len(values(half.responses[0].partitions[0].records)) == 5
    # Partition limit of one batch: every partition gets exactly its first batch.
    per = h.call(ApiKey.FETCH, 12, fetch_request("t", {0: 0, 1: 0, 2: 0}, partition_max=batch_size))
    assert [len(p.records) for p in per.responses[0].partitions] == [batch_size] * 3


def test_fetch_out_of_range_and_unknown(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    h.produce("t", 0, batch(2, "a"))
    resp = h.call(ApiKey.FETCH, 12, fetch_request("t", {0: 3, 5: 0}, max_wait_ms=5000))
    codes = {p.partition_index: p.error_code for p in resp.responses[0].partitions}
    assert codes == {0: ErrorCode.OFFSET_OUT_OF_RANGE, 5: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    # A failed partition carries an empty record set, not a null one: librdkafka cannot parse
    # a null set and refetches in a tight loop instead of reporting the error.
    assert {p.partition_index: p.records for p in resp.responses[0].partitions} == {0: b"", 5: b""}


def test_an_acknowledged_append_whose_topic_was_deleted_since_is_still_answered(
    harness: Callable[..., BrokerHarness],
) -> None:
    """One request, two topics, acks=all: "slow" waits for an fsync, "gone" is written at once
    and then deleted by another client before the response is built. The response must still
    be built, with "gone"'s offset (dropping the connection would lose both answers). The fsync
    of "slow" is held until the deletion is done."""
    h = harness()
    h.run(h.broker.logs.create_topic("slow", 1, {"sluice.append.ack": "fsynced"}))
    h.run(h.broker.logs.create_topic("gone", 1))
    for name in ("slow", "gone"):  # the first append creates the segment file (in a thread)
        h.produce(name, 0, batch(1, name))
    release = threading.Event()
    slow_segment = h.broker.logs.get_log("slow", 0).active_segment
    real_fsync = slow_segment.fsync

    def held_fsync() -> None:
        release.wait(10)
        real_fsync()

    slow_segment.fsync = held_fsync  # type: ignore[method-assign]

    async def race() -> m.ProduceResponse:
        body = m.ProduceRequest(
            acks=-1,
            timeout_ms=30_000,
            topic_data=[
                m.ProduceTopicData(
                    name=name,
                    partition_data=[m.ProducePartitionData(index=0, records=bytearray(batch(2, name)))],
                )
                for name in ("slow", "gone")
            ],
        )
        request = Request(ApiKey.PRODUCE, 9, 1, "t", body)
        pending = asyncio.ensure_future(h.broker.dispatch(request, Client("127.0.0.1")))
        gone = h.broker.logs.get_log("gone", 0)
        for _ in range(1000):  # "gone" is written on the loop; "slow" waits for its fsync
            if gone.log_end_offset == 3:
                break
            await asyncio.sleep(0)
        assert gone.log_end_offset == 3 and not pending.done()
        await h.broker.logs.delete_topic("gone")
        assert not pending.done()
        release.set()
        result = await pending
        assert isinstance(result, m.ProduceResponse)
        return result

    try:
        resp = h.run(race())
    finally:
        release.set()
    answers = {
        t.name: [(p.error_code, p.base_offset) for p in t.partition_responses] for t in resp.responses
    }
    assert answers == {"slow": [(ErrorCode.NONE, 1)], "gone": [(ErrorCode.NONE, 1)]}


def test_long_poll_wakes_when_data_arrives(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    from sluice.broker import fetch

    async def scenario() -> tuple[m.FetchResponse, float]:
        started = time.monotonic()
        request = fetch_request("t", {0: 0}, max_wait_ms=30_000)
        from sluice.protocol import Request

        poll = asyncio.ensure_future(fetch.fetch(h.broker, Request(ApiKey.FETCH, 12, 1, "c", request)))
        await asyncio.sleep(0)
        assert not poll.done()  # nothing to read: it waits
        await h.broker.logs.get_partition("t", 0).append(bytearray(batch(1, "late")))
        response = await poll
        return response, time.monotonic() - started

    response, elapsed = h.run(scenario())
    assert values(response.responses[0].partitions[0].records) == [value("late", 0)]
    assert elapsed < 30  # woken by the data, not by max_wait_ms


def test_long_poll_on_a_deleted_topic_answers_at_once(harness: Callable[..., BrokerHarness]) -> None:
    """A long poll parked on a topic that is deleted (and recreated under the same name) is
    answered when the deletion happens, with UNKNOWN_TOPIC_OR_PARTITION, as Kafka completes the
    delayed fetches of a partition it stops; it used to listen to the old log only, so neither
    the deletion nor the new topic's data woke it before its max_wait_ms."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    h.produce("t", 0, batch(2, "old"))
    from sluice.broker import fetch

    async def scenario() -> m.FetchResponse:
        request = fetch_request("t", {0: 2}, max_wait_ms=60_000)
        poll = asyncio.ensure_future(fetch.fetch(h.broker, Request(ApiKey.FETCH, 12, 1, "c", request)))
        await asyncio.sleep(0)
        assert not poll.done()  # at the log end: it is parked
        await h.broker.logs.delete_topic("t")
        await h.broker.logs.create_topic("t", 1)
        for i in range(3):
            await h.broker.logs.get_partition("t", 0).append(bytearray(batch(1, f"new{i}")))
        # Generous, but far below max_wait_ms: only the wake-up can meet it.
        return await asyncio.wait_for(poll, timeout=10)

    (part,) = h.run(scenario()).responses[0].partitions
    assert (part.error_code, part.records) == (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, b"")
    # A fetch after the recreation reads the new topic's records, never the old one's.
    resp = h.call(ApiKey.FETCH, 12, fetch_request("t", {0: 0}))
    assert values(resp.responses[0].partitions[0].records) == [value(f"new{i}", 0) for i in range(3)]


def test_long_poll_waits_for_min_bytes_then_times_out(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    h.produce("t", 0, batch(1, "a"))
    resp = h.call(ApiKey.FETCH, 12, fetch_request("t", {0: 0}, min_bytes=1 << 20, max_wait_ms=50))
    # min_bytes never reached: after max_wait_ms it answers with what there is.
    assert values(resp.responses[0].partitions[0].records) == [value("a", 0)]


def test_shutdown_answers_long_polls(harness: Callable[..., BrokerHarness]) -> None:
    """A parked long poll is answered when shutdown begins, not when its max_wait_ms runs out
    (an unwoken poll would answer the same empty records, but only after 60 s)."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    from sluice.broker import fetch
    from sluice.protocol import Request

    async def scenario() -> m.FetchResponse:
        request = fetch_request("t", {0: 0}, max_wait_ms=60_000)
        poll = asyncio.ensure_future(fetch.fetch(h.broker, Request(ApiKey.FETCH, 12, 1, "c", request)))
        await asyncio.sleep(0)
        assert not poll.done()  # nothing to read: it is parked
        h.broker.begin_shutdown()  # what the server calls first on SIGTERM
        # Generous, but far below max_wait_ms: only the wake-up can meet it.
        return await asyncio.wait_for(poll, timeout=10)

    response = h.run(scenario())
    assert response.responses[0].partitions[0].records == b""


def test_records_a_fetch_of_many_partitions_read_stay_counted_until_encoded(
    harness: Callable[..., BrokerHarness],
) -> None:
    """A Fetch naming more than INLINE_ELEMENTS partitions reads a turn at a time and its
    answer is encoded on the codec thread: the records it has read count as unsent answers
    (what bounds other fetches' reads, sluice.unsent.response.max.bytes) from their read until
    the answer is encoded, at every await in between. They were uncounted between turns and
    while the answer waited for the codec thread, so other fetches read past the bound."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    for i in range(4):  # past the reader's inline bytes: the read is an await of its own
        assert h.produce("t", 0, batch(200, f"b{i}", size=500)) is not None
    read = len(h.broker.logs.get_log("t", 0).read_bytes(0, 1 << 20))
    assert read > h.broker.logs.reader.inline_max_bytes
    body = fetch_request("t", {0: 0}, max_bytes=read + 100)
    body.topics[0].partitions *= 2 * INLINE_ELEMENTS  # the first reads all; none fits after it
    frame = encode_request(ApiKey.FETCH, 11, 1, "test", body)[4:]

    async def handled_while_watching() -> tuple[list[int], object]:
        seen: list[int] = []
        handling = True

        async def watch() -> None:
            while handling:
                seen.append(h.broker.unsent.held)
                await asyncio.sleep(0)

        watcher = asyncio.ensure_future(watch())
        try:
            answer = await h.broker.handle(frame, Client("127.0.0.1"))
        finally:
            handling = False
            await watcher
        return seen, answer

    seen, answer = h.run(handled_while_watching())
    assert answer is not None
    counted = [held for held in seen if held]
    assert counted, "the watcher never saw the records counted"
    first = seen.index(counted[0])
    assert min(seen[first:]) >= read  # counted from the read to the encoded answer
    assert h.broker.unsent.held == 0  # and handed on: the connection counts what it holds
