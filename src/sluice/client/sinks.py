"""Where a record's outcome goes: each sink makes the *tokens* of its records, the delivery
callbacks librdkafka calls with ``(error, message)``.

A token is the sink's ``deliver(key, error, message)`` function bound to the record's key
(``types.MethodType(deliver, key)``), which writes the outcome straight where the sink keeps
outcomes. That is the cheapest shape CPython offers for a per-record callback: a bound method
is made in C and called through the vectorcall fast path (about 0.17 us a call less than an
``int`` subclass with a ``__call__``, which these tokens were before); a ``functools.partial``
costs more to call and a report tuple handed to the loop is one more object per record. Each is
one object tracked by the cyclic garbage collector, alive until its report: the collector's
passes over a hundred thousand records in flight are part of a send's cost (see
docs/client.md).

Tokens run in whichever thread serves a poll, one at a time (under the bridge's ``serving``
lock), concurrently with the loop. So a token writes only what the loop never writes: a
batch's result arrays and delivered count, a window's result slots of records in flight, lists
the loop empties (the metrics' latencies among them: bucketed a poll at a time, not a record at
a time), and the delivery counters. Everything else (futures, waking a waiter, failures,
dead-letter copies) the loop finishes in ``Producer._after_poll``. A token appends
before it counts, so whenever the loop sees a record counted delivered, its outcome is there.
Failed records' reports go to the producer's ``failures`` list, with their message (its key
and value make the dead-letter copy).

Each sink also has ``settle(key, result)`` (on the loop: the result of a record that was not
delivered, or was dead-lettered), ``keep(key, record)`` (before a record is handed over) and
``record(key)``; batches and windows have ``check()``, run after every poll.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from array import array
from collections.abc import Callable, Sequence
from functools import partial
from types import MethodType
from typing import Any, Protocol

from sluice.client.metrics import ProducerMetrics
from sluice.client.records import Record, RecordLike, as_record
from sluice.client.results import BatchResults, RecordMetadata

log = logging.getLogger("sluice.client")

new_metadata = tuple.__new__
"""``RecordMetadata`` built from a tuple, skipping NamedTuple's Python-level ``__new__``."""

TokenType = Callable[[int], Callable[[Any, Any], None]]
"""A sink's token maker: token(key) is the delivery callback of the record with that key."""

Deliver = Callable[[int, Any, Any], None]
"""A sink's ``deliver(key, error, message)``, which its tokens bind to a key."""


def token_maker(deliver: Deliver) -> TokenType:
    """``token(key)``: ``deliver`` bound to ``key`` (hot loops call ``MethodType`` inline)."""
    return partial(MethodType, deliver)

Failure = tuple[Any, int, Any, Any]
"""(sink, key, librdkafka's error, the Message), appended by tokens for the loop."""


class Sink(Protocol):
    token: TokenType
    deliver: Deliver

    def keep(self, key: int, record: Record) -> None: ...
    def settle(self, key: int, result: RecordMetadata) -> None: ...
    def record(self, key: int) -> Record: ...


class Futures:
    """The sink of single sends (keys count up). Delivered outcomes wait in ``ready`` for the
    loop; a failure without a dead-letter copy is raised at the future, a dead-lettered one
    resolves it with the result (``.error`` and ``.dead_letter`` set)."""

    def __init__(self, metrics: ProducerMetrics, failures: list[Failure]) -> None:
        self.pending: dict[int, tuple[asyncio.Future[RecordMetadata], Record]] = {}
        self.ready: list[tuple[int, int, int, int, float]] = []
        self._next = 0
        self.tally = metrics.tally()
        self.deliver = _futures_deliver(self, metrics, failures)
        self.token = token_maker(self.deliver)

    def add(self, fut: asyncio.Future[RecordMetadata], record: Record) -> int:
        key = self._next
        self._next = key + 1
        self.pending[key] = (fut, record)
        return key

    def discard(self, key: int) -> None:
        """The record was not taken after all (queue full, cancelled while waiting)."""
        self.pending.pop(key, None)

    def keep(self, key: int, record: Record) -> None:
        pass  # add() has it

    def record(self, key: int) -> Record:
        return self.pending[key][1]

    def finish_ready(self) -> None:
        """On the loop: resolve the futures of the records delivered since the last call."""
        ready = self.ready
        n = len(ready)
        done, pending = ready[:n], self.pending
        del ready[:n]
        for key, partition, offset, timestamp, latency in done:
            fut, record = pending.pop(key)
            if not fut.done():
                fut.set_result(
                    new_metadata(
                        RecordMetadata,
                        (record.topic, partition, offset, timestamp, None, None, latency),
                    )
                )

    def settle(self, key: int, result: RecordMetadata) -> None:
        fut, _ = self.pending.pop(key)
        error = result.error
        if fut.done():  # the awaiting send was cancelled: the outcome is nobody's to take
            if error is not None and result.dead_letter is None:
                log.warning("a record whose send was cancelled failed: %s", error)
            return
        if error is not None and result.dead_letter is None:
            fut.set_exception(error)
        else:
            fut.set_result(result)


