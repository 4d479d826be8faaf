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
from pathlib import Path

import pytest

from sluice.errors import ErrorCode
from sluice.testing import EmbeddedBroker
from tests.server.wire import (
    WireClient,
    batch,
    create_topic,
    fetch_all_values,
    list_offset,
    produce,
)


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
