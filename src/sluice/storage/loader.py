"""Opening a partition directory (after Kafka's ``LogLoader``): from a clean-shutdown state without
touching the files, or by recovering what an unclean stop may have left half-written.

Three ways in, cheapest first:

* a :class:`CleanState` handed in by the caller (the log manager keeps one file of them for every
  partition it closed cleanly): no file is read at all, so thousands of partitions open at once;
* the directory's own ``.clean-shutdown`` file (logs opened on their own, and data written by
  sluice 0.1): segments are listed and sized, nothing is read;
* recovery: every segment from the recovery point on is walked with bounds, continuity and CRC
  checks, cut at the first invalid byte, and its indexes rebuilt.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from pathlib import Path
from typing import Any

from sluice.config import LogConfig
from sluice.dataclass import dataclass
from sluice.errors import SluiceError
from sluice.protocol.records import HEADER_SIZE, read_header
from sluice.storage.clock import Clock
from sluice.storage.fdcache import FdCache
from sluice.storage.files import fsync_dir, read_int, read_json, remove_temporaries
from sluice.storage.segment import LogSegment
from sluice.storage.swaps import finish_swaps, gaps_below
from sluice.storage.txn_index import SUFFIX as TXN_SUFFIX

log = logging.getLogger(__name__)

CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
RECOVERY_POINT_FILE = "recovery-point"
LOG_START_OFFSET_FILE = "log-start-offset"


@dataclass(frozen=True, slots=True)
class SegmentState:
    base_offset: int
    size: int
    max_timestamp: int
    offset_of_max_timestamp: int


@dataclass(frozen=True, slots=True)
class CleanState:
    """Everything needed to reopen a cleanly closed log without reading its files."""

    segments: tuple[SegmentState, ...]
    log_end_offset: int
    log_start_offset: int
    active_created_ms: int
    producers: int = -1
    """Offset of the producer-state snapshot that holds the state at the log end; -1: none."""
    ongoing_txns: bool = False
    """Whether that state holds an open transaction: then it is loaded at open, since the last
    stable offset depends on it."""
    active_last_batch: int = -1
    """Position of the active segment's last batch (-1: not known): where a clean start checks
    that a batch still ends at the recorded size (see :meth:`LogSegment._not_batches`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "segments": [
                [s.base_offset, s.size, s.max_timestamp, s.offset_of_max_timestamp]
                for s in self.segments
            ],
            "log_end_offset": self.log_end_offset,
            "log_start_offset": self.log_start_offset,
            "active_created_ms": self.active_created_ms,
            "producers": self.producers,
            "txn": self.ongoing_txns,
            "last": self.active_last_batch,
        }

    @classmethod
    def from_json(cls, raw: Any) -> CleanState | None:
        """The state, or None if ``raw`` is not a well-formed one (then the log is recovered)."""
        try:
            segments = tuple(
                SegmentState(int(b), int(s), int(t), int(o)) for b, s, t, o in raw["segments"]
            )
            state = cls(
                segments,
                int(raw["log_end_offset"]),
                int(raw["log_start_offset"]),
                int(raw["active_created_ms"]),
                int(raw.get("producers", -1)),
                bool(raw.get("txn", False)),
                int(raw.get("last", -1)),
            )
        except (KeyError, TypeError, ValueError):
            return None
        bases = [s.base_offset for s in segments]
        if not segments or bases != sorted(set(bases)) or state.log_end_offset < bases[-1]:
            return None
        return state


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    clean: bool
    segments_recovered: int = 0
    bytes_truncated: int = 0
    segments_dropped: int = 0
    recovered_from: int = -1
    """Base offset of the first segment recovery walked (-1: none): the producer state is
    replayed from before it, rebuilding the aborted-transactions index of the walked segments,
    and only then does the recovery point move (:meth:`PartitionLog.open`)."""


@dataclass(slots=True)
class Loaded:
    segments: list[LogSegment]
    log_start_offset: int
    report: RecoveryReport
    recorded: CleanState | None = None
    """The state a clean close left in the directory's marker, when it held (a log opened on
    its own then finds its producer state where that says, without reading the segments)."""


