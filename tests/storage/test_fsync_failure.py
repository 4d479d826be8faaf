"""An fsync that fails (EIO) on a partition acknowledged at ``fsynced``.

Linux reports a failed writeback once and then forgets it: the pages may be dropped, and the
next fsync succeeds without having written them. So nothing after a failed fsync may be
acknowledged as durable, nor made visible to consumers, on the strength of a later one. The
partition refuses appends until a restart recovers it from its files, as Kafka takes a log
directory offline. A real disk cannot be made to fail on cue in a test, so ``os.fdatasync``
fails once, where the kernel's error would surface.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from sluice.errors import ErrorCode
from sluice.protocol.records import build_batch
from sluice.storage import producer_state
from sluice.testing import EmbeddedBroker
from tests.server.wire import (
    WireClient,
    batch,
    create_topic,
    fetch_all_values,
    list_offset,
    produce,
)


def _emfile_on_open(monkeypatch: pytest.MonkeyPatch, target: Path) -> threading.Event:
    """``os.open`` of ``target`` fails with EMFILE (out of descriptors) until the returned
    event is cleared; every other open goes through."""
    real_open = os.open
    armed = threading.Event()
    armed.set()

    def open_(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kw: object) -> int:
        if armed.is_set() and os.fspath(path) == os.fspath(target):
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", open_)
    return armed


@pytest.mark.parametrize("mode", ["writer", "inline"])
def test_after_a_failed_fsync_nothing_is_acknowledged_until_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    real_fdatasync = os.fdatasync
    failures = 0

    def fdatasync(fd: int) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError(errno.EIO, "Input/output error")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    broker = EmbeddedBroker(
        tmp_path / "data", settings={"sluice.log.append.ack": "fsynced", "sluice.log.append.mode": mode}
    )
    broker.start()
    try:
        with WireClient.to(broker) as client:
            create_topic(client, "t")
            create_topic(client, "other")
            assert produce(client, "t", 0, batch([b"durable"]), acks=-1).error_code == 0
            failures = 1
            lost = produce(client, "t", 0, batch([b"maybe lost"]), acks=-1)
            assert lost.error_code == ErrorCode.KAFKA_STORAGE_ERROR
            # Synced by a later fsync that succeeds, it used to be acknowledged, and the high
            # watermark moved past the record whose fsync failed.
            later = produce(client, "t", 0, batch([b"later"]), acks=-1)
            assert later.error_code == ErrorCode.KAFKA_STORAGE_ERROR, later
            assert "failed fsync" in (later.error_message or "")
            assert fetch_all_values(client, "t", 0) == [b"durable"]
            assert list_offset(client, "t", 0) == (0, 1)
            # Other partitions go on.
            assert produce(client, "other", 0, batch([b"fine"]), acks=-1).error_code == 0
        monkeypatch.setattr(os, "fdatasync", real_fdatasync)
        broker.restart()  # not recorded as clean: the partition is recovered from its files
        with WireClient.to(broker) as client:
            _, end = list_offset(client, "t", 0)
            after = produce(client, "t", 0, batch([b"after the restart"]), acks=-1)
            assert (after.error_code, after.base_offset) == (0, end)
            assert fetch_all_values(client, "t", 0)[0] == b"durable"
            assert fetch_all_values(client, "other", 0) == [b"fine"]
    finally:
        broker.stop()
    assert "t-0 refuses appends until the broker restarts" in caplog.text


@pytest.mark.parametrize("mode", ["writer", "inline"])
def test_a_full_segment_that_cannot_be_opened_when_it_rolls_costs_one_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """Out of descriptors (EMFILE, a connection flood) is not a lost write.

    After a clean restart the active segment's file is opened only when first needed: by the
    first append, which rolls it (it is full), when planning the roll reads its index (rebuilt
    from the file) and when the roll seals it. That open failing broke the partition until a
    restart (writer: "unavailable after an internal error"; inline: the connection dropped and
    the failed append's offset stayed reserved); a seal that could not open the file fenced it
    as after an fsync that lost data. Now that append alone is refused."""
    broker = EmbeddedBroker(
        tmp_path / "data", settings={"log.segment.bytes": "16384", "sluice.log.append.mode": mode}
    )
    broker.start()
    try:
        with WireClient.to(broker) as client:
            create_topic(client, "t")
            assert produce(client, "t", 0, batch([b"f" * 15_000]), acks=-1).error_code == 0
        broker.restart()  # clean: the segment's file is not opened again until needed
        (full,) = [p for p in (tmp_path / "data").rglob("*.log") if p.stat().st_size > 15_000]
        emfile = _emfile_on_open(monkeypatch, full)
        with WireClient.to(broker) as client:
            first = produce(client, "t", 0, batch([b"rolls"]), acks=-1)
            emfile.clear()
            later = produce(client, "t", 0, batch([b"later"]), acks=-1)
            assert later.error_code == 0, later
            assert later.base_offset == (2 if first.error_code == 0 else 1), later
            acknowledged = [b"rolls"] if first.error_code == 0 else []
            assert fetch_all_values(client, "t", 0) == [b"f" * 15_000, *acknowledged, b"later"]
        broker.restart()
        with WireClient.to(broker) as client:
            assert fetch_all_values(client, "t", 0) == [b"f" * 15_000, *acknowledged, b"later"]
    finally:
        broker.stop()
    assert "refuses appends" not in caplog.text


def test_retention_that_cannot_open_the_segment_to_roll_it_does_not_fence_the_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention rolls an expired idle active segment, sealing it first; after a clean restart
    the seal is what opens its file. Out of descriptors there, the partition was fenced (every
    later append refused until a restart) though no write was lost; now the roll is tried again
    at the next check and appends go on meanwhile."""
    settings = {"log.retention.ms": "3600000"}
    with EmbeddedBroker(tmp_path / "data", settings=settings) as broker, WireClient.to(broker) as client:
        create_topic(client, "t")
        old = build_batch([(None, b"old")], base_timestamp=int(time.time() * 1000) - 7_200_000)
        assert produce(client, "t", 0, old, acks=-1).error_code == 0
    (segment,) = [p for p in (tmp_path / "data").rglob("*.log") if p.stat().st_size > 0]
    emfile = _emfile_on_open(monkeypatch, segment)
    settings["log.retention.check.interval.ms"] = "100"
    with EmbeddedBroker(tmp_path / "data", settings=settings) as broker, WireClient.to(broker) as client:
        deadline = time.monotonic() + 20
        while "retention of t-0 failed" not in caplog.text:
            assert time.monotonic() < deadline, "retention never ran"
            time.sleep(0.05)
        emfile.clear()
        after = produce(client, "t", 0, batch([b"new"]), acks=-1)
        assert (after.error_code, after.base_offset) == (0, 1), after
        assert fetch_all_values(client, "t", 0)[-1] == b"new"
    assert "refuses appends" not in caplog.text


def test_a_producer_snapshot_that_cannot_be_opened_is_not_deleted_nor_its_state_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a clean restart a partition loads its idempotent producers' snapshot at the first
    append. Out of descriptors there (EMFILE), the snapshot was deleted as "unreadable" and the
    state rebuilt from the log alone; with the producer's batches below the log start (deleted
    records, retention), it was forgotten, so its retry of an acknowledged batch was appended a
    second time. Now that append is refused (KAFKA_STORAGE_ERROR) and the next one loads it."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    def idempotent(seq: int) -> bytes:
        return build_batch([(None, b"v%d" % seq)], producer_id=4242, producer_epoch=0, base_sequence=seq)

    with EmbeddedBroker(tmp_path / "data") as broker:
        with WireClient.to(broker) as client:
            create_topic(client, "t")
            for seq in range(3):
                assert produce(client, "t", 0, idempotent(seq), acks=-1).base_offset == seq
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        for future in admin.delete_records([TopicPartition("t", 0, 3)]).values():
            future.result(10)
    (snapshot,) = (tmp_path / "data").rglob("*.snapshot")
    real_load = producer_state.load_json  # type: ignore[attr-defined]
    armed = True

    def load_json(path: Path) -> object:
        if armed and path == snapshot:
            raise OSError(errno.EMFILE, "Too many open files", str(path))
        return real_load(path)

    monkeypatch.setattr(producer_state, "load_json", load_json)
    with EmbeddedBroker(tmp_path / "data") as broker, WireClient.to(broker) as client:
        refused = produce(client, "t", 0, idempotent(2), acks=-1)  # a retry of an acked batch
        assert refused.error_code == ErrorCode.KAFKA_STORAGE_ERROR, refused
        assert snapshot.exists()
        armed = False
        retry = produce(client, "t", 0, idempotent(2), acks=-1)
        assert (retry.error_code, retry.base_offset) == (0, 2), retry  # the original: a duplicate
        assert list_offset(client, "t", 0) == (0, 3)
