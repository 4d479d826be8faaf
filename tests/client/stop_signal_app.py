"""An application for the signal test: ``signal.signal(SIGUSR1, consumer.stop)`` (docs/client.md:
``stop()`` may be called from a ``signal.signal`` handler), and the signal delivered while
:meth:`Consumer.start` holds the lock that orders a ``stop()`` with the loop's start (a profile
hook raises it when ``start`` calls ``asyncio.get_running_loop``: the moment a SIGTERM during
the application's start may come). The handler runs on that same thread, inside that lock.
Prints ``stopped`` and the count of records processed (0) once ``run`` returned (the stop is
for it) and the consumer closed."""

from __future__ import annotations

import asyncio
import signal
import sys
from types import FrameType
from typing import Any

from sluice.client import Consumer, ConsumerRecord


def main() -> None:
    consumer = Consumer(sys.argv[1], group_id="g", topics="t", metrics_registry=None,
                        max_retries=0, config={"auto.offset.reset": "earliest"})
    signal.signal(signal.SIGUSR1, lambda *_: consumer.stop())

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if (event == "c_call" and getattr(arg, "__name__", "") == "get_running_loop"
                and frame.f_code.co_name == "start"):
            sys.setprofile(None)
            signal.raise_signal(signal.SIGUSR1)  # handled here, start() holding the lock

    async def handler(r: ConsumerRecord) -> None:
        # The topic has a record: were the stop lost, the run would fail here at once.
        raise AssertionError("the stop came before run: no record is processed")

    async def run() -> None:
        sys.setprofile(hook)
        try:
            await consumer.start()
        finally:
            sys.setprofile(None)
        await asyncio.wait_for(consumer.run(handler), 30)
        await consumer.close()
        print("stopped", f"processed={consumer.metrics()['processed']}", flush=True)

    asyncio.run(run())


if __name__ == "__main__":
    main()
