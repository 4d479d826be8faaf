"""Property-based test: the log behaves like a list of records under any mix of operations."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sluice.protocol.records import build_batch
from sluice.storage import LogConfig, PartitionLog

from .conftest import FakeClock, all_records


class LogModel(RuleBasedStateMachine):
    """Reference model: ``records`` holds (offset, value, timestamp) for every offset ever
    assigned; ``start`` is the log start offset."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sluice-model-"))
        self.clock = FakeClock()
        self.records: list[tuple[int, bytes, int]] = []
        self.start = 0
        self.config = LogConfig()
        self.log: PartitionLog | None = None

    @initialize(
        segment_bytes=st.integers(200, 3000),
        index_interval=st.integers(0, 500),
        retention_bytes=st.one_of(st.just(-1), st.integers(300, 5000)),
    )
    def open(self, segment_bytes: int, index_interval: int, retention_bytes: int) -> None:
        self.config = LogConfig.from_dict(
            {
                "segment.bytes": str(segment_bytes),
                "index.interval.bytes": str(index_interval),
                "retention.bytes": str(retention_bytes),
                "retention.ms": "-1",
            }
        )
        self.log = PartitionLog.open(self.dir, self.config, self.clock)

    @property
    def lg(self) -> PartitionLog:
        assert self.log is not None
        return self.log

    @rule(
        batches=st.lists(
            st.lists(st.tuples(st.binary(max_size=60), st.integers(0, 10_000)), min_size=1, max_size=6),
            min_size=1,
            max_size=3,
        )
    )
    def append(self, batches: list[list[tuple[bytes, int]]]) -> None:
        data = b"".join(
            build_batch([(None, v) for v, _ in b], base_timestamp=b[0][1], timestamps=[t for _, t in b])
            for b in batches
        )
        base = self.lg.append(data)
        assert base == len(self.records)
        for b in batches:
            for value, ts in b:
                self.records.append((len(self.records), value, ts))

    @rule(data=st.data())
    @precondition(lambda self: self.log is not None and len(self.records) > self.start)
    def read_one(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.start, len(self.records) - 1))
        found = self.lg.read(offset, data.draw(st.integers(1, 2000)))
        assert found is not None and found.first_offset <= offset

    @rule(ts=st.integers(-5, 10_005))
    def lookup_timestamp(self, ts: int) -> None:
        expected = next(((o, t) for o, _, t in self.records[self.start :] if t >= ts), None)
        assert asyncio.run(self.lg.offset_for_timestamp(ts)) == expected

    @rule()
    def retention(self) -> None:
        self.lg.apply_retention()
        assert self.lg.log_start_offset >= self.start
        self.start = self.lg.log_start_offset
        if self.config.retention_bytes >= 0 and len(self.lg.segments) > 1:
            assert self.lg.size_bytes - self.lg.segments[0].size < self.config.retention_bytes

    @rule(data=st.data())
    def delete_records(self, data: st.DataObject) -> None:
        target = data.draw(st.integers(self.start, len(self.records)))
        assert self.lg.delete_records(target) == target
        self.start = target

    @rule(clean=st.booleans())
    def reopen(self, clean: bool) -> None:
        if clean:
            self.lg.close()
        else:
            self.lg.abandon()
        self.log = PartitionLog.open(self.dir, self.config, self.clock)
        assert self.lg.recovery.clean == clean or not self.records

    @invariant()
    def matches_model(self) -> None:
        if self.log is None:
            return
        assert self.lg.log_end_offset == len(self.records)
        assert self.lg.log_start_offset == self.start
        assert all_records(self.lg) == [(o, v) for o, v, _ in self.records[self.start :]]

    def teardown(self) -> None:
        if self.log is not None and not self.lg.closed:
            self.lg.abandon()
        shutil.rmtree(self.dir, ignore_errors=True)


LogModel.TestCase.settings = settings(
    max_examples=120, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_log_matches_model = LogModel.TestCase
