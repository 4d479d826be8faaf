"""The log cleaner on real files: what a cleaning keeps, how segments are swapped, what the
loader does with an interrupted swap, and how the cleaner picks a log."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import errno
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sluice.protocol.crc import crc32c
from sluice.protocol.keyed import DELETE_HORIZON_BIT, delete_horizon
from sluice.protocol.records import (
    BatchHeader,
    Compression,
    build_batch,
    decode_records,
    iter_stored_batches,
    scan_batches,
)
from sluice.storage import CleanerConfig, LogCleaner, LogConfig, PartitionLog
from sluice.storage.cleaner import CleanResult
from sluice.storage.compaction import CleanedSpec, RunPlan, SegmentSpec, commit_swap, run
from sluice.storage.swaps import CHECKPOINT_FILE, read_checkpoint, swap_path

from .conftest import FakeClock

Pairs = Sequence[tuple[bytes | None, bytes | None]]
Make = Callable[..., tuple[PartitionLog, LogCleaner]]


def keyed(
    pairs: Pairs,
    *,
    ts: int = 1_000,
    compression: int = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytes:
    return build_batch(
        list(pairs),
        base_timestamp=ts,
        compression=compression,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )


def records(log: PartitionLog, start: int | None = None) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of every record a consumer reading from ``start`` gets."""
    offset = log.log_start_offset if start is None else start
    out: list[tuple[int, bytes | None, bytes | None]] = []
    while offset < log.high_watermark:
        data = log.read_bytes(offset, 1 << 20)
        headers = list(iter_stored_batches(data))
        assert headers, f"no whole batch at {offset}"
        for h in headers:
            batch = data[h.position : h.position + h.size]
            out.extend((r.offset, r.key, r.value) for r in decode_records(batch) if r.offset >= offset)
        offset = headers[-1].next_offset
    return out


def latest(log: PartitionLog) -> dict[bytes | None, bytes | None]:
    return {k: v for _, k, v in records(log)}


def headers_of(log: PartitionLog) -> list[BatchHeader]:
    out: list[BatchHeader] = []
    for seg in log.segments:
        out.extend(seg.iter_batches(0))
    return out


def compacted(clock: FakeClock, **settings: str) -> LogConfig:
    values = {"cleanup.policy": "compact", "segment.bytes": "1024", "retention.ms": "-1"}
    values.update({k.replace("_", "."): v for k, v in settings.items()})
    return LogConfig.from_dict(values)


@pytest.fixture
def make(tmp_path: Path, clock: FakeClock) -> Iterator[Make]:
    """A log and a cleaner of it. The file work runs in a thread (quicker to start than a worker
    process) unless asked: it is the same work, and the process transport has tests of its own."""
    opened: list[PartitionLog] = []
    cleaners: list[LogCleaner] = []

    def _make(
        config: LogConfig | None = None, dedupe_buffer_size: int = 1 << 27, worker: str = "thread"
    ) -> tuple[PartitionLog, LogCleaner]:
        log = PartitionLog.open(tmp_path / "p", config or compacted(clock), clock)
        opened.append(log)
        cleaner = LogCleaner(CleanerConfig(dedupe_buffer_size=dedupe_buffer_size, worker=worker), lambda: [log], clock)
        cleaners.append(cleaner)
        return log, cleaner

    yield _make
    for cleaner in cleaners:
        cleaner.close_sync()
    for log in opened:
        if not log.closed:
            log.abandon()


def clean(cleaner: LogCleaner, log: PartitionLog) -> CleanResult | None:
    return asyncio.run(cleaner.clean(log))


def fill(log: PartitionLog, n: int, keys: int, *, size: int = 20, ts: int = 1_000) -> dict[bytes, bytes]:
    """``n`` single-record batches over ``keys`` keys; returns each key's latest value."""
    want: dict[bytes, bytes] = {}
    for i in range(n):
        k, v = f"k{i % keys}".encode(), f"v{i}-".encode().ljust(size, b".")
        log.append(keyed([(k, v)], ts=ts))
        want[k] = v
    return want


# -- what a cleaning keeps ----------------------------------------------------------------------------


