"""Child process for the compaction crash test: appends keyed records and cleans, forever.

Run as ``python -m tests.storage.compaction_crash_child DIR LOG_FILE ROUND WORKER``, WORKER being
where the cleaner's file work runs (``process`` or ``thread``); prints ``ready``
on stdout once the log is open, then writes to LOG_FILE, each line flushed when it is true:
``A <offset> <key> <value or ->`` per acknowledged record, ``S`` when a cleaning run starts and
``E <swaps>`` when it ends.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from sluice.protocol.records import build_batch
from sluice.storage import CleanerConfig, LogCleaner, LogConfig, PartitionLog

CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "2048",
    "retention.ms": "-1",
    "delete.retention.ms": "100",
    "index.interval.bytes": "256",
}


async def main(directory: Path, out_path: Path, round_no: int, worker: str) -> None:
    log = PartitionLog.open(directory, LogConfig.from_dict(CONFIG))
    # a map of 100 keys: the 40 keys written here fill it in a few batches, so runs are partial
    cleaner = LogCleaner(CleanerConfig(dedupe_buffer_size=100 * 128, worker=worker), lambda: [log])
    rng = random.Random(round_no)
    out = open(out_path, "a", buffering=1)  # noqa: SIM115 - lives until the SIGKILL
    print("ready", flush=True)
    seq = 0
    while True:
        for _ in range(rng.randint(1, 40)):
            pairs: list[tuple[bytes | None, bytes | None]] = []
            for _ in range(rng.randint(1, 4)):
                seq += 1
                key = f"k{rng.randrange(40)}".encode()
                value = None if rng.random() < 0.1 else f"r{round_no}s{seq}".encode() * rng.randint(1, 8)
                pairs.append((key, value))
            base = log.append(build_batch(pairs))
            out.write("".join(
                f"A {base + i} {k.decode()} {'-' if v is None else v.decode()}\n"  # type: ignore[union-attr]
                for i, (k, v) in enumerate(pairs)
            ))
        out.write("S\n")
        result = await cleaner.clean(log)
        out.write(f"E {0 if result is None else result.swaps}\n")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
