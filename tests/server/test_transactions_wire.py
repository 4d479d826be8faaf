"""The partition side of transactions over the wire: a raw transactional producer's batches,
WriteTxnMarkers (v0 and v1) ending its transactions, read_committed Fetch (the LSO, the aborted
transactions, long polls a marker wakes), ListOffsets by isolation level, DescribeProducers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.testing import BrokerProcess, EmbeddedBroker
from tests.server.txn_producer import UNVERIFIED, RawTxnProducer, write_markers
from tests.server.wire import (
    WireClient,
    api_versions,
    create_topic,
    list_offsets_request,
    record_offsets,
    record_values,
)

READ_UNCOMMITTED, READ_COMMITTED = 0, 1


@pytest.fixture(scope="module")
def sluice_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker without transaction verification: the raw producer has no coordinator."""
    with EmbeddedBroker(tmp_path_factory.mktemp("sluice-raw-txn"), settings=UNVERIFIED) as broker:
        yield broker


@pytest.fixture
def sluice_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path / "sluice-data", tmp_path / "sluice-serve.log", settings=UNVERIFIED) as broker:
        broker.start()
        yield broker


def fetch(
    client: WireClient,
    topic: str,
    partition: int,
    offset: int,
    *,
    isolation: int,
    version: int = 12,
    max_wait_ms: int = 0,
    timeout: float | None = None,
) -> m.FetchPartitionData:
    request = m.FetchRequest(
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=isolation,
        topics=[
            m.FetchTopic(
                topic=topic,
                partitions=[m.FetchPartition(partition=partition, fetch_offset=offset, partition_max_bytes=1 << 20)],
            )
        ],
    )
    resp = client.call(ApiKey.FETCH, version, request, m.FetchResponse, timeout=timeout)
    (part,) = resp.responses[0].partitions
    return part


def aborted(part: m.FetchPartitionData) -> list[tuple[int, int]] | None:
    if part.aborted_transactions is None:
        return None
    return [(a.producer_id, a.first_offset) for a in part.aborted_transactions]


def list_offset(client: WireClient, topic: str, *, version: int, isolation: int, timestamp: int = -1) -> int:
    request = list_offsets_request(topic, 0, timestamp)
    request.isolation_level = isolation
    resp = client.call(ApiKey.LIST_OFFSETS, version, request, m.ListOffsetsResponse)
    (part,) = resp.topics[0].partitions
    assert part.error_code == 0
    return part.offset


def test_the_apis_are_advertised(sluice_broker: EmbeddedBroker) -> None:
    with WireClient.to(sluice_broker) as client:
        versions = {k.api_key: (k.min_version, k.max_version) for k in api_versions(client).api_keys}
    assert versions[ApiKey.WRITE_TXN_MARKERS] == (0, 1)
    assert versions[ApiKey.DESCRIBE_PRODUCERS] == (0, 0)


@pytest.mark.parametrize("markers_version", [0, 1])
@pytest.mark.parametrize("fetch_version", [4, 12])
def test_read_committed_sees_what_the_markers_decide(
    sluice_broker: EmbeddedBroker, markers_version: int, fetch_version: int
) -> None:
    topic = f"txn-wire-{markers_version}-{fetch_version}"
    with WireClient.to(sluice_broker) as client:
        create_topic(client, topic, partitions=2)
        producer = RawTxnProducer(client)
        pid = producer.producer_id
        assert producer.send(topic, 0, [b"aborted-0", b"aborted-1"]).base_offset == 0
        assert producer.send(topic, 1, [b"other-partition"]).error_code == 0
        # while the transaction is open: read_uncommitted sees it, read_committed stops before it
        part = fetch(client, topic, 0, 0, isolation=READ_COMMITTED, version=fetch_version)
        assert (part.error_code, part.high_watermark, part.last_stable_offset) == (0, 2, 0)
        assert record_values(part.records) == [] and aborted(part) == []
        part = fetch(client, topic, 0, 0, isolation=READ_UNCOMMITTED, version=fetch_version)
        assert record_values(part.records) == [b"aborted-0", b"aborted-1"]
        assert part.last_stable_offset == 0 and aborted(part) is None
        # abort it on both partitions
        codes = producer.end(False, [(topic, 0), (topic, 1)], version=markers_version)
        assert codes == {(topic, 0): 0, (topic, 1): 0}
        part = fetch(client, topic, 0, 0, isolation=READ_COMMITTED, version=fetch_version)
        assert (part.high_watermark, part.last_stable_offset) == (3, 3)
        assert aborted(part) == [(pid, 0)]  # the consumer drops pid's records from offset 0
        assert record_offsets(part.records) == [0, 1, 2]  # the records and the marker
        # a committed transaction follows: no aborted transaction in its range
        assert producer.send(topic, 0, [b"committed"]).base_offset == 3
        assert producer.end(True, [(topic, 0)], version=markers_version) == {(topic, 0): 0}
        part = fetch(client, topic, 0, 3, isolation=READ_COMMITTED, version=fetch_version)
        assert aborted(part) == [] and record_values(part.records)[0] == b"committed"
        assert part.last_stable_offset == part.high_watermark == 5