@pytest.mark.parametrize("worker", ["process", "thread"])
def test_cleaning_keeps_the_latest_value_of_every_key_with_its_offset(make: Make, worker: str) -> None:
    log, cleaner = make(worker=worker)
    want = fill(log, 300, 10)
    before = records(log)
    size_before = log.size_bytes
    result = clean(cleaner, log)
    assert result is not None and result.swaps > 0
    got = records(log)
    offsets = [o for o, _, _ in got]
    assert offsets == sorted(set(offsets))  # strictly increasing
    # Below the active segment only each key's latest record there is left, at its own offset;
    # the active segment is as it was.
    active = log.active_segment.base_offset
    latest_below = {k: o for o, k, _ in before if o < active}
    assert sorted(o for o, _, _ in got if o < active) == sorted(latest_below.values())
    assert [r for r in got if r[0] >= active] == [r for r in before if r[0] >= active]
    assert latest(log) == want
    assert log.size_bytes < size_before / 3
    assert log.log_start_offset == 0 and log.log_end_offset == 300
    checkpoint = read_checkpoint(log.directory)
    assert checkpoint is not None and checkpoint.first_dirty == active


def test_a_fetch_in_an_offset_gap_gets_the_next_batch(make: Make) -> None:
    log, cleaner = make()
    fill(log, 200, 3)
    clean(cleaner, log)
    present = {o for o, _, _ in records(log)}
    gaps = [o for o in range(log.log_end_offset) if o not in present]
    assert gaps
    for offset in gaps[:50]:
        found = log.read(offset, 1 << 20)
        assert found is not None
        first = scan_batches(list_whole(found.read()))[0]
        assert first.next_offset > offset
        assert first.base_offset == min(o for o in present if o >= offset) or first.base_offset <= offset


def list_whole(data: bytes) -> bytes:
    end = 0
    for h in iter_stored_batches(data):
        end = h.position + h.size
    return data[:end]


def test_offset_for_timestamp_still_works_after_cleaning(make: Make) -> None:
    log, cleaner = make()
    for i in range(120):
        log.append(keyed([(f"k{i % 4}".encode(), b"x" * 30)], ts=10_000 + i))
    clean(cleaner, log)
    kept = {o for o, _, _ in records(log)}
    for ts in (0, 10_000, 10_050, 10_115):
        found = asyncio.run(log.offset_for_timestamp(ts))
        assert found is not None
        offset, stamp = found
        assert offset in kept and stamp >= ts
        # nothing kept lies between the asked time and the answer
        assert not [o for o in kept if o < offset and 10_000 + o >= ts]


def test_tombstones_stay_for_delete_retention_ms_after_the_first_cleaning(make: Make, clock: FakeClock) -> None:
    log, cleaner = make(compacted(clock, delete_retention_ms="60000"))
    fill(log, 60, 3)
    log.append(keyed([(b"k1", None)]))
    fill(log, 60, 1, size=40)  # only k0 from here on: pushes the tombstone out of the active segment
    clean(cleaner, log)
    assert latest(log)[b"k1"] is None  # kept: a slow consumer still sees the delete
    tomb = [h for h in headers_of(log) if h.attributes & DELETE_HORIZON_BIT]
    assert tomb and delete_horizon(tomb[0]) == clock.now + 60_000
    clock.now += 59_000
    clean(cleaner, log)
    assert b"k1" in latest(log)
    clock.now += 2_000
    clean(cleaner, log)
    assert b"k1" not in latest(log)  # gone, and every older value of k1 with it
    assert latest(log)[b"k2"] is not None


def test_record_timestamps_survive_the_delete_horizon(make: Make) -> None:
    log, cleaner = make()
    stamps = [5_000, 5_100, 5_050]
    log.append(build_batch([(b"a", None), (b"b", b"1"), (b"c", None)], base_timestamp=5_000, timestamps=stamps))
    fill(log, 100, 2)
    clean(cleaner, log)
    (batch_header,) = [h for h in headers_of(log) if h.base_offset == 0]
    assert delete_horizon(batch_header) is not None
    data = log.read_bytes(0, 1 << 20)
    (rec_a, rec_b, rec_c) = decode_records(data[: batch_header.size])
    assert [r.timestamp for r in (rec_a, rec_b, rec_c)] == stamps
    assert batch_header.max_timestamp == 5_100


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD])
def test_compressed_batches_are_rewritten_with_their_codec(make: Make, codec: int) -> None:
    log, cleaner = make()
    for i in range(40):
        log.append(keyed([(f"k{j}".encode(), f"v{i}-{j}".encode() * 5) for j in range(6)], compression=codec))
    clean(cleaner, log)
    active = log.active_segment.base_offset
    cleaned = [h for h in headers_of(log) if h.next_offset <= active and h.records_count]
    assert cleaned and all(h.compression == codec for h in cleaned)
    assert latest(log) == {f"k{j}".encode(): f"v39-{j}".encode() * 5 for j in range(6)}


