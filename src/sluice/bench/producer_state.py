"""How long opening a large log takes when idempotent producers wrote it: cleanly (the state file
names the snapshot holding the producers), after a crash with the snapshots written at each roll
(one snapshot plus the active segment's headers), and after a crash without snapshots (every
batch header from the start). ``python -m sluice.bench.producer_state [--gib 1]``."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from sluice.config import LogConfig
from sluice.protocol.records import build_batch
from sluice.storage import PartitionLog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice.bench.producer_state")
    parser.add_argument("--gib", type=float, default=1.0, help="log size (default 1 GiB)")
    parser.add_argument("--producers", type=int, default=8)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-producers-"))
    directory = root / "p-0"
    config = LogConfig.from_dict({"segment.bytes": str(64 << 20), "sluice.append.mode": "inline"})
    try:
        log = PartitionLog.open(directory, config)
        records: list[tuple[bytes | None, bytes | None]] = [(None, b"x" * 1000) for _ in range(100)]
        sequences = [0] * args.producers
        written = batches = 0
        # end mid-segment, so a crash leaves a half-full active segment for recovery to walk
        while written < args.gib * (1 << 30) + (32 << 20):
            pid = batches % args.producers
            batch = build_batch(records, producer_id=pid, producer_epoch=0, base_sequence=sequences[pid])
            sequences[pid] += len(records)
            log.append(batch)
            written += len(batch)
            batches += 1
        segments = len(log.segments)
        state = log.close(marker=False)
        started = time.perf_counter()
        clean = PartitionLog.open(directory, config, state=state)
        clean.producer_state()
        clean_s = time.perf_counter() - started
        clean.abandon()
        started = time.perf_counter()
        crashed = PartitionLog.open(directory, config)  # no state: recovery, producers rebuilt
        snapshot_s = time.perf_counter() - started
        crashed.abandon()
        for snapshot in directory.glob("*.snapshot"):
            snapshot.unlink()
        started = time.perf_counter()
        PartitionLog.open(directory, config).abandon()
        replay_s = time.perf_counter() - started
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{written / 2**30:.2f} GiB in {segments} segments, {batches} batches of {len(records)} records from {args.producers} idempotent producers")
    print(f"clean open and load: {clean_s * 1000:.1f} ms")
    print(f"after a crash, from the newest snapshot: {snapshot_s * 1000:.0f} ms")
    print(f"after a crash, no snapshot (every header replayed): {replay_s * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
