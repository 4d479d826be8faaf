"""Fixtures for the transaction coordinator's handler tests: a real Broker (the coordinator, the
group coordinator, real partition logs) in a temporary directory, on a private event loop,
driven by typed requests that go through the wire codec both ways at the version under test,
with an injected wall clock so that timeouts and expiry are driven by the test, and restarts
that are clean or that abandon every file as a SIGKILL would."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import crc32c
import pytest

from sluice.broker.broker import Broker, Client
from sluice.config import BrokerConfig
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, Request, RequestBody
from sluice.protocol import messages as m
from sluice.protocol.codec import (
    decode_request,
    decode_response,
    encode_request,
    encode_response_bytes,
)
from sluice.protocol.records import (
    ATTRIBUTES_OFFSET,
    CRC_OFFSET,
    TRANSACTIONAL_BIT,
    build_batch,
    decode_records,
    iter_stored_batches,
)

T = TypeVar("T")
E = ErrorCode


class WallClock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


class Marker(NamedTuple):
    offset: int
    producer_id: int
    producer_epoch: int
    commit: bool
    coordinator_epoch: int


class TxnHarness:
    """One broker on one loop; ``call`` sends a request through the codec at ``version``."""

    def __init__(self, data_dir: Path, settings: dict[str, str], clock: WallClock) -> None:
        self.loop = asyncio.new_event_loop()
        self.config = BrokerConfig.from_settings(settings, data_dir=data_dir)
        self.clock = clock
        self.broker = self._open()

    def _open(self) -> Broker:
        broker = Broker.open(self.config)
        broker.transactions.wall_clock = self.clock
        broker.groups.wall_clock = self.clock
        broker.groups.offsets.wall_clock = self.clock

        async def start() -> None:
            broker.start()

        self.loop.run_until_complete(start())
        return broker

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def call(self, api: ApiKey, version: int, body: RequestBody) -> Any:
        request = decode_request(encode_request(api, version, 1, "test", body)[4:])
        answer = self.run(self.broker.dispatch(request, Client("127.0.0.1")))
        assert answer is not None
        _, decoded = decode_response(
            encode_response_bytes(api, version, 1, answer)[4:], api, version
        )
        return decoded

    def dispatch(self, api: ApiKey, version: int, body: RequestBody) -> Awaitable[Any]:
        """The request's coroutine, not yet run (to interleave requests)."""
        return self.broker.dispatch(Request(api, version, 1, "test", body), Client("127.0.0.1"))

    def create_topic(self, name: str, partitions: int) -> None:
        self.run(self.broker.logs.create_topic(name, partitions))

    def restart(self, *, crash: bool = False) -> None:
        """Stop (cleanly, or by abandoning every file as SIGKILL would) and open the data again."""
        self.run(self._crash() if crash else self.broker.close())
        self.broker = self._open()

    async def _crash(self) -> None:
        b = self.broker
        # White-box: a crash stops the background work without the shutdown path.
        b.transactions._tasks.stop.set()
        for timer in (b.transactions._tasks.timer, b.groups._tasks.timer):
            if timer is not None:
                timer.cancel()
        for store in (b.transactions.store, b.groups.store):
            await store.partition.drain()  # acknowledged writes are in the file already
            store.partition.abandon()
        for p in b.logs.all_partitions():
            await p.drain()
            p.abandon()
        # The dead process's background tasks die with it (without their shutdown writes).
        housekeeping = b.logs._housekeeping
        if housekeeping is not None:
            housekeeping.cancel()
            await asyncio.gather(housekeeping, return_exceptions=True)
        await b.logs.cleaner.stop()
        b.logs.executor.shutdown(wait=True)

    def close(self) -> None:
        self.run(self.broker.close())
        self.loop.close()

    # -- reading what is stored ------------------------------------------------------------------

    def batches(self, topic: str, partition: int) -> list[tuple[int, int, bytes]]:
        """(attributes, producer epoch, raw batch) of every batch of a partition, in order."""
        plog = self.broker.logs.get_partition(topic, partition).log
        chunk = plog.read(plog.log_start_offset, 1 << 24)
        data = b"" if chunk is None else chunk.read()
        return [
            (h.attributes, h.producer_epoch, data[h.position : h.position + h.size])
            for h in iter_stored_batches(data)
        ]

    def markers(self, topic: str, partition: int) -> list[Marker]:
        """The control batches of a partition (its transaction markers), in order."""
        plog = self.broker.logs.get_partition(topic, partition).log
        chunk = plog.read(plog.log_start_offset, 1 << 24)
        data = b"" if chunk is None else chunk.read()
        found = []
        for h in iter_stored_batches(data):
            if h.is_control:
                (record,) = decode_records(data[h.position : h.position + h.size])
                assert record.key is not None and record.value is not None
                _, kind = struct.unpack(">hh", record.key)
                _, coordinator_epoch = struct.unpack(">hi", record.value)
                found.append(
                    Marker(
                        h.base_offset, h.producer_id, h.producer_epoch, kind == 1, coordinator_epoch
                    )
                )
        return found


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def make_harness(tmp_path: Path, clock: WallClock) -> Iterator[Callable[..., TxnHarness]]:
    made: list[TxnHarness] = []

    def make(**settings: str) -> TxnHarness:
        h = TxnHarness(
            tmp_path / f"data-{len(made)}",
            {k.replace("_", "."): v for k, v in settings.items()},
            clock,
        )
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def h(make_harness: Callable[..., TxnHarness]) -> TxnHarness:
    harness = make_harness()
    harness.create_topic("t", 3)
    harness.create_topic("u", 1)
    return harness