def test_an_idempotent_producers_last_batch_is_kept_emptied(make: Make, tmp_path: Path, clock: FakeClock) -> None:
    log, cleaner = make()
    # producer 7's last batch (offsets 40-41) is superseded by a plain producer's records
    for seq in range(0, 42, 2):
        log.append(keyed([(b"a", b"1"), (b"b", b"2")], producer_id=7, producer_epoch=3, base_sequence=seq))
    fill(log, 80, 2)  # k0, k1 (other keys): rolls a few segments
    for _ in range(50):
        log.append(keyed([(b"a", b"new"), (b"b", b"new")]))
    clean(cleaner, log)
    seven = [h for h in headers_of(log) if h.producer_id == 7]
    assert [(h.base_offset, h.last_offset, h.records_count, h.base_sequence) for h in seven] == [(40, 41, 0, 40)]
    assert seven[0].producer_epoch == 3
    # Opened with no snapshot, the state is rebuilt from the log: the producer's sequence goes on.
    log.close()
    for snap in log.directory.glob("*.snapshot"):
        snap.unlink()
    (log.directory / ".clean-shutdown").unlink()
    reopened = PartitionLog.open(log.directory, log.config, clock)
    try:
        retry = reopened.append(keyed([(b"a", b"1"), (b"b", b"2")], producer_id=7, producer_epoch=3, base_sequence=40))
        assert retry == 40  # a retry of the last batch is recognised, not written again
        nxt = reopened.append(keyed([(b"a", b"3"), (b"b", b"4")], producer_id=7, producer_epoch=3, base_sequence=42))
        assert nxt == reopened.log_end_offset - 2
    finally:
        reopened.abandon()


def test_keyless_records_from_before_compaction_are_dropped(make: Make, clock: FakeClock) -> None:
    log, cleaner = make()
    log.append(keyed([(None, b"no key"), (b"k", b"v")]))
    fill(log, 100, 2)
    clean(cleaner, log)
    assert None not in latest(log)
    assert latest(log)[b"k"] == b"v"


def test_the_active_segment_and_young_segments_are_never_cleaned(make: Make, clock: FakeClock) -> None:
    log, cleaner = make(compacted(clock, min_compaction_lag_ms="10000"))
    for i in range(100):
        log.append(keyed([(b"same", f"{i}".encode())], ts=clock.now - 20_000 if i < 50 else clock.now))
    before = records(log)
    clean(cleaner, log)
    after = records(log)
    # records written within the lag, and everything in the active segment, are all still there
    young = [r for r in before if r[0] >= 50]
    assert [r for r in after if r[0] >= 50][: len(young)] == young
    assert all(r in after for r in before if r[0] >= log.active_segment.base_offset)
    # older ones were cleaned, up to the first segment holding a young record
    assert len([r for r in after if r[0] < 50]) < 50


def test_a_small_map_cleans_in_several_runs(make: Make) -> None:
    # a 1 MiB dedupe buffer holds 8192 keys: 20,000 keys written twice take several runs
    log, cleaner = make(compacted(FakeClock(), segment_bytes="65536"), dedupe_buffer_size=1 << 20)
    want: dict[bytes, bytes] = {}
    for prefix in ("v", "w"):
        for i in range(0, 20_000, 100):
            pairs = [(f"key-{j}".encode(), f"{prefix}{j}".encode()) for j in range(i, i + 100)]
            log.append(keyed(pairs))
            want.update(pairs)
    ends = []
    for _ in range(10):
        result = clean(cleaner, log)
        assert result is not None
        if result.end_offset == result.first_dirty:
            break
        ends.append(result.end_offset)
        assert latest(log) == want  # after every run, partial or not
    assert len(ends) >= 3 and ends == sorted(ends)
    assert ends[-1] == log.active_segment.base_offset
    # one record per key is left below the active segment
    active = log.active_segment.base_offset
    assert len(records(log)) == len({k for o, k, _ in records(log) if o < active}) + log.log_end_offset - active


