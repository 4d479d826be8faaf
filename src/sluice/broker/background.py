"""``BackgroundTasks``: a coordinator's work off the request path, tasks nobody awaits and jobs
repeated on a timer. The group and transaction coordinators each run both, and stop them the
same way at close: the timer first, then every task, before their store closes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from sluice.errors import SluiceError

Job = tuple[float, Callable[[], Awaitable[object] | None]]
"""(seconds between runs, the job): the job runs on the timer task, and is awaited there when
it returns an awaitable."""


class BackgroundTasks:
    """Tasks run on their own, and one timer task. Nobody awaits a task's answer, so a failure
    is logged: a Kafka error (a full disk, say) as a warning, anything else, a bug, with its
    traceback. ``stop`` is set once the owner shuts down: the timer ends, and a task that waits
    or retries may watch it too."""

    def __init__(self, owner: str, logger: logging.Logger) -> None:
        self._owner = owner
        self._log = logger
        self._tasks: set[asyncio.Task[None]] = set()
        self.stop = asyncio.Event()
        self.timer: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Tasks not yet done (the timer not counted)."""
        return len(self._tasks)

    def spawn(self, coro: Awaitable[object], name: str) -> None:
        """Run ``coro`` in the background; :meth:`close` waits for it."""

        async def run() -> None:
            try:
                await coro
            except SluiceError as exc:
                self._log.warning("%s task %s failed: %s", self._owner, name, exc)
            except Exception:
                self._log.exception("%s task %s failed", self._owner, name)

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def start_timers(
        self, name: str, jobs: Sequence[Job], clock: Callable[[], float]
    ) -> None:
        """Start :attr:`timer`: each job every its interval by ``clock``, in turn, until
        ``stop``. A round that fails is logged (``"<name> failed"``); each job runs again at
        its turn."""
        self.timer = asyncio.get_running_loop().create_task(self._run(name, jobs, clock), name=name)

    async def _run(self, name: str, jobs: Sequence[Job], clock: Callable[[], float]) -> None:
        stop = self.stop
        now = clock()
        due = [now + interval for interval, _ in jobs]
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, min(due) - clock()))
            if stop.is_set():
                return
            try:
                for i, (interval, job) in enumerate(jobs):
                    if clock() >= due[i]:
                        due[i] = clock() + interval
                        done = job()
                        if done is not None:
                            await done
            except Exception:
                self._log.exception("%s failed", name)

    async def close(self) -> None:
        """Set ``stop``, and wait for the timer, then for every task (those the tasks start
        meanwhile included)."""
        self.stop.set()
        if self.timer is not None:
            await asyncio.gather(self.timer, return_exceptions=True)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