# -- requests ---------------------------------------------------------------------------------------


def init(
    h: TxnHarness,
    txn: str | None = "app",
    *,
    version: int = 4,
    timeout_ms: int = 60_000,
    pid: int = -1,
    epoch: int = -1,
) -> m.InitProducerIdResponse:
    body = m.InitProducerIdRequest(
        transactional_id=txn,
        transaction_timeout_ms=timeout_ms,
        producer_id=pid,
        producer_epoch=epoch,
    )
    resp: m.InitProducerIdResponse = h.call(ApiKey.INIT_PRODUCER_ID, version, body)
    return resp


def add_partitions(
    h: TxnHarness,
    pid: int,
    epoch: int,
    partitions: dict[str, list[int]],
    *,
    txn: str = "app",
    version: int = 3,
) -> dict[tuple[str, int], int]:
    body = m.AddPartitionsToTxnRequest(
        v3_and_below_transactional_id=txn,
        v3_and_below_producer_id=pid,
        v3_and_below_producer_epoch=epoch,
        v3_and_below_topics=[
            m.AddPartitionsToTxnTopic(name=t, partitions=ps) for t, ps in partitions.items()
        ],
    )
    resp: m.AddPartitionsToTxnResponse = h.call(ApiKey.ADD_PARTITIONS_TO_TXN, version, body)
    return {
        (t.name, p.partition_index): p.partition_error_code
        for t in resp.results_by_topic_v3_and_below
        for p in t.results_by_partition
    }


def add_offsets(
    h: TxnHarness, pid: int, epoch: int, group: str, *, txn: str = "app", version: int = 3
) -> int:
    body = m.AddOffsetsToTxnRequest(
        transactional_id=txn, producer_id=pid, producer_epoch=epoch, group_id=group
    )
    resp: m.AddOffsetsToTxnResponse = h.call(ApiKey.ADD_OFFSETS_TO_TXN, version, body)
    return resp.error_code


def end(
    h: TxnHarness, pid: int, epoch: int, commit: bool, *, txn: str = "app", version: int = 3
) -> int:
    body = m.EndTxnRequest(
        transactional_id=txn, producer_id=pid, producer_epoch=epoch, committed=commit
    )
    resp: m.EndTxnResponse = h.call(ApiKey.END_TXN, version, body)
    return resp.error_code


