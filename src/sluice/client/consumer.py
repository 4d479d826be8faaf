"""The asyncio consumer: librdkafka's ``Consumer`` fetched by a thread, records served to the
loop through the producer's bridge (:mod:`sluice.client.bridge`), memory bounded by one knob.

Memory. ``max_buffer_bytes`` bounds what the consumer holds: half of it is librdkafka's
(``queued.max.messages.kbytes`` a quarter, ``fetch.max.bytes`` an eighth, the fetch response
in flight another eighth), half the toolkit's (its buffer and the records in processing,
counted by key, value and header bytes plus :data:`~sluice.client.records.RECORD_OVERHEAD`).
When the toolkit's half is full the fetch thread stops taking records from librdkafka; its
queue fills to its bound and librdkafka stops fetching. Nothing fetched is discarded, so
nothing is fetched twice. (The thread keeps serving librdkafka's callbacks only when it takes
records: a handler that holds the whole buffer longer than ``max.poll.interval.ms`` leaves the
group, as it would with any librdkafka consumer.)

Threads. The fetch thread (the bridge's poll thread) calls ``consume()``, turns the messages
into :class:`ConsumerRecord`, and appends them to an inbox the loop empties once per hop. The
loop asks the thread for what must happen between two ``consume()`` calls (pause, resume,
seek) through a request queue; a request's effect reaches the loop as a marker in the inbox,
in order with the records, so a seek never serves a record fetched before it. Rebalance
callbacks run on the fetch thread inside ``consume()``; they run the consumer's coroutines on
the loop and wait for them (a revoke drains the records in processing, then commits).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import logging
import os
import queue
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from itertools import repeat
from operator import add, attrgetter, length_hint
from types import TracebackType
from typing import TYPE_CHECKING, Any

import confluent_kafka as ck
from prometheus_client import CollectorRegistry

from sluice.client import arguments, librdkafka, patterns, serializers
from sluice.client import options as check
from sluice.client.bridge import DeliveryBridge
from sluice.client.buffer import TP, FetchBuffer, size_of
from sluice.client.closing import ClosesInTask
from sluice.client.consumer_metrics import ConsumerMetrics, consumer_collector_for
from sluice.client.errors import (
    ConfigurationError,
    ConsumerClosedError,
    ConsumerError,
    DeserializationError,
    InvalidArgumentError,
    PartitionRevokedError,
    RebalanceCallbackError,
    check_loop,
    running_loop,
)
from sluice.client.metrics import DEFAULT_REGISTRY, registry_of
from sluice.client.records import RECORD_OVERHEAD, ConsumerRecord, fetched_records
from sluice.client.timeouts import wait_limit

if TYPE_CHECKING:
    from sluice.client.runner import Runner, Shed

log = logging.getLogger("sluice.client")

_STARTED: weakref.WeakKeyDictionary[Consumer, int] = weakref.WeakKeyDictionary()
"""Consumers subscribed and not yet closed, for :func:`_warn_unclosed` at the process's exit,
with the process that started each (a forked child's copy is not its to look at: librdkafka's
locks may have been held at the fork)."""


@atexit.register
def _warn_unclosed() -> None:
    """A consumer never closed does not leave its group: the coordinator keeps it a member
    until ``session.timeout.ms`` (45 s by default), and the group's next member (the same
    script run again) waited that long for its first record, with no word why. Say so."""
    for consumer in list(_STARTED):
        if (
            _STARTED.get(consumer) != os.getpid()
            or consumer._closing
            or consumer._assign is not None  # no group membership to leave
        ):
            continue
        with contextlib.suppress(Exception):
            log.warning(
                "%s was never closed: it stays a member of group %r until session.timeout.ms "
                "(%s ms) passes, and the group's next member waits that long; use `async with "
                "Consumer(...)` or `await consumer.close()` before the event loop ends",
                consumer._metrics.client_id, consumer._group_id,
                consumer.config.get("session.timeout.ms", 45000),
            )

MiB = 1024 * 1024
DEFAULT_MAX_BUFFER_BYTES = 32 * MiB
MIN_MAX_BUFFER_BYTES = 64 * 1024
MAX_MAX_BUFFER_BYTES = 4 * 1024 * 2097151
"""8 GiB less 4 KiB: librdkafka takes ``queued.max.messages.kbytes`` (a quarter of the budget)
up to 2097151 KiB; 8 GiB itself, in the range the check named, was refused by librdkafka."""
SHUTDOWN_RESERVE = 1.0
"""Seconds of a shutdown's deadline ``run``'s last commit leaves to what follows it (closing its
dead-letter producer, librdkafka's close): see :meth:`Consumer._run_share`."""
MAX_BATCH = 1000
"""Records one ``consume()`` call may return."""
FIRST_BATCH = 64
"""Records the first ``consume()`` takes, before any record's size is known."""
RECEIVE_MAX_BYTES = 100_000_000
"""librdkafka's default ``receive.message.max.bytes``: the consumer keeps it (see
:func:`librdkafka_budget`)."""
WATERMARKS_EVERY = 0.1
"""Seconds between the fetch thread's readings of every assigned partition's high watermark
(librdkafka's cached one): a batch's records are looked at only at its ends."""

DEFAULTS: dict[str, Any] = {
    # The toolkit commits itself: only what was processed (run) or what the application asks.
    "enable.auto.commit": False,
    "enable.partition.eof": False,
}

OWNED: dict[str, str] = {
    "enable.auto.commit": (
        "the toolkit commits itself (run: only records processed; otherwise "
        "consumer.commit()); librdkafka's auto-commit would also commit records fetched and "
        "not yet processed, so a crash would skip them (at-least-once lost)"
    ),
    "enable.partition.eof": (
        "the toolkit reads partitions as endless streams and has no end-of-partition event "
        "to give the application"
    ),
}
"""The settings of :data:`DEFAULTS` a user may repeat but not change, and why."""

RESERVED = frozenset({"on_commit", "on_assign", "on_revoke", "on_lost"})
"""Callbacks that are the toolkit's keyword options, or its own business."""



def _flag(value: Any) -> bool | None:
    """A boolean setting's value as librdkafka reads it (None: not a boolean)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "t", "1"):
            return True
        if text in ("false", "f", "0"):
            return False
    return None

# confluent-kafka's Message accessors, for C-level ``map`` over a batch
_error_of: Callable[[Any], Any] = ck.Message.error
_key_of: Callable[[Any], Any] = ck.Message.key
_headers_of: Callable[[Any], Any] = ck.Message.headers
_tp_of = attrgetter("topic", "partition")
_offset_attr = attrgetter("offset")

Rebalance = Callable[[list[TP]], object]
"""An async function, or a plain one (its result awaited only if it is awaitable)."""

_CALLBACK: contextvars.ContextVar[object] = contextvars.ContextVar("sluice_rebalance_callback")
"""In a rebalance callback's coroutine and the tasks it starts (they copy its context): that
callback's token (:attr:`Consumer._rebalance_calls`), so :meth:`Consumer.close` knows a call
the callback waits for (``asyncio.wait_for(consumer.close(), 5)`` runs it in a task of its own
before Python 3.12) from one of another task."""

_RUN: contextvars.ContextVar[object] = contextvars.ContextVar("sluice_run")
"""In ``run``'s task, its handlers and the tasks they start (they copy its context): that
run's :class:`~sluice.client.runner.Runner`, so :meth:`Consumer.close` knows a close the run
waits for (``asyncio.wait_for(consumer.close(), 5)`` in a handler, a task of its own before
Python 3.12)."""


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """A thread's outcome onto the loop's ``future`` (unless its waiter gave up already)."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


SEEK_ENDS = (ck.OFFSET_BEGINNING, ck.OFFSET_END)
"""The named offsets :meth:`Consumer.seek` takes, resolved to the log's start or end when the
seek is made."""
SEEK_END_TIMEOUT = 10.0
"""Seconds a seek to :data:`SEEK_ENDS` waits for the partition's offsets from its leader."""


def _settling(
    call: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
) -> Callable[[], None]:
    """What another thread runs: ``call()``, its outcome then settled on ``future`` in ``loop``."""

    def run() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (call(), None)
        except BaseException as exc:
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits now
            loop.call_soon_threadsafe(_settle, future, *outcome)

    return run


def _wake_only() -> None:
    """A callback that only wakes the loop (see :meth:`Consumer.stop`)."""


def _seek_failed(future: asyncio.Future[None]) -> None:
    """A seek nobody awaits (made in a rebalance callback): its failure is logged."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("a seek made in a rebalance callback failed: %s", future.exception())


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark the outcome of a wait that was given up as seen (asyncio logs it otherwise)."""
    if not future.cancelled():
        future.exception()


def librdkafka_budget(max_buffer_bytes: int) -> dict[str, Any]:
    """librdkafka's share of ``max_buffer_bytes``: its queue a quarter, each fetch response an
    eighth (``fetch.max.bytes``; librdkafka may overshoot its queue by one response, and one
    more is in flight), per partition at most that or 1 MiB; and a short
    ``fetch.queue.backoff.ms``."""
    queue_kib = max(1, max_buffer_bytes // 4 // 1024)
    fetch = max(1024, max_buffer_bytes // 8)
    return {
        "queued.max.messages.kbytes": queue_kib,
        "fetch.max.bytes": fetch,
        # librdkafka requires fetch.max.bytes >= message.max.bytes (a consumer sends only
        # small requests; the setting bounds requests, not fetched records)
        "message.max.bytes": min(1_000_000, fetch),
        "max.partition.fetch.bytes": min(MiB, fetch),
        # The largest response librdkafka takes, not memory it sets aside: a response is at
        # most fetch.max.bytes, but for a first record batch larger than that, which the
        # broker sends whole (KIP-74). Lowered to the fetch size (it was fetch.max.bytes +
        # 512), such a record failed every fetch ("Invalid response size") and the
        # partition stopped there for good, silently; librdkafka's default reads it.
        "receive.message.max.bytes": max(fetch + 512, RECEIVE_MAX_BYTES),
        # librdkafka postpones a partition's next fetch by this much once its queue is at the
        # bound (default 1000 ms): with a bounded queue that is a second's stall whenever the
        # application catches up (measured: a third of the throughput at 100 B records)
        "fetch.queue.backoff.ms": 10,
    }


class Consumer(ClosesInTask):
    """An asyncio Kafka consumer on librdkafka. ``options`` are librdkafka settings by their own
    names (``**{"auto.offset.reset": "earliest"}``); the keyword options are the toolkit's:

    - ``topics`` (a list, or one topic as a str) or ``pattern`` (a regular expression) to
      subscribe as ``group_id``; or ``assign``, partitions as ``(topic, partition)`` or
      ``(topic, partition, offset)`` (without ``group_id`` there is no group: nothing is
      committed, :meth:`commit` raises).
    - ``max_buffer_bytes``: the memory bound (default 32 MiB), see the module's docstring.
    - ``max_retries``, ``retry_backoff``, ``retry_backoff_max``: ``run``'s retries of a failed
      handler call (exponential backoff from ``retry_backoff`` seconds, capped, jittered).
    - ``dead_letter_topic``: where ``run`` writes records it gave up on (a name or
      ``"{topic}.dlq"``); ``dead_letter_options``: librdkafka settings for its producer.
    - ``shed``: the overload policy (:class:`~sluice.client.runner.Shed`), off by default.
    - ``value_deserializer``, ``key_deserializer``: a callable from bytes, or ``"json"``,
      ``"msgspec"``, ``"str"``.
    - ``on_assign``, ``on_revoke``: functions (async, or plain) called with the partitions; a
      revoke's runs after ``run`` drained the revoked partitions' records in processing,
      before their commit.
    - ``commit_interval``: seconds between ``run``'s commits (default 1).
    - ``close_timeout``: seconds a shutdown may take, ``run``'s last commit and
      :meth:`close` together (default 30), see :meth:`close`.
    - ``metrics_registry``, ``config``: as the producer's.
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        group_id: str | None = None,
        topics: str | Iterable[str] | None = None,
        pattern: str | None = None,
        assign: Iterable[tuple[str, int] | tuple[str, int, int]] | tuple[str, int] | tuple[str, int, int] | None = None,
        max_buffer_bytes: int = DEFAULT_MAX_BUFFER_BYTES,
        max_retries: int = 3,
        retry_backoff: float = 0.1,
        retry_backoff_max: float = 10.0,
        dead_letter_topic: str | None = None,
        dead_letter_options: Mapping[str, Any] | None = None,
        shed: Shed | None = None,
        value_deserializer: str | Callable[[bytes], Any] | None = None,
        key_deserializer: str | Callable[[bytes], Any] | None = None,
        on_assign: Rebalance | None = None,
        on_revoke: Rebalance | None = None,
        commit_interval: float = 1.0,
        metrics_registry: CollectorRegistry | None = DEFAULT_REGISTRY,
        close_timeout: float = 30.0,
        config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if metrics_registry is not None:
            registry_of(metrics_registry)  # refused before a librdkafka client is made
        options = {**check.mapping("config", config), **options}
        dead_letter_options = check.mapping("dead_letter_options", dead_letter_options)
        if any(k in dead_letter_options for k in check.BOOTSTRAP_KEYS):
            # the dead-letter producer's own brokers: refused now, not at the first copy
            try:
                check.bootstrap(dead_letter_options)
            except ConfigurationError as exc:
                raise ConfigurationError(f"dead_letter_options: {exc}") from None
        reserved = RESERVED & options.keys()
        if reserved:
            raise ConfigurationError(
                f"{sorted(reserved)}: pass on_assign/on_revoke as the toolkit's keyword options "
                f"(coroutines); commits are the toolkit's"
            )
        for name, why in OWNED.items():
            if name in options and _flag(options[name]) is not DEFAULTS[name]:
                raise ConfigurationError(
                    f"{name}={options[name]!r}: {why}; leave it unset (the toolkit sets "
                    f"{DEFAULTS[name]!r})"
                )
        if isinstance(topics, str):  # one topic, not its characters
            topics = [topics]
        if topics is not None:
            topics = list(topics) if not isinstance(topics, bytes | bytearray) else [topics]
            if not topics or not all(isinstance(t, str) and t for t in topics):
                raise ConfigurationError(
                    f"topics={topics!r}: one topic name (a str) or a non-empty list of them"
                )
        if sum(x is not None for x in (topics, pattern, assign)) != 1:
            raise ConfigurationError("give exactly one of topics=[...], pattern=... or assign=[...]")
        regexes: dict[str, re.Pattern[str]] = {}
        """Each regex subscribed to, as Python's ``re`` reads what librdkafka does."""
        if pattern is not None:
            pattern, regexes[pattern] = patterns.checked(pattern)
        for t in topics or ():
            if t.startswith("^"):  # librdkafka reads it as a regex
                regexes[t] = patterns.checked(t)[1]
        max_buffer_bytes = check.count(
            "max_buffer_bytes", max_buffer_bytes, least=MIN_MAX_BUFFER_BYTES,
            most=MAX_MAX_BUFFER_BYTES,
        )
        max_retries = check.count("max_retries", max_retries, least=0)
        retry_backoff = check.seconds("retry_backoff", retry_backoff)
        retry_backoff_max = check.seconds("retry_backoff_max", retry_backoff_max)
        commit_interval = check.seconds("commit_interval", commit_interval, zero=False)
        close_timeout = check.seconds("close_timeout", close_timeout)
        settings: dict[str, Any] = dict(DEFAULTS)
        settings.update(librdkafka_budget(max_buffer_bytes))
        if bootstrap_servers is not None:
            settings["bootstrap.servers"] = bootstrap_servers
        if options.get("group.id") is None:
            options.pop("group.id", None)
        elif group_id is None:
            group_id = options["group.id"]
        elif options["group.id"] != group_id:
            # settings.update(options) below would give librdkafka the setting's group (a blank
            # one aborted the process) while the toolkit took group_id's
            raise ConfigurationError(
                f"group_id={group_id!r} and the setting group.id={options['group.id']!r} "
                "disagree: give the consumer group once"
            )
        if group_id is not None and (not isinstance(group_id, str) or not group_id.strip()):
            # librdkafka's consumer aborts the process (an assertion, SIGABRT) on a blank one
            raise ConfigurationError(
                f"group_id={group_id!r}: a consumer group's name, a non-blank str (or None "
                "with assign=[...] for no group)"
            )
        self._group_id = group_id
        if group_id is not None:
            settings["group.id"] = group_id
        else:
            if topics is not None or pattern is not None:
                raise ConfigurationError("subscribing needs a group_id")
            # confluent-kafka wants one even for assign(); nothing is committed to it
            settings["group.id"] = f"sluice-consumer-{librdkafka.next_number()}"
        settings.update(options)
        check.bootstrap(settings)
        made = librdkafka.make(
            ck.Consumer, settings, kind="consumer",
            on_error=self._on_error, on_statistics=self._on_statistics,
        )
        self._consumer = made.client
        self._error_cb, self._stats_cb = made.error_cb, made.stats_cb
        self.config = made.config
        """The librdkafka configuration the consumer was made with."""
        self._topics = list(topics) if topics is not None else None
        self._pattern = pattern
        self._regexes = regexes
        self._assign: list[tuple[str, int, int | None]] | None = None
        if assign is not None:
            if isinstance(assign, tuple) and assign and isinstance(assign[0], str):
                assign = [assign]  # one partition, not its fields
            self._assign = [arguments.assignment(a) for a in assign]
        self.max_buffer_bytes = max_buffer_bytes
        self._share = max_buffer_bytes // 2
        """The toolkit's half: its buffer and the records in processing."""
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        self.dead_letter_topic = dead_letter_topic
        self.dead_letter_options = dict(dead_letter_options)
        if dead_letter_topic is not None:
            from sluice.client.dlq import DeadLetterRoute

            route = DeadLetterRoute(dead_letter_topic)  # refuses a bad template now
            named = self._topics or [t for t, _, _ in self._assign or ()]
            for t in named:
                if t.startswith("^"):
                    continue  # a regex: checked at each copy (Runner._dead_letter)
                if self._reads(route.topic_for(t)):
                    raise ConfigurationError(
                        f"dead_letter_topic={dead_letter_topic!r} names "
                        f"{route.topic_for(t)!r} for records of {t!r}: a topic this consumer "
                        "reads itself, so its dead letters would come back to it"
                    )
        if shed is not None:
            from sluice.client.runner import Shed

            if not isinstance(shed, Shed):
                raise ConfigurationError(
                    f"shed={shed!r}: a sluice.client.Shed policy (e.g. Shed(max_age=60)) or None"
                )
        self.shed = shed
        self._value_deserializer = serializers.resolve_deserializer(
            value_deserializer, "value_deserializer"
        )
        self._key_deserializer = serializers.resolve_deserializer(
            key_deserializer, "key_deserializer"
        )
        self._user_on_assign = (
            None if on_assign is None else check.coroutine_function("on_assign", on_assign)
        )
        self._user_on_revoke = (
            None if on_revoke is None else check.coroutine_function("on_revoke", on_revoke)
        )
        self.commit_interval = commit_interval
        self.close_timeout = close_timeout

        self._buffer = FetchBuffer()
        self._inbox: deque[Any] = deque()
        """Batches (a list of records and their sizes' sum) and markers (callables), appended
        by the fetch thread."""
        self._appended = 0
        """Items the fetch thread put in the inbox so far (its own count: the inbox's length
        changes under it as the loop empties it)."""
        self._requests: deque[Callable[[], None]] = deque()
        """What the fetch thread runs before its next ``consume()``."""
        self._taken = 0
        """Bytes of records the fetch thread took from librdkafka (written by it alone)."""
        self._released = 0
        """Bytes of those the loop is done with (written by the loop alone)."""
        self._avg_size: int | None = None
        self._watermarks_at = 0.0
        """When the fetch thread next reads every assigned partition's high watermark."""
        self._room = threading.Event()
        self._fetch_waiting = False
        self._seeking: dict[TP, int] = {}
        self._seeks: set[asyncio.Future[None]] = set()
        """Seeks waiting for the fetch thread: close fails them (it would not answer them)."""
        self._positions: dict[TP, int] = {}
        """Next offset per partition after the records handed out (manual commits)."""
        self._committed: dict[TP, int] = {}
        self._assignment: set[TP] = set()
        self._in_rebalance = False
        """A rebalance callback's coroutine runs on the loop, the fetch thread waiting for it
        (see :meth:`_in_callback`); set and cleared on the loop."""
        self._rebalance_calls: queue.SimpleQueue[Callable[[], None] | None] | None = None
        """While :attr:`_in_rebalance`: the librdkafka calls (commits) the thread in the
        callback makes while it waits for the coroutine, in order."""
        self._rebalance_lost: frozenset[TP] = frozenset()
        self._revoking: set[TP] = set()
        """Partitions a revocation is taking, from its drain's start to ``on_revoke``'s end:
        a seek on them is refused (:class:`PartitionRevokedError`)."""
        self._stop_pending = False
        """:meth:`stop` came with no ``run`` running: the next ``run`` returns at once."""
        self._stop_lock = threading.RLock()
        """Orders a :meth:`stop` off the loop before :meth:`start` with ``run``'s reading of
        :attr:`_stop_pending` (one sets the flag or sees the loop, the other sees the flag).
        Reentrant: a ``signal.signal`` handler's stop runs on the thread it interrupted, which
        may hold it (a plain lock waited for itself there, for ever)."""
        self._revocations_done = 0
        """Revocations completed (their commit made), counted on the fetch thread: a default
        commit made before one and sent after it is stale (see :meth:`_commit_sync`)."""
        self._left_at: dict[TP, int] = {}
        """Per partition, :attr:`_revocations_done` once its last revocation completed (the
        fetch thread's): a stale default commit leaves it out even if it came back since."""
        self._hwm: dict[TP, int] = {}
        self._metrics = ConsumerMetrics(
            str(self.config["client.id"]),
            group_id,  # None without a group: not the name librdkafka was given for assign()
            lag=self._lag,
            buffered=lambda: (len(self._buffer), self._buffer.bytes),
            held_bytes=self.held_bytes,
            max_buffer_bytes=max_buffer_bytes,
        )
        self._collector = None
        if metrics_registry is not None:
            self._collector = consumer_collector_for(metrics_registry)
            self._collector.add(self._metrics)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bridge: DeliveryBridge | None = None
        self._ready: asyncio.Event | None = None
        self._runner: Runner | None = None
        self._closing = False
        self._closed = False
        self._shutdown_deadline: float | None = None
        """``time.monotonic()`` by which a shutdown gives up waiting for librdkafka:
        ``close_timeout`` after :meth:`stop`, ``run``'s cancellation or :meth:`close`."""
        self._stuck_calls: set[asyncio.Future[Any]] = set()
        """librdkafka calls whose wait was given up (timed out or cancelled) that have not
        returned yet: see :attr:`_stuck`."""
        self._dead_letter_closing: asyncio.Future[None] | None = None
        """``run``'s dead-letter producer closing: a task of its own, so that cancelling
        ``run`` again does not leave the producer open; :meth:`close` waits for it."""
        self._detached = False
        """:meth:`close` handed librdkafka to its closing thread: nothing more is asked of it."""
        self._run_task: asyncio.Task[Any] | None = None
        self._run_finished = asyncio.Event()
        self._run_finished.set()
        self._closing_task: asyncio.Future[None] | None = None
        self._close_waiters = 0
        self._closed_thing = "consumer"
        """Callers awaiting the close task: its failure is theirs to see (raised to them);
        with none left (returned at once, or cancelled) it is logged."""
        self.fatal_error: ck.KafkaError | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> Consumer:
        """Subscribe (or assign) and start the fetch thread on the running loop."""
        if self._bridge is not None:
            self._check_loop()
            return self
        if self._closing:
            raise ConsumerClosedError("the consumer is closed")
        with self._stop_lock:  # a stop() off the loop from now on is handed to it
            self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        c = self._consumer
        if self._assign is not None:
            tps = [
                ck.TopicPartition(t, p) if o is None else ck.TopicPartition(t, p, o)
                for t, p, o in self._assign
            ]
            c.assign(tps)
            self._assignment = {(t, p) for t, p, _ in self._assign}
        else:
            subs = self._topics if self._topics is not None else [str(self._pattern)]
            try:
                c.subscribe(
                    subs, on_assign=self._on_assign, on_revoke=self._on_revoke,
                    on_lost=self._on_lost,
                )
            except ck.KafkaException as exc:  # a regex Python reads and librdkafka does not
                raise ConfigurationError(f"librdkafka refused to subscribe to {subs}: {exc}") from exc
        self._bridge = DeliveryBridge(
            self._fetch, self._loop, self._after_poll, name=f"{self._metrics.client_id}-fetch"
        )
        self._bridge.start()
        _STARTED[self] = os.getpid()
        return self

    def _check_loop(self) -> None:
        """Refuse a loop other than the one the consumer started on (a second asyncio.run):
        the fetch thread hands records and outcomes to that first loop."""
        check_loop(self._loop, "Consumer")

    async def __aenter__(self) -> Consumer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, timeout: float | None = None) -> None:
        """Stop ``run`` and wait for it (it commits what it finished), stop fetching, leave
        the group (the revoke callbacks run) and close librdkafka, within ``timeout`` seconds
        (default ``close_timeout``; a last commit that :meth:`stop` began keeps its own
        deadline if that is earlier). ``run``'s last commit and its dead-letter producer's
        close each leave a reserve of the deadline (:meth:`_run_share`), so ``run`` returns
        before close stops waiting for it; ``timeout`` bounds the whole. Records fetched and
        not processed are not committed: the group's next member reads them.

        With the broker unreachable librdkafka holds a commit until the session times out
        (``session.timeout.ms``, 45 s by default). At the deadline close stops waiting: what
        was not committed is logged (those records are read again: at-least-once), and
        librdkafka is closed by a thread of its own once its call returns (a daemon thread:
        it never keeps the process alive).

        Inside ``on_assign``/``on_revoke`` (or a task they started) it raises
        :class:`~sluice.client.errors.RebalanceCallbackError` at once: the fetch thread waits
        for the callback, so the close would wait for itself; ``stop()`` there ends ``run``.

        The close goes on if its caller is cancelled (or its ``asyncio.timeout`` ends); a
        later close waits for it (but from ``run``'s handlers or a rebalance callback, which
        it waits for in turn: those return at once)."""
        if self._closing:
            closing = self._closing_task
            if closing is not None and not closing.done() and self._may_wait_for(closing):
                await self._wait_for_close(closing)
            return
        self._check_loop()
        if self._in_own_callback():
            raise RebalanceCallbackError(
                "close() inside on_assign/on_revoke: the fetch thread waits for this callback, "
                "and closing stops that thread, so the close would wait for itself; call "
                "consumer.stop() here to end run(), and close after the callback returns "
                "(leaving async with does)"
            )
        self._closing = True
        budget = self.close_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        if self._shutdown_deadline is None or deadline < self._shutdown_deadline:
            self._shutdown_deadline = deadline
        runner = self._runner
        if runner is not None:
            runner.stop()
        # A task of its own: a caller cancelled (or timed out) does not leave the consumer
        # half closed, every later close returning at once and librdkafka never closed.
        closing = self._closing_task = asyncio.ensure_future(self._close_after_run(deadline))
        closing.add_done_callback(self._close_failed)
        if runner is not None and self._inside_run(runner):
            # A handler closing its own consumer: run returns once that handler has, so the
            # close goes on in the background (waiting here it would wait for itself).
            return
        await self._wait_for_close(closing)

    def _in_own_callback(self) -> bool:
        """Whether the running task is a rebalance callback's, or one it started (its
        context): the fetch thread (or the closing thread) waits for it."""
        calls = self._rebalance_calls
        return self._in_rebalance and calls is not None and _CALLBACK.get(None) is calls

    def _may_wait_for(self, closing: asyncio.Future[None]) -> bool:
        """Whether the close in progress may be waited for here: on its loop, and not by what
        it waits for itself (``run``'s task or handlers, a rebalance callback)."""
        if running_loop() is not closing.get_loop() or self._in_own_callback():
            return False
        runner = self._runner
        return runner is None or not self._inside_run(runner)

    async def _close_after_run(self, deadline: float) -> None:
        """The rest of :meth:`close`: wait for ``run`` to return (its last commit goes through
        the fetch thread), then close librdkafka on a thread of its own, until ``deadline``."""
        if not self._run_finished.is_set():
            try:
                await asyncio.wait_for(self._run_finished.wait(), self._shutdown_remaining())
            except TimeoutError:
                log.warning("close: run had not returned by the deadline; closing anyway")
        dead_letters = self._dead_letter_closing
        if dead_letters is not None and not dead_letters.done():
            # run's dead-letter producer (run cancelled again while closing it): its close
            # is bounded by the same deadline
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(dead_letters), self._shutdown_remaining())
        bridge = self._bridge
        self._room.set()
        self._detached = True
        for waiting in list(self._seeks):  # the fetch thread is asked nothing more
            if not waiting.done():
                waiting.set_exception(ConsumerClosedError("the consumer closed during the seek"))
        closing = self._in_thread(
            lambda: self._close_librdkafka(bridge), f"{self._metrics.client_id}-close"
        )
        if self._stuck:
            log.warning(
                "close: librdkafka is still waiting for the group coordinator (a commit that "
                "was given up); it is closed in the background when that returns"
            )
        else:
            try:
                await asyncio.wait_for(
                    asyncio.shield(closing), max(0.0, deadline - time.monotonic())
                )
            except TimeoutError:
                log.warning(
                    "close: librdkafka did not close by the deadline (broker unreachable?); it "
                    "is closed in the background; the group notices the member gone after "
                    "session.timeout.ms"
                )
            else:
                if bridge is not None:
                    self._take_inbox()
        self._closed = True
        if self._ready is not None:
            self._ready.set()
        if self._collector is not None:
            self._collector.discard(self._metrics)

    def _close_librdkafka(self, bridge: DeliveryBridge | None) -> None:
        """On the closing thread: stop the fetch thread (it may be inside a librdkafka call
        that blocks, a commit waiting for the coordinator), then close librdkafka."""
        if bridge is not None:
            bridge.stop()
        with contextlib.suppress(ck.KafkaException, RuntimeError):
            self._consumer.close()

    def _inside_run(self, runner: Runner) -> bool:
        """Whether the running task is ``run``'s own, one of its workers, or a task one of
        them started (:data:`_RUN`): a handler that closes the consumer, directly or in a
        task it waits for, would wait for ``run`` there, which waits for it."""
        task = asyncio.current_task()
        return task is not None and (
            task is self._run_task or task in runner.tasks or _RUN.get(None) is runner
        )

    def _shutdown_remaining(self) -> float:
        """Seconds left before the shutdown's deadline (starting it if none began)."""
        now = time.monotonic()
        if self._shutdown_deadline is None:
            self._shutdown_deadline = now + self.close_timeout
        return max(0.0, self._shutdown_deadline - now)

    def _run_share(self) -> float:
        """Seconds ``run``'s last steps (its commit, then its dead-letter producer's close) may
        each take: what is left of the shutdown's deadline but a reserve for what comes after
        them (a quarter of it, at most :data:`SHUTDOWN_RESERVE`), so that ``run`` returns
        before the deadline a concurrent :meth:`close` waits for it by."""
        left = self._shutdown_remaining()
        return left - min(left / 4, SHUTDOWN_RESERVE)

    def _in_thread(self, call: Callable[[], Any], name: str) -> asyncio.Future[Any]:
        """``call()`` on a daemon thread of its own; its outcome on the loop's future. (Not
        ``asyncio.to_thread``: a librdkafka call that blocks there would hold up the loop's
        shutdown, and the interpreter's exit, which join the executor's threads.)"""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(_retrieve)

        threading.Thread(target=_settling(call, loop, future), name=name, daemon=True).start()
        return future

    @property
    def closed(self) -> bool:
        return self._closed

    def stop(self) -> None:
        """Make ``run`` return (after its handlers in progress finish and it commits). Its
        last commit waits at most ``close_timeout`` from now (see :meth:`close`). Any thread
        may call it (a signal handler, a watchdog): off the consumer's loop it is handed to
        that loop, whose events only its own thread may set.

        It ends the run in progress; with none (before ``run()``, before :meth:`start`,
        between two runs) the next ``run()``, which returns at once after its last commit: a
        SIGTERM during the application's start is not lost. The run it ends takes it: the
        run after that one goes on as usual."""
        with self._stop_lock:
            loop = self._loop
            if loop is None:  # not started: no run can be running; the next one stops
                self._stop_pending = True
                return
        if running_loop() is not loop:
            # For the run running now, if one is (read here: by the time the loop gets it,
            # that run may have ended, and the stop must not fall to the next)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs to stop
                loop.call_soon_threadsafe(self._stop_run, self._runner)
            return
        self._stop_run(None)
        # From a signal.signal handler, this thread may have been waiting in the loop's
        # select(): what _stop_run woke is seen when something else wakes the loop (run's next
        # commit tick, commit_interval away, its last commit's deadline meanwhile spent). The
        # self-pipe write wakes it now.
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing runs to stop
            loop.call_soon_threadsafe(_wake_only)

    def _stop_run(self, runner: Runner | None) -> None:
        """:meth:`stop` on the loop: of ``runner`` (None: the run running now, or the next)."""
        if runner is not None and runner is not self._runner:
            return  # that run has ended: the stop was for it alone
        if self._runner is None:
            self._stop_pending = True
            return
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + self.close_timeout
        self._runner.stop()

    # -- reading ---------------------------------------------------------------------------

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        if asyncio.get_running_loop() is not self._loop:  # buffered records are its loop's
            self._check_loop()  # (inline first: this is once per record)
        if not self._buffer.ready:
            await self._wait_ready(None)
            if not self._buffer.ready:
                raise StopAsyncIteration
        record = self._buffer.take_one()
        return self._hand_out(record)

    async def getmany(self, max_records: int = 500, timeout: float = 1.0) -> list[ConsumerRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout`` seconds for the first;
        ``[]`` if none came. A record the deserializer cannot read ends the batch before it
        and stays first in line, the position before it: the next call of any kind meets it
        (``getmany`` and ``async for`` raise its :class:`DeserializationError`, the position
        then past it, so the call after goes on with the next record; ``run`` retries it and
        dead-letters it). First in a batch, its error is raised at once."""
        self._check_loop()
        if arguments.natural(max_records) is None or not max_records:
            raise InvalidArgumentError(
                f"getmany(max_records={max_records!r}): the most records to return, 1 or more"
            )
        if not self._buffer.ready:
            await self._wait_ready(timeout)
        buffered = self._buffer.bytes
        records = self._buffer.take(max_records)
        if self._value_deserializer is None and self._key_deserializer is None:
            # _hand_out for the whole batch: one release, positions by C-level map
            nbytes = buffered - self._buffer.bytes
            self._release(nbytes)
            self._positions.update(zip(
                map(_tp_of, records), map(add, map(_offset_attr, records), repeat(1)),
                strict=True,
            ))
            m = self._metrics
            m.consumed += len(records)
            m.consumed_bytes += nbytes
            return records
        out: list[ConsumerRecord] = []
        for r in records:
            try:
                out.append(self._hand_out(r))
            except DeserializationError:
                if not out:
                    self._buffer.unread(records[1:])
                    raise
                # Not handed out after all: back first in line, the position before it. Its
                # error waited for the next getmany with the position past it, so a commit
                # after this batch passed it, and async for or run went on after it, the
                # poison pill never met.
                self._released -= r.size  # held again (the loop alone writes it)
                m = self._metrics
                m.consumed -= 1
                m.consumed_bytes -= r.size
                m.deserialization_errors -= 1  # counted when it is met
                self._positions[(r.topic, r.partition)] = r.offset
                self._buffer.unread(records[len(out):])
                break
        return out

    def _hand_out(self, record: ConsumerRecord) -> ConsumerRecord:
        """The application takes ``record``: it leaves the toolkit's budget, the position
        moves past it, and it is deserialized (a failure raises, the position already past)."""
        self._release(record.size)
        self._positions[(record.topic, record.partition)] = record.offset + 1
        m = self._metrics
        m.consumed += 1
        m.consumed_bytes += record.size
        if self._value_deserializer is not None or self._key_deserializer is not None:
            self.deserialize(record)
        return record

    def _reads(self, topic: str) -> bool:
        """Whether this consumer reads ``topic``: listed, matched by its pattern (librdkafka's
        POSIX regex, translated for Python's ``re``: :mod:`sluice.client.patterns`), or
        assigned."""
        if self._topics is not None:  # a name starting with ^ is a regex to librdkafka too
            return any(
                self._regexes[t].search(topic) is not None if t in self._regexes else t == topic
                for t in self._topics
            )
        if self._pattern is not None:
            return self._regexes[self._pattern].search(topic) is not None
        return any(t == topic for t, _, _ in self._assign or ())

    def _unread(self, records: list[ConsumerRecord]) -> None:
        """Records ``run`` took but never started go back to the buffer, in front: they are
        not served any more, so neither counted as consumed nor behind their partition's
        position, which goes back to the first of them (what ``commit()`` and ``position()``
        see after ``run``)."""
        if not records:
            return
        positions = self._positions
        for r in records:
            tp = (r.topic, r.partition)
            pos = positions.get(tp)
            if pos is not None and r.offset < pos:
                positions[tp] = r.offset
        m = self._metrics
        m.consumed -= len(records)
        m.consumed_bytes -= sum(map(size_of, records))
        self._buffer.unread(records)

    def deserialize(self, record: ConsumerRecord, *, count: bool = True) -> None:
        """Replace ``record``'s key and value by what the deserializers make of their bytes.
        ``count``: a failure counts in ``deserialization_errors`` (records the deserializer
        could not read; ``run``'s retries of one are not more of them)."""
        try:
            if self._value_deserializer is not None and record.raw_value is not None:
                record.value = self._value_deserializer(record.raw_value)
            if self._key_deserializer is not None and record.raw_key is not None:
                record.key = self._key_deserializer(record.raw_key)
        except Exception as exc:
            if count:
                self._metrics.deserialization_errors += 1
            raise DeserializationError(
                f"{record.topic}[{record.partition}]@{record.offset}: the deserializer failed: "
                f"{exc!r}",
                record,
            ) from exc

    async def _wait_ready(self, timeout: float | None) -> None:
        """Until records are ready, the consumer closes, or ``timeout`` passes."""
        await self.start()  # starts it, or checks the loop
        if self._closing:
            raise ConsumerClosedError("the consumer is closed")
        if self.fatal_error is not None:
            raise ConsumerError(f"librdkafka fatal error: {self.fatal_error}")
        ready = self._ready
        assert ready is not None
        ready.clear()
        if timeout is None:
            await ready.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), wait_limit(timeout))

    def wake(self) -> None:
        """Wake a reader waiting in :meth:`_wait_ready` (``run`` stopping)."""
        if self._ready is not None:
            self._ready.set()

    # -- positions, commits, seek, pause ---------------------------------------------------

    def assignment(self) -> list[TP]:
        return sorted(self._assignment)

    def position(self, topic: str, partition: int) -> int | None:
        """The next offset the application gets from this partition (None before any)."""
        return self._positions.get((topic, partition))

    @property
    def group_id(self) -> str | None:
        """The consumer group; None in manual assignment without one (nothing is committed)."""
        return self._group_id

    async def commit(
        self, offsets: Mapping[TP, int] | None = None, *, timeout: float | None = None
    ) -> dict[TP, int]:
        """Commit ``offsets`` (next offset to read, per partition), or by default: during
        ``run`` its watermarks (every record before them processed), otherwise the positions
        after the records handed out. Returns what was committed (nothing new: ``{}``).

        ``timeout``: seconds to wait for the group coordinator's answer (default: as long as
        librdkafka holds the commit, up to the session timeout when the coordinator is
        unreachable); past it :class:`ConsumerError` says what was not confirmed (librdkafka
        may still commit it). Without a group (``assign`` without ``group_id``) there is
        nothing to commit to: :class:`ConsumerError`.

        Inside ``on_assign``/``on_revoke`` the thread waiting in the callback makes it (see
        :meth:`_in_callback`): it returns once committed, and raises its failure, there too.
        A default commit leaves out the partitions whose offset is the last one committed
        (after a seek, none: see :meth:`seek`). Given ``offsets`` that are not a mapping of
        ``(topic, partition)`` to an offset of 0 or more: :class:`InvalidArgumentError`."""
        if self._group_id is None:
            raise ConsumerError(
                "commit(): this consumer has no group (assign=... without group_id), so there "
                "is nowhere to commit offsets; give it a group_id to commit them"
            )
        made_after: int | None = None
        if offsets is None:
            source = self._runner.watermarks() if self._runner is not None else self._positions
            offsets = {tp: o for tp, o in source.items() if self._committed.get(tp) != o}
            made_after = self._revocations_done
        else:
            offsets = arguments.offsets(offsets)
        if not offsets:
            return {}
        if self._in_rebalance and self._rebalance_lost:
            # another member may own them now: its commits stand
            offsets = {tp: o for tp, o in offsets.items() if tp not in self._rebalance_lost}
            if not offsets:
                return {}
        if timeout is None:
            committed: dict[TP, int] = await self._on_fetch_thread(
                lambda: self._commit_sync(offsets, made_after)
            )
            return committed
        timeout = wait_limit(timeout)  # NaN: asyncio's timer would never fire
        assert timeout is not None
        # A plain future, not a task: given up on, it is left to the fetch thread, and no
        # task is pending when the loop closes.
        waiting = self._fetch_thread_future(lambda: self._commit_sync(offsets, made_after))
        try:
            await asyncio.wait_for(asyncio.shield(waiting), timeout)
        except asyncio.CancelledError:
            # Cancelled (run cancelled again during its last commit): librdkafka still holds
            # the commit, so close() must not wait for the fetch thread either.
            self._given_up(waiting)
            raise
        except TimeoutError:
            self._given_up(waiting)
            raise ConsumerError(
                f"commit of {offsets} not confirmed within {timeout:.1f} s (group coordinator "
                f"unreachable?); if it is lost, the records from the last committed offsets "
                f"are read again (at-least-once)"
            ) from None
        done: dict[TP, int] = waiting.result()
        return done

    def _given_up(self, waiting: asyncio.Future[Any]) -> None:
        """A wait for a librdkafka call that still blocks was given up: until the call returns
        the consumer is :attr:`_stuck` (close hands librdkafka to its closing thread)."""
        self._stuck_calls.add(waiting)
        waiting.add_done_callback(self._stuck_calls.discard)
        waiting.add_done_callback(_retrieve)

    @property
    def _stuck(self) -> bool:
        """A bounded wait gave up on a librdkafka call that still blocks (a commit waiting
        for an unreachable group coordinator, until the session times out)."""
        return bool(self._stuck_calls)

    async def _on_fetch_thread(self, call: Callable[[], Any]) -> Any:
        """``call()`` on the fetch thread, between two ``consume()`` calls. (confluent-kafka
        was seen to block a call from another thread, even a cached
        ``get_watermark_offsets``, while one thread waits in ``consume()``: so every librdkafka
        call goes through the fetch thread.)"""
        return await self._fetch_thread_future(call)

    def _fetch_thread_future(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """:meth:`_on_fetch_thread`'s future: ``call()``'s outcome, settled by the thread.
        During a rebalance callback that is the thread waiting in it (:meth:`_in_callback`),
        the closing thread's too (librdkafka's close calls on_revoke)."""
        self._check_loop()  # first: from another loop, nothing is made (nor queued below)
        calls = self._rebalance_calls
        if self._in_rebalance and calls is not None:
            assert self._loop is not None
            answer: asyncio.Future[Any] = self._loop.create_future()
            calls.put(_settling(call, self._loop, answer))
            return answer
        if self._detached:
            raise ConsumerClosedError("the consumer is closed")
        bridge, loop = self._bridge, self._loop
        if bridge is None or loop is None:  # not started: no fetch thread yet
            return self._in_thread(call, f"{self._metrics.client_id}-call")
        future: asyncio.Future[Any] = loop.create_future()
        self._request(_settling(call, loop, future))
        return future

    def _commit_sync(
        self, offsets: Mapping[TP, int], made_after: int | None = None
    ) -> dict[TP, int]:
        """Commit, blocking (any thread but the loop's); returns what it committed.

        ``made_after``: for offsets the consumer chose itself (watermarks, positions), the
        revocations done when they were read. A revocation done since then committed the
        partitions it took, from a later reading; these older offsets, sent after it, would
        move their commits back (the new owner then processes those records again), so a
        partition no longer assigned, or whose commit would go back, is left out."""
        if made_after is not None and made_after != self._revocations_done:
            left_at = self._left_at
            offsets = {
                tp: o
                for tp, o in offsets.items()
                if tp in self._assignment
                and left_at.get(tp, 0) <= made_after
                and o > self._committed.get(tp, -1)
            }
            if not offsets:
                return {}
        tps = [ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
        except ck.KafkaException as exc:
            if exc.args and exc.args[0].code() == ck.KafkaError._NO_OFFSET:
                return {}  # nothing to commit: not a failure
            self._metrics.commit_failures += 1
            raise ConsumerError(f"commit failed: {exc}") from exc
        self._metrics.commits += 1
        # What the group has now: the last commit made (commits are made one at a time, in
        # order), lower than before after a seek back; not the highest ever committed, which
        # made a later commit of that highest offset look done already (it was skipped).
        self._committed.update(offsets)
        return dict(offsets)

    async def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``topic[partition]`` from ``offset`` next: the records buffered for it are
        dropped, the ones fetched before the seek never served. ``offset``: 0 or more, or
        ``confluent_kafka.OFFSET_BEGINNING``/``OFFSET_END``, the log's start or end as its
        leader gives them now (so the position stays an offset). :class:`ConsumerError`
        before :meth:`start` (librdkafka seeks only partitions it is fetching),
        :class:`ConsumerClosedError` once the consumer is closing,
        :class:`~sluice.client.errors.PartitionRevokedError` for a partition being revoked
        (draining, or in ``on_revoke``): it is leaving, and its next owner starts at the
        drained watermark, committed for it all the same."""
        if self._closing:  # the fetch thread that would answer is gone, or going
            raise ConsumerClosedError("the consumer is closed")
        if self._bridge is None:
            raise ConsumerError(
                f"seek {topic}[{partition}] before the consumer started: start it (or enter "
                "async with) and let it fetch the partition first"
            )
        self._check_loop()
        tp = arguments.partition((topic, partition), "seek", "nothing was done")
        topic, partition = tp
        where = arguments.offset_or_named(offset, SEEK_ENDS)
        if where is None:
            raise InvalidArgumentError(
                f"seek {topic}[{partition}] to {offset!r}: an offset is an integer of 0 or more "
                "(an offset before the log's start or past its end is reset by "
                "auto.offset.reset), or confluent_kafka.OFFSET_BEGINNING or OFFSET_END; "
                "nothing was done"
            )
        offset = where
        if tp in self._revoking:
            raise PartitionRevokedError(
                f"seek {topic}[{partition}] to {offset}: the partition is being revoked (its "
                "records in processing drain, then their watermark is committed and it goes); "
                "its next owner starts at that commit, so a seek cannot apply to it",
                tp,
            )
        self._drop({tp})
        # Whatever was committed for it, its commits now follow the records after the seek:
        # the next commit is made even if it names the offset committed before.
        self._committed.pop(tp, None)
        if self._runner is not None:
            self._runner.sought(tp)
        self._seeking[tp] = self._seeking.get(tp, 0) + 1
        assert self._loop is not None
        done: asyncio.Future[None] = self._loop.create_future()

        def request() -> None:  # on the fetch thread
            nonlocal offset
            error: BaseException | None = None
            try:
                if offset < 0:  # the log's start or end, now: the position stays an offset
                    low, high = self._consumer.get_watermark_offsets(
                        ck.TopicPartition(topic, partition), timeout=SEEK_END_TIMEOUT,
                        cached=False,
                    )
                    offset = low if offset == ck.OFFSET_BEGINNING else high
                self._consumer.seek(ck.TopicPartition(topic, partition, offset))
            except Exception as exc:  # a KafkaException; anything else too: the seek is awaited
                error = ConsumerError(f"seek {topic}[{partition}] to {offset}: {exc}")

            def marker() -> None:  # on the loop, after the records fetched before the seek
                self._buffer.drop({tp})
                n = self._seeking.get(tp, 1) - 1
                if n:
                    self._seeking[tp] = n
                else:
                    self._seeking.pop(tp, None)
                if error is None:
                    self._positions[tp] = offset
                if not done.done():
                    if error is None:
                        done.set_result(None)
                    else:
                        done.set_exception(error)

            self._inbox.append(marker)
            self._appended += 1

        self._seeks.add(done)
        done.add_done_callback(self._seeks.discard)
        self._request(request)
        if self._in_rebalance:
            # Inside on_assign/on_revoke: the fetch thread waits for the callback, and seeks
            # when it returns (after librdkafka assigned the partitions); records fetched
            # before the seek are dropped by the marker all the same.
            done.add_done_callback(_seek_failed)
            return
        await done

    def pause(self, *partitions: TP) -> None:
        """Stop serving these partitions; what was already fetched for them stays buffered
        and is served after :meth:`resume`, without being fetched again."""
        self._check_loop()
        tps = {arguments.partition(tp, "pause", "nothing was paused") for tp in partitions}
        self._buffer.pause(tps)

        def request() -> None:  # on the fetch thread: take what librdkafka holds, then pause
            self._drain_librdkafka()
            # Not those a revocation unpaused meanwhile (a pause during its drain): paused in
            # librdkafka alone, they would stall with nothing here to say so.
            still = [tp for tp in tps if tp in self._buffer.paused]
            if still:
                self._consumer.pause([ck.TopicPartition(t, p) for t, p in still])

        self._request(request)

    def resume(self, *partitions: TP) -> None:
        self._check_loop()
        tps = {arguments.partition(tp, "resume", "nothing was resumed") for tp in partitions}
        self._buffer.resume(tps)
        if self._runner is not None:
            self._runner.resumed(tps)
        if self._buffer.ready:
            self.wake()
        self._request(lambda: self._consumer.resume([ck.TopicPartition(t, p) for t, p in tps]))

    def paused(self) -> list[TP]:
        return sorted(self._buffer.paused)

    # -- run ---------------------------------------------------------------------------------

    async def run(
        self,
        handler: Callable[[ConsumerRecord], object],
        *,
        concurrency: int = 1,
        ordering: str = "key",
    ) -> None:
        """The managed loop (:mod:`sluice.client.runner`): ``handler(record)`` for every record
        (an async function; a plain one runs on the loop and its result is awaited only if it
        is awaitable), up to ``concurrency`` at once, ``ordering`` ``"key"``, ``"partition"``
        or ``"none"``;
        commits watermarks; returns after :meth:`stop` or when cancelled, having committed
        what finished; raises :class:`~sluice.client.errors.ProcessingError` for a record that
        failed without a dead-letter topic."""
        from sluice.client.runner import Runner

        if self._runner is not None:
            raise ConsumerError("run() is already running")
        await self.start()
        runner = Runner(self, handler, concurrency=concurrency, ordering=ordering)
        self._runner = runner
        self._run_task = asyncio.current_task()
        self._run_finished.clear()
        self._shutdown_deadline = None
        with self._stop_lock:
            stop_now, self._stop_pending = self._stop_pending, False
        if stop_now:  # stop() came before this run: it ends at once, after its last commit
            self.stop()
        token = _RUN.set(runner)  # for the workers and the tasks handlers start: they copy it
        try:
            await runner.run()
        finally:
            _RUN.reset(token)
            self._runner = None
            self._run_task = None
            self._run_finished.set()
            if not self._closing:  # a close later has a deadline of its own
                self._shutdown_deadline = None

    # -- metrics ---------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """The snapshot (:class:`~sluice.client.consumer_metrics.ConsumerMetrics`)."""
        return self._metrics.snapshot()

    def held_bytes(self) -> int:
        """Bytes the toolkit holds: its buffer and the records in processing."""
        return self._taken - self._released

    def _lag(self) -> dict[TP, int]:
        """Read by a metrics scrape on its own thread: the assignment is copied in one C call
        (a rebalance on the loop changes it; iterating it here could raise midway)."""
        out: dict[TP, int] = {}
        for tp in list(self._assignment):
            hwm = self._hwm.get(tp)
            pos = self._positions.get(tp)
            if hwm is not None and pos is not None:
                out[tp] = max(0, hwm - pos)
        return out

    def high_watermark(self, tp: TP | str, partition: int | None = None) -> int | None:
        """The partition's high watermark as of librdkafka's last fetch response for it
        (read by the fetch thread after each ``consume()``: calling librdkafka for it from the
        loop while the thread waits in ``consume()`` was seen to block). The partition as a
        ``(topic, partition)`` pair, or as :meth:`position` takes it, ``topic, partition``
        (that read as a pair's topic and a stray argument: a TypeError)."""
        if isinstance(tp, str):
            return self._hwm.get((tp, partition))  # type: ignore[arg-type]
        return self._hwm.get(tp)

    # -- the loop's side of the fetch thread ---------------------------------------------------

    def _after_poll(self) -> None:
        assert self._bridge is not None
        self._bridge.hop_started()
        self._take_inbox()

    def _take_inbox(self) -> None:
        inbox, buffer = self._inbox, self._buffer
        while inbox:
            item = inbox.popleft()
            if type(item) is tuple:
                records, nbytes = item
                if self._seeking:
                    records = self._not_seeking(records)
                    nbytes = None
                buffer.add(records, nbytes)
            else:
                item()
        held = self._taken - self._released
        if held > self._metrics.peak_held_bytes:
            self._metrics.peak_held_bytes = held
        if buffer.ready and self._ready is not None:
            self._ready.set()

    def _not_seeking(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        keep = []
        for r in records:
            if (r.topic, r.partition) in self._seeking:
                self._release(r.size)
            else:
                keep.append(r)
        return keep

    def _drop(self, tps: set[TP]) -> list[ConsumerRecord]:
        dropped = self._buffer.drop(tps)
        self._release(sum(r.size for r in dropped))
        return dropped

    def _release(self, nbytes: int) -> None:
        """The loop is done with ``nbytes`` of records: room for the fetch thread."""
        self._released += nbytes
        if self._fetch_waiting and self._share - (self._taken - self._released) >= self._share // 4:
            self._fetch_waiting = False
            self._room.set()

    def _request(self, request: Callable[[], None]) -> None:
        self._requests.append(request)
        self._room.set()

    # -- the fetch thread ----------------------------------------------------------------------

    def _fetch(self, timeout: float) -> int:
        """One turn of the fetch thread (the bridge's ``poll``): run the loop's requests, then
        take records from librdkafka if the toolkit has room. Returns how many items it put
        in the inbox (the bridge hops to the loop when that is not 0)."""
        before = self._appended
        requests = self._requests
        while requests:
            request = requests.popleft()
            try:
                request()
            except Exception:
                log.exception("a consumer request failed on the fetch thread")
        now = time.monotonic()
        if now >= self._watermarks_at:
            # Every assigned partition's, not only those at a batch's ends: a partition whose
            # records came in the middle of every batch had none (no lag in the metrics, a
            # Shed's min_lag read as 0: nothing shed), or a stale one; and while the buffer
            # is full (a slow handler: when lag matters) no batch comes at all.
            self._watermarks_at = now + WATERMARKS_EVERY
            self._read_watermarks(list(self._assignment))
        room = self._share - (self._taken - self._released)
        if room <= 0:
            self._fetch_waiting = True
            if self._share - (self._taken - self._released) <= 0:  # the loop may just have freed
                self._room.wait(timeout)
            self._room.clear()
            return self._appended - before
        avg = self._avg_size
        n = FIRST_BATCH if avg is None else max(1, min(MAX_BATCH, room // avg))
        consume = self._consumer.consume
        messages = consume(n, 0)
        if not messages:
            messages = consume(1, timeout)
        if messages:
            self._convert(messages)
        return self._appended - before

    def _drain_librdkafka(self) -> None:
        """Take everything librdkafka has queued (before a pause, which would purge it)."""
        while True:
            messages = self._consumer.consume(MAX_BATCH, 0)
            if not messages:
                return
            self._convert(messages)

    def _convert(self, messages: list[Any]) -> None:
        """Messages into records, on the fetch thread. A record keeps its message and reads
        key, value, headers and timestamp from it when asked (:class:`ConsumerRecord`); only
        what the toolkit reads per record is copied out here, by accessors ``map``-ped over the
        batch (C-level calls), and the sizes likewise (``len(message)`` is its value's
        length, ``length_hint`` 0 for a missing key)."""
        if any(map(_error_of, messages)):
            kept = []
            for m in messages:
                error = m.error()
                if error is None:
                    kept.append(m)
                else:
                    self._consume_error(error)
            messages = kept
            if not messages:
                return
        sizes = list(map(add, map(len, messages), map(length_hint, map(_key_of, messages))))
        if any(map(_headers_of, messages)):
            for i, m in enumerate(messages):
                h = m.headers()
                if h:
                    sizes[i] += sum(len(name) + (len(val) if val else 0) + 64 for name, val in h)
        records = fetched_records(messages, sizes, RECORD_OVERHEAD)
        # The partitions at the batch's ends now (the others within WATERMARKS_EVERY: _fetch)
        self._read_watermarks({(r.topic, r.partition) for r in (records[0], records[-1])})
        total = sum(sizes) + RECORD_OVERHEAD * len(records)
        self._taken += total
        self._avg_size = max(1, total // len(records))
        self._inbox.append((records, total))
        self._appended += 1

    def _read_watermarks(self, tps: Iterable[TP]) -> None:
        """On the fetch thread: the high watermarks librdkafka's last fetches gave ``tps``."""
        hwm, get = self._hwm, self._consumer.get_watermark_offsets
        for tp in tps:
            with contextlib.suppress(ck.KafkaException):
                got = get(ck.TopicPartition(*tp), cached=True)
                if got is not None and got[1] >= 0:
                    hwm[tp] = got[1]

    def _consume_error(self, error: ck.KafkaError) -> None:
        """An error ``consume()`` handed back (a subscribed topic that does not exist, say):
        logged as the error events are, naming the consumer (it was ``consumer error:
        KafkaError{code=...,val=3,str="..."}``, which named neither)."""
        if error.fatal():
            self.fatal_error = error
        librdkafka.log_error(self._metrics.client_id, error)

    def _on_error(self, error: ck.KafkaError) -> None:
        if error.fatal():
            self.fatal_error = error
        librdkafka.log_error(self._metrics.client_id, error)
        if self._error_cb is not None:
            self._error_cb(error)

    def _on_statistics(self, raw: str) -> None:
        import json

        self._metrics.statistics = json.loads(raw)
        if self._stats_cb is not None:
            self._stats_cb(raw)

    # -- rebalance (the fetch thread, inside consume()) --------------------------------------

    def _on_loop(
        self,
        coro: Coroutine[Any, Any, Any],
        calls: queue.SimpleQueue[Callable[[], None] | None] | None = None,
    ) -> Any:
        """Run ``coro`` on the loop from the fetch thread (or the thread closing librdkafka)
        and wait for it, making meanwhile the ``calls`` the loop puts in (None: done); None,
        the coroutine dropped, when no loop runs any more (librdkafka calls the rebalance
        callbacks from its close, which may come after the loop ended)."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            coro.close()
            return None
        future: Any = asyncio.run_coroutine_threadsafe(coro, loop)
        if calls is not None:
            future.add_done_callback(lambda _: calls.put(None))
            while (call := calls.get()) is not None:
                call()  # a _settling call: its outcome goes to the loop's future
        return future.result()

    def _in_callback(
        self, coro: Coroutine[Any, Any, Any], lost: frozenset[TP] = frozenset()
    ) -> Any:
        """:meth:`_on_loop` for a rebalance callback. The thread waits in it for the
        coroutine (the application's ``on_assign``/``on_revoke``, and what runs on the loop
        meanwhile: ``run``'s periodic commit), so what the coroutine asks of that thread is
        made by it while it waits: a commit is made then (inside the callback, before
        librdkafka assigns or revokes, as librdkafka's own rebalance callbacks commit), and
        its outcome awaited. A seek runs after the callback (a partition is seekable once
        assigned). ``lost``: partitions lost, whose offsets are not committed (their new
        owner's commits stand). The flag and the calls' queue are set and cleared on the
        loop, around the coroutine: a call made after it ended goes the usual way."""
        started = False
        calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()

        async def inside() -> Any:
            nonlocal started
            started = True
            self._in_rebalance = True
            self._rebalance_calls = calls
            self._rebalance_lost = lost
            _CALLBACK.set(calls)  # this task's context (and its children's) alone
            try:
                return await coro
            finally:
                self._in_rebalance = False
                self._rebalance_calls = None
                self._rebalance_lost = frozenset()

        try:
            return self._on_loop(inside(), calls)
        finally:
            if not started:  # no loop ran it
                coro.close()

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._in_callback(self._assigned(tps))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        try:
            offsets = self._in_callback(self._revoked(tps, lost=False)) or {}
            if offsets:
                try:
                    self._commit_sync(offsets)
                except ConsumerError as exc:
                    log.warning("commit before giving up %s failed: %s", tps, exc)
        finally:
            self._revoked_done(tps)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        try:
            self._in_callback(self._revoked(tps, lost=True), frozenset(tps))
        finally:
            self._revoked_done(tps)

    def _revoked_done(self, tps: list[TP]) -> None:
        """On the thread in the revoke callback, at its end (its commit made)."""
        if tps:
            self._revocations_done += 1
            for tp in tps:
                self._left_at[tp] = self._revocations_done

    async def _assigned(self, tps: list[TP]) -> None:
        self._assignment.update(tps)
        for tp in tps:
            # What the group has for a partition arriving is not known here: another member
            # may have committed it back meanwhile. Kept (the commit made when it left), a
            # commit of that offset after the records from the group's was skipped as done,
            # and the group stayed behind records finished (a stale commit is left out by
            # _left_at instead).
            self._committed.pop(tp, None)
        if self._runner is not None:
            self._runner.assigned(tps)
        if self._user_on_assign is not None:
            await self._user_on_assign(tps)

    async def _revoked(self, tps: list[TP], *, lost: bool) -> dict[TP, int]:
        """Drop the revoked partitions' buffered records, drain those in processing, call the
        application's ``on_revoke``; returns the offsets to commit before giving them up."""
        gone = set(tps)
        if gone:
            self._metrics.revocations += 1
        self._revoking |= gone
        try:
            self._take_inbox()
            self._drop(gone)
            offsets: dict[TP, int] = {}
            if self._runner is not None:
                offsets = await self._runner.revoked(gone, lost=lost)
            if self._user_on_revoke is not None:
                try:
                    await self._user_on_revoke(tps)
                except Exception:
                    log.exception("on_revoke raised")
        finally:
            self._revoking -= gone
        # What on_revoke (or run's commit during the drain) committed already is not sent
        # again: a second round trip inside the rebalance, counted twice.
        committed = self._committed
        offsets = {} if lost else {
            tp: o for tp, o in offsets.items() if tp in gone and committed.get(tp) != o
        }
        self._assignment -= gone
        for tp in gone:
            self._positions.pop(tp, None)
            committed.pop(tp, None)
            self._buffer.paused.discard(tp)
        return offsets