def _futures_deliver(sink: Futures, metrics: ProducerMetrics, failures: list[Failure]) -> Deliver:
    ready, fail = sink.ready.append, failures.append
    keep_latency, tally = metrics.latencies.append, sink.tally

    def deliver(key: int, error: Any, message: Any) -> None:
        if error is None:
            latency = message.latency()
            ready((key, message.partition(), message.offset(), message.timestamp()[1], latency))
            keep_latency(latency)
            tally[0] += 1
        else:
            fail((sink, key, error, message))

    return deliver


class Batch:
    """The sink of one ``send_batch``: outcomes in flat arrays by index, written by the tokens;
    done once every record has one (see :class:`BatchResults`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        metrics: ProducerMetrics,
        failures: list[Failure],
        records: list[RecordLike] | None = None,
    ) -> None:
        self.records: list[RecordLike] = [] if records is None else records
        n = len(self.records)
        self.partitions = array("i", [-1]) * n
        self.offsets = array("q", [-1]) * n
        self.timestamps = array("q", [-1]) * n
        self.latencies = array("d", [0.0]) * n
        self.failures: dict[int, RecordMetadata] = {}
        self.tally = metrics.tally()
        """[records delivered], written by the tokens. Retired when every outcome is in, or,
        for a batch its caller gave up on (cancelled, its source raised), once the batch is
        gone: its records' tokens hold it, so none can count a delivery after that."""
        weakref.finalize(self, metrics.retire, self.tally)
        self.settled = 0
        """Records settled otherwise (on the loop)."""
        self.submitted = False
        """Set once every record has been submitted."""
        self.abandoned = False
        """Set when the submitting was given up (cancelled, the source raised)."""
        self.yield_at = 0.0
        """``time.perf_counter()`` at which the submitting next lets the loop run others."""
        self.done: asyncio.Future[None] = loop.create_future()
        self.deliver = _batch_deliver(self, metrics, failures)
        self.token = token_maker(self.deliver)

    def extend(self, items: Sequence[RecordLike]) -> int:
        """Add records (from an async source, a chunk at a time); returns the first new index.
        The arrays grow in place, so the tokens' references stay good."""
        start = len(self.records)
        n = len(items)
        self.records.extend(items)
        self.partitions.extend(array("i", [-1]) * n)
        self.offsets.extend(array("q", [-1]) * n)
        self.timestamps.extend(array("q", [-1]) * n)
        self.latencies.extend(array("d", [0.0]) * n)
        return start

    def keep(self, i: int, record: Record) -> None:
        pass  # the records list has it

    def record(self, i: int) -> Record:
        return as_record(self.records[i])

    def settle(self, i: int, result: RecordMetadata) -> None:
        self.failures[i] = result
        self.settled += 1
        if (
            (self.abandoned or self.done.cancelled())
            and result.error is not None
            and result.dead_letter is None
        ):  # the caller gave up on the send_batch: nobody will see this failure otherwise
            log.warning("a record of a send_batch given up on (cancelled, or its source raised) failed: %s", result.error)
        self.check()

    def finish(self) -> None:
        """Every record is submitted: done as soon as the last outcome is in."""
        self.submitted = True
        self.check()

    def check(self) -> None:
        if (
            self.submitted
            and self.tally[0] + self.settled == len(self.records)
            and not self.done.done()
        ):
            self.done.set_result(None)

    def results(self) -> BatchResults:
        return BatchResults(
            self.records, self.partitions, self.offsets, self.timestamps, self.latencies,
            self.failures,
        )


def _batch_deliver(sink: Batch, metrics: ProducerMetrics, failures: list[Failure]) -> Deliver:
    partitions, offsets, timestamps, latencies = (
        sink.partitions, sink.offsets, sink.timestamps, sink.latencies,
    )
    tally, fail, keep_latency = sink.tally, failures.append, metrics.latencies.append

    def deliver(i: int, error: Any, message: Any) -> None:
        if error is None:
            partitions[i] = message.partition()
            offsets[i] = message.offset()
            timestamps[i] = message.timestamp()[1]
            latency = latencies[i] = message.latency()
            keep_latency(latency)
            tally[0] += 1
        else:
            fail((sink, i, error, message))

    return deliver


class DeadLetters:
    """The sink of dead-letter copies, keyed like :class:`Futures`. Its tokens put each copy's
    outcome in ``outcomes`` -- (key, error, partition or Message, offset, timestamp, latency)
    -- and the loop settles the original record with it."""

    def __init__(self, metrics: ProducerMetrics) -> None:
        self.pending: dict[int, Any] = {}
        self.outcomes: list[tuple[int, Any, Any, int, int, float]] = []
        self._next = 0
        self.tally = metrics.tally()
        self.deliver = _dead_letter_deliver(self, metrics)
        self.token = token_maker(self.deliver)

    def add(self, entry: Any) -> int:
        key = self._next
        self._next = key + 1
        self.pending[key] = entry
        return key


def _dead_letter_deliver(sink: DeadLetters, metrics: ProducerMetrics) -> Deliver:
    outcome = sink.outcomes.append
    keep_latency, tally = metrics.latencies.append, sink.tally

    def deliver(key: int, error: Any, message: Any) -> None:
        if error is None:
            latency = message.latency()
            outcome((key, None, message.partition(), message.offset(), message.timestamp()[1],
                     latency))
            keep_latency(latency)
            tally[0] += 1
        else:
            outcome((key, error, message, -1, -1, 0.0))

    return deliver