def txn_offset_commit(
    h: TxnHarness,
    pid: int,
    epoch: int,
    group: str,
    offsets: dict[tuple[str, int], int],
    *,
    txn: str = "app",
    version: int = 3,
    generation: int = -1,
    member: str = "",
    instance: str | None = None,
) -> dict[tuple[str, int], int]:
    topics: dict[str, list[m.TxnOffsetCommitRequestPartition]] = {}
    for (t, p), off in offsets.items():
        topics.setdefault(t, []).append(
            m.TxnOffsetCommitRequestPartition(
                partition_index=p, committed_offset=off, committed_metadata="txn"
            )
        )
    body = m.TxnOffsetCommitRequest(
        transactional_id=txn,
        group_id=group,
        producer_id=pid,
        producer_epoch=epoch,
        generation_id=generation,
        member_id=member,
        group_instance_id=instance,
        topics=[m.TxnOffsetCommitRequestTopic(name=t, partitions=ps) for t, ps in topics.items()],
    )
    resp: m.TxnOffsetCommitResponse = h.call(ApiKey.TXN_OFFSET_COMMIT, version, body)
    return {(t.name, p.partition_index): p.error_code for t in resp.topics for p in t.partitions}


def offset_fetch(
    h: TxnHarness,
    group: str,
    tps: list[tuple[str, int]],
    *,
    version: int = 7,
    require_stable: bool = True,
) -> dict[tuple[str, int], tuple[int, int]]:
    """(committed offset, error) per partition."""
    topics: dict[str, list[int]] = {}
    for t, p in tps:
        topics.setdefault(t, []).append(p)
    body = m.OffsetFetchRequest(
        group_id=group,
        topics=[
            m.OffsetFetchRequestTopic(name=t, partition_indexes=ps) for t, ps in topics.items()
        ],
        groups=[
            m.OffsetFetchRequestGroup(
                group_id=group,
                topics=[
                    m.OffsetFetchRequestTopic(name=t, partition_indexes=ps)
                    for t, ps in topics.items()
                ],
            )
        ],
        require_stable=require_stable,
    )
    resp: m.OffsetFetchResponse = h.call(ApiKey.OFFSET_FETCH, version, body)
    found = resp.groups[0].topics if version >= 8 else resp.topics
    return {
        (t.name, p.partition_index): (p.committed_offset, p.error_code)
        for t in found
        for p in t.partitions
    }


def commit_offsets(h: TxnHarness, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """A plain (non-transactional) OffsetCommit of a simple group."""
    topics: dict[str, list[m.OffsetCommitRequestPartition]] = {}
    for (t, p), off in offsets.items():
        topics.setdefault(t, []).append(
            m.OffsetCommitRequestPartition(partition_index=p, committed_offset=off)
        )
    body = m.OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=-1,
        member_id="",
        topics=[m.OffsetCommitRequestTopic(name=t, partitions=ps) for t, ps in topics.items()],
    )
    resp: m.OffsetCommitResponse = h.call(ApiKey.OFFSET_COMMIT, 8, body)
    assert {p.error_code for t in resp.topics for p in t.partitions} == {E.NONE}


def describe(h: TxnHarness, *txns: str) -> list[m.DescribedTransactionState]:
    resp: m.DescribeTransactionsResponse = h.call(
        ApiKey.DESCRIBE_TRANSACTIONS, 0, m.DescribeTransactionsRequest(transactional_ids=list(txns))
    )
    return resp.transaction_states


def transactional_batch(pid: int, epoch: int, seq: int, *values: bytes) -> bytes:
    """A batch as a transactional producer sends it (attributes bit 4 set)."""
    batch = bytearray(
        build_batch(
            [(None, v) for v in values], producer_id=pid, producer_epoch=epoch, base_sequence=seq
        )
    )
    struct.pack_into(">h", batch, ATTRIBUTES_OFFSET, TRANSACTIONAL_BIT)
    struct.pack_into(">I", batch, CRC_OFFSET, crc32c.crc32c(batch[ATTRIBUTES_OFFSET:]))
    return bytes(batch)


def produce(
    h: TxnHarness, topic: str, partition: int, batch: bytes, *, txn: str | None = "app"
) -> int:
    body = m.ProduceRequest(
        transactional_id=txn,
        acks=-1,
        timeout_ms=30_000,
        topic_data=[
            m.ProduceTopicData(
                name=topic,
                partition_data=[m.ProducePartitionData(index=partition, records=bytearray(batch))],
            )
        ],
    )
    resp = h.run(
        h.broker.dispatch(Request(ApiKey.PRODUCE, 9, 1, "test", body), Client("127.0.0.1"))
    )
    assert isinstance(resp, m.ProduceResponse)
    return resp.responses[0].partition_responses[0].error_code
