"""``Consumer.run``: the managed loop. Records go to ``handler`` up to ``concurrency`` at once;
offsets are committed up to each partition's watermark, the lowest offset whose processing has
not finished, so a crash never skips a record.

Ordering. Records wait in *lanes*: ``"key"`` gives each (topic, partition, key) a lane (a keyless
record runs on its own: Kafka orders nothing without a key), ``"partition"`` each partition,
``"none"`` each record. A lane runs its records one after another in one task, holding one of
the ``concurrency`` slots while it has records; so records of a lane never run concurrently or
out of order, and a hot key waits behind itself rather than blocking other keys.

Failures. A failed handler call is retried ``max_retries`` times after an exponential, capped,
jittered backoff; then the record goes to the dead-letter topic (with the headers of
:mod:`sluice.client.dlq`) and processing goes on, or, without one, ``run`` stops with a
:class:`~sluice.client.errors.ProcessingError`. A record the deserializer cannot read is such
a failure too (a poison pill), never a crash loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import islice
from operator import sub
from typing import TYPE_CHECKING, Any

from sluice.client import options as check
from sluice.client.buffer import TP, size_of
from sluice.client.dlq import DeadLetterRoute, processing_letter
from sluice.client.errors import (
    ConfigurationError,
    ConsumerError,
    DeserializationError,
    PartitionRevokedError,
    ProcessingError,
)
from sluice.client.metrics import LATENCY_BUCKETS
from sluice.client.records import ConsumerRecord

if TYPE_CHECKING:
    from sluice.client.producer import Producer

log = logging.getLogger("sluice.client")

ORDERINGS = ("key", "partition", "none")
TAKE = 500
"""Records ``run`` takes from the buffer at a time."""


@dataclass(frozen=True)
class Shed:
    """The overload policy: skip records rather than fall further behind. A record is shed when
    its partition's lag (records behind the high watermark) is at least ``min_lag`` and it is
    older than ``max_age`` seconds (by its timestamp) or ``predicate(record)`` says it may go.
    Every shed record is counted (``shed_by_reason``) and, with ``dead_letter``, written to the
    dead-letter topic (stage ``SHED``); it counts as processed for the commits."""

    max_age: float | None = None
    predicate: Callable[[ConsumerRecord], bool] | None = None
    min_lag: int = 0
    dead_letter: bool = False

    def __post_init__(self) -> None:
        """Refused here, not at the first record: a negative ``max_age`` shed every record, a
        NaN one none, a predicate that is not callable failed every record."""
        if self.max_age is None and self.predicate is None:
            raise ConfigurationError(
                "Shed(): give max_age (seconds) or predicate (a record -> bool), or both; "
                "without either nothing is ever shed"
            )
        if self.max_age is not None:  # numpy's, a Decimal: as a float (frozen: set as such)
            object.__setattr__(self, "max_age", check.seconds("Shed(max_age)", self.max_age))
        if self.predicate is not None and not callable(self.predicate):
            raise ConfigurationError(
                f"Shed(predicate={self.predicate!r}): a function of a record, True to shed it"
            )
        if inspect.iscoroutinefunction(self.predicate) or inspect.isasyncgenfunction(
            self.predicate
        ):
            # Called as a plain function, its coroutine is always true: every record past
            # min_lag was shed, silently but for the count.
            raise ConfigurationError(
                f"Shed(predicate={self.predicate!r}) is an async function: it is called "
                "without await, and its coroutine, always true, would shed every record; "
                "make it a plain function"
            )
        object.__setattr__(self, "min_lag", check.count("Shed(min_lag)", self.min_lag, least=0))

    def reason(self, record: ConsumerRecord, lag: int, now_ms: float) -> str | None:
        if lag < self.min_lag:
            return None
        if (
            self.max_age is not None
            and record.timestamp is not None
            and now_ms - record.timestamp > self.max_age * 1000
        ):
            return "max_age"
        if self.predicate is not None and self.predicate(record):
            return "predicate"
        return None


class Shedded(Exception):
    """What a shed record's dead-letter copy names as its error."""


class Unfinished(Exception):
    """``stop()`` came during a record's retry backoff: the record is left unprocessed (back
    to the buffer, not committed), rather than holding the stop for the rest of its retries."""


class Watermarks:
    """Per partition: the offsets started and not finished, in order, and the watermark below
    which everything finished."""

    def __init__(self) -> None:
        self.pending: dict[TP, deque[int]] = {}
        self.done: dict[TP, set[int]] = {}
        self.marks: dict[TP, int] = {}
        self.running: dict[TP, int] = {}
        """Records whose handler is running now, per partition (a revoke waits for 0)."""

    def start(self, tp: TP, offset: int) -> None:
        q = self.pending.get(tp)
        if q is None:
            q = self.pending[tp] = deque()
            self.done[tp] = set()
        q.append(offset)

    def finish(self, tp: TP, offset: int) -> None:
        q = self.pending.get(tp)
        if q is None:  # forgotten (revoked) meanwhile
            return
        if q and q[0] == offset:
            q.popleft()
            mark = offset + 1
            done = self.done[tp]
            while q and q[0] in done:
                mark = q[0] + 1
                done.discard(q.popleft())
            self.marks[tp] = mark
        else:
            self.done[tp].add(offset)

    def forget(self, tp: TP) -> None:
        for d in (self.pending, self.done, self.marks, self.running):
            d.pop(tp, None)


