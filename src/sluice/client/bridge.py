"""The asyncio bridge: one thread per producer calls librdkafka's ``poll()``, and the loop hears
about what a poll served once, with one ``call_soon_threadsafe``, however many records it was.

librdkafka delivers reports only from ``poll()``/``flush()``, and both block, so they cannot run
on the loop. A hop per record would cost a self-pipe write and a loop wake-up per record; a hop
per poll amortises both over every report that poll served (thousands at full speed).

What a report does is up to its record's *token* (:mod:`sluice.client.sinks`): the delivery
callback librdkafka calls, which writes the outcome where its sink keeps outcomes. Tokens run
one at a time, whichever thread serves them: every ``poll()`` happens under :attr:`serving`.
The loop then finishes on its side what needs the loop (futures, waking waiters, failures,
dead-letter copies) in :meth:`~DeliveryBridge.after_poll`'s callback.

While the loop is busy submitting, it serves reports itself (:meth:`serve_here`: ``poll(0)``
between submissions, as a plain confluent-kafka loop does), and the poll thread stands aside
until the loop's task next suspends (or, across the moments ``send_batch`` suspends only to let
other tasks run, until it releases its :meth:`~DeliveryBridge.hold`). confluent-kafka takes the
GIL once per delivery callback, so a poll thread serving reports while the loop thread runs
Python trades the GIL back and forth once per record (in development, ``send_batch`` was about
a third slower that way).

When the loop waits for every record it has in flight and will produce nothing more until some
are delivered (a full ``send_ordered`` window, a ``send_batch`` whose records are all submitted,
``flush``), lingering only delays those records: ``linger.ms`` waits for records that are not
coming. Such a wait counts itself in :attr:`~DeliveryBridge.urgent`, and while it is not 0 the
poll thread calls librdkafka's ``flush()`` in short slices instead of ``poll()``. ``flush()``
serves reports as ``poll()`` does, and while it runs librdkafka's broker threads treat every
partition's linger as expired (``rd_kafka_flush`` sets ``rk_flushing``), so what lingers is
sent at once. Each slice blocks (at most :data:`FLUSH_SLICE`), so nothing spins; with nothing
in flight the thread polls as usual; other sends meanwhile are not held back either (they too
go without lingering, and their reports are served in the same slices). For the flush to start
when such a wait does, the producer's poll thread waits for each hop to run before it polls
again (:meth:`~DeliveryBridge.hop_started`), rather than sitting in a ``poll()`` that would last
until the lingering records' reports came.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("sluice.client")

FLUSH_SLICE = 0.005
"""Seconds a ``flush()`` slice may block while a wait is :attr:`~DeliveryBridge.urgent`: the
longest a report served in it waits for its hop when records keep arriving (a slice ends as soon
as nothing is in flight)."""


class DeliveryBridge:
    """Runs ``poll(interval)`` in a daemon thread until :meth:`stop`, and ``after_poll`` on
    ``loop`` after any poll that served something."""

    def __init__(
        self,
        poll: Callable[[float], int],
        loop: asyncio.AbstractEventLoop,
        after_poll: Callable[[], None],
        *,
        interval: float = 0.05,
        name: str = "sluice-producer-poll",
        flush: Callable[[float], int] | None = None,
        outstanding: Callable[[], int] | None = None,
    ) -> None:
        self._poll = poll
        self._flush = flush
        self._outstanding = outstanding
        self.urgent = 0
        """Waits (on the loop) that need every in-flight record delivered before they produce
        more: while not 0, the poll thread flushes instead of polling (with ``flush`` and
        ``outstanding``, librdkafka's ``flush`` and ``len``, given)."""
        self._loop = loop
        self._after_poll = after_poll
        self._interval = interval
        self.serving = threading.Lock()
        """Held around every ``poll()``: delivery callbacks never run two at a time."""
        self._stopping = threading.Event()
        self._paused = False
        self._holds = 0
        self._wake = threading.Event()
        self._hop_scheduled = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.hops = 0
        """Loop hops from the poll thread so far."""

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop polling and join the thread (blocking: call it off the loop, or after it)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def drain(self) -> None:
        """After :meth:`stop`, on the loop: serve what librdkafka still holds, here."""
        assert not self._thread.is_alive(), "drain() while the poll thread runs"
        with self.serving:
            self._poll(0)
        self.hop_started()
        self._after_poll()

    # -- on the loop -----------------------------------------------------------------------

    def hop_started(self) -> None:
        """Called first by ``after_poll``: what the thread serves from now on needs a new hop.
        With ``flush`` given, the thread waits for the hop before it polls again, and resumes
        after the callbacks the hop schedules (the tasks it wakes): so a task that then waits
        urgently finds the thread ready to flush, not inside a ``poll()`` that lasts until a
        report comes (which at that point is after the linger)."""
        self._hop_scheduled = False
        if self._flush is not None:
            # Twice: the tasks the hop wakes are scheduled after this call, and run first.
            self._loop.call_soon(self._loop.call_soon, self._resume)

    def pause_while_busy(self) -> None:
        """Keep the poll thread out of ``poll()`` until the running task next suspends (the
        loop then runs the ``call_soon`` that resumes it)."""
        if not self._paused:
            self._paused = True
            self._loop.call_soon(self._resume)

    def serve_here(self) -> None:
        """Serve the reports librdkafka has ready, without waiting, and finish them now (unless
        the poll thread is serving at this moment: then it will)."""
        if not self.serving.acquire(blocking=False):
            return
        try:
            served = self._poll(0)
        finally:
            self.serving.release()
        if served:
            self.hop_started()
            self._after_poll()

    def hold(self) -> None:
        """Keep the poll thread out of ``poll()`` until :meth:`release`, suspensions included:
        for a task that submits for long, serves reports itself (:meth:`serve_here`) and
        suspends only to let the loop run other tasks a moment. Resumed at each such yield,
        the poll thread would serve reports in Python alongside it, trading the GIL."""
        self._holds += 1
        self._paused = True

    def release(self) -> None:
        """After :meth:`hold`: paused until the running task next suspends, as
        :meth:`pause_while_busy`."""
        self._holds -= 1
        self._loop.call_soon(self._resume)

    def _resume(self) -> None:
        if self._holds:
            return
        self._paused = False
        self._wake.set()

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        poll, interval, stopping, serving = self._poll, self._interval, self._stopping, self.serving
        flush, outstanding = self._flush, self._outstanding
        hopped = time.monotonic()
        while not stopping.is_set():
            if self._paused:
                self._wake.wait(interval)
                self._wake.clear()
                continue
            served = 0
            try:
                with serving:
                    if self.urgent and flush is not None and outstanding is not None and (
                        before := outstanding()
                    ):
                        # Served something unless nothing moved (a broker that is down); but
                        # hop at least every interval (records sent meanwhile may hide it).
                        served = (
                            flush(FLUSH_SLICE) != before
                            or time.monotonic() - hopped >= interval
                        )
                    else:
                        served = poll(interval)
            except Exception:  # an application callback (error_cb, stats_cb) raised
                log.exception("a librdkafka callback raised in the poll thread")
            if served and not self._hop_scheduled:
                self._hop_scheduled = True
                if flush is not None:
                    self._paused = True  # until the hop has run: see hop_started
                try:
                    self._loop.call_soon_threadsafe(self._after_poll)
                except RuntimeError:  # the loop is closed: nobody is left to tell
                    log.error("event loop closed with delivery reports unfinished")
                    return
                self.hops += 1
                hopped = time.monotonic()