def load(
    directory: Path,
    config: LogConfig,
    clock: Clock,
    files: FdCache,
    state: CleanState | None = None,
) -> Loaded:
    """Open the log in ``directory`` (creating the directory if needed)."""
    now = clock()

    def make(base: int, *, exists: bool = True) -> LogSegment:
        return LogSegment(
            directory,
            base,
            index_interval_bytes=config.index_interval_bytes,
            max_index_bytes=config.segment_index_bytes,
            created_ms=now,
            files=files,
            exists=exists,
        )

    if state is not None:
        segments = []
        count = len(state.segments)
        for i, s in enumerate(state.segments):
            seg = make(s.base_offset)
            seg.size = seg.expected_size = s.size
            is_active = i == count - 1
            seg.next_offset = state.log_end_offset if is_active else state.segments[i + 1].base_offset
            seg.max_timestamp = s.max_timestamp
            seg.offset_of_max_timestamp = s.offset_of_max_timestamp
            seg.sealed = not is_active
            segments.append(seg)
        # An empty active segment may never have been created on disk (files are created by
        # the first write, which creates it again harmlessly if it was).
        segments[-1].exists = segments[-1].size > 0
        segments[-1].expected_last_batch = segments[-1].last_batch = state.active_last_batch
        segments[-1].created_ms = state.active_created_ms
        start = min(max(state.log_start_offset, segments[0].base_offset), state.log_end_offset)
        return Loaded(segments, start, RecoveryReport(clean=True))

    directory.mkdir(parents=True, exist_ok=True)
    remove_temporaries(directory)
    finish_swaps(directory)  # a log cleaner's swap a crash interrupted: before listing segments
    bases = sorted(int(p.stem) for p in directory.glob("*.log") if _is_segment_name(p.stem))
    live = {f"{b:020d}" for b in bases}
    for path in [*directory.glob("*.index"), *directory.glob("*.timeindex"), *directory.glob(f"*{TXN_SUFFIX}")]:
        if path.stem not in live:
            path.unlink()
    marker = read_json(directory / CLEAN_SHUTDOWN_FILE)
    if (directory / CLEAN_SHUTDOWN_FILE).exists():
        # Consumed: from now on a crash must not look clean.
        (directory / CLEAN_SHUTDOWN_FILE).unlink()
        fsync_dir(directory)
    log_start = read_int(directory / LOG_START_OFFSET_FILE, 0)
    if not bases:
        segments = [make(log_start, exists=False)]
        segments[0].fresh_indexes()
        segments[0].fresh_txn_index()
        return Loaded(segments, log_start, RecoveryReport(clean=True))

    segments = [make(b) for b in bases]
    for seg, nxt in zip(segments, bases[1:], strict=False):
        seg.size = os.stat(seg.log_path).st_size
        seg.next_offset = nxt
        seg.sealed = True
    last = segments[-1]
    last_size = os.stat(last.log_path).st_size
    recorded = CleanState.from_json(marker) if isinstance(marker, dict) else None
    if recorded is not None and recorded.segments[-1].base_offset == last.base_offset:
        # sluice's own marker: the active segment's size and end offset as closed.
        clean_end = recorded.log_end_offset if recorded.segments[-1].size == last_size else None
        active = recorded.segments[-1]
        last.max_timestamp, last.offset_of_max_timestamp = active.max_timestamp, active.offset_of_max_timestamp
        if clean_end is not None:  # checked at the first open, as a clean start's (above)
            last.expected_size = last_size
            last.expected_last_batch = last.last_batch = recorded.active_last_batch
    elif isinstance(marker, dict) and marker.get("active_base") == last.base_offset:
        # the form sluice 0.1 wrote
        clean_end = int(marker["log_end_offset"]) if marker.get("active_size") == last_size else None
    else:
        clean_end = None
    if clean_end is not None:
        last.size = last_size
        last.next_offset = clean_end
        report = RecoveryReport(clean=True)
        if recorded is None or recorded.log_end_offset != clean_end:
            recorded = None
    else:
        recorded = None
        recovery_point = min(read_int(directory / RECOVERY_POINT_FILE, 0), _first_insane_txn_index(segments))
        report = _recover(segments, recovery_point, gaps_below(directory))
    log_start = min(max(log_start, segments[0].base_offset), segments[-1].next_offset)
    segments[-1].created_ms = rolling_timestamp(segments[-1], now)
    return Loaded(segments, log_start, report, recorded)


