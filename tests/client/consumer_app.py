"""An application on ``Consumer.run`` for the crash test: ``concurrency=16, ordering="key"``,
random handler delays (every 97th offset of a partition takes half a second, so that
records finish far out of order and a commit of anything but the watermark would pass one that
is still running); each record it finishes is appended to ``--out`` as one line
``partition offset key value`` with a single unbuffered ``write`` (so a SIGKILL leaves whole
lines: everything written is what was processed). Runs until killed or until ``--until``
records were processed."""

from __future__ import annotations

import argparse
import asyncio
import os
import random

from sluice.client import Consumer, ConsumerRecord


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--until", type=int, default=0)
    p.add_argument("--max-delay-ms", type=float, default=3.0)
    p.add_argument("--slow-every", type=int, default=97, help="every Nth offset takes 0.5 s")
    a = p.parse_args()
    fd = os.open(a.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    done = 0
    async with Consumer(
        a.bootstrap, group_id=a.group, topics=[a.topic], metrics_registry=None,
        commit_interval=0.05, config={"auto.offset.reset": "earliest", "session.timeout.ms": 6000},
    ) as c:

        async def handler(r: ConsumerRecord) -> None:
            nonlocal done
            slow = r.offset % a.slow_every == a.slow_every - 1
            await asyncio.sleep(0.5 if slow else random.random() * a.max_delay_ms / 1000)
            key = (r.raw_key or b"-").decode()
            value = (r.raw_value or b"-").decode()
            os.write(fd, f"{r.partition} {r.offset} {key} {value}\n".encode())
            done += 1
            if a.until and done >= a.until:
                c.stop()

        print("running", flush=True)
        await c.run(handler, concurrency=16, ordering="key")
    os.close(fd)


if __name__ == "__main__":
    asyncio.run(main())