def test_write_txn_markers_answers_each_partition(sluice_broker: EmbeddedBroker) -> None:
    topic = "txn-wire-errors"
    with WireClient.to(sluice_broker) as client:
        create_topic(client, topic)
        producer = RawTxnProducer(client)
        producer.send(topic, 0, [b"x"])
        codes = producer.end(True, [(topic, 0), (topic, 7), ("no-such-topic", 0)], coordinator_epoch=3)
        assert codes == {
            (topic, 0): ErrorCode.NONE,
            (topic, 7): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            ("no-such-topic", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        }
        assert producer.end(True, [(topic, 0)], epoch=producer.epoch - 1) == {(topic, 0): ErrorCode.INVALID_PRODUCER_EPOCH}
        assert producer.end(True, [(topic, 0)], coordinator_epoch=2) == {
            (topic, 0): ErrorCode.TRANSACTION_COORDINATOR_FENCED
        }
        # a client still may not write a marker itself, through Produce
        from sluice.protocol.markers import build_marker

        request = m.ProduceRequest(
            acks=1,
            timeout_ms=10_000,
            topic_data=[
                m.ProduceTopicData(
                    name=topic,
                    partition_data=[
                        m.ProducePartitionData(
                            index=0,
                            records=bytearray(build_marker(producer.producer_id, 0, 9, True, timestamp=0)),
                        )
                    ],
                )
            ],
        )
        (part,) = client.call(ApiKey.PRODUCE, 9, request, m.ProduceResponse).responses[0].partition_responses
        assert part.error_code == ErrorCode.INVALID_RECORD


def test_a_non_transactional_batch_inside_a_transaction_is_invalid_txn_state(sluice_broker: EmbeddedBroker) -> None:
    topic = "txn-wire-state"
    with WireClient.to(sluice_broker) as client:
        create_topic(client, topic)
        producer = RawTxnProducer(client)
        assert producer.send(topic, 0, [b"in"]).error_code == 0
        assert producer.send(topic, 0, [b"out"], transactional=False).error_code == ErrorCode.INVALID_TXN_STATE
        producer.end(True, [(topic, 0)])
        assert producer.send(topic, 0, [b"out"], transactional=False).error_code == 0


def test_a_read_committed_long_poll_waits_for_the_lso_and_a_marker_wakes_it(sluice_broker: EmbeddedBroker) -> None:
    topic = "txn-wire-poll"
    with WireClient.to(sluice_broker) as client, WireClient.to(sluice_broker) as writer:
        create_topic(client, topic)
        producer = RawTxnProducer(writer)
        producer.send(topic, 0, [b"open"])
        # Transactional data moves the high watermark but not the LSO: a short long poll at the
        # LSO ends by its timeout with nothing.
        start = time.monotonic()
        part = fetch(client, topic, 0, 0, isolation=READ_COMMITTED, max_wait_ms=300)
        assert time.monotonic() - start >= 0.25
        assert record_values(part.records) == [] and part.last_stable_offset == 0
        # A long one is answered when the marker lands (not after its 60 s).
        server = sluice_broker.server
        assert server is not None and server.broker is not None
        waiters = server.broker.fetch_waiters
        request_sent = threading.Event()

        def end_later() -> None:
            request_sent.wait(10)
            deadline = time.monotonic() + 10
            while len(waiters) == 0:  # the fetch is parked: what follows wakes it
                assert time.monotonic() < deadline
                time.sleep(0.005)
            producer.send(topic, 0, [b"more"])  # wakes the poll, which finds nothing yet
            while len(waiters) == 0:  # parked again
                assert time.monotonic() < deadline
                time.sleep(0.005)
            producer.end(True, [(topic, 0)])

        thread = threading.Thread(target=end_later)
        thread.start()
        try:
            cid = client.send(
                ApiKey.FETCH,
                12,
                m.FetchRequest(
                    max_wait_ms=60_000,
                    min_bytes=1,
                    max_bytes=1 << 20,
                    isolation_level=READ_COMMITTED,
                    topics=[m.FetchTopic(topic=topic, partitions=[m.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20)])],
                ),
            )
            request_sent.set()
            resp = client.recv(ApiKey.FETCH, 12, cid, m.FetchResponse, timeout=30)
        finally:
            thread.join()
        (part,) = resp.responses[0].partitions
        assert record_values(part.records)[:2] == [b"open", b"more"]
        assert record_offsets(part.records) == [0, 1, 2]  # and the marker
        assert part.last_stable_offset == part.high_watermark == 3


