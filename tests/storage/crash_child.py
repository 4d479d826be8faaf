"""Child process for the crash test: appends forever and prints each acknowledged batch.

Run as ``python -m tests.storage.crash_child DIR ACK ROUND``; prints ``ready`` once open, then
``<base offset> <tag>`` per acknowledged batch, flushed before the next append is issued.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sluice.protocol.records import build_batch
from sluice.storage import LogConfig
from sluice.storage.partition import Partition


async def main(directory: Path, ack: str, round_no: int) -> None:
    config = LogConfig.from_dict({"sluice.append.ack": ack, "segment.bytes": "65536"})
    log = Partition.open(directory, config)
    print("ready", flush=True)

    async def appender(worker: int) -> None:
        seq = 0
        while True:
            tag = f"r{round_no}w{worker}s{seq}"
            records = [(None, f"{tag}:{i}:".encode() * 8) for i in range(1 + seq % 5)]
            base = await log.append(build_batch(records))
            sys.stdout.write(f"{base} {tag} {len(records)}\n")
            sys.stdout.flush()
            seq += 1

    await asyncio.gather(*(appender(w) for w in range(8)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
