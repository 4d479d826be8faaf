"""``send_ordered``: a bounded, ordered window of in-flight records, as Rust's ``FuturesOrdered``
(``StreamExt::buffered(n)``) keeps futures.

At most ``max_in_flight`` records are outstanding: submitted, and their result not yet taken by
the caller. Results come out in submission order; a record that failed comes out at its place
with ``.error`` set, and the records around it carry on. Counting results not yet taken (not
only records librdkafka still holds) is what bounds memory when the head of the window is slow:
records delivered behind it wait in the window instead of piling up.

The window is a ring of ``max_in_flight`` slots (sequence number modulo ``max_in_flight``); a
record's token (see :mod:`sluice.client.sinks`) is bound to its slot, the key of the sink, and
writes its result there. Records are submitted as the caller pulls results, so a caller that
stops iterating stops the submitting too (backpressure). While the caller keeps pulling results
that are ready, the window serves delivery reports itself (``serve``) and keeps the poll thread
aside (``busy``); see :mod:`sluice.client.bridge` for why.

A caller that leaves the loop early drops the window; its records still in flight are delivered
or fail as usual. The tokens hold the window only weakly, so it goes at once: the failures in
its ring that nobody took are logged then, and a failure reported later is logged as it comes
(:class:`Abandoned`), each once.

The per-record path is kept to few bytecodes, since at a few hundred thousand records a second
the interpreter's work per record is what the window costs over a bare produce loop: results
are taken from the ring a refill's worth at a time with list slicing (C) and handed out with a
``pop()``; the submit loop iterates ``islice`` over the source and counts what it accepted from
the sequence numbers once, at the end.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from itertools import islice
from types import MethodType
from typing import Any

from sluice.client.bridge import DeliveryBridge
from sluice.client.errors import ProducerClosedError, check_loop
from sluice.client.metrics import ProducerMetrics
from sluice.client.records import Record, RecordLike, Records
from sluice.client.results import RecordMetadata
from sluice.client.sinks import Deliver, Failure, new_metadata, token_maker

log = logging.getLogger("sluice.client")

Submit = Callable[[RecordLike, Any, int], bool]
"""(item, sink, key) -> True once librdkafka has the record or its outcome is settled (a bad
record); False when librdkafka's queue is full (nothing was submitted). It stores the record
with ``sink.keep(key, record)`` first."""


class OrderedSends:
    """The async iterator ``Producer.send_ordered`` returns. ``in_flight`` (records whose
    outcome has not arrived) and ``peak_in_flight`` are there to observe the bound;
    ``outstanding`` also counts results that arrived but were not yet taken."""

    def __init__(
        self,
        submit: Submit,
        wait_for_space: Callable[[], Awaitable[None]],
        records: Records,
        max_in_flight: int,
        metrics: ProducerMetrics,
        failures: list[Failure],
        *,
        produce: Callable[..., None],
        closing: Callable[[], bool],
        busy: Callable[[], None] = lambda: None,
        serve: Callable[[], None] = lambda: None,
        bridge: DeliveryBridge | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self._submit = submit
        self._wait_for_space = wait_for_space
        self._produce = produce
        self._closing = closing
        self._busy = busy
        self._serve = serve
        self._bridge = bridge
        self._loop = loop
        """The producer's: its poll thread settles the results there."""
        self._sync: Iterator[RecordLike] | None = None
        self._async: AsyncIterator[RecordLike] | None = None
        if isinstance(records, AsyncIterable):
            self._async = aiter(records)
        else:
            self._sync = iter(records)
        self._exhausted = False
        self._carried: Any = _END
        """A record taken from the source whose submit was waiting for queue space when the
        caller's await was cancelled (``wait_for(anext(window), ...)``): the next fill submits
        it first. It was dropped, or, from an async source, left its slot empty for good."""
        self._refill = max(1, max_in_flight // 8)
        """Free slots that make the window submit again: filling a slot at a time would pay
        the fill's fixed cost per record; an eighth of the window at a time keeps it at least
        seven eighths full."""
        self._results: list[RecordMetadata | None] = [None] * max_in_flight
        self._records: list[Record | None] = [None] * max_in_flight
        self._nones: list[None] = [None] * max_in_flight
        self._ready: list[RecordMetadata] = []
        """Results taken from the ring, not yet yielded, last first: ``__anext__`` hands
        them out with a ``pop()``, and only when none is left takes more (and submits). The
        same list throughout (the finalizer that logs unseen failures holds it)."""
        self._head = 0
        """Sequence number of the next result to take from the ring."""
        self._tail = 0
        """Sequence number of the next record to submit."""
        self._tally = metrics.tally()
        """[records delivered], written by the tokens."""
        self._metrics = metrics
        self._settled = 0
        """Records settled otherwise (on the loop)."""
        self._waiter: asyncio.Future[None] | None = None
        self._taking = False
        """A task is in the refill (``_take``)."""
        self.peak_in_flight = 0
        self.deliver = _ordered_deliver(self, metrics, failures)
        self.token = token_maker(self.deliver)
        # The tokens hold ``deliver`` (which holds no reference to the window), so a window
        # its caller drops goes at once, records still in flight: the counter is retired when
        # the last token is gone, and the failures nobody took are logged now.
        weakref.finalize(self.deliver, metrics.retire, self._tally)
        weakref.finalize(self, log_unseen, self._results, self._ready)

    @property
    def in_flight(self) -> int:
        return self._tail - int(self._tally[0]) - self._settled

    @property
    def outstanding(self) -> int:
        return self._tail - self._head + len(self._ready)

    @property
    def waiting(self) -> bool:
        """Whether the caller is waiting for the oldest outstanding record's outcome (the
        window has submitted what it may)."""
        return self._waiter is not None

    # -- the sink (see sluice.client.sinks) ------------------------------------------------

    def keep(self, slot: int, record: Record) -> None:
        self._records[slot] = record

    def record(self, slot: int) -> Record:
        record = self._records[slot]
        assert record is not None
        return record

    def settle(self, slot: int, result: RecordMetadata) -> None:
        self._results[slot] = result
        self._settled += 1
        self.check()

    def check(self) -> None:
        """Wake the caller if the result it waits for is in."""
        waiter = self._waiter
        if (
            waiter is not None
            and self._results[self._head % self.max_in_flight] is not None
            and not waiter.done()
        ):
            waiter.set_result(None)

    # -- the iterator ----------------------------------------------------------------------

    def __aiter__(self) -> OrderedSends:
        return self

    async def __anext__(self) -> RecordMetadata:
        ready = self._ready
        if ready:  # the common case: a result taken from the ring with the others ready
            return ready.pop()
        check_loop(self._loop, "Producer")  # once a refill: what follows waits on its loop
        if self._taking:
            # Two tasks in here at once: the second's waiter replaced the first's, which then
            # waited for ever (and two fills at once would share a sequence number).
            raise RuntimeError(
                "a send_ordered window is iterated by one task at a time: another task is "
                "waiting in it (an async generator refuses the same way)"
            )
        self._taking = True
        try:
            return await self._take()
        finally:
            self._taking = False

    async def _take(self) -> RecordMetadata:
        """The refill: submit what the window has room for, wait for the oldest result, and
        take the results that are in from there on."""
        ready = self._ready
        n = self.max_in_flight
        self._busy()
        if not self._exhausted and n - (self._tail - self._head) >= self._refill:
            try:
                await self._fill(n)
            except ProducerClosedError:
                if self._tail == self._head:
                    raise
                # The results of what was sent are handed out first: a window that raised
                # here withheld them (their records delivered or purged, the caller not told).
        head = self._head
        tail = self._tail
        if head == tail:
            self._metrics.retire(self._tally)
            raise StopAsyncIteration
        slot = head % n
        results = self._results
        if results[slot] is None:
            self._serve()  # reports ready but not yet served may hold it
        if results[slot] is None:
            # The window has submitted what it may: nothing more comes until results do, so
            # nothing is worth lingering for (see sluice.client.bridge).
            self._waiter = asyncio.get_running_loop().create_future()
            bridge = self._bridge
            if bridge is not None:
                bridge.urgent += 1
            try:
                await self._waiter
            finally:
                self._waiter = None
                if bridge is not None:
                    bridge.urgent -= 1
            assert results[slot] is not None
        # Take the results that are in from here on, up to a refill's worth (so the window
        # refills as often as before), in C: a slice, an index, two slice assignments.
        end = min(n, slot + tail - head, slot + self._refill)
        chunk = results[slot:end]
        try:
            end = slot + chunk.index(None)
            del chunk[end - slot:]
        except ValueError:
            pass
        cleared = self._nones[: end - slot]
        results[slot:end] = cleared
        self._records[slot:end] = cleared
        self._head = head + end - slot
        chunk.reverse()
        result = chunk.pop()
        ready.extend(chunk)  # type: ignore[arg-type]  # no None left in it
        return result  # type: ignore[return-value]

    async def _fill(self, n: int) -> None:
        """Submit until the window is full or the records run out. A Record with bytes value
        and key goes straight to librdkafka; anything else, and a full queue, takes the
        producer's ``submit``. A record's token is bound to its slot in the ring."""
        if self._closing():
            raise ProducerClosedError("the producer is closing or closed; the record was not sent")
        if self._carried is not _END:
            seq = self._tail
            while not self._submit(self._carried, self, seq % n):  # cancelled again: still carried
                await self._wait_for_space()
                self._busy()
            self._carried = _END
            self._tail = seq + 1
        if self._sync is not None:
            await self._fill_from(self._sync, n)
        else:
            await self._fill_from_async(n)
        in_flight = self.in_flight
        if in_flight > self.peak_in_flight:
            self.peak_in_flight = in_flight

    async def _fill_from(self, source: Iterator[RecordLike], n: int) -> None:
        """A sync source: as many records as the window has room for, in one ``_send``."""
        start = self._tail
        room = self._head + n - start
        await self._send(islice(source, room), n)
        if self._tail - start < room:
            self._exhausted = True

    async def _fill_from_async(self, n: int) -> None:
        """An async source: a record at a time, as the source yields."""
        source = self._async
        assert source is not None
        while self._tail - self._head < n:
            item = await anext(source, _END)
            self._busy()
            if item is _END:
                self._exhausted = True
                break
            if self._closing():  # began while the source was awaited: not taken (it was
                self._carried = item  # produced by the fast path during close's wait)
                raise ProducerClosedError(
                    "the producer is closing or closed; the record was not sent"
                )
            await self._send((item,), n)

    async def _send(self, items: Iterable[RecordLike], n: int) -> None:
        """The hot loop, both sources': as few bytecodes a record as it takes. ``items`` fit
        the window, and nothing in them awaits (a sync source, or one record an async source
        yielded). The records that went straight to librdkafka are counted from the sequence
        numbers at the end, or before the loop can wait (a full queue)."""
        records, produce, metrics = self._records, self._produce, self._metrics
        bind, deliver = MethodType, self.deliver
        seq = counted = self._tail
        """``seq``: the next record's sequence number (``self._tail`` is written back before
        a submit and at the end); records before ``counted`` are counted in
        ``metrics.accepted`` (or by ``submit``)."""
        slow = nbytes = 0
        try:
            for item in items:
                if type(item) is Record:
                    value, k = item.value, item.key
                    if type(value) is bytes and (k is None or type(k) is bytes):
                        slot = seq % n
                        records[slot] = item
                        p = item.partition
                        timestamp, headers = item.timestamp, item.headers
                        try:
                            if timestamp is None and headers is None:
                                # Five arguments: librdkafka's argument parsing is per argument.
                                produce(item.topic, value, k, -1 if p is None else p, bind(deliver, slot))
                            else:
                                timestamp = timestamp or 0
                                if timestamp < 0:  # librdkafka would store it: submit refuses
                                    raise ValueError(timestamp)
                                produce(
                                    item.topic, value, k, -1 if p is None else p, bind(deliver, slot),
                                    None, timestamp, headers,
                                )
                        except Exception:  # BufferError included: the submit below handles it
                            pass
                        else:
                            seq += 1
                            nbytes += len(value)
                            continue
                self._tail = seq + 1
                # Count what went straight to librdkafka before anything can wait: delivered
                # while uncounted, it would make the producer's in_flight negative.
                metrics.accepted += seq - counted - slow
                metrics.accepted_bytes += nbytes
                counted, slow, nbytes = seq, 0, 0
                try:
                    while not self._submit(item, self, seq % n):  # librdkafka's queue is full
                        await self._wait_for_space()
                        self._busy()
                except asyncio.CancelledError:  # see _carried (a close is for good: after
                    self._carried = item  # ProducerClosedError nothing is submitted again)
                    raise
                seq += 1
                slow += 1
        finally:
            self._tail = seq
            metrics.accepted += seq - counted - slow
            metrics.accepted_bytes += nbytes


def _ordered_deliver(
    sink: OrderedSends, metrics: ProducerMetrics, failures: list[Failure]
) -> Deliver:
    """The window's ``deliver``. It holds the window weakly: the tokens keep it alive, and a
    strong reference would keep a dropped window (and its failures, unlogged) alive until the
    cyclic collector ran. A failure reported after the window went goes to :class:`Abandoned`."""
    results, records = sink._results, sink._records
    tally, fail, keep_latency = sink._tally, failures.append, metrics.latencies.append
    window = weakref.ref(sink)

    def deliver(slot: int, error: Any, message: Any) -> None:
        if error is None:
            latency = message.latency()
            results[slot] = new_metadata(
                RecordMetadata,
                (records[slot].topic, message.partition(), message.offset(),  # type: ignore[union-attr]
                 message.timestamp()[1], None, None, latency),
            )
            keep_latency(latency)
            tally[0] += 1
        else:
            target = window()
            fail((Abandoned(records[slot]) if target is None else target, slot, error, message))

    return deliver


class Abandoned:
    """The sink of a record whose window its caller dropped before the record's failure was
    reported: the failure is handled as any (counted, dead-lettered if configured) and, with
    nobody to take its result, logged unless its dead-letter copy was written."""

    def __init__(self, record: Record | None) -> None:
        self._record = record

    def keep(self, key: int, record: Record) -> None:
        self._record = record

    def record(self, key: int) -> Record:
        assert self._record is not None
        return self._record

    def settle(self, key: int, result: RecordMetadata) -> None:
        log_unseen([result], [])


def log_unseen(
    results: list[RecordMetadata | None], ready: list[RecordMetadata]
) -> None:
    """A dropped window's results its caller never took: log each failure (not dead-lettered)
    once, as a failure with nobody awaiting it is logged elsewhere."""
    for result in (*results, *ready):
        if result is not None and result.error is not None and result.dead_letter is None:
            log.warning("a record of an abandoned send_ordered failed: %s", result.error)


_END: Any = object()