def test_small_segments_are_merged(make: Make, clock: FakeClock) -> None:
    log, cleaner = make(compacted(clock, segment_bytes="600"))
    fill(log, 300, 5)
    count = len(log.segments)
    clean(cleaner, log)
    clean(cleaner, log)  # the first run leaves small segments; the second merges them
    assert len(log.segments) < count / 4
    assert len(latest(log)) == 5


def test_a_log_reopened_after_cleaning_is_the_same(make: Make, clock: FakeClock, tmp_path: Path) -> None:
    log, cleaner = make()
    fill(log, 300, 10)
    clean(cleaner, log)
    got = records(log)
    config = log.config
    log.close()
    clean_open = PartitionLog.open(log.directory, config, clock)
    assert records(clean_open) == got
    clean_open.abandon()
    # Unclean, and with no recovery point: recovery walks every gapped segment and cuts nothing.
    (log.directory / "recovery-point").unlink()
    recovered = PartitionLog.open(log.directory, config, clock)
    try:
        assert not recovered.recovery.clean
        assert recovered.recovery.bytes_truncated == 0 and recovered.recovery.segments_dropped == 0
        assert records(recovered) == got
    finally:
        recovered.abandon()


def test_recovery_still_refuses_a_gap_above_the_cleaned_offsets(make: Make, clock: FakeClock) -> None:
    """Outside what the cleaner made, an offset gap is stale bytes, as before compaction."""
    log, _ = make()
    log.append(keyed([(b"a", b"1")]))
    log.append(keyed([(b"b", b"2")]))
    log.abandon()
    path = log.active_segment.log_path
    stale = bytearray(keyed([(b"c", b"stale")]))
    stale[0:8] = (5).to_bytes(8, "big")  # base offset 5 after offset 1: a gap
    with open(path, "ab") as f:
        f.write(stale)
    (log.directory / CHECKPOINT_FILE).write_text('{"first_dirty": 0, "gaps_below": 0}')
    reopened = PartitionLog.open(log.directory, log.config, clock)
    try:
        assert reopened.log_end_offset == 2 and reopened.recovery.bytes_truncated == len(stale)
    finally:
        reopened.abandon()


# -- the swap and the loader ---------------------------------------------------------------------------


def _cleaned_group(log: PartitionLog, clock: FakeClock) -> tuple[CleanedSpec, str]:
    """Write the cleaned file of the log's first two segments (one group), as a run's worker
    would, without swapping it in."""
    first, second = log.segments[0], log.segments[1]
    end = second.next_offset
    plan = RunPlan(
        name=log.name,
        directory=log.directory,
        config=dataclasses.replace(log.config, segment_bytes=1 << 20),
        segments=[SegmentSpec(s.base_offset, s.size, s.next_offset) for s in (first, second)],
        first_dirty=0,
        first_uncleanable=end,
        map_start_position=0,
        producer_last_offsets={},
        now=clock(),
        token="test",
        map_capacity=1000,
        io_buffer_size=4096,
        io_bytes_per_second=1e308,
        max_batch_bytes=1 << 20,
    )
    output = run(plan)
    (spec,) = output.groups
    assert spec.changed and output.end_offset == end
    (log.directory / CHECKPOINT_FILE).write_text(f'{{"first_dirty": 0, "gaps_below": {end}}}')
    return spec, plan.token


@pytest.mark.parametrize("stage", ["cleaned", "committed", "old-logs-gone", "renamed"])
def test_a_swap_interrupted_at_any_stage_is_rolled_back_or_finished(make: Make, clock: FakeClock, stage: str) -> None:
    log, _ = make()
    fill(log, 120, 4)
    before = records(log)
    want = latest(log)
    names_before = sorted(p.name for p in log.directory.glob("*.log"))
    spec, token = _cleaned_group(log, clock)
    d = log.directory
    first, second = log.segments[0], log.segments[1]
    if stage != "cleaned":
        commit_swap(d, spec, token)
    if stage in ("old-logs-gone", "renamed"):
        second.log_path.unlink()
        for seg in (first, second):
            seg.index_path.unlink(missing_ok=True)
            if stage == "renamed":
                seg.time_index_path.unlink(missing_ok=True)
    if stage == "renamed":
        os.replace(swap_path(d, spec.base, spec.end), first.log_path)
    log.abandon()  # a crash: no clean-shutdown state
    reopened = PartitionLog.open(d, log.config, clock)
    try:
        names = sorted(p.name for p in d.glob("*.log"))
        assert not list(d.glob("*.swap")) and not list(d.glob("*.cleaned"))
        assert latest(reopened) == want
        if stage == "cleaned":  # before the commit point: as it was
            assert names == names_before and records(reopened) == before
        else:  # after it: swapped, exactly once
            assert names == [n for n in names_before if n != second.log_path.name]
            assert len(records(reopened)) < len(before)
        assert reopened.recovery.bytes_truncated == 0
    finally:
        reopened.abandon()


