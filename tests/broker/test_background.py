"""The coordinators' BackgroundTasks: a failing timer round is logged and the timer keeps
going; a failing task is logged by kind; close waits for the timer and for every task, those
started by tasks included (the store closes after it, so no write may still be pending)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sluice.broker.background import BackgroundTasks
from sluice.errors import StorageError

log = logging.getLogger("tests.background")


def test_a_failing_round_is_logged_and_the_job_runs_again(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> int:
        tasks = BackgroundTasks("test coordinator", log)
        runs = 0
        again = asyncio.Event()

        def job() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                raise RuntimeError("first round fails")
            again.set()

        tasks.start_timers("test-timers", [(0.001, job)], asyncio.get_running_loop().time)
        timer = tasks.timer
        assert timer is not None
        await asyncio.wait_for(again.wait(), 10)
        await tasks.close()
        assert timer.done() and not timer.cancelled()
        return runs

    with caplog.at_level(logging.ERROR, "tests.background"):
        assert asyncio.run(main()) >= 2
    assert [r.getMessage() for r in caplog.records] == ["test-timers failed"]


def test_close_waits_for_tasks_that_tasks_start() -> None:
    done: list[str] = []

    async def main() -> None:
        tasks = BackgroundTasks("test coordinator", log)

        async def second() -> None:
            await asyncio.sleep(0.01)
            done.append("second")

        async def first() -> None:
            await asyncio.sleep(0)
            tasks.spawn(second(), "second")
            done.append("first")

        tasks.spawn(first(), "first")
        assert tasks.pending == 1
        await tasks.close()
        assert tasks.pending == 0

    asyncio.run(main())
    assert done == ["first", "second"]


def test_a_kafka_error_is_a_warning_and_a_bug_has_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        tasks = BackgroundTasks("test coordinator", log)

        async def disk_full() -> None:
            raise StorageError("no space left")

        async def bug() -> None:
            raise ZeroDivisionError

        tasks.spawn(disk_full(), "write")
        tasks.spawn(bug(), "bug")
        await tasks.close()

    with caplog.at_level(logging.WARNING, "tests.background"):
        asyncio.run(main())
    seen = {(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records}
    assert seen == {
        (logging.WARNING, "test coordinator task write failed: no space left", False),
        (logging.ERROR, "test coordinator task bug failed", True),
    }
