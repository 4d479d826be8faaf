"""The consumer's shutdown is bounded by ``close_timeout`` even with the broker gone: run's last
commit (which librdkafka holds until the session times out, 45 s by default, when the group
coordinator is unreachable) and ``close`` give up at the deadline, log what was not committed,
and leave librdkafka to a background thread; an application stopped by SIGTERM exits in time.
Each test stops a broker of its own."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import confluent_kafka as ck
import pytest

from sluice.client import Consumer, ConsumerRecord, Producer
from sluice.testing import EmbeddedBroker
from tests.client.conftest import DEADLINE

APP = Path(__file__).with_name("consumer_shutdown_app.py")
ROOT = Path(__file__).resolve().parents[2]
CLOSE_TIMEOUT = 2.0
BOUND = 10.0
"""What a shutdown with ``close_timeout=2`` may take here: the timeout plus generous slack (it
took 45 s, librdkafka's default session timeout, before the shutdown was bounded)."""


def _produce(bootstrap: str, topic: str, n: int) -> None:
    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, b"%d" % i, key=b"k%d" % (i % 10))
    assert p.flush(DEADLINE) == 0


def _slow_handler() -> tuple[Callable[[ConsumerRecord], Awaitable[None]], asyncio.Event]:
    """A handler taking 50 ms a record, and an event set once it has finished 20 (so run's last
    commit has offsets to commit)."""
    processed = asyncio.Event()
    done = 0

    async def handler(r: ConsumerRecord) -> None:
        nonlocal done
        await asyncio.sleep(0.05)
        done += 1
        if done == 20:
            processed.set()

    return handler, processed


