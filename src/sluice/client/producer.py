"""The asyncio producer: four send strategies over one librdkafka producer.

=====================  ==========================================================================
``await send(...)``    the synchronous strategy: one record, its :class:`RecordMetadata` once
                       delivered (a round trip per record, no batching across sends)
``send_nowait(...)``   the concurrent one: a future, at once; :class:`QueueFullError` when
                       librdkafka's queue is full. ``await submit(...)`` is the same but waits
                       for queue space instead
``send_ordered(...)``  the bounded, ordered window (Rust's ``FuturesOrdered``): at most N in
                       flight, results in submission order
``send_batch(...)``    everything at once, results in order: the highest throughput
=====================  ==========================================================================

Every record gets exactly one outcome. A record librdkafka accepted is delivered or fails with
its :class:`DeliveryError` (after librdkafka's own retries, within ``delivery.timeout.ms``: the
toolkit retries nothing itself, so it cannot reorder or duplicate); a failure goes to the
dead-letter topic when one is configured. ``flush`` waits for outcomes; ``close`` flushes within
its timeout, then purges what is left and raises :class:`UndeliveredError` listing it.

Internally each record's delivery callback is a *token* of its *sink* (:mod:`sluice.client.sinks`):
the futures of single sends, a batch's arrays, an ordered window's ring, or the dead-letter
copies; it writes the record's outcome there. The poll thread serves the callbacks
(:mod:`sluice.client.bridge`) and :meth:`Producer._after_poll` finishes on the loop what needs
the loop, a poll's worth at a time.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import operator
import os
import time
import weakref
from collections.abc import AsyncIterable, Callable, Mapping
from itertools import islice
from types import MethodType, TracebackType
from typing import Any

import confluent_kafka as ck
from prometheus_client import CollectorRegistry

from sluice.client import librdkafka, serializers
from sluice.client import options as check
from sluice.client.bridge import DeliveryBridge
from sluice.client.closing import ClosesInTask
from sluice.client.dlq import SIZE_ERRORS, DeadLetter, DeadLetterRoute, without_value
from sluice.client.errors import (
    ConfigurationError,
    DeliveryError,
    NotSentError,
    ProducerClosedError,
    QueueFullError,
    SerializationError,
    UndeliveredError,
    check_loop,
    running_loop,
)
from sluice.client.metrics import DEFAULT_REGISTRY, ProducerMetrics, collector_for, registry_of
from sluice.client.ordered import OrderedSends
from sluice.client.records import Headers, InvalidRecord, Record, RecordLike, Records, as_record
from sluice.client.results import BatchResults, RecordMetadata, failed
from sluice.client.sinks import Batch, DeadLetters, Failure, Futures, Sink, new_metadata
from sluice.client.timeouts import wait_limit

log = logging.getLogger("sluice.client")

DEFAULTS: dict[str, Any] = {
    # Correct first: no duplicates or reordering on retries, every record acknowledged by all
    # in-sync replicas. (Idempotence implies acks=all; stated for the brokers where it is off.)
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    # A key's partition as the Java client, kafka-python, aiokafka and `sluice produce` choose
    # it (librdkafka's own default, consistent_random, hashes keys differently: docs/clients.md).
    "partitioner": "murmur2_random",
}
"""librdkafka settings the toolkit sets unless the caller does."""

RESERVED = frozenset({"on_delivery", "delivery.report.only.error", "dr_cb", "dr_msg_cb"})
"""librdkafka settings the toolkit owns: every record's report is its business."""

_STARTED: weakref.WeakKeyDictionary[Producer, int] = weakref.WeakKeyDictionary()
"""Producers started and not yet closed, for :func:`_warn_unclosed` at the process's exit,
with the process that started each (a forked child's copy is not its to look at: librdkafka's
locks may have been held at the fork)."""


@atexit.register
def _warn_unclosed() -> None:
    """A producer never closed (no ``async with``, no ``close()``) loses what librdkafka still
    holds when the process exits, with nobody told: a ``send_nowait`` burst at the end of a
    script was simply not in the topic. Say so, once per such producer, on ``sluice.client``."""
    for producer in list(_STARTED):
        if _STARTED.get(producer) != os.getpid() or producer._closing:
            continue
        with contextlib.suppress(Exception):
            held = len(producer._producer)
            if held:
                log.warning(
                    "%s was never closed: %d records (or reports) were still in librdkafka at "
                    "exit and may be lost; use `async with Producer(...)` or "
                    "`await producer.close()` before the event loop ends",
                    producer._metrics.client_id, held,
                )