def test_readers_holding_old_segments_read_on_through_a_swap(make: Make, clock: FakeClock) -> None:
    log, cleaner = make()
    fill(log, 200, 4)
    old_slice = log.read(0, 1 << 20)
    assert old_slice is not None
    seg = old_slice.segment
    seg.acquire_fd()  # a reader in another thread holds the segment being replaced
    try:
        clean(cleaner, log)
        assert seg not in log.segments
        data = old_slice.read()  # still the old bytes, through the leased descriptor
        assert scan_batches(list_whole(data))[0].base_offset == 0
    finally:
        seg.release_fd()


def test_reads_during_a_cleaning_always_see_a_whole_log(make: Make, clock: FakeClock) -> None:
    log, cleaner = make(compacted(clock, segment_bytes="2048"), worker="process")
    want = fill(log, 500, 20)
    history: dict[bytes | None, set[tuple[int, bytes | None]]] = {}
    for o, k, v in records(log):
        history.setdefault(k, set()).add((o, v))

    async def main() -> int:
        run = asyncio.ensure_future(cleaner.clean(log))
        reads = 0
        while not run.done():
            got = records(log)  # on the loop, between the cleaner's steps
            assert [o for o, _, _ in got] == sorted({o for o, _, _ in got})
            assert all((o, v) in history[k] for o, k, v in got)
            assert {k: v for _, k, v in got} == want
            reads += 1
            # paced, not waiting for anything: the worker runs at SCHED_IDLE and would get no
            # CPU from a reader that never stops
            await asyncio.sleep(0.005)
        assert (await run) is not None
        return reads

    assert asyncio.run(main()) >= 1


class _GatedExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, its jobs held until :attr:`gate` opens."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.gate = threading.Event()
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        self.submitted += 1

        def gated() -> Any:
            assert self.gate.wait(10)
            return fn(*args, **kwargs)

        return super().submit(gated)


@pytest.mark.parametrize("kind", ["time", "max"])
def test_a_lookup_by_time_across_a_swap_searches_the_new_segments(make: Make, kind: str) -> None:
    """ListOffsets by timestamp (and -3) awaits the executor between segments and between
    finding a batch and searching its records; a cleaning swap meanwhile closed the segments it
    held, and the next step answered KAFKA_STORAGE_ERROR ('segment is closed'). Real clients
    got it with the cleaner running on a busy compacted topic."""
    log, cleaner = make()
    for i in range(120):
        # -3 with one timestamp throughout: every segment ties, so the search visits them all
        log.append(keyed([(f"k{i % 4}".encode(), b"x" * 30)], ts=10_000 + (i if kind == "time" else 0)))

    async def lookup() -> tuple[int, int] | None:
        return await (log.offset_for_timestamp(10_100) if kind == "time" else log.max_timestamp_offset())

    async def main() -> tuple[int, int] | None:
        executor = _GatedExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        search = asyncio.ensure_future(lookup())
        while not executor.submitted:  # the search's first read, held
            await asyncio.sleep(0)
        result = await cleaner.clean(log)  # in the cleaner's own threads
        assert result is not None and result.swaps
        executor.gate.set()
        return await search

    found = asyncio.run(main())
    assert found is not None and found == asyncio.run(lookup())  # as over the cleaned log
    assert found[0] in {o for o, _, _ in records(log)}


# -- retention with compaction ------------------------------------------------------------------------


def test_compact_only_ignores_retention_but_compact_delete_applies_it(make: Make, clock: FakeClock) -> None:
    log, _ = make(compacted(clock, retention_ms="1000"))
    fill(log, 100, 3)
    clock.now += 10_000_000
    assert log.apply_retention() == 0
    log.update_config(compacted(clock, retention_ms="1000", cleanup_policy="compact,delete"))
    assert log.apply_retention() > 0


