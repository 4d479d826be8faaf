"""Crash test of compaction: SIGKILL a process that appends keyed records and cleans its log
continuously, at random moments, many times. After each kill the log opens (finishing or
rolling back an interrupted swap), every key reads its latest acknowledged value, offsets
strictly increase, and no two segments hold the same offsets. Rounds alternate between the
cleaner's worker process (the default: killed with the broker, it may be writing a cleaned file)
and a thread (quicker to start, so more of its kills land in swaps)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from sluice.storage import LogConfig, PartitionLog

from .compaction_crash_child import CONFIG
from .test_compaction import records

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 10


def test_sigkill_during_cleaning_never_loses_a_latest_value(tmp_path: Path) -> None:
    rng = random.Random(20261130)
    data_dir = tmp_path / "p-0"
    out_path = tmp_path / "acked.txt"
    latest: dict[str, tuple[int, str | None]] = {}  # key -> its latest acknowledged record
    mid_cleaning = 0
    swaps = 0
    for round_no in range(ROUNDS):
        start = out_path.stat().st_size if out_path.exists() else 0
        worker = "process" if round_no % 2 else "thread"
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.storage.compaction_crash_child",
                *(str(data_dir), str(out_path), str(round_no), worker),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        # the random moment of the crash, not a readiness wait (a worker process takes about a
        # second to start: its rounds run longer)
        time.sleep(rng.uniform(0.02, 0.8) + (1.0 if worker == "process" else 0.0))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        with open(out_path) as f:
            f.seek(start)
            lines = f.read().split("\n")[:-1]  # whole lines only: a torn last line was not flushed
        in_run = False
        for line in lines:
            kind, *rest = line.split(" ")
            if kind == "A":
                latest[rest[1]] = (int(rest[0]), None if rest[2] == "-" else rest[2])
            elif kind == "S":
                in_run = True
            elif kind == "E":
                in_run = False
                swaps += int(rest[0])
        mid_cleaning += in_run

        log = PartitionLog.open(data_dir, LogConfig.from_dict(CONFIG))
        try:
            assert not list(data_dir.glob("*.swap")) and not list(data_dir.glob("*.cleaned"))
            got = records(log)
            offsets = [o for o, _, _ in got]
            assert offsets == sorted(set(offsets))
            read_latest = {k.decode(): (o, None if v is None else v.decode()) for o, k, v in got if k}
            for key, (offset, value) in latest.items():
                found = read_latest.get(key)
                if found is None:
                    assert value is None, f"round {round_no}: {key} lost its latest value {offset}"
                else:  # the acknowledged record, or one written after it whose line was cut short
                    assert found[0] >= offset, (round_no, key, found, offset)
                    if found[0] == offset:
                        assert found[1] == value
            # no duplicate segment: each segment's batches lie in its own offset range
            files = sorted(int(p.stem) for p in data_dir.glob("*.log"))
            assert files == [s.base_offset for s in log.segments]
            for seg, nxt in zip(log.segments, [*files[1:], log.log_end_offset + 1], strict=True):
                for header in seg.iter_batches(0):
                    assert seg.base_offset <= header.base_offset and header.last_offset < nxt
        finally:
            log.abandon()
    print(f"{mid_cleaning} of {ROUNDS} kills during a cleaning run; {swaps} swaps acknowledged")
    # the kills really landed in cleanings, and cleanings really swapped segments
    assert mid_cleaning >= ROUNDS // 3 and swaps > 2 * ROUNDS
