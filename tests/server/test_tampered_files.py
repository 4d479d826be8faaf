"""Segment files changed behind the broker's back between a clean stop and the next start.

A clean start trusts the clean-shutdown state and reads no file, so a segment truncated or
deleted by hand is only noticed when it is first opened. Then it must be refused (reads and
appends answer KAFKA_STORAGE_ERROR, never a partial batch or a write past the file's end, which
would leave a hole that the next recovery cuts, acknowledged records and all), and the next start
must recover the partition instead of trusting the state again.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sluice.errors import ErrorCode
from sluice.storage.manager import partition_dir
from sluice.testing import BrokerProcess
from tests.server.wire import (
    WireClient,
    batch,
    create_topic,
    fetch,
    list_offset,
    produce,
    record_values,
)

SETTINGS = {"log.segment.bytes": "2000"}


def _values(client: WireClient, topic: str, start: int, end: int) -> list[bytes | None]:
    values: list[bytes | None] = []
    while start + len(values) < end:
        part = fetch(client, topic, 0, start + len(values))
        assert part.error_code == 0, part.error_code
        got = record_values(part.records)
        assert got, f"no progress at offset {start + len(values)}"
        values += got
    return values


def test_segments_changed_behind_a_clean_stop_are_refused_then_recovered(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with BrokerProcess(data, tmp_path / "broker.log", settings=SETTINGS) as broker:
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            create_topic(client, "t")
            for i in range(60):
                assert produce(client, "t", 0, batch([b"v%03d" % i + b"x" * 100])).error_code == 0
        assert broker.stop() == 0

        segments = sorted(partition_dir(data, "t", 0).glob("*.log"))
        assert len(segments) >= 4
        active, sealed = segments[-1], segments[1]
        active_base, sealed_base = int(active.stem), int(sealed.stem)
        os.truncate(active, active.stat().st_size // 2)
        sealed.unlink()

        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            assert list_offset(client, "t", 0) == (0, 60)  # the state, trusted
            assert _values(client, "t", 0, sealed_base)[-1] == b"v%03d" % (sealed_base - 1) + b"x" * 100
            assert fetch(client, "t", 0, sealed_base).error_code == ErrorCode.KAFKA_STORAGE_ERROR
            assert fetch(client, "t", 0, active_base).error_code == ErrorCode.KAFKA_STORAGE_ERROR
            # Written at the recorded end, past the file's, it would sit behind a hole.
            refused = produce(client, "t", 0, batch([b"refused"]))
            assert refused.error_code == ErrorCode.KAFKA_STORAGE_ERROR, refused
            assert "changed outside the broker" in (refused.error_message or "")
        assert broker.stop() == 0
        assert "changed outside the broker" in (tmp_path / "broker.log").read_text()

        broker.start()  # the damaged partition was left out of the state: recovered now
        with WireClient("127.0.0.1", broker.port) as client:
            _, end = list_offset(client, "t", 0)
            assert active_base <= end < 60
            acked = produce(client, "t", 0, batch([b"acked"]))
            assert acked.error_code == 0 and acked.base_offset == end
        assert "recovered t-0 after an unclean stop" in (tmp_path / "broker.log").read_text()
        broker.kill()

        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            assert list_offset(client, "t", 0) == (0, end + 1)
            assert _values(client, "t", active_base, end + 1)[-1] == b"acked"


def test_a_sealed_segment_zeroed_behind_the_broker_fails_its_reads_instead_of_skipping_them(
    tmp_path: Path,
) -> None:
    """A sealed segment below the recovery point is trusted at any start, clean or not. Zeroed
    in place (its size unchanged), its reads used to find no batch and go on to the next
    segment: a fetch at its first offset answered with the next segment's records, and a
    consumer skipped its offsets as if they had never been written."""
    data = tmp_path / "data"
    with BrokerProcess(data, tmp_path / "broker.log", settings=SETTINGS) as broker:
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            create_topic(client, "t")
            for i in range(60):
                assert produce(client, "t", 0, batch([b"v%03d" % i + b"x" * 100])).error_code == 0
        broker.kill()  # unclean: the next start recovers from the recovery point, and trusts
        # every segment below it

        segments = sorted(partition_dir(data, "t", 0).glob("*.log"))
        assert len(segments) >= 4
        zeroed, after = segments[1], segments[2]
        zeroed.write_bytes(b"\0" * zeroed.stat().st_size)
        zeroed_base, after_base = int(zeroed.stem), int(after.stem)

        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            assert list_offset(client, "t", 0) == (0, 60)
            for offset in (zeroed_base, after_base - 1):
                part = fetch(client, "t", 0, offset)
                assert part.error_code == ErrorCode.KAFKA_STORAGE_ERROR, (offset, part)
            # What is intact reads on, and appends go on.
            assert _values(client, "t", 0, zeroed_base)[-1] == b"v%03d" % (zeroed_base - 1) + b"x" * 100
            assert _values(client, "t", after_base, 60)[0] == b"v%03d" % after_base + b"x" * 100
            assert produce(client, "t", 0, batch([b"more"])).base_offset == 60
        assert broker.stop() == 0
    output = (tmp_path / "broker.log").read_text()
    assert output.count("are not record batches") == 1, output
    assert "Traceback" not in output, output


@pytest.mark.parametrize("zeroed", ["whole", "last batch"])
def test_an_active_segment_zeroed_behind_a_clean_stop_takes_no_appends(tmp_path: Path, zeroed: str) -> None:
    """The active segment zeroed in place after a clean stop (its size unchanged). A clean start
    reads no file, so appends used to go on after the garbage, acknowledged, and the next
    recovery cut the segment at the garbage, with them. Now its first open checks the first
    batch header and the last one where the state recorded it: the partition refuses appends
    (KAFKA_STORAGE_ERROR) and is recovered at the next start, and what is acknowledged after
    that survives a SIGKILL."""
    data = tmp_path / "data"
    with BrokerProcess(data, tmp_path / "broker.log", settings=SETTINGS) as broker:
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            create_topic(client, "t")
            for i in range(30):
                assert produce(client, "t", 0, batch([b"v%03d" % i + b"x" * 100])).error_code == 0
        assert broker.stop() == 0

        active = sorted(partition_dir(data, "t", 0).glob("*.log"))[-1]
        size = active.stat().st_size
        assert size > 0
        with open(active, "r+b") as f:
            if zeroed == "whole":
                f.write(b"\0" * size)
            else:  # the last batch only: the first header still reads right
                f.seek(size - 60)
                f.write(b"\0" * 60)
        assert active.stat().st_size == size

        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            refused = produce(client, "t", 0, batch([b"refused"]))
            assert refused.error_code == ErrorCode.KAFKA_STORAGE_ERROR, refused
            assert "changed outside the broker" in (refused.error_message or "")
        assert broker.stop() == 0

        broker.start()  # left out of the state: recovered now, before any append
        with WireClient("127.0.0.1", broker.port) as client:
            _, end = list_offset(client, "t", 0)
            assert end < 30
            acked = [produce(client, "t", 0, batch([b"acked%d" % i])) for i in range(3)]
            assert [(a.error_code, a.base_offset) for a in acked] == [(0, end + i) for i in range(3)]
        assert "recovered t-0 after an unclean stop" in (tmp_path / "broker.log").read_text()
        broker.kill()

        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            assert list_offset(client, "t", 0)[1] == end + 3
            assert _values(client, "t", end, end + 3) == [b"acked0", b"acked1", b"acked2"]
