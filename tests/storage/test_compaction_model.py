"""Property-based test of compaction: random puts and deletes per key, segment rolls, cleanings,
the clock moving on and restarts (clean and crashed). After every step, reading the log from the
beginning gives every key its latest value (a deleted key its tombstone, or nothing once the
tombstone has outlived ``delete.retention.ms``), offsets strictly increase, every record read was
written at that offset, and a cleaning never touches anything from its first uncleanable offset on.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sluice.protocol.keyed import delete_horizon
from sluice.protocol.records import Compression, build_batch
from sluice.storage import CleanerConfig, LogCleaner, LogConfig, PartitionLog

from .conftest import FakeClock
from .test_compaction import records

KEYS = [f"key{i}".encode() for i in range(6)]
Written = tuple[int, bytes, bytes | None, int]
"""(offset, key, value or None for a tombstone, the clock when it was appended)."""


class CompactionModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-compaction-model-"))
        self.clock = FakeClock()
        self.written: list[Written] = []
        self.config = LogConfig()
        self.log: PartitionLog | None = None
        self.cleaner: LogCleaner | None = None
        self.serial = 0

    @initialize(
        segment_bytes=st.integers(150, 1500),
        retention=st.sampled_from([0, 1_000, 50_000]),
        dedupe_keys=st.sampled_from([1, 3, 1000]),
    )
    def open(self, segment_bytes: int, retention: int, dedupe_keys: int) -> None:
        self.config = LogConfig.from_dict(
            {
                "cleanup.policy": "compact",
                "segment.bytes": str(segment_bytes),
                "segment.ms": "10000",
                "retention.ms": "-1",
                "delete.retention.ms": str(retention),
                "index.interval.bytes": "100",
            }
        )
        self.log = PartitionLog.open(self.dir, self.config, self.clock)
        # a map of a few keys cleans in many partial runs
        buffer = dedupe_keys * 128
        # the run's file work in a thread: the same work, quicker to start than a worker process
        self.cleaner = LogCleaner(
            CleanerConfig(dedupe_buffer_size=buffer, worker="thread"), lambda: [self.lg], self.clock
        )

    @property
    def lg(self) -> PartitionLog:
        assert self.log is not None
        return self.log

    @rule(
        ops=st.lists(
            st.tuples(st.sampled_from(KEYS), st.booleans()), min_size=1, max_size=4
        ),
        codec=st.sampled_from([Compression.NONE, Compression.NONE, Compression.GZIP, Compression.LZ4]),
    )
    def write(self, ops: list[tuple[bytes, bool]], codec: int) -> None:
        """One batch of puts (True) and deletes (False)."""
        pairs: list[tuple[bytes | None, bytes | None]] = []
        for key, put in ops:
            self.serial += 1
            pairs.append((key, f"{key.decode()}={self.serial}".encode() if put else None))
        base = self.lg.append(build_batch(pairs, base_timestamp=self.clock.now, compression=codec))
        assert base == len(self.written)
        for i, (maybe_key, value) in enumerate(pairs):
            assert maybe_key is not None
            self.written.append((base + i, maybe_key, value, self.clock.now))

    @rule(ms=st.integers(1, 30_000))
    def time_passes(self, ms: int) -> None:
        self.clock.now += ms

    @rule()
    @precondition(lambda self: self.log is not None)
    def clean(self) -> None:
        assert self.cleaner is not None
        before = records(self.lg)
        expired = {  # batches whose delete horizon was set before and has passed
            h.base_offset
            for seg in self.lg.segments
            for h in seg.iter_batches(0)
            if (horizon := delete_horizon(h)) is not None and horizon <= self.clock.now
        }
        candidate = self.cleaner.cleanable(self.lg)
        result = asyncio.run(self.cleaner.clean(self.lg))
        after = records(self.lg)
        if candidate is None:
            assert result is None and after == before
            return
        assert result is not None
        uncleanable = candidate.first_uncleanable
        # nothing from the first uncleanable offset on is touched
        assert [r for r in after if r[0] >= uncleanable] == [r for r in before if r[0] >= uncleanable]
        # below what the map covered, a key has one record at most, and no tombstone is left
        # whose delete horizon (set by an earlier cleaning) has passed
        below = [k for o, k, _ in after if o < result.end_offset]
        assert len(below) == len(set(below))
        for seg in self.lg.segments:
            for header in seg.iter_batches(0):
                if header.base_offset < result.end_offset and header.base_offset in expired:
                    tombstones = [r for r in after if header.base_offset <= r[0] <= header.last_offset and r[2] is None]
                    assert not tombstones, (header, tombstones)

    @rule(how=st.sampled_from(["marker", "state", "crash"]))
    def reopen(self, how: str) -> None:
        """A clean stop of a log on its own (its directory's marker), a clean stop of a log
        manager's (the state handed back, no file read at open), or a crash."""
        state = None
        if how == "marker":
            self.lg.close()
        elif how == "state":
            state = self.lg.close(marker=False)
        else:
            self.lg.abandon()
        self.log = PartitionLog.open(self.dir, self.config, self.clock, state=state)
        assert self.lg.recovery.bytes_truncated == 0 and self.lg.recovery.segments_dropped == 0

    @invariant()
    def every_key_reads_its_latest_value(self) -> None:
        if self.log is None:
            return
        assert self.lg.log_end_offset == len(self.written)
        got = records(self.lg)
        offsets = [o for o, _, _ in got]
        assert offsets == sorted(set(offsets))
        by_offset = {o: (k, v) for o, k, v, _ in self.written}
        assert all(by_offset[o] == (k, v) for o, k, v in got)  # nothing made up or moved
        read_latest = {k: (o, v) for o, k, v in got}
        for key in KEYS:
            mine = [w for w in self.written if w[1] == key]
            if not mine:
                assert key not in read_latest
                continue
            offset, _, value, appended = mine[-1]
            if value is not None or key in read_latest:
                assert read_latest.get(key) == (offset, value)
            else:
                # the tombstone is gone: only after delete.retention.ms
                assert self.clock.now - appended >= self.config.delete_retention_ms

    def teardown(self) -> None:
        if self.cleaner is not None:
            self.cleaner.close_sync()
        if self.log is not None and not self.lg.closed:
            self.lg.abandon()
        shutil.rmtree(self.dir, ignore_errors=True)


CompactionModel.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_compaction_matches_model = CompactionModel.TestCase