@pytest.mark.parametrize("how", ["stop", "cancel", "close"])
def test_shutdown_with_the_broker_down_takes_at_most_close_timeout(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``stop()`` then ``close()``, cancelling ``run`` then ``close()``, or ``close()`` while
    ``run`` runs: with the broker stopped mid-run, the whole shutdown stays within the bound,
    and the commit that could not be made is logged with its offsets."""
    caplog.set_level(logging.WARNING, logger="sluice.client")
    with EmbeddedBroker(tmp_path, topics={"t": 2}) as broker:
        _produce(broker.bootstrap_servers, "t", 400)

        async def main() -> float:
            handler, processed = _slow_handler()

            c = Consumer(broker.bootstrap_servers, group_id="g", topics=["t"],
                         metrics_registry=None, close_timeout=CLOSE_TIMEOUT,
                         commit_interval=60,  # so run's last commit has offsets to commit
                         config={"auto.offset.reset": "earliest"})
            await c.start()
            task = asyncio.create_task(c.run(handler, concurrency=4))
            await asyncio.wait_for(processed.wait(), DEADLINE)
            await asyncio.to_thread(broker.stop)
            started = time.monotonic()
            if how == "stop":
                c.stop()
                await task
                await c.close()
            elif how == "cancel":
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await c.close()
            else:
                await c.close()
                await task
            assert c.closed
            return time.monotonic() - started

        elapsed = asyncio.run(asyncio.wait_for(main(), 2 * DEADLINE))
    print(f"{how}: shutdown with the broker down took {elapsed:.1f} s")
    assert elapsed < BOUND, f"{how}: shutdown took {elapsed:.1f} s"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("last commit" in w and "('t', " in w for w in warnings), warnings


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_stop_while_a_dead_letter_copy_waits_for_the_broker_takes_at_most_close_timeout(
    tmp_path: Path, concurrency: int
) -> None:
    """A record finally failed as the broker went down: its dead-letter copy waits for the
    broker (the dead-letter producer's delivery.timeout.ms, 300 s by default), and ``stop()``
    waited for it, far past ``close_timeout``. Now the stop gives the copy part of the
    deadline, then leaves the record unprocessed: back before the position, not committed,
    neither failed nor dead-lettered in the metrics."""
    with EmbeddedBroker(tmp_path, topics={"t": 1, "t.dlq": 1}) as broker:
        _produce(broker.bootstrap_servers, "t", 20)

        async def main() -> tuple[float, int | None, dict[str, object]]:
            failing = asyncio.Event()

            async def handler(r: ConsumerRecord) -> None:
                if r.offset == 5:
                    await asyncio.to_thread(broker.stop)
                    failing.set()
                    raise ValueError("cannot process")

            async with Consumer(broker.bootstrap_servers, group_id="g", topics=["t"],
                                metrics_registry=None, close_timeout=CLOSE_TIMEOUT,
                                max_retries=0, dead_letter_topic="{topic}.dlq",
                                config={"auto.offset.reset": "earliest"}) as c:
                task = asyncio.create_task(c.run(handler, concurrency=concurrency,
                                                 ordering="partition"))
                await asyncio.wait_for(failing.wait(), DEADLINE)
                await asyncio.sleep(0.2)  # the copy is in the dead-letter producer's hands
                started = time.monotonic()
                c.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(task), BOUND)
                except TimeoutError:
                    pytest.fail(f"run had not returned {BOUND} s after stop()")
                elapsed = time.monotonic() - started
                return elapsed, c.position("t", 0), c.metrics()

        elapsed, position, metrics = asyncio.run(asyncio.wait_for(main(), 2 * DEADLINE))
    assert elapsed < BOUND, f"the stop took {elapsed:.1f} s"
    assert position == 5  # the record goes back: the group's next member reads it again
    assert (metrics["failed"], metrics["dead_lettered"]) == (0, 0)


def _read_line(stream: subprocess.Popen[bytes], deadline: float) -> str:
    assert stream.stdout is not None
    fd = stream.stdout.fileno()
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line from the app, got {line!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            assert chunk, f"the app exited, got {line!r}"
            line += chunk
    return line.decode().strip()


@pytest.mark.parametrize("how", ["stop", "cancel"])
def test_a_sigterm_app_exits_within_close_timeout_with_the_broker_down(
    tmp_path: Path, how: str
) -> None:
    with EmbeddedBroker(tmp_path, topics={"t": 2}) as broker:
        _produce(broker.bootstrap_servers, "t", 400)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT),
                                             env.get("PYTHONPATH", "")])
        app = subprocess.Popen(
            [sys.executable, str(APP), "--bootstrap", broker.bootstrap_servers, "--topic", "t",
             "--group", "g", "--close-timeout", str(CLOSE_TIMEOUT), "--on-sigterm", how],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        try:
            assert _read_line(app, time.monotonic() + DEADLINE) == "processing"
            broker.stop()
            started = time.monotonic()
            app.send_signal(signal.SIGTERM)
            code = app.wait(2 * DEADLINE)
            elapsed = time.monotonic() - started
        finally:
            if app.poll() is None:
                app.kill()
                app.wait()
            assert app.stdout is not None
            app.stdout.close()
    print(f"SIGTERM ({how}) to exit with the broker down: {elapsed:.1f} s")
    assert code == 0
    assert elapsed < BOUND, f"the app took {elapsed:.1f} s to exit"


def _consumer_threads(client_id: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(client_id)]


@pytest.mark.parametrize(
    "second_cancel", [*(f"after-{n}-loop-turns" for n in range(7)), "in-last-commit"]
)
def test_cancelling_run_twice_with_the_broker_down_leaves_nothing_open(
    tmp_path: Path, second_cancel: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``run`` (with a dead-letter topic, so it has a producer of its own) cancelled twice
    with the broker down, the second cancel 1 to 7 loop turns after the first (a second cancel
    while run waited for its periodic committer's end was swallowed) or during its last commit (which waits
    up to its share of close_timeout, 3 s here): close() returns within its timeout, the
    dead-letter producer's thread is gone, what librdkafka still holds is left to daemon
    threads, and asyncio reports no task destroyed while pending."""
    close_timeout = 4.0
    caplog.set_level(logging.WARNING)
    with EmbeddedBroker(tmp_path, topics={"t": 2}) as broker:
        _produce(broker.bootstrap_servers, "t", 400)

        async def main() -> tuple[float, float]:
            handler, processed = _slow_handler()

            c = Consumer(broker.bootstrap_servers, group_id="g", topics=["t"],
                         metrics_registry=None, close_timeout=close_timeout,
                         commit_interval=60, dead_letter_topic="t.dlq",
                         config={"auto.offset.reset": "earliest", "client.id": "twice"})
            await c.start()
            task = asyncio.create_task(c.run(handler, concurrency=4))
            await asyncio.wait_for(processed.wait(), DEADLINE)
            assert any(t.name == "twice-dlq-poll" for t in threading.enumerate())
            await asyncio.to_thread(broker.stop)
            started = time.monotonic()
            task.cancel()
            if second_cancel == "in-last-commit":
                # the handlers in progress finish within 0.05 s; the commit then waits 3 s
                await asyncio.sleep(0.5)
            else:  # at each step of run's wind-down in turn (its handlers, its committer, ...)
                for _ in range(int(second_cancel.split("-")[1]) + 1):
                    await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            ran = time.monotonic() - started
            started = time.monotonic()
            await c.close()
            closing = time.monotonic() - started
            assert c.closed
            left = _consumer_threads("twice")
            assert not [t.name for t in left if "dlq" in t.name], left
            assert all(t.daemon for t in left), left
            return ran, closing

        ran, closing = asyncio.run(asyncio.wait_for(main(), 2 * DEADLINE))
        gc.collect()
    print(f"{second_cancel}: run returned after {ran:.2f} s, close took {closing:.2f} s")
    assert ran < close_timeout * 3 / 4, "the second cancel did not end run's last commit"
    assert closing < close_timeout
    destroyed = [r.getMessage() for r in caplog.records
                 if "destroyed but it is pending" in r.getMessage()]
    assert not destroyed, destroyed


def test_close_during_run_with_the_broker_down_returns_within_its_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """close(timeout) while run runs, the broker down: run's last commit gives up within its
    share of the deadline (it is logged, with its offsets), run returns before close stops
    waiting for it, and close returns within its timeout."""
    timeout = 2.0
    caplog.set_level(logging.WARNING, logger="sluice.client")
    with EmbeddedBroker(tmp_path, topics={"t": 2}) as broker:
        _produce(broker.bootstrap_servers, "t", 400)

        async def main() -> float:
            handler, processed = _slow_handler()

            c = Consumer(broker.bootstrap_servers, group_id="g", topics=["t"],
                         metrics_registry=None, close_timeout=30, commit_interval=60,
                         dead_letter_topic="t.dlq", config={"auto.offset.reset": "earliest"})
            await c.start()
            task = asyncio.create_task(c.run(handler, concurrency=4))
            await asyncio.wait_for(processed.wait(), DEADLINE)
            await asyncio.to_thread(broker.stop)
            started = time.monotonic()
            await c.close(timeout)
            elapsed = time.monotonic() - started
            assert task.done()
            await task
            return elapsed

        elapsed = asyncio.run(asyncio.wait_for(main(), 2 * DEADLINE))
    print(f"close({timeout}) during run with the broker down took {elapsed:.3f} s")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert elapsed < timeout, warnings
    assert any("last commit" in w and "('t', " in w for w in warnings), warnings
    assert not any("run had not returned" in w for w in warnings), warnings


def test_a_broker_outage_is_logged_once_per_failure_at_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker stopped under a consumer and a producer: each failed connection is one line,
    on ``sluice.client`` at WARNING, naming the client (librdkafka's own log line for it, at
    ERROR on ``sluice.client.librdkafka``, is left out); a line per failure, not two. The
    disconnect itself (librdkafka's INFO line, with no error event) is still logged."""
    caplog.set_level(logging.DEBUG, logger="sluice.client")
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        _produce(broker.bootstrap_servers, "t", 10)

        def failures() -> list[logging.LogRecord]:
            return [r for r in caplog.records if "Connect to" in r.getMessage()]

        def disconnects() -> list[logging.LogRecord]:
            # librdkafka's FAIL line for a connection the broker closed has no error event to
            # repeat: it is kept (it was left out with the repeating ones, logged nowhere)
            return [r for r in caplog.records
                    if r.name == "sluice.client.librdkafka" and "Disconnected" in r.getMessage()]

        async def main() -> None:
            p = Producer(broker.bootstrap_servers, metrics_registry=None,
                         config={"client.id": "outage-p"})
            c = Consumer(broker.bootstrap_servers, group_id="g", topics="t",
                         metrics_registry=None,
                         config={"auto.offset.reset": "earliest", "client.id": "outage-c"})
            await p.send("t", b"x")
            assert await c.getmany(10, DEADLINE)
            await asyncio.to_thread(broker.stop)
            deadline = time.monotonic() + DEADLINE
            while not all(any(name in r.getMessage() for r in failures())
                          for name in ("outage-c", "outage-p")) or not disconnects():
                assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
                await c.getmany(10, 0.1)
            await c.close(1)
            await p.close(1)

        asyncio.run(asyncio.wait_for(main(), 2 * DEADLINE))
    lines = failures()
    print(f"{len(lines)} lines for failed connections, e.g. {lines[0].getMessage()!r}")
    assert {(r.name, r.levelname) for r in lines} == {("sluice.client", "WARNING")}, [
        (r.name, r.levelname, r.getMessage()) for r in lines]


@pytest.mark.parametrize("first", ["cancelled", "from a handler", "before start"])
def test_a_second_close_waits_for_the_first_and_the_consumer_closes(
    tmp_path: Path, first: str
) -> None:
    """A close whose caller was cancelled (``asyncio.timeout`` around it, a task group torn
    down) left the consumer half closed: ``closing`` set, so every later close, ``async
    with``'s included, returned at once and nothing closed librdkafka (its fetch thread ran
    on, the group was never left). A close from a handler goes on in the background (run
    returns first), and ``async with``'s close after ``run`` returned at once, the consumer
    not closed yet. The close now goes on whatever its caller does, and a later close waits
    for it: ``closed`` once it returns (a consumer never started too). Each failed before
    the fix (``closed`` False)."""
    with EmbeddedBroker(tmp_path, topics={"t": 1}) as broker:
        _produce(broker.bootstrap_servers, "t", 10)

        async def main() -> tuple[bool, list[str]]:
            c = Consumer(broker.bootstrap_servers, group_id="g", topics=["t"],
                         metrics_registry=None, close_timeout=10,
                         config={"auto.offset.reset": "earliest", "client.id": "again"})

            async def handler(r: ConsumerRecord) -> None:
                await c.close()  # run returns after this handler; the close goes on after it

            if first == "before start":  # a close in progress, then another
                task = asyncio.create_task(c.close())
                await asyncio.sleep(0)
                await c.close()
                assert task.done()
                return c.closed, []
            async with c:
                if first == "cancelled":
                    await c.getmany(timeout=DEADLINE)
                    closing = asyncio.create_task(c.close())
                    await asyncio.sleep(0)  # the close begins (its caller waits for it)
                    closing.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await closing
                else:
                    await asyncio.wait_for(c.run(handler), DEADLINE)
            # The close thread hands its outcome to the loop, then ends: a moment later, maybe.
            # A fetch thread left running (the defect) is still alive after the join.
            for thread in _consumer_threads("again"):
                thread.join(5)
            return c.closed, [t.name for t in _consumer_threads("again") if t.is_alive()]

        closed, threads = asyncio.run(asyncio.wait_for(main(), DEADLINE))
        assert closed
        assert not threads, threads
