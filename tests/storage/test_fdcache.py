"""The segment descriptor cache at its smallest (``sluice.max.open.segment.files=1``): a segment
leased by a worker thread (a timestamp search, a write) is never closed under it, and the
segment being opened next to it is not closed under its own opener either."""

from __future__ import annotations

from pathlib import Path

from sluice.storage import LogConfig, PartitionLog
from sluice.storage.fdcache import FdCache

from .conftest import FakeClock, all_records, make_batch


def _log(path: Path, clock: FakeClock, files: FdCache) -> PartitionLog:
    return PartitionLog.open(path, LogConfig.from_dict({"segment.bytes": "400"}), clock, files=files)


def test_reads_and_rolls_work_while_the_only_cache_slot_is_leased(tmp_path: Path, clock: FakeClock) -> None:
    files = FdCache(1)
    log = _log(tmp_path / "p-0", clock, files)
    for i in range(12):
        log.append(make_batch(3, tag=f"b{i}"))
    expected = all_records(log)
    log.close()

    log = _log(tmp_path / "p-0", clock, files)  # clean reopen: no segment file open yet
    try:
        first, second = log.segments[0], log.segments[1]
        assert len(log.segments) >= 4
        first.acquire_fd()  # what a timestamp search in the executor holds
        try:
            # Opening another inactive segment overflows the cache; the leased one must stay
            # open and the one being opened must come back open.
            assert all_records(log, second.base_offset) == [r for r in expected if r[0] >= second.base_offset]
            # A roll creates a segment that is not yet pinned: it must be written, not evicted.
            for i in range(6):
                log.append(make_batch(3, tag=f"late{i}"))
        finally:
            first.release_fd()
        records = all_records(log)
        assert records[: len(expected)] == expected
        late = records[len(expected) :]
        assert [offset for offset, _ in late] == list(range(len(expected), len(expected) + 18))
        assert all(value is not None and value.startswith(b"late") for _, value in late)
        assert len(files) <= 1
    finally:
        log.close()
