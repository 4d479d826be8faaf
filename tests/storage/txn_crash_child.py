"""Child process for the transaction crash test: transactional producers and markers, forever.

Run as ``python -m tests.storage.txn_crash_child DIR ACK ROUND``. It first aborts every
transaction a previous (killed) incarnation left open, as a recovering coordinator would, then
four producers each write transactions of one to four batches and end them with a COMMIT or an
ABORT marker, the first of them also writing a plain (non-transactional) batch after each. Every acknowledged append and marker is
printed (and flushed) before the producer issues its next:

    D <pid> <base offset> <tag>      a transactional batch of two records, values <tag>-0, <tag>-1
    P <base offset> <tag>            a plain batch of one record, value <tag>
    M <pid> <offset> <1 commit|0 abort>
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from sluice.protocol.records import build_batch
from sluice.storage import LogConfig
from sluice.storage.partition import Partition


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(directory: Path, ack: str, round_no: int) -> None:
    config = LogConfig.from_dict({"sluice.append.ack": ack, "segment.bytes": "8192"})
    part = Partition.open(directory, config)
    for pid, entry in part.log.active_producers():
        if entry.txn_first_offset >= 0:
            offset = await part.write_txn_marker(pid, entry.epoch, 0, commit=False)
            say(f"M {pid} {offset} 0")
    say("ready")
    rng = random.Random(round_no)

    async def producer(worker: int) -> None:
        pid = 1000 * (round_no + 1) + worker
        seq = 0
        txn_no = 0
        while True:
            for b in range(rng.randint(1, 4)):
                tag = f"r{round_no}p{pid}t{txn_no}b{b}"
                batch = build_batch(
                    [(None, f"{tag}-{i}".encode()) for i in range(2)],
                    producer_id=pid,
                    producer_epoch=0,
                    base_sequence=seq,
                    base_timestamp=1_700_000_000_000,
                    transactional=True,
                )
                base = await part.append(batch)
                seq += 2
                say(f"D {pid} {base} {tag}")
            commit = rng.random() < 0.5
            offset = await part.write_txn_marker(pid, 0, 0, commit)
            say(f"M {pid} {offset} {int(commit)}")
            if worker == 0:  # a plain producer's batch now and then
                tag = f"r{round_no}plain{txn_no}"
                base = await part.append(build_batch([(None, tag.encode())], base_timestamp=1_700_000_000_000))
                say(f"P {base} {tag}")
            txn_no += 1

    await asyncio.gather(*(producer(w) for w in range(4)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
