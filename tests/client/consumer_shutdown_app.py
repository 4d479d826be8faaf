"""An application for the shutdown test: ``run(concurrency=4)`` with slow handlers, stopped on
SIGTERM the way docs/client.md shows (``loop.add_signal_handler(SIGTERM, consumer.stop)``, or
with ``--on-sigterm cancel`` by cancelling the task that runs it), then closed by ``async
with``. Prints ``processing`` when 20 records finished (it holds partitions and has offsets to
commit, so its last commit needs the coordinator), ``exited`` when ``async with`` is done."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from sluice.client import Consumer, ConsumerRecord


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--close-timeout", type=float, required=True)
    p.add_argument("--on-sigterm", choices=("stop", "cancel"), default="stop")
    a = p.parse_args()
    loop = asyncio.get_running_loop()
    done = 0
    async with Consumer(
        a.bootstrap, group_id=a.group, topics=[a.topic], metrics_registry=None,
        close_timeout=a.close_timeout, config={"auto.offset.reset": "earliest"},
        commit_interval=60,  # nothing committed before the broker goes: the last commit must
    ) as c:

        async def handler(r: ConsumerRecord) -> None:
            nonlocal done
            await asyncio.sleep(0.05)
            done += 1
            if done == 20:
                print("processing", flush=True)

        run = asyncio.ensure_future(c.run(handler, concurrency=4))
        loop.add_signal_handler(signal.SIGTERM, c.stop if a.on_sigterm == "stop" else run.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run
    print("exited", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