def test_list_offsets_latest_is_the_lso_for_read_committed(sluice_broker: EmbeddedBroker) -> None:
    topic = "txn-wire-offsets"
    with WireClient.to(sluice_broker) as client:
        create_topic(client, topic)
        producer = RawTxnProducer(client)
        plain = RawTxnProducer(client)
        plain.send(topic, 0, [b"p0", b"p1"], transactional=False, timestamp=1_000)
        producer.send(topic, 0, [b"t"], timestamp=3_000)  # offset 2, open
        plain.send(topic, 0, [b"p2"], transactional=False, timestamp=2_000)  # 3
        for version in (2, 7):
            assert list_offset(client, topic, version=version, isolation=READ_COMMITTED) == 2
            assert list_offset(client, topic, version=version, isolation=READ_UNCOMMITTED) == 4
        assert list_offset(client, topic, version=1, isolation=READ_COMMITTED) == 4  # v1 has no isolation
        # by timestamp, an offset at or past the LSO is not answered to read_committed (Kafka)
        for isolation, want in ((READ_UNCOMMITTED, 2), (READ_COMMITTED, -1)):
            assert list_offset(client, topic, version=7, isolation=isolation, timestamp=1_500) == want
            assert list_offset(client, topic, version=7, isolation=isolation, timestamp=-3) == want
        assert list_offset(client, topic, version=7, isolation=READ_COMMITTED, timestamp=500) == 0
        producer.end(False, [(topic, 0)])
        assert list_offset(client, topic, version=7, isolation=READ_COMMITTED) == 5
        assert list_offset(client, topic, version=7, isolation=READ_COMMITTED, timestamp=1_500) == 2


def test_describe_producers_shows_open_transactions(sluice_broker: EmbeddedBroker) -> None:
    topic = "txn-wire-describe"
    with WireClient.to(sluice_broker) as client:
        create_topic(client, topic)
        first, second = RawTxnProducer(client), RawTxnProducer(client)
        first.send(topic, 0, [b"a", b"b"])  # 0-1
        second.send(topic, 0, [b"c"])  # 2
        write_markers(client, second.producer_id, second.epoch, True, [(topic, 0)], coordinator_epoch=4)

        def describe() -> m.DescribeProducersResponse:
            request = m.DescribeProducersRequest(
                topics=[
                    m.DescribeProducersTopicRequest(name=topic, partition_indexes=[0, 3]),
                    m.DescribeProducersTopicRequest(name="no-such-topic", partition_indexes=[0]),
                ]
            )
            return client.call(ApiKey.DESCRIBE_PRODUCERS, 0, request, m.DescribeProducersResponse)

        resp = describe()
        here, past, unknown = resp.topics[0].partitions[0], resp.topics[0].partitions[1], resp.topics[1].partitions[0]
        assert (past.error_code, unknown.error_code) == (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,) * 2
        assert here.error_code == 0
        states = {p.producer_id: p for p in here.active_producers}
        assert set(states) == {first.producer_id, second.producer_id}
        a, b = states[first.producer_id], states[second.producer_id]
        assert (a.producer_epoch, a.last_sequence, a.coordinator_epoch, a.current_txn_start_offset) == (0, 1, -1, 0)
        assert (b.producer_epoch, b.last_sequence, b.coordinator_epoch, b.current_txn_start_offset) == (0, 0, 4, -1)
        assert a.last_timestamp > 0
        first.end(False, [(topic, 0)])
        states = {p.producer_id: p for p in describe().topics[0].partitions[0].active_producers}
        assert states[first.producer_id].current_txn_start_offset == -1


@pytest.mark.parametrize("stop", ["clean", "sigkill"])
def test_an_open_transaction_survives_a_broker_restart(sluice_process: BrokerProcess, stop: str) -> None:
    """The LSO, the aborted transactions and DescribeProducers after a clean restart (state
    from the clean-shutdown file, the snapshot loaded at once) or a SIGKILL (recovery)."""
    topic = f"txn-restart-{stop}"
    with WireClient("127.0.0.1", sluice_process.port) as client:
        create_topic(client, topic)
        gone, left_open = RawTxnProducer(client), RawTxnProducer(client)
        gone.send(topic, 0, [b"aborted"])  # 0
        left_open.send(topic, 0, [b"open"])  # 1
        gone.end(False, [(topic, 0)])  # 2
        RawTxnProducer(client).send(topic, 0, [b"plain"], transactional=False)  # 3
    if stop == "clean":
        sluice_process.restart()
    else:
        sluice_process.kill()
        sluice_process.start()
    with WireClient("127.0.0.1", sluice_process.port) as client:
        part = fetch(client, topic, 0, 0, isolation=READ_COMMITTED)
        assert (part.high_watermark, part.last_stable_offset) == (4, 1)
        assert aborted(part) == [(gone.producer_id, 0)]
        assert record_offsets(part.records) == [0]
        request = m.DescribeProducersRequest(topics=[m.DescribeProducersTopicRequest(name=topic, partition_indexes=[0])])
        resp = client.call(ApiKey.DESCRIBE_PRODUCERS, 0, request, m.DescribeProducersResponse)
        starts = {p.producer_id: p.current_txn_start_offset for p in resp.topics[0].partitions[0].active_producers}
        assert starts[left_open.producer_id] == 1 and starts[gone.producer_id] == -1
        assert write_markers(client, left_open.producer_id, 0, True, [(topic, 0)]) == {(topic, 0): 0}
        part = fetch(client, topic, 0, 0, isolation=READ_COMMITTED)
        assert part.last_stable_offset == part.high_watermark == 5
        values = record_values(part.records)  # markers' record values included (offsets 2 and 4)
        assert (values[1], values[3]) == (b"open", b"plain")