def _recover(segments: list[LogSegment], recovery_point: int, gaps: int = -1) -> RecoveryReport:
    """Walk every segment at or past the recovery point; truncate at the first invalid byte and
    drop the segments after it (they would leave a gap). Gaps ending at or below ``gaps`` are
    the log cleaner's, and accepted (see :meth:`LogSegment.recover`)."""
    recovered = 0
    truncated = 0
    dropped = 0
    i = max(0, bisect_right([s.base_offset for s in segments], recovery_point) - 1)
    recovered_from = segments[i].base_offset
    while i < len(segments):
        seg = segments[i]
        # Rebuilt with the producer state (PartitionLog.open); no stale file meanwhile.
        seg.txn_index_path.unlink(missing_ok=True)
        seg.fresh_txn_index()
        # No max.message.bytes bound: it may have been lowered since these batches were
        # accepted, and a batch it now refuses is still acknowledged data (Kafka checks none).
        result = seg.recover(None, gaps)
        recovered += 1
        truncated += result.truncated_bytes
        while i < len(segments) - 2 and _stray(segments[i + 1], result.next_offset):
            stray = segments.pop(i + 1)
            log.warning("removing %s: an empty segment inside the previous one's offsets", stray.log_path)
            stray.delete()
        if i < len(segments) - 1:
            successor = segments[i + 1]
            cleaned_tail = result.next_offset < successor.base_offset <= gaps
            if result.next_offset != successor.base_offset and not cleaned_tail:
                for gone in segments[i + 1 :]:
                    truncated += os.stat(gone.log_path).st_size
                    gone.delete()
                    dropped += 1
                del segments[i + 1 :]
                break
            seg.next_offset = successor.base_offset
            seg.seal()
            seg.sealed = True
        i += 1
    return RecoveryReport(
        clean=False,
        segments_recovered=recovered,
        bytes_truncated=truncated,
        segments_dropped=dropped,
        recovered_from=recovered_from,
    )


def _stray(segment: LogSegment, previous_end: int) -> bool:
    """An empty segment file whose base offset lies inside the segment before it: a roll whose
    seal failed left it (before the seal came first). It holds nothing, and taking it for the
    log's end would drop every segment after it."""
    return segment.base_offset < previous_end and os.stat(segment.log_path).st_size == 0


def _first_insane_txn_index(segments: list[LogSegment]) -> int:
    """The base offset of the first segment whose aborted-transactions index file is not a sane
    one (changed behind the broker's back): recovery walks from there and rebuilds it."""
    for seg in segments:
        if seg.txn_index_path.exists():
            try:
                _ = seg.aborted_txns
            except OSError as exc:
                log.warning("%s; the partition is recovered from there", exc)
                return seg.base_offset
    return 1 << 63


def rolling_timestamp(segment: LogSegment, now: int) -> int:
    """When a reopened active segment counts as created, for ``segment.ms``: its first batch's
    timestamp, as Kafka does, so a restart does not restart the segment's age. Timestamps from
    the future (a skewed producer clock) count as now."""
    if segment.size < HEADER_SIZE:
        return now
    try:
        header = read_header(segment.pread(0, HEADER_SIZE))
    except (OSError, SluiceError):
        return now
    return header.max_timestamp if 0 <= header.max_timestamp <= now else now


def _is_segment_name(stem: str) -> bool:
    return len(stem) == 20 and stem.isdigit()