MAX_TIMESTAMP = (1 << 63) - 1
"""The largest timestamp a record batch holds (int64 milliseconds)."""
CHUNK = 1024
"""Records ``send_batch`` takes from an async iterable before submitting them."""
SERVE_EVERY_MASK = 1023
"""The batch path serves delivery reports itself every 1024 records (as a plain confluent-kafka
loop calls ``poll(0)``), while the poll thread stands aside (see :mod:`sluice.client.bridge`)."""
YIELD_AFTER = 0.005
"""Seconds the batch path submits before it lets the loop run other tasks a moment: a million
records used to take seconds with the loop blocked."""
YIELD_CHECK_MASK = 255
"""The batch path looks at the clock every 256 records (a few hundred microseconds)."""


class Producer(ClosesInTask):
    """An asyncio Kafka producer on librdkafka. ``options`` are librdkafka settings by their own
    names (``**{"linger.ms": 20}``), over the toolkit's defaults (:data:`DEFAULTS`); the keyword
    options below are the toolkit's own.

    - ``dead_letter_topic``: where finally failed records go, a name or a template with
      ``{topic}`` (``"{topic}.dlq"``); None (default) raises failures at each record's awaitable.
    - ``compression``: ``"zstd"``, ``"lz4"``, ``"snappy"``, ``"gzip"`` or ``"none"``
      (``compression.type``).
    - ``value_serializer``, ``key_serializer``: a callable to bytes, or ``"json"``,
      ``"msgspec"``, ``"pydantic"`` (see :mod:`sluice.client.serializers`).
    - ``metrics_registry``: the prometheus-client registry for this producer's metrics (the
      default registry if not given; None for no Prometheus export). The snapshot dict,
      :meth:`metrics`, is always there.
    - ``close_timeout``: seconds ``async with`` gives ``close()`` (default 30).
    - ``config``: librdkafka settings as a mapping, the same as passing them as keywords
      (``config={"linger.ms": 20}`` type-checks where ``**{"linger.ms": 20}`` may not).

    Use it as ``async with Producer(...) as producer:``, or call :meth:`start` and
    :meth:`close` yourself; one producer belongs to one event loop.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        dead_letter_topic: str | None = None,
        compression: str | None = None,
        value_serializer: str | Callable[[Any], bytes] | None = None,
        key_serializer: str | Callable[[Any], bytes] | None = None,
        metrics_registry: CollectorRegistry | None = DEFAULT_REGISTRY,
        close_timeout: float = 30.0,
        config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if metrics_registry is not None:
            registry_of(metrics_registry)  # refused before a librdkafka client is made
        close_timeout = check.seconds("close_timeout", close_timeout)
        options = {**check.mapping("config", config), **options}
        reserved = RESERVED & options.keys()
        if reserved:
            raise ConfigurationError(
                f"{sorted(reserved)}: the toolkit reports every record itself (its result or "
                f"its future); these librdkafka settings are not available"
            )
        if options.get("transactional.id") is not None:
            # librdkafka then wants init_transactions() and a transaction around every
            # record, which the toolkit has no call for: every send failed with "Local:
            # Erroneous state (_STATE)", nothing saying why
            raise ConfigurationError(
                f"transactional.id={options['transactional.id']!r}: the toolkit's producer "
                "has no transactions (init, begin, commit); every record would fail with "
                "_STATE. Use confluent_kafka.Producer for transactional sends"
            )
        settings = dict(DEFAULTS)
        if bootstrap_servers is not None:
            settings["bootstrap.servers"] = bootstrap_servers
        if compression is not None:
            settings["compression.type"] = compression
        settings.update(options)
        check.bootstrap(settings)
        # The toolkit's own options first: refused, no librdkafka client was made for nothing.
        self._dead_letter = (
            None if dead_letter_topic is None else DeadLetterRoute(dead_letter_topic)
        )
        self._value_serializer = serializers.resolve(value_serializer, "value_serializer")
        self._key_serializer = serializers.resolve(key_serializer, "key_serializer")
        made = librdkafka.make(
            ck.Producer, settings, kind="producer",
            on_error=self._on_error, on_statistics=self._on_statistics,
        )
        self._producer = made.client
        self._error_cb, self._stats_cb = made.error_cb, made.stats_cb
        self.config = made.config
        """The librdkafka configuration the producer was made with."""
        self._produce = self._producer.produce
        self.close_timeout = close_timeout
        self._metrics = ProducerMetrics(
            str(self.config["client.id"]),
            queue_max_messages=int(settings.get("queue.buffering.max.messages", 100_000)),
            queue_max_bytes=int(settings.get("queue.buffering.max.kbytes", 1_048_576)) * 1024,
        )
        self._collector = None
        if metrics_registry is not None:
            self._collector = collector_for(metrics_registry)
            self._collector.add(self._metrics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bridge: DeliveryBridge | None = None
        self._failures: list[Failure] = []
        """Failed records' reports, appended by the tokens, handled by the loop."""
        self._futures = Futures(self._metrics, self._failures)
        self._dead_letters = DeadLetters(self._metrics)
        self._active: dict[int, weakref.ref[Any]] = {}
        """Batches and ordered windows to check after each poll, by id. Weak: a window its
        caller dropped goes away, and its records' outcomes are only counted."""
        self._idle: asyncio.Event | None = None
        self._space: asyncio.Event | None = None
        self._closing = False
        self._closing_task: asyncio.Future[None] | None = None
        self._close_waiters = 0
        self._closed_thing = "producer"
        """Callers awaiting the close task (a failure with none is logged instead)."""
        self._closed = False
        self._purged: list[DeliveryError] | None = None
        self._dead_letter_tasks: set[asyncio.Task[None]] = set()
        self.fatal_error: ck.KafkaError | None = None
        """librdkafka's fatal error, once one happened (the producer is unusable after it)."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Producer:
        """Start the poll thread on the running loop (sends start it too, if needed). A closed
        producer cannot start again: :class:`ProducerClosedError` (make a new one)."""
        if self._closing:
            raise ProducerClosedError("the producer is closed; a closed producer cannot be started again")
        self._start()
        return self

    def _start(self) -> None:
        if self._bridge is not None:
            check_loop(self._loop, "Producer")
            return
        if self._closing:
            raise ProducerClosedError("the producer is closed")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._idle = asyncio.Event()
        self._idle.set()
        self._space = asyncio.Event()
        self._bridge = DeliveryBridge(
            self._producer.poll, loop, self._after_poll, name=f"{self._metrics.client_id}-poll",
            flush=self._producer.flush, outstanding=self._producer.__len__,
        )
        self._bridge.start()
        _STARTED[self] = os.getpid()

    async def __aenter__(self) -> Producer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(self.close_timeout)

    async def flush(self, timeout: float | None = None) -> int:
        """Wait until every accepted record has its outcome, at most ``timeout`` seconds (None:
        no limit; NaN or negative: none); returns how many still have none (0: all settled).
        Records lingering in librdkafka are sent at once meanwhile (see :mod:`sluice.client.bridge`)."""
        check_loop(self._loop, "Producer")
        if self._idle is None or self._settled():
            return 0
        timeout = wait_limit(timeout)  # NaN: asyncio's timer would never fire
        self._idle.clear()
        assert self._bridge is not None
        bridge = self._bridge
        bridge.urgent += 1  # nothing to linger for: see sluice.client.bridge
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
        finally:
            bridge.urgent -= 1
        return 0 if self._settled() else max(1, self._metrics.in_flight)

    async def close(self, timeout: float | None = 30.0) -> None:
        """Stop taking records, flush within ``timeout``, then purge whatever is left and raise
        :class:`UndeliveredError` naming each such record (each also fails at its own awaitable
        with a ``purged`` :class:`DeliveryError`: it may or may not have been written).

        The close runs in a task of its own: a caller cancelled (an ``asyncio.timeout``
        around it) does not cut it short, and a second close while it runs waits for it
        (raising its :class:`UndeliveredError` too). Both used to return, the second at once:
        the loop then ended with the first close still flushing, and what librdkafka held
        was lost without a word. Once it is done, calling it again does nothing."""
        if self._closing:
            closing = self._closing_task
            if closing is not None and not closing.done() and running_loop() is closing.get_loop():
                await self._wait_for_close(closing)
            return
        check_loop(self._loop, "Producer")
        self._closing = True
        closing = self._closing_task = asyncio.ensure_future(self._close(timeout))
        closing.add_done_callback(self._close_failed)
        await self._wait_for_close(closing)

    async def _close(self, timeout: float | None) -> None:
        """:meth:`close`'s work, in its own task."""
        purged: list[DeliveryError] = []
        try:
            if self._bridge is not None:
                if await self.flush(timeout):
                    self._purged = purged
                    for task in list(self._dead_letter_tasks):
                        task.cancel()
                    self._producer.purge(in_queue=True, in_flight=True)
                    # Every purged record's report comes back through poll().
                    await self.flush(10.0)
                bridge = self._bridge
                await asyncio.to_thread(bridge.stop)
                bridge.drain()
        finally:
            self._closed = True
            if self._collector is not None:
                self._collector.discard(self._metrics)
        if not self._settled():
            log.error("%d records still unsettled after close", self._metrics.in_flight)
        else:  # nothing left to flush: librdkafka's close only stops its threads
            await asyncio.to_thread(self._producer.close)
        if purged:
            raise UndeliveredError(purged)

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the strategies --------------------------------------------------------------------

    async def send(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> RecordMetadata:
        """Send one record and wait until it is delivered; raises its :class:`RecordError`
        (without a dead-letter topic). Cancelling the await cancels the waiting, not the record:
        once handed to librdkafka (after any wait for queue space) it is delivered or fails as
        usual, counted, dead-lettered, waited for by ``flush``/``close``; a failure with nobody
        waiting is logged."""
        fut = await self.submit(topic, value, key, headers, partition, timestamp)
        return await fut

    def send_nowait(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Hand one record over and return its future at once; :class:`QueueFullError` (and the
        record not taken) when librdkafka's queue is full. A bad record fails its future, not
        this call."""
        self._start()
        record = Record(topic, value, key, headers, partition, timestamp)
        assert self._loop is not None
        fut = self._loop.create_future()
        futures = self._futures
        n = futures.add(fut, record)
        if not self._submit(record, futures, n):
            futures.discard(n)
            raise QueueFullError(self._full_message())
        return fut

    async def submit(
        self,
        topic: str,
        value: Any,
        key: Any = None,
        headers: Headers | None = None,
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """``send_nowait`` that waits for queue space instead of raising: returns the record's
        future once librdkafka has taken it. Cancelled while waiting, the record is not sent."""
        self._start()
        record = Record(topic, value, key, headers, partition, timestamp)
        assert self._loop is not None
        fut = self._loop.create_future()
        futures = self._futures
        n = futures.add(fut, record)
        try:
            while not self._submit(record, futures, n):
                await self._wait_for_space()
        except BaseException:
            futures.discard(n)
            raise
        return fut

    def send_ordered(self, records: Records, *, max_in_flight: int = 1000) -> OrderedSends:
        """An async iterator with one :class:`RecordMetadata` per record, in submission order,
        at most ``max_in_flight`` records outstanding; a failed record's result has ``.error``
        set and the others carry on. Records are taken from ``records`` (Records or mappings,
        a sync or async iterable) as results are consumed."""
        _check_records(records)
        max_in_flight = _check_max_in_flight(max_in_flight)
        self._start()
        assert self._bridge is not None
        window = OrderedSends(
            self._submit,
            self._wait_for_space,
            records,
            max_in_flight,
            self._metrics,
            self._failures,
            produce=self._produce,
            closing=lambda: self._closing,
            busy=self._bridge.pause_while_busy,
            serve=self._serve_here,
            bridge=self._bridge,
            loop=self._loop,
        )
        self._watch(window)
        return window

    def _serve_here(self) -> None:
        """The bridge's ``serve_here`` while the producer is open (closed, librdkafka's
        ``poll`` raises; every outcome was served by then)."""
        if not self._closed and self._bridge is not None:
            self._bridge.serve_here()

    async def send_batch(self, records: Records) -> BatchResults:
        """Send every record as fast as librdkafka takes them (waiting for queue space when it
        is full), then wait for all. The results are in order, a failed record's with
        ``.error`` set. A list or tuple is submitted as it is; any other iterable, sync or
        async, is taken a chunk at a time as it is submitted. The submitting lets the loop run
        other tasks every :data:`YIELD_AFTER` seconds."""
        _check_records(records)
        self._start()
        assert self._loop is not None
        given = None
        if isinstance(records, list | tuple):  # submitted as it is
            given = records if type(records) is list else list(records)
        batch = Batch(self._loop, self._metrics, self._failures, given)
        self._watch(batch)
        batch.yield_at = time.perf_counter() + YIELD_AFTER
        try:
            if given is not None:
                await self._submit_batch(batch, 0, len(batch.records))
            elif isinstance(records, AsyncIterable):
                chunk: list[RecordLike] = []
                going = True
                async for item in records:
                    chunk.append(item)
                    if len(chunk) == CHUNK:
                        going = await self._submit_batch(
                            batch, batch.extend(chunk), len(batch.records)
                        )
                        chunk = []
                        if not going:
                            break  # closing: what the source still holds is not taken
                if chunk and going:
                    await self._submit_batch(batch, batch.extend(chunk), len(batch.records))
            else:
                # Taken a chunk at a time, as it is submitted: making the whole list first would
                # run the source (a generator's work) with the loop blocked.
                source = iter(records)
                while chunk := list(islice(source, CHUNK)):
                    if not await self._submit_batch(batch, batch.extend(chunk), len(batch.records)):
                        break  # closing: what the source still holds is not taken
        except BaseException:
            # Given up on while submitting (cancelled, the source raised): its records'
            # failures are logged, since nobody takes its results.
            batch.abandoned = True
            raise
        batch.finish()
        bridge = self._bridge
        assert bridge is not None
        bridge.urgent += 1  # every record is submitted: nothing to linger for
        try:
            await batch.done
        finally:
            bridge.urgent -= 1
            self._active.pop(id(batch), None)
            if batch.done.done() and not batch.done.cancelled():  # (cancelled with the task)
                self._metrics.retire(batch.tally)
            # else given up on with records in flight: their deliveries are still to be
            # counted (the tally was retired here, and in_flight stayed up for good: flush
            # waited out its timeout, close found records unsettled); the batch retires it
            # when it goes
        return batch.results()

    async def _submit_batch(self, batch: Batch, start: int, end: int) -> bool:
        """Submit ``batch.records[start:end]``: the hot loop of the batch path, with everything
        the common record (a Record with bytes value and key) needs bound to locals; anything
        else takes :meth:`_submit`. False when ``close()`` began: the records not submitted
        got :class:`NotSentError` results, and no more should be taken."""
        if self._closing:
            if start == 0:  # nothing of this batch was sent
                raise ProducerClosedError(
                    "the producer is closing or closed; the records were not sent"
                )
            self._abandon_batch(batch, start, end)
            return False
        records = batch.records
        produce, submit = self._produce, self._submit
        bind, deliver = MethodType, batch.deliver
        metrics = self._metrics
        perf_counter = time.perf_counter
        bridge = self._bridge
        assert bridge is not None
        i = start
        count = nbytes = 0
        bridge.pause_while_busy()
        while i < end:
            if not i & YIELD_CHECK_MASK:
                metrics.accepted += count
                metrics.accepted_bytes += nbytes
                count = nbytes = 0
                if not i & SERVE_EVERY_MASK:
                    bridge.serve_here()
                if perf_counter() >= batch.yield_at:
                    # Let the loop's other tasks run a moment; this loop goes on serving.
                    bridge.hold()
                    try:
                        await asyncio.sleep(0)
                    finally:
                        bridge.release()
                    if self._closing:
                        self._abandon_batch(batch, i, end)
                        return False
                    batch.yield_at = perf_counter() + YIELD_AFTER
            item = records[i]
            if type(item) is Record:
                value = item.value
                k = item.key
                if type(value) is bytes and (k is None or type(k) is bytes):
                    p = item.partition
                    try:
                        ts = item.timestamp or 0
                        if ts < 0:  # librdkafka would store it: _submit refuses it
                            raise ValueError(ts)
                        produce(
                            item.topic,
                            value,
                            k,
                            -1 if p is None else p,
                            bind(deliver, i),
                            None,
                            ts,
                            item.headers,  # type: ignore[arg-type]
                        )
                    except BufferError:
                        metrics.accepted += count
                        metrics.accepted_bytes += nbytes
                        count = nbytes = 0
                        await self._wait_for_space()
                        if self._closing:
                            self._abandon_batch(batch, i, end)
                            return False
                        bridge.pause_while_busy()
                        continue
                    except (ck.KafkaException, TypeError, ValueError, OverflowError):
                        pass  # _submit reports it
                    else:
                        count += 1
                        nbytes += len(value)
                        i += 1
                        continue
            metrics.accepted += count
            metrics.accepted_bytes += nbytes
            count = nbytes = 0
            while not submit(item, batch, i):
                await self._wait_for_space()
                if self._closing:
                    self._abandon_batch(batch, i, end)
                    return False
                bridge.pause_while_busy()
            i += 1
        metrics.accepted += count
        metrics.accepted_bytes += nbytes
        in_flight = metrics.in_flight
        if in_flight > metrics.peak_in_flight:
            metrics.peak_in_flight = in_flight
        return True

    def _abandon_batch(self, batch: Batch, start: int, end: int) -> None:
        """``close()`` began while the batch was being submitted: its remaining records were
        never accepted; each gets that as its result."""
        for i in range(start, end):
            record = _record_or_stand_in(batch.records[i])
            error = NotSentError(f"{record.topic}: not sent, the producer closed first", record)
            batch.settle(i, failed(record, error))

    # -- metrics ---------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """A snapshot of this producer's metrics (see :mod:`sluice.client.metrics`)."""
        return self._metrics.snapshot()

    # -- submission ------------------------------------------------------------------------

    def _submit(self, item: RecordLike, sink: Sink, key: int) -> bool:
        """Hand one record to librdkafka with its outcome going to (sink, key). True once
        librdkafka has it, or once its outcome is settled at once (a bad record); False, with
        nothing done, when librdkafka's queue is full."""
        if self._closing:
            raise ProducerClosedError("the producer is closing or closed; the record was not sent")
        try:
            record = item if type(item) is Record else as_record(item)
        except InvalidRecord as exc:
            bad = _record_or_stand_in(item)
            sink.keep(key, bad)
            self._metrics.count_failure("INVALID_RECORD")
            sink.settle(key, failed(bad, SerializationError(str(exc), bad)))
            return True
        sink.keep(key, record)
        value = record.value
        k = record.key
        try:
            if type(value) is not bytes:
                value = serializers.encode(value, self._value_serializer, record, "value")
            if k is not None and type(k) is not bytes:
                k = serializers.encode(k, self._key_serializer, record, "key")
        except SerializationError as exc:
            self._metrics.count_failure("SERIALIZATION")
            sink.settle(key, failed(record, exc))
            return True
        ts = record.timestamp
        if ts is not None and type(ts) is not int:  # numpy's int64, an IntEnum: librdkafka
            with contextlib.suppress(TypeError):  # takes any integer (__index__) as it is
                ts = operator.index(ts)
        if type(ts) is int and not 0 <= ts <= MAX_TIMESTAMP:
            self._metrics.count_failure("INVALID_RECORD")
            sink.settle(key, failed(record, SerializationError(
                f"{record.topic}: timestamp={ts}: a timestamp is milliseconds since the epoch, "
                f"0 to 2**63-1 (None: the time of sending); Kafka producers refuse negative ones "
                f"(-1 is Kafka's 'no timestamp', which a producer cannot send)", record)))
            return True
        partition = record.partition
        try:
            headers: Any = record.headers
            if headers is not None and type(headers) is not list and type(headers) is not dict:
                # any Mapping or sequence of pairs (Headers): librdkafka takes a dict or a list
                headers = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
            self._produce(
                record.topic,
                value,
                k,
                -1 if partition is None else partition,
                sink.token(key),
                None,
                ts or 0,  # as checked above
                headers,
            )
        except BufferError:
            return False
        except ck.KafkaException as exc:
            self._fail(
                sink, key, DeliveryError.from_kafka(exc.args[0], record), value, k, partition,
                attempts=0,
            )
            return True
        except (TypeError, ValueError, OverflowError) as exc:
            # a field of the wrong type (headers, partition) or out of C's range (partition)
            self._metrics.count_failure("INVALID_RECORD")
            sink.settle(key, failed(record, SerializationError(f"{record.topic}: {exc}", record)))
            return True
        metrics = self._metrics
        metrics.accepted += 1
        if value is not None:
            metrics.accepted_bytes += len(value)
        return True

    async def _wait_for_space(self) -> None:
        """Until the next poll's outcomes are in (which frees queue space)."""
        space = self._space
        assert space is not None
        space.clear()
        await space.wait()

    def _full_message(self) -> str:
        return (
            f"librdkafka's queue is full ({self._metrics.queue_max_messages} messages or "
            f"{self._metrics.queue_max_bytes // 1024} KiB: queue.buffering.max.messages/kbytes); "
            f"the record was not taken. `await producer.submit(...)` waits for space, and "
            f"send_ordered/send_batch pace themselves"
        )

    # -- outcomes (on the loop) ------------------------------------------------------------

    def _after_poll(self) -> None:
        """After a poll served reports: finish on the loop what the tokens could not."""
        assert self._bridge is not None
        self._bridge.hop_started()
        failures = self._failures
        if failures:
            n = len(failures)
            reports = failures[:n]
            del failures[:n]
            for sink, key, err, message in reports:
                self._reported_failure(sink, key, err, message)
        if self._futures.ready:
            self._futures.finish_ready()
        if self._dead_letters.outcomes:
            self._dead_letter_outcomes()
        for ref in list(self._active.values()):
            sink = ref()
            if sink is not None:
                sink.check()
        self._metrics.bucket_latencies()
        assert self._space is not None and self._idle is not None
        self._space.set()
        if self._settled():
            self._idle.set()

    def _watch(self, sink: Any) -> None:
        key = id(sink)
        self._active[key] = weakref.ref(sink, lambda _: self._active.pop(key, None))

    def _settled(self) -> bool:
        """Every accepted record has its outcome, on the loop's side too."""
        return (
            self._metrics.in_flight == 0
            and not self._failures
            and not self._futures.ready
            and not self._dead_letters.pending
        )

    def _reported_failure(self, sink: Sink, key: int, err: Any, message: Any) -> None:
        self._metrics.failure_reports += 1
        record = sink.record(key)
        p = message.partition()
        self._fail(
            sink,
            key,
            DeliveryError.from_kafka(err, record, reported=True),
            message.value(),
            message.key(),
            record.partition if p is None or p < 0 else p,
            attempts=1,
        )

    def _fail(
        self,
        sink: Sink,
        key: int,
        error: DeliveryError,
        value: bytes | None,
        record_key: bytes | None,
        partition: int | None,
        *,
        attempts: int,
    ) -> None:
        """A record failed: dead-letter it if configured, else settle it failed."""
        self._metrics.count_failure(error.name)
        if self._purged is not None and error.purged:
            self._purged.append(error)
        route = self._dead_letter
        if route is None or not route.routes(error):
            sink.settle(key, failed(error.record, error, partition))
            return
        topic = error.record.topic
        if route.topic_for(topic) == topic:
            # The "copy" would go back where the record failed to go (a value left out for its
            # size would even be a tombstone there): refused, nothing written.
            error.dead_letter_error = DeliveryError(
                f"{topic}: the dead-letter topic is the record's own topic "
                f"(dead_letter_topic={route.template!r}); the copy was not written",
                error.record,
                code=ck.KafkaError._INVALID_ARG,
                name="_INVALID_ARG",
            )
            self._dead_letter_failed(sink, key, error, partition)
            return
        letter = route.letter(
            error, key=record_key, value=value, partition=partition, attempts=attempts
        )
        self._write_dead_letter(letter, (sink, key, error, partition))

    def _write_dead_letter(self, letter: DeadLetter, entry: tuple[Any, ...]) -> None:
        """Write ``letter``, the copy of the failed record ``entry`` names (sink, key, error,
        partition), now or once librdkafka's queue has space."""
        n = self._dead_letters.add((*entry, letter))
        if not self._produce_dead_letter(letter, n):
            task = asyncio.ensure_future(self._dead_letter_when_space(letter, n))
            self._dead_letter_tasks.add(task)
            task.add_done_callback(self._dead_letter_tasks.discard)

    def _produce_dead_letter(self, letter: DeadLetter, n: int) -> bool:
        """Hand the copy to librdkafka; False when the queue is full. A copy librdkafka refuses
        on the spot settles the original at once: a copy is not retried (but one refused for its
        size with its value, once without it: :meth:`_dead_letter_outcomes`) or dead-lettered."""
        try:
            self._produce(
                letter.topic,
                letter.value,
                letter.key,
                -1,
                self._dead_letters.token(n),
                None,
                letter.timestamp,
                letter.headers,
            )
        except BufferError:
            return False
        except ck.KafkaException as exc:
            sink, key, error, partition, _ = self._dead_letters.pending.pop(n)
            error.dead_letter_error = DeliveryError.from_kafka(
                exc.args[0], Record(letter.topic, letter.value, letter.key, letter.headers)
            )
            self._dead_letter_failed(sink, key, error, partition)
            return True
        metrics = self._metrics
        metrics.accepted += 1
        metrics.accepted_bytes += len(letter.value or b"")
        return True

    async def _dead_letter_when_space(self, letter: DeadLetter, n: int) -> None:
        try:
            while not self._produce_dead_letter(letter, n):
                await self._wait_for_space()
        except asyncio.CancelledError:  # close() gave up on it
            sink, key, error, partition, _ = self._dead_letters.pending.pop(n)
            error.dead_letter_error = DeliveryError(
                f"{letter.topic}: not written, the producer closed first",
                Record(letter.topic, letter.value, letter.key, letter.headers),
                code=ck.KafkaError._PURGE_QUEUE,
                name="_PURGE_QUEUE",
            )
            if self._purged is not None:
                self._purged.append(error)
            self._dead_letter_failed(sink, key, error, partition)

    def _dead_letter_outcomes(self) -> None:
        """Settle the originals of the copies whose outcome is in."""
        outcomes = self._dead_letters.outcomes
        n = len(outcomes)
        done = outcomes[:n]
        del outcomes[:n]
        pending = self._dead_letters.pending
        for key, err, partition, offset, timestamp, latency in done:
            sink, original_key, error, original_partition, letter = pending.pop(key)
            if err is None:
                topic = self._dead_letter.topic_for(error.record.topic) if self._dead_letter else ""
                copy: RecordMetadata = new_metadata(
                    RecordMetadata, (topic, partition, offset, timestamp, None, None, latency)
                )
                self._metrics.dead_lettered += 1
                sink.settle(
                    original_key, failed(error.record, error, original_partition, copy)
                )
            else:
                self._metrics.failure_reports += 1
                if letter.value is not None and err.name() in SIZE_ERRORS:
                    # The record was over its topic's limit itself (or went down with one
                    # that was), and the dead-letter topic has the same limit: the copy is
                    # written once more without its value, as when librdkafka refused the
                    # record on the spot (before, such a copy was written so at once).
                    self._write_dead_letter(
                        without_value(letter), (sink, original_key, error, original_partition)
                    )
                    continue
                # The copy's own record (``partition`` is its Message here): the error then
                # names the dead-letter topic, not the original one.
                error.dead_letter_error = DeliveryError.from_kafka(err, _copy_record(partition))
                self._dead_letter_failed(sink, original_key, error, original_partition)

    def _dead_letter_failed(
        self, sink: Sink, key: int, error: DeliveryError, partition: int | None
    ) -> None:
        self._metrics.dead_letter_failed += 1
        sink.settle(key, failed(error.record, error, partition))

    # -- librdkafka's other callbacks (on the poll thread) ---------------------------------

    def _on_error(self, error: ck.KafkaError) -> None:
        if error.fatal():
            self.fatal_error = error
        librdkafka.log_error(self._metrics.client_id, error)
        if self._error_cb is not None:
            self._error_cb(error)

    def _on_statistics(self, raw: str) -> None:
        self._metrics.take_statistics(raw)
        if self._stats_cb is not None:
            self._stats_cb(raw)


def _check_records(records: object) -> None:
    """TypeError for what is one record, or no records at all, where an iterable of records is
    wanted: a str, bytes or mapping would otherwise be iterated into one failing record per
    character, byte or key."""
    if isinstance(records, str | bytes | bytearray | memoryview | Record | Mapping) or not (
        isinstance(records, AsyncIterable) or hasattr(records, "__iter__")
    ):
        raise TypeError(
            "records must be an iterable (sync or async) of Records or mappings, got "
            f"{type(records).__name__}" + (
                "; for one record, pass a list of it" if isinstance(records, Record | Mapping)
                else ""
            )
        )


def _check_max_in_flight(value: object) -> int:
    n = check.integer(value)
    if n is None:
        raise TypeError(f"max_in_flight must be an int, got {type(value).__name__}")
    return n


def _copy_record(message: Any) -> Record:
    """The dead-letter copy librdkafka reported failed, as a Record (its error's subject)."""
    return Record(message.topic() or "", message.value(), message.key(), message.headers())


def _record_or_stand_in(item: object) -> Record:
    """``item`` as a Record, or, when it is not one, a stand-in carrying it as its value (and
    its topic, if it names one) for the error that reports it."""
    try:
        return as_record(item)  # type: ignore[arg-type]
    except InvalidRecord:
        topic = item.get("topic") if isinstance(item, Mapping) else None
        return Record(topic if isinstance(topic, str) else "", item)
