"""An application for the signal test: ``signal.signal(SIGUSR1, consumer.stop)`` (docs/client.md)
delivered while ``run`` is idle, its loop's thread waiting in ``select()`` for the next record or
its next commit tick (``commit_interval`` 45 s). Once the topic's one record is processed, a
watcher thread sends the signal as soon as the main thread's frame is the selector's ``select``.
Prints ``stopped`` once ``run`` returned and the consumer closed; ``run``'s last commit must be
made within ``close_timeout`` (5 s) of the stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from sluice.client import Consumer, ConsumerRecord


def _signal_when_selecting(main_id: int) -> None:
    while True:
        frame = sys._current_frames().get(main_id)
        if frame is not None and frame.f_code.co_name == "select" and (
            frame.f_code.co_filename.endswith("selectors.py")
        ):
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        threading.Event().wait(0.001)  # polling the other thread's frame, not a readiness wait


def main() -> None:
    consumer = Consumer(sys.argv[1], group_id="g", topics="t", metrics_registry=None,
                        commit_interval=45, close_timeout=5,
                        config={"auto.offset.reset": "earliest"})
    signal.signal(signal.SIGUSR1, lambda *_: consumer.stop())
    main_id = threading.get_ident()

    async def handler(r: ConsumerRecord) -> None:
        threading.Thread(target=_signal_when_selecting, args=(main_id,), daemon=True).start()

    async def run() -> None:
        async with consumer:
            await consumer.run(handler)
        print("stopped", flush=True)

    asyncio.run(run())


if __name__ == "__main__":
    main()
