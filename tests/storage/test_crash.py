"""Crash test: SIGKILL a process that appends, many times; every acknowledged batch survives."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sluice.storage import LogConfig, PartitionLog

from .conftest import all_records

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ack", ["fsynced", "written"])
def test_acknowledged_batches_survive_sigkill(tmp_path: Path, ack: str) -> None:
    rng = random.Random(1234)
    acked: dict[int, tuple[str, int]] = {}
    data_dir = tmp_path / "p-0"
    for round_no in range(12):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.storage.crash_child", str(data_dir), ack, str(round_no)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        kill_after = rng.choice([0, 1, rng.randrange(2, 400)])
        for _ in range(kill_after):
            line = child.stdout.readline()
            if not line:
                break
            _record(acked, line)
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
        for line in rest.split("\n")[:-1]:  # whole lines printed before it died: acked too
            _record(acked, line)
        assert child.returncode == -signal.SIGKILL

        log = PartitionLog.open(data_dir, LogConfig())
        try:
            # An unclean stop means recovery, unless nothing was ever written (no file at all).
            assert not log.recovery.clean or not any(data_dir.glob("*.log"))
            records = dict(all_records(log))  # CRC-checked, in order, contiguous
            assert sorted(records) == list(range(log.log_end_offset))
            for base, (tag, count) in acked.items():
                for i in range(count):
                    value = records[base + i]
                    assert value is not None and value.startswith(f"{tag}:{i}:".encode()), (base, tag)
            assert log.read(log.log_end_offset, 100) is None  # nothing past the recovered end
            assert log.active_segment.file_size() == log.active_segment.size
        finally:
            log.abandon()
    assert len(acked) > 100  # the test really exercised acknowledged appends


def _record(acked: dict[int, tuple[str, int]], line: str) -> None:
    base, tag, count = line.split()
    acked[int(base)] = (tag, int(count))
