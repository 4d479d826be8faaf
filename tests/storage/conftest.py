"""Shared helpers for storage tests: real files in a temporary directory, real batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sluice.protocol.records import build_batch, decode_records, scan_batches
from sluice.storage import LogConfig, PartitionLog


def make_batch(n: int = 3, *, tag: str = "v", size: int = 20, ts: int = 1_000, compression: int = 0) -> bytes:
    """A producer-style batch of ``n`` records whose values say which batch they came from."""
    records = [(f"k{i}".encode(), (f"{tag}-{i}-".encode() * size)[:size]) for i in range(n)]
    return build_batch(records, base_timestamp=ts, compression=compression)


class FakeClock:
    """A settable millisecond clock, for rolling and retention by time without sleeping."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def open_log(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., PartitionLog]]:
    """Open (or reopen) the log at tmp_path/p-0 with Kafka-named string settings."""
    opened: list[PartitionLog] = []

    def _open(**settings: str | int) -> PartitionLog:
        config = LogConfig.from_dict({k.replace("_", "."): str(v) for k, v in settings.items()})
        log = PartitionLog.open(tmp_path / "p-0", config, clock)
        opened.append(log)
        return log

    yield _open
    for log in opened:
        if not log.closed:
            log.abandon()


def all_records(log: PartitionLog, start: int | None = None) -> list[tuple[int, bytes | None]]:
    """Every visible record as (offset, value), reading the log the way a consumer would."""
    offset = log.log_start_offset if start is None else start
    out: list[tuple[int, bytes | None]] = []
    while offset < log.high_watermark:
        data = log.read_bytes(offset, 64 * 1024)
        headers = scan_batches(_whole_batches(data))
        for h in headers:
            batch = data[h.position : h.position + h.size]
            out.extend((r.offset, r.value) for r in decode_records(batch) if r.offset >= offset)
        offset = headers[-1].next_offset
    return out


def _whole_batches(data: bytes) -> bytes:
    """Drop a partial trailing batch, as clients do."""
    from sluice.protocol.records import iter_stored_batches

    end = 0
    for h in iter_stored_batches(data):
        end = h.position + h.size
    return data[:end]