def test_empty_cleaned_segments_go_with_the_next_expired_one(make: Make, clock: FakeClock) -> None:
    log, cleaner = make(compacted(clock, cleanup_policy="compact,delete", retention_ms="100000"))
    fill(log, 150, 2, ts=clock.now)
    clean(cleaner, log)
    empties = [s for s in log.segments[:-1] if s.size == 0]
    assert empties
    assert log.apply_retention() == 0  # nothing expired: the empty ones stay too
    clock.now += 200_000
    assert log.apply_retention() > len(empties)


# -- choosing a log -----------------------------------------------------------------------------------


def test_the_dirtiest_log_above_its_ratio_is_chosen(tmp_path: Path, clock: FakeClock) -> None:
    logs = []
    for name, n, keys in (("a", 200, 100), ("b", 200, 2), ("c", 10, 10)):
        log = PartitionLog.open(tmp_path / name, compacted(clock), clock)
        log.name = name
        fill(log, n, keys)
        logs.append(log)
    plain = PartitionLog.open(tmp_path / "d", LogConfig.from_dict({"segment.bytes": "1024"}), clock)
    fill(plain, 200, 2)
    logs.append(plain)
    cleaner = LogCleaner(CleanerConfig(worker="thread"), lambda: logs, clock)
    try:
        first = cleaner.dirtiest()
        assert first is not None
        # never cleaned: every log's cleanable bytes are dirty (ratio 1); c has no closed segment
        assert set(cleaner.dirty_ratios) == {"a", "b", "c"}
        assert cleaner.dirty_ratios["c"] == 0.0
        assert asyncio.run(cleaner.clean_dirtiest()) is not None
        asyncio.run(cleaner.clean_dirtiest())
        assert cleaner.runs == 2 and cleaner.bytes_read > 0 and cleaner.last_clean_ms == clock.now
        # both cleaned: nothing dirty is left above min.cleanable.dirty.ratio
        assert cleaner.dirtiest() is None
        fill(logs[1], 100, 2)
        again = cleaner.dirtiest()
        assert again is not None and again.log is logs[1] and 0.5 < again.ratio < 1
    finally:
        cleaner.close_sync()
        for log in logs:
            log.abandon()


def test_max_compaction_lag_forces_a_cleaning_below_the_ratio(tmp_path: Path, clock: FakeClock) -> None:
    log = PartitionLog.open(tmp_path / "a", compacted(clock, min_cleanable_dirty_ratio="0.9"), clock)
    try:
        fill(log, 300, 300, ts=clock.now)
        cleaner = LogCleaner(CleanerConfig(worker="thread"), lambda: [log], clock)
        asyncio.run(cleaner.clean(log))  # all clean: the checkpoint is at the active segment
        fill(log, 60, 300, ts=clock.now)  # a little dirt: far below the ratio
        found = cleaner.cleanable(log)
        assert found is not None and 0 < found.ratio < 0.9 and not found.overdue
        assert cleaner.dirtiest() is None
        log.update_config(compacted(clock, min_cleanable_dirty_ratio="0.9", max_compaction_lag_ms="60000"))
        assert cleaner.dirtiest() is None  # not overdue yet
        clock.now += 61_000
        overdue = cleaner.dirtiest()
        assert overdue is not None and overdue.overdue and overdue.log is log
    finally:
        log.abandon()


# -- aborting, and failures ----------------------------------------------------------------------


def test_aborting_a_run_kills_its_worker_and_changes_nothing(make: Make, clock: FakeClock) -> None:
    log, cleaner = make(compacted(clock, segment_bytes="65536"), worker="process")
    for i in range(0, 30_000, 100):
        log.append(keyed([(f"key-{j % 3000}".encode(), f"v{j}".encode()) for j in range(i, i + 100)]))
    before = records(log)

    async def main() -> tuple[CleanResult | None, CleanResult | None]:
        run = asyncio.ensure_future(cleaner.clean(log))
        await asyncio.sleep(0)  # the run has planned and handed its work to a worker
        assert all(seg.cleaning for seg in log.segments[:-1])
        await cleaner.abort([log])
        assert run.done()  # abort returns once the run has ended
        aborted = await run
        again = await cleaner.clean(log)  # and the next run is a whole one
        return aborted, again

    aborted, again = asyncio.run(main())
    assert aborted is None
    assert not any(seg.cleaning for seg in log.segments)
    assert not list(log.directory.glob("*.cleaned")) and not list(log.directory.glob("*.swap"))
    assert again is not None and again.swaps > 0
    assert latest(log) == {k: v for _, k, v in before}