class Runner:
    """One ``run`` of a consumer. ``consumer`` is the :class:`sluice.client.consumer.Consumer`
    (typed ``Any``: that module imports this one, and the layers allow no cycle)."""

    def __init__(
        self,
        consumer: Any,
        handler: Callable[[ConsumerRecord], object],
        *,
        concurrency: int,
        ordering: str,
    ) -> None:
        if ordering not in ORDERINGS:
            raise ConfigurationError(f"ordering={ordering!r}: one of {ORDERINGS}")
        concurrency = check.count("concurrency", concurrency, least=1)
        self.consumer = consumer
        self.handler = check.coroutine_function("handler", handler)
        self.concurrency = concurrency
        self.ordering = ordering
        self.metrics = consumer._metrics
        self.marks = Watermarks()
        self.lanes: dict[Any, deque[ConsumerRecord]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        """The workers (concurrency > 1)."""
        self._ready_lanes: deque[Any] = deque()
        """Lanes with records and no worker, in the order they got their first."""
        self._active: set[Any] = set()
        """Lanes a worker is on (the lane's first record is in processing)."""
        self._idle: deque[asyncio.Future[None]] = deque()
        self._waking = 0
        """Idle workers woken and not yet running."""
        self._picked = asyncio.Event()
        self._progress = asyncio.Event()
        self._stopped = asyncio.Event()
        """Set by :meth:`stop`: cuts a retry's backoff short."""
        self._stopping = False
        self._failure: BaseException | None = None
        self._cancels_before = 0
        """The task's pending cancel requests when run began (see :meth:`_cancelled_twice`)."""
        self._task: asyncio.Task[Any] | None = None
        """``run``'s task (its cancels are counted from ``_cancels_before``)."""
        self._revoked: set[TP] = set()
        self._revocations = 0
        """Revocations and seeks so far: a batch taken from the buffer notes it (``taken_at``)."""
        self._revoked_at: dict[TP, int] = {}
        """The revocation or seek that last took each partition: a taken record of a partition
        revoked or sought after its batch was taken is stale even once the partition is
        assigned again (the buffer dropped its records and the partition refetches from the
        commit, or from where the seek went)."""
        self._sought_at: dict[TP, int] = {}
        """The seek that last moved each partition (numbered as ``_revoked_at``): a record
        running across it finishes, but its offset no longer counts for the watermark."""
        self._paused: set[TP] = consumer._buffer.paused
        """The consumer's paused partitions (the buffer's own set): their records not started
        go back to the buffer, which holds them until ``resume``."""
        self._held: list[ConsumerRecord] = []
        """Records of the batch in hand whose partition was paused: they go back to the buffer
        with the batch's unstarted rest, in one :meth:`_give_back` (so in offset order), also
        when ``run`` is cancelled."""
        self._parked: dict[Any, None] = {}
        """Lanes whose next record's partition is paused: out of the queue until resumed."""
        self._started = 0
        """Records of the batch in hand that started (or were skipped): a cancelled ``run``
        gives back the rest."""
        self._current: ConsumerRecord | None = None
        """The record the sequential path (concurrency 1) is processing."""
        self._draining = False
        self._kept: set[tuple[str, int, int]] = set()
        """Records of partitions being revoked that the drain runs before it commits: the
        gaps below records already finished (see :meth:`revoked`)."""
        self._route = (
            DeadLetterRoute(consumer.dead_letter_topic) if consumer.dead_letter_topic else None
        )
        self._producer: Producer | None = None
        self._keyless = 0
        self._deserialize = (
            consumer._value_deserializer is not None or consumer._key_deserializer is not None
        )

    # -- control -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True
        self._stopped.set()
        self._picked.set()
        self._progress.set()  # a revocation's drain stops waiting for records not started
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
        self.consumer.wake()

    def watermarks(self) -> dict[TP, int]:
        return dict(self.marks.marks)

    def assigned(self, tps: list[TP]) -> None:
        for tp in tps:
            self._revoked.discard(tp)

    def resumed(self, tps: set[TP]) -> None:
        """Lanes parked on these partitions go back to the queue."""
        for key in list(self._parked):
            lane = self.lanes.get(key)
            if not lane:
                del self._parked[key]
            elif (lane[0].topic, lane[0].partition) in tps:
                del self._parked[key]
                self._ready_lanes.append(key)
        if self._ready_lanes and not self._waking:
            self._wake_one()

    def sought(self, tp: TP) -> None:
        """A seek on ``tp``: its records taken before it never start (released: the buffer
        refetches from where the seek went), and its watermark starts afresh from the records
        after it (those running now still finish, but count for nothing)."""
        self._revocations += 1
        self._revoked_at[tp] = self._sought_at[tp] = self._revocations
        self._remove_unstarted({tp})
        for d in (self.marks.pending, self.marks.done, self.marks.marks):
            d.pop(tp, None)
        self._picked.set()

    async def revoked(self, tps: set[TP], *, lost: bool = False) -> dict[TP, int]:
        """Stop starting records of ``tps`` but the gaps below records already finished, wait
        for those running and those gaps, return their watermarks (then forget them).

        The gaps: with lanes (concurrency above 1), a key's records may finish while an
        earlier record of another key of the partition still waits for a worker. The
        watermark stops at that one, and dropped there, every record finished above it was
        processed again by the partition's next owner (69 to 152 of 4,000 with a member
        joining a group running at concurrency 16, by key). So the records below the highest
        one finished run too (a handful per lane), unless the partition is paused or ``run``
        stops meanwhile: then they are dropped as before. Not for partitions ``lost``: another
        member may be processing them already (and nothing is committed for them)."""
        self._revoked |= tps
        self._revocations += 1
        for tp in tps:
            self._revoked_at[tp] = self._revocations
        self._remove_unstarted(tps, None if lost else self._gaps_below(tps))
        self._picked.set()  # lanes may have left the queue: a dispatch waiting may go on
        self._draining = True
        try:
            while any(self.marks.running.get(tp) for tp in tps) or (
                self._current is not None and (self._current.topic, self._current.partition) in tps
            ) or (self._kept and self._keeping(tps)):
                self._progress.clear()
                await self._progress.wait()
        finally:
            self._draining = False
        if self._kept:  # not run (stopping, or paused meanwhile): dropped after all
            self._remove_unstarted(tps)
        out = {tp: self.marks.marks[tp] for tp in tps if tp in self.marks.marks}
        for tp in tps:
            self.marks.forget(tp)
        return out

    def _gaps_below(self, tps: set[TP]) -> dict[TP, int]:
        """Per partition of ``tps`` (but paused ones), the highest offset finished or running
        (at a lane's head, a worker on it): the drain runs the records waiting below it."""
        top: dict[TP, int] = {}
        for tp in tps:
            done = self.marks.done.get(tp)
            if done and tp not in self._paused:
                top[tp] = max(done)
        for key in self._active:
            lane = self.lanes.get(key)
            if lane:
                r = lane[0]
                tp = (r.topic, r.partition)
                if tp in tps and tp not in self._paused and r.offset > top.get(tp, -1):
                    top[tp] = r.offset
        return top

    def _keeping(self, tps: set[TP]) -> bool:
        """Whether gap records of ``tps`` kept by a revocation are still to run (see
        :meth:`revoked`); False once ``run`` stops or their partition is paused."""
        if self._stopping:
            return False
        return any((t, p) in tps and (t, p) not in self._paused for t, p, _ in self._kept)

    def _remove_unstarted(self, tps: set[TP], below: dict[TP, int] | None = None) -> None:
        """Drop (and release) the records of ``tps`` waiting in lanes; a lane's first record,
        if a worker is on it, is running and stays. ``below``: per partition, records with a
        lower offset stay too, to run (:attr:`_kept`; see :meth:`revoked`)."""
        kept = self._kept
        if below is None:
            kept.difference_update([k for k in kept if (k[0], k[1]) in tps])
        for key, lane in list(self.lanes.items()):
            if not any((r.topic, r.partition) in tps for r in lane):
                continue
            head = lane.popleft() if key in self._active else None
            gone, keep = [], []
            for r in lane:
                tp = (r.topic, r.partition)
                if tp not in tps:
                    keep.append(r)
                elif below is not None and tp in below and r.offset < below[tp]:
                    keep.append(r)
                    kept.add((r.topic, r.partition, r.offset))
                else:
                    gone.append(r)
            self.consumer._release(sum(r.size for r in gone))
            lane.clear()
            if head is not None:
                lane.append(head)
            lane.extend(keep)
            if not lane:
                del self.lanes[key]
                self._parked.pop(key, None)
                with contextlib.suppress(ValueError):
                    self._ready_lanes.remove(key)

    def _gone(self, tp: TP, taken_at: int) -> bool:
        """Whether a record of ``tp`` from a batch taken at ``taken_at`` must not start: its
        partition is revoked, or was revoked or sought since the batch was taken."""
        return tp in self._revoked or self._revoked_at.get(tp, 0) > taken_at

    def _give_back(self, taken: list[ConsumerRecord], start: int, taken_at: int) -> None:
        """Records ``taken[start:]`` never started: back to the buffer, but for those of
        partitions revoked meanwhile (released: the partition refetches them)."""
        consumer = self.consumer
        rest = taken[start:]
        if self._held:  # with the rest, so that each partition goes back in offset order
            rest += self._held
            self._held = []
        if self._revocations != taken_at:
            gone = [r for r in rest if self._gone((r.topic, r.partition), taken_at)]
            if gone:
                consumer._release(sum(map(size_of, gone)))
                rest = [r for r in rest if not self._gone((r.topic, r.partition), taken_at)]
        if rest:
            consumer._unread(rest)

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        consumer = self.consumer
        task = self._task = asyncio.current_task()
        self._cancels_before = task.cancelling() if task is not None else 0
        if self._route is not None:
            self._producer = await self._dead_letter_producer()
        committer = asyncio.create_task(self._commit_periodically())
        if self.concurrency > 1:
            self.tasks = {asyncio.create_task(self._worker()) for _ in range(self.concurrency)}
        taken: list[ConsumerRecord] | None = None
        """The batch in hand (None between batches): cancelled, what did not start goes back."""
        taken_at = 0
        try:
            while not self._stopping and self._failure is None:
                taken = None
                if not consumer._buffer.ready:
                    await consumer._wait_ready(consumer.commit_interval)
                    continue
                buffered = consumer._buffer.bytes
                taken_at = self._revocations
                self._started = 0
                taken = consumer._buffer.take(TAKE)
                nbytes = buffered - consumer._buffer.bytes
                self.metrics.consumed += len(taken)
                self.metrics.consumed_bytes += nbytes
                shed = consumer.shed
                if self.concurrency == 1 and shed is None:
                    started = await self._sequential(taken, nbytes, taken_at)
                    if started < len(taken) or self._held:
                        self._give_back(taken, started, taken_at)
                    continue
                if shed is None:
                    started = await self._dispatch_batch(taken, taken_at)
                    await asyncio.sleep(0)  # the workers take what was dispatched
                    if started < len(taken) or self._held:
                        self._give_back(taken, started, taken_at)
                    continue
                hwms: dict[TP, int | None] = {}
                now_ms = time.time() * 1000
                started = 0
                held = self._held
                held_tps: set[TP] = set()
                for r in taken:
                    if self._stopping or self._failure is not None:
                        break
                    started += 1
                    tp = (r.topic, r.partition)
                    if self._gone(tp, taken_at):
                        consumer._release(r.size)
                        continue
                    if tp in self._paused or tp in held_tps:
                        held.append(r)  # back to the buffer (see _sequential)
                        held_tps.add(tp)
                        continue
                    consumer._positions[tp] = r.offset + 1
                    self.marks.start(tp, r.offset)
                    if shed is not None:
                        if tp not in hwms:
                            hwms[tp] = consumer.high_watermark(tp)
                        hwm = hwms[tp]
                        lag = 0 if hwm is None else hwm - r.offset
                        reason = shed.reason(r, lag, now_ms)
                        if reason is not None:
                            if not await self._shed(r, reason):  # its copy failed:
                                started -= 1  # back to the buffer, neither shed nor passed
                                break
                            continue
                    if self.concurrency == 1:
                        try:
                            await self._process(r)
                        except Unfinished:
                            started -= 1  # back to the buffer with the rest
                            break
                        except ProcessingError as exc:
                            self._fail(exc)
                            started -= 1  # the failed record goes back, unprocessed
                            break
                    else:
                        await self._dispatch(r, taken_at)
                    self._started = started
                if self.concurrency > 1:
                    await asyncio.sleep(0)  # the workers take what was dispatched
                if started < len(taken) or held:  # stopped in the middle, or paused
                    self._give_back(taken, started, taken_at)
        except asyncio.CancelledError:
            self._stopping = True
            for task in self.tasks:
                task.cancel()
            if taken is not None and (self._started < len(taken) or self._held):
                # Not started, or cancelled in the handler (not finished): back to the
                # buffer, so that what reads the consumer next (run again, getmany) gets them.
                self._give_back(taken, self._started, taken_at)
            raise
        finally:
            self._stopping = True
            await self._wind_down(committer)
        if self._failure is not None:
            raise self._failure

    async def _wind_down(self, committer: asyncio.Task[None]) -> None:
        """Let the lanes finish the records they started, give back the rest, commit, close
        the dead-letter producer (that also when ``run`` is cancelled again meanwhile)."""
        try:
            await self._finish(committer)
        finally:
            if self._producer is not None:
                self._close_dead_letter_producer(self._producer)
                self._producer = None
                closing = self.consumer._dead_letter_closing
                assert closing is not None
                # Shielded: a cancel here ends the wait, not the close (close() waits for it)
                await asyncio.shield(closing)

    def _close_dead_letter_producer(self, producer: Producer) -> None:
        """Close ``producer`` in a task of its own, within ``run``'s share of the deadline."""
        consumer = self.consumer

        async def close() -> None:
            try:
                await producer.close(consumer._run_share())
            except Exception as exc:  # UndeliveredError: each letter's failure is its own
                log.warning("closing run's dead-letter producer: %s", exc)

        consumer._dead_letter_closing = asyncio.ensure_future(close())

    async def _finish(self, committer: asyncio.Task[None]) -> None:
        consumer = self.consumer
        self.stop()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        unstarted = [r for lane in self.lanes.values() for r in lane]  # the workers are done
        self.lanes.clear()
        self._parked.clear()
        if self._revoked:  # a revoked partition's (a drain's gaps left when run stopped):
            gone = [r for r in unstarted if (r.topic, r.partition) in self._revoked]
            if gone:  # released, not given back: the partition refetches them
                consumer._release(sum(map(size_of, gone)))
                unstarted = [r for r in unstarted if (r.topic, r.partition) not in self._revoked]
        consumer._unread(unstarted)  # their positions go back to them: they were not served
        committer.cancel()
        # wait(), not await: the committer's CancelledError is its own, and suppressing it would
        # also swallow a second cancel of run arriving meanwhile (run then waited out its commit)
        await asyncio.wait([committer])
        if self._cancelled_twice():
            raise asyncio.CancelledError  # as a second cancel arriving now would: no last commit
        if consumer.group_id is not None:  # without a group nothing is committed
            try:  # what is not committed yet, within close_timeout (a coordinator gone must
                # not hold the exit; librdkafka would wait for it until the session times out)
                await consumer.commit(timeout=consumer._run_share())
            except ConsumerError as exc:
                log.warning("run's last commit failed: %s", exc)

    def _cancelled_twice(self) -> bool:
        """Cancelled twice since run began, the second time before run had reacted to the first:
        asyncio then delivers one CancelledError for both, and only the task's count of cancel
        requests tells them apart."""
        task = asyncio.current_task()
        return task is not None and task.cancelling() - self._cancels_before > 1

    async def _commit_periodically(self) -> None:
        consumer = self.consumer
        if consumer.group_id is None:  # manual assignment without a group: nothing to commit
            return
        while True:
            await asyncio.sleep(consumer.commit_interval)
            try:
                await consumer.commit()
            except ConsumerError as exc:
                log.warning("periodic commit failed: %s", exc)

    # -- concurrency 1 -----------------------------------------------------------------------

    async def _sequential(self, batch: list[ConsumerRecord], nbytes: int, taken_at: int) -> int:
        """Concurrency 1: the batch in order, on this task; returns how many records it used.
        The fast path of :meth:`_process`: per record a handler call, one clock read (a
        record's duration runs from the previous record's end to its own), its position and
        watermark; the latency histogram, counts and released bytes (``nbytes``, the batch's
        sizes, when it used them all) once a batch, in C-level ``map`` calls over the batch."""
        consumer, metrics = self.consumer, self.metrics
        handler = self.handler
        marks, positions = self.marks.marks, consumer._positions
        revoked, paused = self._revoked, self._paused
        held = self._held  # records of partitions paused meanwhile: back, unstarted
        held_tps: set[TP] = set()
        deserialize = consumer.deserialize if self._deserialize else None
        clock = time.perf_counter
        stamps = [clock()]
        """When each record's processing ended (the first: when the batch started)."""
        stamp = stamps.append
        skips: list[int] = []
        """Indexes in ``stamps`` that ended a revoked record's skip, not a processing."""
        used = failures = 0
        try:
            for r in batch:
                if self._stopping or self._failure is not None:
                    break
                used += 1
                tp = (r.topic, r.partition)
                if (revoked and tp in revoked) or (
                    self._revocations != taken_at and self._gone(tp, taken_at)
                ):
                    skips.append(len(stamps))
                    stamp(clock())
                    continue
                if (paused and tp in paused) or (held_tps and tp in held_tps):
                    held.append(r)  # and the partition's later records, even if resumed now
                    held_tps.add(tp)
                    skips.append(len(stamps))
                    stamp(clock())
                    continue
                after = r.offset + 1
                positions[tp] = after
                self._current = r
                try:
                    if deserialize is not None:
                        deserialize(r)
                    await handler(r)
                except (Exception, asyncio.CancelledError) as exc:
                    if isinstance(exc, asyncio.CancelledError) and self._cancel_requested():
                        used -= 1  # not finished: it goes back to the buffer (see run)
                        positions[tp] = r.offset
                        raise
                    # else the handler's own failure (a CancelledError too: see _cancel_requested)
                    failures += 1
                    metrics.in_processing += 1
                    try:
                        await self._after_failure(r, exc, decoded=not isinstance(
                            exc, DeserializationError))
                    except Unfinished:
                        used -= 1  # back to the buffer, its position with it (see run)
                        failures -= 1
                        positions[tp] = r.offset
                        break
                    except asyncio.CancelledError:
                        # Cancelled in a retry's backoff, a retry or its dead-letter copy: not
                        # finished, back to the buffer (see run) as when cancelled in the first
                        # call. It was left counted as used, its position past it, and the
                        # next getmany (or a commit of the positions) passed it.
                        used -= 1
                        failures -= 1
                        positions[tp] = r.offset
                        raise
                    finally:
                        metrics.in_processing -= 1
                stamp(clock())
                if self._revocations == taken_at or self._sought_at.get(tp, 0) <= taken_at:
                    marks[tp] = after
                # else: sought during its handler (a seek before it would have skipped it):
                # a seek back would otherwise be committed past the records it replays
                if self._draining:
                    self._current = None
                    self._progress.set()
        except ProcessingError as exc:
            self._fail(exc)
            used -= 1  # the failed record goes back to the buffer, unprocessed
            failures -= 1
        finally:
            self._current = None
            if len(stamps) > 1:
                self._observe(stamps, skips)
            metrics.processed += len(stamps) - 1 - len(skips) - failures
            released = nbytes if used == len(batch) else sum(map(size_of, batch[:used]))
            if held:
                released -= sum(map(size_of, held))  # still the consumer's: back to the buffer
            consumer._release(released)
            self._started = used
            self._progress.set()
        return used

    def _observe(self, stamps: list[float], skips: list[int]) -> None:
        """The latency histogram of a batch :meth:`_sequential` processed."""
        metrics = self.metrics
        durations = list(map(sub, islice(stamps, 1, None), stamps))
        if skips:
            for i in reversed(skips):
                del durations[i - 1]
        if not durations:
            return
        counts = metrics.latency_counts
        if max(durations) <= LATENCY_BUCKETS[0]:  # all in the first bucket: a fast handler
            counts[0] += len(durations)
        else:
            for bucket, n in Counter(map(partial(bisect_left, LATENCY_BUCKETS), durations)).items():
                counts[bucket] += n
        metrics.latency_sum += sum(durations)

    def _cancel_requested(self) -> bool:
        """Whether the task running a handler is being cancelled (``run``'s task by its caller,
        a worker by ``run``). A ``CancelledError`` a handler raises otherwise is its own failure
        (it awaited a future or task someone else cancelled): retried, then dead-lettered or
        ``ProcessingError``, as any exception. Let out as a cancellation it ended ``run`` with a
        ``CancelledError`` nobody asked for, or (concurrency above 1) killed the worker and left
        its lane, and the partition's watermark, stuck for good."""
        task = asyncio.current_task()
        if task is None:
            return False
        return task.cancelling() > (self._cancels_before if task is self._task else 0)

    async def _after_failure(
        self, r: ConsumerRecord, exc: BaseException, *, decoded: bool
    ) -> None:
        """The first call failed with ``exc``: the retries, then the dead-letter topic (or
        :class:`ProcessingError`)."""
        consumer, metrics = self.consumer, self.metrics
        if isinstance(exc, PartitionRevokedError) and exc.partition == (r.topic, r.partition):
            # The handler sought its own partition while it is being revoked: no retry can
            # succeed (the partition is leaving), and the record did not fail. Left
            # unfinished, the drained commit stops at it and its next owner processes it.
            raise Unfinished from exc
        attempt = 1
        while attempt <= consumer.max_retries:
            if self._stopping:
                raise Unfinished from exc
            metrics.retries += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._backoff(attempt))
            if self._stopping:
                raise Unfinished from exc
            attempt += 1
            try:
                if not decoded:  # a poison pill is one however often it is retried
                    consumer.deserialize(r, count=False)
                    decoded = True
                await self.handler(r)
                metrics.processed += 1
                return
            except (Exception, asyncio.CancelledError) as again:
                if isinstance(again, asyncio.CancelledError) and self._cancel_requested():
                    raise
                exc = again
        metrics.failed += 1
        try:
            await self._give_up(r, exc, attempt)
        except (Unfinished, asyncio.CancelledError):
            metrics.failed -= 1  # not given up on after all: it goes back, unprocessed
            raise

    # -- concurrency -------------------------------------------------------------------------

    def _lane_of(self, r: ConsumerRecord) -> Any:
        if self.ordering == "key":
            if r.raw_key is None:
                self._keyless += 1
                return ("keyless", self._keyless)
            return (r.topic, r.partition, r.raw_key)
        if self.ordering == "partition":
            return (r.topic, r.partition)
        self._keyless += 1
        return self._keyless

    async def _dispatch_batch(self, batch: list[ConsumerRecord], taken_at: int) -> int:
        """Concurrency above 1 without shedding: ``batch`` into lanes; returns how many
        records it used. :meth:`_dispatch` for a whole batch in one coroutine, per record: the
        lane, the position, the watermark's start (inline)."""
        consumer = self.consumer
        lanes, ready, bound = self.lanes, self._ready_lanes, self.concurrency
        positions, revoked, paused = consumer._positions, self._revoked, self._paused
        held = self._held
        held_tps: set[TP] = set()
        pending, done = self.marks.pending, self.marks.done
        by_key = self.ordering == "key"
        by_partition = self.ordering == "partition"
        used = 0
        for r in batch:
            if self._stopping or self._failure is not None:
                break
            used += 1
            tp = (r.topic, r.partition)
            if (revoked and tp in revoked) or (
                self._revocations != taken_at and self._gone(tp, taken_at)
            ):
                consumer._release(r.size)
                continue
            if (paused and tp in paused) or (held_tps and tp in held_tps):
                held.append(r)  # back to the buffer (see _sequential)
                held_tps.add(tp)
                continue
            if by_key and r.raw_key is not None:
                key: Any = (r.topic, r.partition, r.raw_key)
            elif by_partition:
                key = tp
            else:
                key = self._lane_of(r)
            lane = lanes.get(key)
            if lane is None:
                self._started = used - 1  # cancelled in the wait: this record goes back
                while len(ready) >= bound and not self._stopping:
                    self._picked.clear()
                    await self._picked.wait()
                if self._revocations != taken_at and self._gone(tp, taken_at):
                    consumer._release(r.size)  # revoked during the wait: never started
                    continue
                if tp in paused or tp in held_tps:
                    held.append(r)
                    held_tps.add(tp)
                    continue
                lane = lanes.get(key)  # the wait may have let another record open it
            positions[tp] = r.offset + 1
            q = pending.get(tp)  # Watermarks.start
            if q is None:
                q = pending[tp] = deque()
                done[tp] = set()
            q.append(r.offset)
            if lane is not None:
                lane.append(r)
                continue
            lanes[key] = deque((r,))
            ready.append(key)
            if not self._waking:
                self._wake_one()
        self._started = used
        return used

    async def _dispatch(self, r: ConsumerRecord, taken_at: int) -> None:
        """Queue ``r`` in its lane; a lane new to the queue waits for a worker (and the
        dispatch waits while more lanes wait than there are workers: so records start about
        in offset order, and a revoke's drain leaves few finished beyond the watermark). A
        record whose partition is revoked during that wait is released, not queued."""
        key = self._lane_of(r)
        lane = self.lanes.get(key)
        if lane is not None:
            lane.append(r)
            return
        while len(self._ready_lanes) >= self.concurrency and not self._stopping:
            self._picked.clear()
            await self._picked.wait()
        if self._gone((r.topic, r.partition), taken_at):
            self.consumer._release(r.size)
            return
        lane = self.lanes.get(key)
        if lane is not None:
            lane.append(r)
            return
        self.lanes[key] = deque((r,))
        self._ready_lanes.append(key)
        if not self._waking:
            self._wake_one()

    def _wake_one(self) -> None:
        """Wake an idle worker for the lanes waiting. One wake-up at a time: the worker that
        takes a lane wakes the next if lanes still wait (so every waiting lane gets a worker
        while there are idle ones), and a worker whose handler never suspends takes lane after
        lane without the others waking for nothing (waking every idle worker per lane cost a
        loop turn per lane)."""
        idle = self._idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._waking += 1
                return

    async def _worker(self) -> None:
        """Takes a waiting lane and runs its records in order until it is empty, or, when
        another lane waits for a worker, for one record: then the lane goes to the back of
        the queue (round robin). A worker staying on its lane while records of its key kept
        coming starved the lanes that waited, and their partitions' watermarks with them."""
        ready, lanes, active, revoked = self._ready_lanes, self.lanes, self._active, self._revoked
        paused, parked = self._paused, self._parked
        loop = asyncio.get_running_loop()
        while not self._stopping:
            if not ready:
                waiter = loop.create_future()
                self._idle.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter.done() and not waiter.cancelled():
                        self._waking -= 1
                continue
            key = ready.popleft()
            self._picked.set()
            if ready and not self._waking:
                self._wake_one()
            lane = lanes[key]
            active.add(key)
            try:
                while lane and not self._stopping:
                    r = lane[0]
                    if revoked and (r.topic, r.partition) in revoked and not (
                        self._kept and (r.topic, r.partition, r.offset) in self._kept
                    ):
                        self.consumer._release(r.size)
                    elif paused and (r.topic, r.partition) in paused:
                        parked[key] = None  # a lane holds one partition: resumed() requeues it
                        break
                    else:
                        try:
                            await self._process(r)
                        except Unfinished:
                            break  # stopping: the record stays in its lane, given back
                        finally:
                            if self._kept:
                                self._kept.discard((r.topic, r.partition, r.offset))
                    lane.popleft()
                    if ready and lane:
                        break  # a lane waits for a worker: this one's turn is over
            except ProcessingError as exc:
                self._fail(exc)
                return
            finally:
                active.discard(key)
            if not lane:
                del lanes[key]
                parked.pop(key, None)
            elif not self._stopping and key not in parked:
                ready.append(key)  # behind the lanes that waited

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self.stop()

    # -- one record --------------------------------------------------------------------------

    async def _process(self, r: ConsumerRecord) -> None:
        """The handler for ``r`` with its retries, then its dead-letter copy or the failure."""
        tp = (r.topic, r.partition)
        marks, metrics, consumer = self.marks, self.metrics, self.consumer
        running = marks.running
        running[tp] = running.get(tp, 0) + 1
        metrics.in_processing += 1
        at = self._revocations
        started = time.perf_counter()
        try:
            try:
                if self._deserialize:
                    consumer.deserialize(r)
                await self.handler(r)
                metrics.processed += 1
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and self._cancel_requested():
                    raise
                await self._after_failure(r, exc, decoded=not isinstance(
                    exc, DeserializationError))
        finally:
            metrics.in_processing -= 1
            n = running.get(tp, 1) - 1
            if n:
                running[tp] = n
            else:
                running.pop(tp, None)
            self._progress.set()
        elapsed = time.perf_counter() - started
        metrics.latency_counts[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        metrics.latency_sum += elapsed
        if self._revocations == at or self._sought_at.get(tp, 0) <= at:
            marks.finish(tp, r.offset)  # not if sought meanwhile: see _sought_at
        consumer._released += r.size  # Consumer._release, inline: its call only when it waits
        if consumer._fetch_waiting:
            consumer._release(0)

    def _backoff(self, attempt: int) -> float:
        c = self.consumer
        ceiling = min(c.retry_backoff_max, c.retry_backoff * 2 ** (attempt - 1))
        return float(ceiling * random.uniform(0.5, 1.0))

    async def _give_up(self, r: ConsumerRecord, exc: BaseException, attempts: int) -> None:
        where = f"{r.topic}[{r.partition}]@{r.offset}"
        failed = (
            "the deserializer" if isinstance(exc, DeserializationError) else "the handler"
        ) + f" failed {attempts} times"
        if self._producer is None or self._route is None:
            err = ProcessingError(f"{where}: {failed}, last with {exc!r}", r, attempts)
            raise err from exc
        stage = "TASK_PUT"
        if isinstance(exc, DeserializationError):
            stage = "VALUE_CONVERTER"
        try:
            await self._dead_letter(r, exc, attempts, stage)
        except Unfinished:
            raise
        except Exception as dlq_exc:
            err = ProcessingError(
                f"{where}: {failed} ({exc!r}) and writing it to the "
                f"dead-letter topic failed: {dlq_exc}",
                r,
                attempts,
            )
            err.dead_letter_error = dlq_exc
            raise err from exc

    async def _dead_letter(
        self, r: ConsumerRecord, exc: BaseException, attempts: int, stage: str
    ) -> None:
        assert self._producer is not None and self._route is not None
        topic = self._route.topic_for(r.topic)
        if self.consumer._reads(topic):
            # A pattern matching its own dead letters, or a template that is the topic itself:
            # each copy would come back, fail again and be copied again, without end.
            raise ConfigurationError(
                f"dead_letter_topic={self._route.template!r} names {topic!r} for a record of "
                f"{r.topic!r}: a topic this consumer reads itself, so its dead letters would "
                "come back to it; choose one outside the subscription"
            )
        letter = processing_letter(
            topic,
            source_topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.raw_key,
            value=r.raw_value,
            headers=r.headers,
            timestamp=r.timestamp,
            stage=stage,
            error=exc,
            attempts=attempts,
        )
        timestamp = letter.timestamp
        written = await self._producer.submit(  # a negative timestamp as stored is not sent
            letter.topic, letter.value, letter.key, letter.headers, None,
            timestamp if timestamp is not None and timestamp > 0 else None,
        )
        if not written.done():
            await self._until_written(written)
        written.result()  # its DeliveryError, if it failed
        self.metrics.dead_lettered += 1

    async def _until_written(self, written: asyncio.Future[Any]) -> None:
        """Wait for a dead-letter copy's outcome; once ``stop()`` came, at most half of
        ``run``'s share of the shutdown's deadline, then :class:`Unfinished` (the record goes
        back unprocessed, as one in a retry's backoff does). With the broker unreachable the
        copy waits out the dead-letter producer's ``delivery.timeout.ms`` (300 s by default),
        and a stop waited for all of it, whatever ``close_timeout`` said. The copy may still be
        written (the producer's close purges it, or not): the group's next member then writes
        a second one (at-least-once)."""
        if not self._stopping:
            stopped = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait((written, stopped), return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
            if written.done():
                return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(written), self.consumer._run_share() / 2)
        if not written.done():
            raise Unfinished("stopped before the record's dead-letter copy was confirmed")

    async def _shed(self, r: ConsumerRecord, reason: str) -> bool:
        """Shed ``r``; False if its dead-letter copy failed (``run`` then stops, and ``r``
        must go back to the buffer: it was neither shed nor processed)."""
        metrics = self.metrics
        metrics.shed[reason] = metrics.shed.get(reason, 0) + 1
        shed = self.consumer.shed
        if shed is not None and shed.dead_letter and self._producer is not None:
            try:
                await self._dead_letter(r, Shedded(f"shed: {reason}"), 0, "SHED")
            except Unfinished:  # stopping, its copy not confirmed: back to the buffer
                metrics.shed[reason] -= 1
                return False
            except Exception as exc:
                metrics.shed[reason] -= 1
                self._fail(ConsumerError(f"writing a shed record to the dead-letter topic: {exc}"))
                return False
        self.marks.finish((r.topic, r.partition), r.offset)
        self.consumer._release(r.size)
        return True

    async def _dead_letter_producer(self) -> Producer:
        from sluice.client.producer import Producer

        c = self.consumer
        settings = {
            k: v for k, v in c.config.items()
            if k in check.BOOTSTRAP_KEYS or k.startswith(CONNECTION_PREFIXES)
        }
        settings.update(c.dead_letter_options)
        settings.setdefault("client.id", f"{c._metrics.client_id}-dlq")
        producer = Producer(metrics_registry=None, config=settings)
        return await producer.start()


CONNECTION_PREFIXES = (
    "security.", "sasl.", "ssl.", "api.version", "broker.version.fallback", "socket.",
    "client.dns.lookup", "client.rack",
)
"""The consumer's librdkafka settings its dead-letter producer takes over."""
