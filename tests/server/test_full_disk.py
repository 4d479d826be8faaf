"""A full disk, for real: the data directory on a small tmpfs filled to the last byte.

The broker stays up, keeps every acknowledged record, answers every write with a Kafka error code
(KAFKA_STORAGE_ERROR) instead of dropping the connection, says so once in its log when the disk
fills and once when space comes back, stops cleanly on SIGTERM, and starts (and serves reads)
on the full disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.records import build_batch
from sluice.testing import BrokerProcess
from tests.disks import fill, small_tmpfs
from tests.server.wire import (
    ConnectionClosed,
    WireClient,
    batch,
    create_topic,
    create_topics,
    fetch_all_values,
    list_offset,
    metadata,
    produce,
)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk") as mount_point:
        yield mount_point


def test_a_full_disk_refuses_writes_with_error_codes_and_keeps_everything(
    small_disk: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "serve.log"
    data = small_disk / "data"
    acknowledged: list[bytes] = []
    with BrokerProcess(data, log_path, settings={"auto.create.topics.enable": "true"}) as broker:
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            create_topic(client, "t")
            assert produce(client, "t", 0, batch([b"first"]), acks=-1).error_code == 0
            acknowledged.append(b"first")
            fill(small_disk, leave=256 * 1024)
            refused = None
            for i in range(1000):
                value = f"r{i}-".encode() + b"x" * 16_000
                part = produce(client, "t", 0, batch([value]), acks=-1)
                if part.error_code:
                    refused = part
                    break
                acknowledged.append(value)
            assert refused is not None, "the disk never filled"
            assert refused.error_code == ErrorCode.KAFKA_STORAGE_ERROR
            fill(small_disk, leave=0, name="last-pages")
            # Topic changes answer an error code, they do not drop the connection.
            assert create_topics(client, ["u"], partitions=3) == {"u": ErrorCode.KAFKA_STORAGE_ERROR}
            auto = metadata(client, ["auto"], auto_create=True)
            assert [(t.name, t.error_code) for t in auto.topics] == [
                ("auto", ErrorCode.KAFKA_STORAGE_ERROR)
            ]
            big = b"still full " * 2000
            assert produce(client, "t", 0, batch([big]), acks=1).error_code == (
                ErrorCode.KAFKA_STORAGE_ERROR
            )
            # Reads go on, and hold exactly what was acknowledged.
            assert fetch_all_values(client, "t", 0) == acknowledged
            # Space comes back: writes work again, and the log says so.
            (small_disk / "last-pages").unlink()
            assert produce(client, "t", 0, batch([b"after"]), acks=-1).error_code == 0
            acknowledged.append(b"after")
            fill(small_disk, leave=0, name="last-pages")
        assert broker.stop() == 0
        output = log_path.read_text()
        assert output.count("disk full") == 1, output
        assert "disk space available again" in output, output
        assert "cannot start" not in output

        # It starts on the full disk and serves reads.
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            assert fetch_all_values(client, "t", 0) == acknowledged
            assert metadata(client, ["t"], auto_create=False).topics[0].error_code == 0
            (small_disk / "filler").unlink()
            (small_disk / "last-pages").unlink()
            assert produce(client, "t", 0, batch([b"later"]), acks=-1).error_code == 0
            acknowledged.append(b"later")
            resp = client.call(
                ApiKey.CREATE_TOPICS,
                7,
                m.CreateTopicsRequest(
                    topics=[m.CreatableTopic(name="u", num_partitions=3, replication_factor=1)],
                    timeout_ms=10_000,
                ),
                m.CreateTopicsResponse,
            )
            assert resp.topics[0].error_code == 0
        assert broker.stop() == 0
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            assert fetch_all_values(client, "t", 0) == acknowledged
        assert broker.stop() == 0
    output = log_path.read_text()
    assert "Traceback" not in output, output


def test_a_roll_on_a_filling_disk_does_not_stop_retention(small_disk: Path, tmp_path: Path) -> None:
    """A segment rolled when its batch took the disk's last page could not get its recovery point
    saved; that must not leave it unsealed, or retention (which never deletes past an unsealed
    segment) would keep every later segment too, on the disk that is full."""
    settings = {
        "log.segment.bytes": "2000",
        "log.retention.bytes": "6000",
        "log.retention.check.interval.ms": "100",
    }
    with BrokerProcess(small_disk / "data", tmp_path / "serve.log", settings=settings) as broker:
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            create_topic(client, "r")
            for _ in range(3):
                assert produce(client, "r", 0, batch([b"x" * 1500])).error_code == 0
            fill(small_disk, leave=4096)  # one page: the rolled-to segment's batch takes it
            assert produce(client, "r", 0, batch([b"y" * 1500])).base_offset == 3
            (small_disk / "filler").unlink()
            for _ in range(12):
                assert produce(client, "r", 0, batch([b"z" * 1500])).error_code == 0
            deadline = time.monotonic() + 10
            while list_offset(client, "r", 0, -2) != (0, 12):  # 4 segments of 1 batch are kept
                assert time.monotonic() < deadline, list_offset(client, "r", 0, -2)
                time.sleep(0.05)
        assert broker.stop() == 0
    output = (tmp_path / "serve.log").read_text()
    assert "could not save the recovery point of r-0" in output, output
    assert "Traceback" not in output, output


def _delete_records(client: WireClient, topic: str, before: int) -> m.DeleteRecordsPartitionResult:
    body = m.DeleteRecordsRequest(
        topics=[
            m.DeleteRecordsTopic(
                name=topic, partitions=[m.DeleteRecordsPartition(partition_index=0, offset=before)]
            )
        ],
        timeout_ms=10_000,
    )
    resp = client.call(ApiKey.DELETE_RECORDS, 2, body, m.DeleteRecordsResponse)
    (part,) = resp.topics[0].partitions
    return part


def test_delete_records_on_a_full_disk_answers_storage_error_and_moves_nothing(
    small_disk: Path, tmp_path: Path
) -> None:
    """The log start offset could not be saved: the handler raised OSError, which dropped the
    connection, and the log start had already moved in memory (the records were gone to readers
    until a restart brought them back)."""
    log_path = tmp_path / "serve.log"
    with BrokerProcess(small_disk / "data", log_path, settings={"log.segment.bytes": "2000"}) as broker:
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            create_topic(client, "t")
            values = [f"{i}-".encode() + b"x" * 900 for i in range(10)]
            for value in values:
                assert produce(client, "t", 0, batch([value]), acks=-1).error_code == 0
            fill(small_disk, leave=0)
            try:
                refused = _delete_records(client, "t", 5)
            except ConnectionClosed:
                pytest.fail("DeleteRecords on a full disk dropped the connection")
            assert (refused.error_code, refused.low_watermark) == (ErrorCode.KAFKA_STORAGE_ERROR, -1)
            assert list_offset(client, "t", 0, -2) == (0, 0)
            assert fetch_all_values(client, "t", 0) == values
            (small_disk / "filler").unlink()
            done = _delete_records(client, "t", 5)
            assert (done.error_code, done.low_watermark) == (0, 5)
        broker.kill()
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            assert list_offset(client, "t", 0, -2) == (0, 5)
        assert broker.stop() == 0
    assert "Traceback" not in log_path.read_text()


def test_an_idempotent_producers_roll_on_a_filling_disk_does_not_stop_retention(
    small_disk: Path, tmp_path: Path
) -> None:
    """As above, with an idempotent producer: the roll also writes its producer-state snapshot,
    which did not fit either. That failure left the segment unsealed (retention stuck behind it
    for good) and, at sluice.log.append.ack=fsynced, failed the append whose bytes were stored."""
    settings = {
        "log.segment.bytes": "2000",
        "log.retention.bytes": "6000",
        "log.retention.check.interval.ms": "100",
        "sluice.log.append.ack": "fsynced",
    }
    log_path = tmp_path / "serve.log"
    with BrokerProcess(small_disk / "data", log_path, settings=settings) as broker:
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            init = client.call(
                ApiKey.INIT_PRODUCER_ID,
                4,
                m.InitProducerIdRequest(transaction_timeout_ms=60_000),
                m.InitProducerIdResponse,
            )
            assert init.error_code == 0

            def send(seq: int, value: bytes) -> m.ProducePartitionResponse:
                records = build_batch(
                    [(None, value)],
                    producer_id=init.producer_id,
                    producer_epoch=init.producer_epoch,
                    base_sequence=seq,
                    base_timestamp=int(time.time() * 1000),
                )
                return produce(client, "r", 0, records, acks=-1)

            create_topic(client, "r")
            for seq in range(3):
                assert send(seq, b"x" * 1500).error_code == 0
            fill(small_disk, leave=4096)  # one page: the rolled-to segment's batch takes it
            rolled = send(3, b"y" * 1500)
            assert (rolled.error_code, rolled.base_offset) == (0, 3)
            (small_disk / "filler").unlink()
            for seq in range(4, 16):
                assert send(seq, b"z" * 1500).base_offset == seq
            deadline = time.monotonic() + 10
            while list_offset(client, "r", 0, -2) != (0, 12):  # 4 segments of 1 batch are kept
                assert time.monotonic() < deadline, list_offset(client, "r", 0, -2)
                time.sleep(0.05)
        broker.kill()
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            assert send(15, b"z" * 1500).base_offset == 15  # a retry: still known as one
            assert list_offset(client, "r", 0, -1) == (0, 16)
        assert broker.stop() == 0
    output = log_path.read_text()
    assert "could not save the producer state of r-0" in output, output
    assert "Traceback" not in output, output