def test_deleting_a_topic_while_it_is_cleaned(tmp_path: Path, clock: FakeClock) -> None:
    from sluice.storage import LogManager

    async def main() -> None:
        manager = LogManager.open(tmp_path / "data", clock=clock, cleaner=CleanerConfig())
        topic = await manager.create_topic("table", 1, {"cleanup.policy": "compact", "segment.bytes": "65536"})
        log = manager.get_log("table", 0)
        for i in range(0, 20_000, 100):
            log.append(keyed([(f"key-{j % 2000}".encode(), b"v" * 50) for j in range(i, i + 100)]))
        run = asyncio.ensure_future(manager.cleaner.clean(log))
        await asyncio.sleep(0)
        await manager.delete_topic("table")
        assert await run is None
        assert not topic.directory.exists()
        await manager.close()

    asyncio.run(main())


def test_a_log_whose_cleaning_fails_is_left_alone_until_a_restart(make: Make, clock: FakeClock) -> None:
    log, cleaner = make(worker="process")
    fill(log, 200, 5)
    victim = log.segments[1]
    with open(victim.log_path, "r+b") as f:  # a file changed behind the broker's back
        f.truncate(victim.size // 2)
    assert clean(cleaner, log) is None
    assert log.name in cleaner.uncleanable and "fewer bytes" in cleaner.uncleanable[log.name]
    assert not any(seg.cleaning for seg in log.segments)
    assert cleaner.dirtiest() is None  # not picked again
    assert not list(log.directory.glob("*.cleaned"))


def test_a_topic_recreated_after_its_cleaning_failed_is_cleaned(tmp_path: Path, clock: FakeClock) -> None:
    """The cleaner remembers a failed log by name until a restart; deleting the topic left the
    name there, so a topic created again under it (a new directory, new files) was never
    cleaned, and the uncleanable-partitions gauge counted a partition that no longer existed."""
    from sluice.storage import LogManager

    async def main() -> None:
        manager = LogManager.open(tmp_path / "data", clock=clock, cleaner=CleanerConfig(worker="thread"))
        config = {"cleanup.policy": "compact", "segment.bytes": "1024"}
        await manager.create_topic("table", 1, config)
        log = manager.get_log("table", 0)
        fill(log, 200, 5)
        victim = log.segments[1]
        with open(victim.log_path, "r+b") as f:  # a file changed behind the broker's back
            f.truncate(victim.size // 2)
        assert await manager.cleaner.clean_dirtiest() is None
        assert list(manager.cleaner.uncleanable) == [log.name]
        await manager.delete_topic("table")
        assert not manager.cleaner.uncleanable
        await manager.create_topic("table", 1, config)
        fresh = manager.get_log("table", 0)
        assert fresh.name == log.name
        fill(fresh, 200, 5)
        result = await manager.cleaner.clean_dirtiest()
        assert result is not None and result.swaps
        await manager.close()

    asyncio.run(main())


def test_a_checkpoint_that_cannot_be_written_leaves_no_cleaned_files(
    make: Make, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint is written between the worker's cleaned files and the first swap; on a
    full disk that write fails, and the run gave up leaving every group's cleaned file behind
    (as big as what it cleaned) until a restart: space a full disk needed most."""
    from sluice.storage import cleaner as cleaner_module

    log, cleaner = make()
    want = fill(log, 300, 10)
    before = records(log)

    def full(directory: Path, checkpoint: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cleaner_module, "write_checkpoint", full)
    assert clean(cleaner, log) is None
    assert not list(log.directory.glob("*.cleaned")) and not list(log.directory.glob("*.swap"))
    assert records(log) == before and not cleaner.uncleanable  # tried again once there is room
    monkeypatch.undo()
    result = clean(cleaner, log)
    assert result is not None and result.swaps and latest(log) == want


def test_a_segment_being_replaced_never_reads_or_writes_index_files(make: Make, clock: FakeClock) -> None:
    """Between a swap's rename and the new segment's publication, an old segment's index files
    may already be the new segment's: a reader needing the old indexes rebuilds them from the
    old file and saves nothing."""
    log, _ = make()
    fill(log, 100, 100)
    state = log.close(marker=False)
    log = PartitionLog.open(log.directory, log.config, clock, state=state)  # indexes not loaded
    try:
        seg, other = log.segments[0], log.segments[1]
        positions = [h.position for h in seg.iter_batches(0)]
        # what a new segment's index could look like: sane, and wrong for the old file
        planted = struct.pack("<ii", 2, positions[5])
        seg.index_path.write_bytes(planted)
        seg.being_replaced = True
        found = log.read(seg.base_offset + 3, 1 << 20)
        assert found is not None and found.first_offset == seg.base_offset + 3
        assert seg.index_path.read_bytes() == planted
        other.index_path.unlink()
        other.time_index_path.unlink()
        other.being_replaced = True
        assert log.read(other.base_offset + 1, 1 << 20) is not None
        assert not other.index_path.exists()  # rebuilt in memory only
    finally:
        log.abandon()


def test_a_wrong_offset_index_entry_does_not_start_the_offset_map_mid_batch(
    make: Make, clock: FakeClock
) -> None:
    """The offset map starts at the index entry for the first dirty offset; one loaded from a
    file is checked against the log first, as a fetch's is. Trusted, an entry whose position
    is not a batch's start (a flipped bit) had the map read garbage, and the log was marked
    uncleanable until a restart."""
    log, _ = make(compacted(clock, segment_bytes="4096", index_interval_bytes="1"))
    want: dict[bytes, bytes] = {}
    for i in range(300):  # rising timestamps: loading the indexes checks only the last entry
        want[f"k{i % 10}".encode()] = value = f"v{i}".encode()
        log.append(keyed([(f"k{i % 10}".encode(), value)], ts=1_000 + i))
    assert len(log.segments) > 2
    state = log.close(marker=False)
    first = log.segments[0]
    with open(first.index_path, "r+b") as f:  # entry 0: (offset 0, position 0) -> position 5
        f.write(struct.pack("<ii", 0, 5))
    log = PartitionLog.open(log.directory, log.config, clock, state=state)
    cleaner = LogCleaner(CleanerConfig(worker="thread"), lambda: [log], clock)
    try:
        result = clean(cleaner, log)
        assert log.name not in cleaner.uncleanable, cleaner.uncleanable
        assert result is not None and result.swaps > 0
        assert latest(log) == want
    finally:
        cleaner.close_sync()
        log.abandon()


def _recrc(batch: bytearray) -> bytes:
    """The batch with its length and CRC made good again after an edit."""
    struct.pack_into(">i", batch, 8, len(batch) - 12)
    struct.pack_into(">I", batch, 17, crc32c(bytes(batch[21:])))
    return bytes(batch)


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_a_batch_whose_records_do_not_parse_is_kept_whole_and_cleaning_goes_on(make: Make, worker: str) -> None:
    """The hot path never reads records, so a batch whose records do not parse under a good
    CRC (trailing bytes, a key running past its record) is stored as sent, or was stored
    before the topic became compacted. The cleaner failed on it every run and left the log
    uncleanable for good; it keeps such a batch whole (mapping none of its keys) and cleans
    the rest."""
    log, cleaner = make(worker=worker)
    trailing = _recrc(bytearray(keyed([(b"a", b"odd")])) + b"\x00\x00\x00")
    long_key = bytearray(keyed([(b"b", b"odd")]))
    long_key[61 + 4] = 2 * 50  # the key length (a zigzag varint): 50 bytes, past the record's end
    for batch in (trailing, _recrc(long_key)):
        log.append(batch)
    stored = log.read_bytes(0, len(trailing) + len(long_key))
    want = fill(log, 300, 10)
    result = clean(cleaner, log)
    assert result is not None and result.swaps and not cleaner.uncleanable
    assert result.stats.batches_unparsed == 2
    assert log.read_bytes(0, len(stored)) == stored  # byte for byte
    assert latest_from(log, 2) == want
    assert sum(h.records_count for h in headers_of(log)) < 300 // 2  # the rest was cleaned


def latest_from(log: PartitionLog, start: int) -> dict[bytes | None, bytes | None]:
    return {k: v for _, k, v in records(log, start)}
