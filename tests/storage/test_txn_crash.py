"""Crash test of transactions: SIGKILL a process writing transactions and markers at random
moments, many times. On every reopen, the last stable offset, the aborted-transactions index and
what a read_committed consumer reads are exactly what the markers in the log say, and every
acknowledged marker (and batch) is there."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sluice.protocol.markers import read_marker
from sluice.protocol.records import decode_records
from sluice.storage import LogConfig, PartitionLog
from sluice.storage.txn_index import AbortedTxn

from .txns import committed_values

ROOT = Path(__file__).resolve().parents[2]


class Truth:
    """What the markers in the log say, read batch by batch from the files."""

    def __init__(self, log: PartitionLog) -> None:
        self.markers: dict[int, tuple[int, bool]] = {}
        self.data: dict[int, bytes | None] = {}
        open_txns: dict[int, tuple[int, list[tuple[int, bytes | None]]]] = {}
        committed: list[tuple[int, bytes | None]] = []
        self.aborted: list[AbortedTxn] = []
        for seg in log.segments:
            for h in seg.iter_batches(0):
                batch = seg.pread(h.position, h.size)
                if h.is_control:
                    marker = read_marker(h, batch)
                    assert marker is not None
                    self.markers[h.base_offset] = (h.producer_id, marker.commit)
                    txn = open_txns.pop(h.producer_id, None)
                    if txn is not None:
                        if marker.commit:
                            committed.extend(txn[1])
                        else:
                            others = [first for first, _ in open_txns.values()]
                            lso = min(others) if others else h.base_offset + 1
                            self.aborted.append(AbortedTxn(h.producer_id, txn[0], h.base_offset, lso))
                    continue
                records = [(r.offset, r.value) for r in decode_records(batch)]
                self.data.update(records)
                if h.is_transactional:
                    open_txns.setdefault(h.producer_id, (h.base_offset, []))[1].extend(records)
                else:
                    committed.extend(records)
        firsts = [first for first, _ in open_txns.values()]
        self.lso = min(firsts) if firsts else log.high_watermark
        self.committed = [v for o, v in sorted(committed) if o < self.lso]


@pytest.mark.parametrize("ack", ["written", "fsynced"])
def test_transactions_survive_sigkill_exactly_as_their_markers_say(tmp_path: Path, ack: str) -> None:
    rng = random.Random(4321)
    data_dir = tmp_path / "p-0"
    acked_markers: dict[int, tuple[int, bool]] = {}
    acked_data: dict[int, str] = {}
    outcome: dict[str, bool] = {}  # tag of an acknowledged batch -> its transaction committed
    checked_rounds = 0
    for round_no in range(10):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.storage.txn_crash_child", str(data_dir), ack, str(round_no)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        pending: dict[int, list[str]] = {}
        lines: list[str] = []
        while (line := child.stdout.readline().strip()) != "ready":
            assert line, "the child died before it was ready"
            lines.append(line)
        kill_after = rng.choice([0, 1, rng.randrange(2, 1200)])
        for _ in range(kill_after):
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=30)
        lines.extend(rest.split("\n")[:-1])  # whole lines printed before it died: acknowledged too
        assert child.returncode == -signal.SIGKILL
        for line in lines:
            kind, *fields = line.split()
            if kind == "D":
                pid, base, tag = int(fields[0]), int(fields[1]), fields[2]
                acked_data[base] = tag
                pending.setdefault(pid, []).append(tag)
            elif kind == "P":
                acked_data[int(fields[0])] = fields[1]
                outcome[fields[1]] = True
            elif kind == "M":
                pid, offset, commit = int(fields[0]), int(fields[1]), fields[2] == "1"
                acked_markers[offset] = (pid, commit)
                for tag in pending.pop(pid, []):
                    outcome[tag] = commit

        log = PartitionLog.open(data_dir, LogConfig())
        try:
            assert not log.recovery.clean or not any(data_dir.glob("*.log"))
            truth = Truth(log)
            for offset, marker in acked_markers.items():
                assert truth.markers.get(offset) == marker, offset
            for base, tag in acked_data.items():
                assert truth.data[base] in (tag.encode(), f"{tag}-0".encode()), base
            assert log.last_stable_offset == truth.lso
            assert log.aborted_txns(log.log_start_offset, log.log_end_offset + 1) == truth.aborted
            view = committed_values(log)
            assert view == truth.committed
            # Every acknowledged batch below the LSO whose marker was acknowledged is visible
            # exactly if that marker committed (plain batches always are).
            visible = set(view)
            for base, tag in acked_data.items():
                if base < truth.lso and tag in outcome:
                    value = tag.encode() if "plain" in tag else f"{tag}-0".encode()
                    assert (value in visible) == outcome[tag], tag
            checked_rounds += 1
        finally:
            log.abandon()
    assert checked_rounds == 10
    assert len(acked_markers) > 50 and any(not c for _, c in acked_markers.values())
