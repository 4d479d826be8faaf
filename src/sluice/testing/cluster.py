"""What a test does with a Kafka cluster besides running the code under test: create and delete
topics, produce a few records, and read back what a topic holds, for assertions.

:class:`Cluster` is that, over nothing but ``bootstrap_servers``, so the same test runs against
an :class:`~sluice.testing.EmbeddedBroker` or, through :class:`ExternalCluster`, against Apache
Kafka, Redpanda or a ``sluice serve`` started elsewhere. Producing and consuming go through
librdkafka (confluent-kafka, a dependency of sluice's tools), imported on first use.

Every call has librdkafka clients of its own, closed before it returns. A client that outlived
the call would remember the topics it used and refresh their metadata (after a reconnect, and
every ``topic.metadata.refresh.interval.ms``), which creates a deleted topic again wherever the
broker creates topics on first use; and a shared producer's queue would make one call wait for
another's records.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar

from sluice.dataclass import dataclass
from sluice.errors import ErrorCode
from sluice.testing.topics import (
    TopicCreationError,
    TopicDeletionError,
    TopicSpec,
    create_topics,
    delete_topics,
    topic_names,
    unique_topic_name,
)

if TYPE_CHECKING:
    from pathlib import Path

    import confluent_kafka

    from sluice.config import BrokerConfig
    from sluice.server.app import Server
    from sluice.testing.faults import Faults

T = TypeVar("T")

_DELIVERY_GRACE = 2.0
"""Seconds past a produce's timeout to wait for librdkafka's own verdict on each record (it
checks message timeouts about once a second) before purging what is left."""

_MAX_MS = 2**31 - 1
"""The longest ``message.timeout.ms`` librdkafka takes, about 24 days."""

_HOUR_MS = 3_600_000
"""The longest ``topic.metadata.propagation.max.ms`` librdkafka takes."""

_RETRY_INTERVAL = 0.05
"""Seconds between a reader's metadata attempts while it waits for a topic."""

Value = bytes | str | None
"""A record's key or value as the helpers take it: ``str`` is sent UTF-8 encoded."""


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read back (or as stored, from :meth:`Cluster.produce`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()
    timestamp: int = -1
    """Milliseconds since the epoch (the producer's create time, or the broker's append time)."""


class ProduceError(Exception):
    """Records were not acknowledged; ``errors`` holds librdkafka's delivery error for each
    (a ``confluent_kafka.KafkaError``: ``UNKNOWN_TOPIC_OR_PART``, ``_MSG_TIMED_OUT``, ...)."""

    def __init__(self, topic: str, errors: Sequence[Any], total: int | None = None) -> None:
        total = len(errors) if total is None else total
        reasons = sorted({_describe(e) for e in errors})
        super().__init__(
            f"producing to {topic!r} failed for {len(errors)} of {total} records: "
            + "; ".join(reasons)
        )
        self.errors: list[Any] = list(errors)


class ConsumeTimeout(AssertionError):
    """Fewer records than expected arrived in time; ``records`` holds those that did."""

    def __init__(self, message: str, records: list[Record]) -> None:
        super().__init__(message)
        self.records = records


class NotSupportedHere(Exception):
    """What was asked needs an embedded sluice broker (faults, restarts, the data directory),
    and this cluster is an external one."""


class Cluster:
    """Helpers over a cluster's ``bootstrap_servers``. Subclasses set that attribute or
    property; :class:`~sluice.testing.EmbeddedBroker` is one."""

    bootstrap_servers: str

    def __init__(self) -> None:
        self.created_topics: list[str] = []
        """Every topic :meth:`create_topic` and :meth:`create_topics` made, in order (the pytest
        fixtures delete those a test made when it ends), also those a request that failed for
        another topic made."""

    def _not_on_own_thread(self, what: str) -> None:
        """Refuse a helper that waits for the broker when called on the broker's own thread
        (an embedded broker's :meth:`~sluice.testing.EmbeddedBroker.call`): it would block the
        loop that should answer it for its whole timeout. Nothing to refuse elsewhere."""

    # -- topics ------------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str | None = None,
        partitions: int = 1,
        *,
        configs: Mapping[str, object] | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Create a topic (named uniquely when ``name`` is None) with ``partitions`` partitions
        and topic ``configs`` by Kafka name; returns its name."""
        name = name or unique_topic_name()
        self.create_topics({name: {**(configs or {}), "partitions": partitions}}, timeout=timeout)
        return name

    def create_topics(
        self, topics: Mapping[str, TopicSpec], *, exist_ok: bool = False, timeout: float = 30.0
    ) -> list[str]:
        """Create several topics in one request: name -> partition count, or -> configs by
        Kafka name with an optional ``"partitions"``. When the broker refuses one, those it did
        create are recorded all the same (and deleted by the fixtures)."""
        _check_timeout(timeout)
        self._not_on_own_thread("create_topics()")
        try:
            created = create_topics(
                self.bootstrap_servers, topics, exist_ok=exist_ok, timeout=timeout
            )
        except TopicCreationError as refused:
            self.created_topics.extend(refused.created)
            raise
        except TimeoutError:
            # No answer in time, but the broker may have created them all the same: the
            # fixtures delete them (a topic that is not there is skipped). Not with exist_ok,
            # where one may be a topic that was there before.
            if not exist_ok:
                self.created_topics.extend(t for t in topics if t not in self.created_topics)
            raise
        self.created_topics.extend(created)
        return created

    def delete_topics(
        self, names: Iterable[str], *, missing_ok: bool = False, timeout: float = 30.0
    ) -> list[str]:
        """Delete topics in one request; returns those deleted. A topic that does not exist is
        a :class:`~sluice.testing.TopicDeletionError` (UNKNOWN_TOPIC_OR_PARTITION), as in
        Kafka, unless ``missing_ok``; those the request deleted all the same are no longer
        recorded in :attr:`created_topics` either way."""
        self._not_on_own_thread("delete_topics()")
        names = topic_names(names)
        try:
            deleted = delete_topics(
                self.bootstrap_servers, names, missing_ok=missing_ok, timeout=timeout
            )
        except TopicDeletionError as refused:
            missing = refused.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            self._forget([*refused.deleted, refused.name] if missing else refused.deleted)
            raise
        self._forget(names)  # missing ones too: nothing is left of them to delete
        return deleted

    def _forget(self, names: Iterable[str]) -> None:
        gone = set(names)
        self.created_topics = [t for t in self.created_topics if t not in gone]

    # -- records -----------------------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        *values: Value,
        key: Value = None,
        partition: int | None = None,
        headers: Mapping[str, Value] | Iterable[tuple[str, Value]] | None = None,
        timeout: float = 30.0,
    ) -> list[Record]:
        """Produce one record per value (all with ``key`` and ``headers``; to ``partition``, or
        where the key's hash puts them) and wait until every one is acknowledged (acks=all);
        returns them as stored, with their partitions and offsets.

        The call has a producer of its own, closed before it returns: it waits for its own
        records only, one that failed leaves nothing queued for the next, and nothing of the
        helpers knows the topic afterwards. Raises :class:`ProduceError` with each refused
        record's delivery error: ``UNKNOWN_TOPIC_OR_PART`` for a topic that does not exist
        (and was not created within half of ``timeout``), ``_MSG_TIMED_OUT`` for a record not
        acknowledged within ``timeout`` (the broker may have stored it all the same)."""
        import confluent_kafka

        _check_timeout(timeout)
        self._not_on_own_thread("produce()")
        # Every argument checked before anything is sent: a bad one raised mid-way, with the
        # records before it purged (or stored: in flight they may be), and no word of which
        # argument it was ("a bytes-like object is required, not 'int'").
        encoded = [_encode(value, f"value {i}") for i, value in enumerate(values)]
        if partition is not None and (isinstance(partition, bool) or not isinstance(partition, int)):
            raise TypeError(f"partition is an int or None, not {partition!r}")
        kwargs: dict[str, Any] = {}
        if key is not None:
            kwargs["key"] = _encode(key, "key")
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = _headers(headers)
        if not values:
            return []
        timeout_ms = min(max(int(timeout * 1000), 1), _MAX_MS)
        producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "linger.ms": 0,
                "acks": "all",
                "log_level": 3,
                # librdkafka fails each record with its reason within the call's timeout
                "message.timeout.ms": timeout_ms,
                "topic.metadata.propagation.max.ms": min(max(timeout_ms // 2, 1), _HOUR_MS),
            }
        )
        results: list[confluent_kafka.Message | confluent_kafka.KafkaError] = []

        def delivered(err: Any, msg: Any) -> None:
            results.append(err if err is not None else msg)

        kwargs["on_delivery"] = delivered
        refused: list[Any] = []
        """A record librdkafka refused on the spot (larger than message.max.bytes, say): it
        raised KafkaException out of the call; now a ProduceError, the records after it not
        sent."""
        produced = 0
        try:
            for value in encoded:
                try:
                    producer.produce(topic, value, **kwargs)
                except confluent_kafka.KafkaException as exc:
                    refused.append(exc.args[0])
                    if len(encoded) > produced + 1:
                        refused.append(f"{len(encoded) - produced - 1} records after it not sent")
                    break
                produced += 1
            producer.flush(timeout_ms / 1000 + _DELIVERY_GRACE)
        finally:
            # what librdkafka still holds (it should have failed it by now) is reported as
            # purged; nothing outlives the call
            producer.purge(in_queue=True, in_flight=True)
            producer.flush(_DELIVERY_GRACE)
            producer.close()
        errors: list[Any] = [r for r in results if isinstance(r, confluent_kafka.KafkaError)]
        if len(results) < produced:  # no report at all: should not happen, said if it does
            errors.append(f"{produced - len(results)} records without a delivery report")
        errors += refused
        if errors:
            raise ProduceError(topic, errors, len(values))
        # librdkafka's delivery report has no headers: the records say what was sent.
        sent = kwargs.get("headers")
        return [
            _record(msg, sent) for msg in results if not isinstance(msg, confluent_kafka.KafkaError)
        ]

    def consume_until(
        self,
        topic: str,
        count: int = 1,
        *,
        timeout: float = 10.0,
        until: Callable[[list[Record]], bool] | None = None,
    ) -> list[Record]:
        """Read ``topic`` from the beginning of every partition until at least ``count``
        records (or, given ``until``, until it returns true for the records read so far) have
        arrived; returns them, each partition's in offset order. Waits for a topic that does
        not exist yet. Raises :class:`ConsumeTimeout` (an AssertionError, with the records that
        did arrive) after ``timeout`` seconds."""
        _check_timeout(timeout)
        _check_topic(topic)
        self._not_on_own_thread("consume_until()")
        if until is not None and not callable(until):
            raise TypeError(f"until is a callable of the records read, not {until!r}")
        if until is None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"count is a number of records, 1 or more, not {count!r}")
        done = until or (lambda records: len(records) >= count)
        deadline = time.monotonic() + timeout
        with _Reader(self.bootstrap_servers, topic, deadline) as reader:
            while not done(reader.records):
                want = count - len(reader.records) if until is None else 1
                if not reader.poll(deadline, want):
                    what = "the condition" if until is not None else f"{count} records"
                    raise ConsumeTimeout(
                        f"{len(reader.records)} records from {topic!r} after {timeout} s, "
                        f"waiting for {what}",
                        reader.records,
                    )
            return reader.records

    def consume_all(self, topic: str, *, timeout: float = 10.0) -> list[Record]:
        """Every record ``topic`` holds now: from the beginning of each partition to its end
        as of this call (nothing is waited for). Raises :class:`ConsumeTimeout` if reading
        that far takes longer than ``timeout`` seconds."""
        _check_timeout(timeout)
        _check_topic(topic)
        self._not_on_own_thread("consume_all()")
        deadline = time.monotonic() + timeout
        with _Reader(self.bootstrap_servers, topic, deadline) as reader:
            ends = reader.ends
            expected = sum(ends[p] - reader.starts[p] for p in ends)
            while not reader.reached(ends):
                if not reader.poll(deadline, expected - len(reader.records)):
                    raise ConsumeTimeout(
                        f"{len(reader.records)} records from {topic!r} after {timeout} s, "
                        f"reading up to the end offsets {ends}",
                        reader.records,
                    )
            return reader.records

    def close(self) -> None:
        """Nothing to release: every helper call closes its clients before it returns (kept
        so code written when the helpers kept a producer still runs)."""


class ExternalCluster(Cluster):
    """A cluster sluice does not run (Apache Kafka, Redpanda, a ``sluice serve`` elsewhere),
    named by its bootstrap servers: the helpers work; what only an embedded broker has (the
    members below, typed as :class:`~sluice.testing.EmbeddedBroker`'s) raises
    :class:`NotSupportedHere` saying what and why, never an AttributeError."""

    def __init__(self, bootstrap_servers: str) -> None:
        super().__init__()
        from sluice.hostport import bootstrap_addresses

        if not isinstance(bootstrap_servers, str):
            raise TypeError(f"bootstrap_servers is a str such as 'kafka-1:9092', not {bootstrap_servers!r}")
        bootstrap_addresses(bootstrap_servers)  # ValueError now, not at each later call
        self.bootstrap_servers = bootstrap_servers

    def __repr__(self) -> str:
        return f"ExternalCluster({self.bootstrap_servers!r})"

    def _not_here(self, what_needs: str) -> NoReturn:
        """Refuse what only an embedded broker has (the pytest plugin's subclass skips the
        test instead)."""
        raise NotSupportedHere(
            f"{what_needs} an embedded sluice broker: {self!r} is a cluster sluice did not start"
        )

    @property
    def faults(self) -> Faults:
        self._not_here("scripted faults need")

    @property
    def data_dir(self) -> Path:
        self._not_here("the data directory needs")

    @property
    def port(self) -> int:
        self._not_here("the broker's port (use bootstrap_servers) needs")

    @property
    def running(self) -> bool:
        self._not_here("running needs")

    @property
    def admin_url(self) -> str:
        self._not_here("the admin side (admin_url) needs")

    @property
    def config(self) -> BrokerConfig:
        self._not_here("the broker's configuration (config) needs")

    @property
    def server(self) -> Server | None:
        self._not_here("the broker's server object needs")

    @property
    def topics(self) -> dict[str, TopicSpec]:
        self._not_here("declared topics (topics) need")

    def start(self, timeout: float = 30.0) -> Self:
        self._not_here("start() needs")

    def stop(self, timeout: float = 30.0) -> None:
        self._not_here("stop() needs")

    def restart(self, timeout: float = 30.0) -> Self:
        self._not_here("restart() needs")

    def cleanup(self) -> None:
        self._not_here("cleanup() (of the data directory) needs")

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        self._not_here("call() (run on the broker's loop) needs")


class _Reader:
    """A group-less librdkafka consumer assigned every partition of one topic from the start,
    with each partition's start and end offsets (low and high watermarks) as it was assigned."""

    def __init__(self, bootstrap_servers: str, topic: str, deadline: float) -> None:
        import confluent_kafka

        self._ck = confluent_kafka
        self.topic = topic
        self.records: list[Record] = []
        self.consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": f"sluice-testing-{uuid.uuid4().hex}",  # never joined nor committed
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "allow.auto.create.topics": False,  # reading never creates a topic
                "fetch.wait.max.ms": 100,
                "log_level": 3,
            }
        )
        try:
            self.partitions = self._partitions(deadline)
            self.starts, self.ends = self.offsets(deadline)
            # at explicit offsets: from OFFSET_BEGINNING librdkafka takes ~0.5 s to start fetching
            self.consumer.assign(
                [confluent_kafka.TopicPartition(topic, p, self.starts[p]) for p in self.partitions]
            )
        except BaseException:  # no `with` block closes it yet
            self.consumer.close()
            raise

    def _partitions(self, deadline: float) -> list[int]:
        """The topic's partitions, once its metadata has them (it may be created meanwhile)."""

        def attempt(remaining: float) -> list[int] | None:
            metadata = self.consumer.list_topics(self.topic, timeout=remaining)
            topic = metadata.topics.get(self.topic)
            if topic is not None and topic.error is None and topic.partitions:
                return sorted(topic.partitions)
            return None

        return self._until(deadline, f"topic {self.topic!r} does not exist", attempt)

    def _until(self, deadline: float, failure: str, attempt: Callable[[float], T | None]) -> T:
        """``attempt(seconds left)`` again until it returns a value; :class:`ConsumeTimeout`
        saying ``failure`` (and librdkafka's last error) once past ``deadline``."""
        while True:
            error: Exception | None = None
            try:
                result = attempt(max(deadline - time.monotonic(), 0.001))
            except self._ck.KafkaException as exc:  # e.g. _TIMED_OUT: no metadata in time
                result, error = None, exc
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                said = f"{failure} (last error: {error})" if error is not None else failure
                raise ConsumeTimeout(said, self.records) from error
            time.sleep(_RETRY_INTERVAL)

    def poll(self, deadline: float, want: int) -> bool:
        """Take up to ``want`` records, returning as soon as they are there or a quarter second
        has passed; False once past ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        # librdkafka takes at most 1M a call: beyond it a ValueError (a consume_until of 2M
        # records, a consume_all of a topic that large), and 2**64 and up read nothing at all
        batch = self.consumer.consume(
            num_messages=min(max(want, 1), _MAX_BATCH), timeout=min(remaining, 0.25)
        )
        for msg in batch:
            error = msg.error()
            if error is not None:
                if error.code() == self._ck.KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"consuming {self.topic!r} failed: {error}")
            self.records.append(_record(msg))
        return True

    def offsets(self, deadline: float) -> tuple[dict[int, int], dict[int, int]]:
        """Each partition's log start and end offsets (low and high watermarks) now."""
        starts, ends = {}, {}
        for p in self.partitions:
            tp = self._ck.TopicPartition(self.topic, p)

            def attempt(remaining: float, tp: Any = tp) -> tuple[int, int] | None:
                found = self.consumer.get_watermark_offsets(tp, timeout=remaining, cached=False)
                return None if found is None else (found[0], found[1])

            failure = f"no offsets for {self.topic}-{p}"
            starts[p], ends[p] = self._until(deadline, failure, attempt)
        return starts, ends

    def reached(self, ends: dict[int, int]) -> bool:
        want = [self._ck.TopicPartition(self.topic, p) for p, end in ends.items() if end > 0]
        if not want:
            return True
        positions = self.consumer.position(want)
        return all(tp.offset >= ends[tp.partition] for tp in positions)

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.close()


def _check_topic(topic: object) -> None:
    """A topic to read is a legal name: None, or a name no topic can have, was waited for
    until the timeout ("topic None does not exist")."""
    from sluice.storage.manager import validate_topic_name

    if not isinstance(topic, str):
        raise TypeError(f"a topic name is a str, not {topic!r}")
    validate_topic_name(topic)


def _check_timeout(timeout: object) -> None:
    """A helper's ``timeout``: a finite number of seconds above 0 (NaN waited forever, 0 and
    below gave misleading errors)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout is a number of seconds, not {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout is a finite number of seconds above 0, not {timeout!r}")


_MAX_BATCH = 100_000
"""Records a reader takes from librdkafka in one ``consume()`` at most."""


def _describe(error: object) -> str:
    """A delivery error as a person reads it: librdkafka's name for it and its text."""
    name, text = getattr(error, "name", None), getattr(error, "str", None)
    if callable(name) and callable(text):
        return f"{name()} ({text()})"
    return str(error)


def _headers(
    headers: Mapping[str, Value] | Iterable[tuple[str, Value]],
) -> list[tuple[str, bytes | None]]:
    """A mapping, or ``(name, value)`` pairs as a ``Record`` has them (a name may repeat, as
    Kafka allows); a list of pairs was an ``AttributeError`` (``'list' object has no
    attribute 'items'``)."""
    if isinstance(headers, str | bytes | bytearray | memoryview):
        raise TypeError(f"headers is a mapping or (name, value) pairs, not {headers!r}")
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError(f"a header is a (name, value) pair with a str name, not {pair!r}")
        name, value = pair
        out.append((name, _encode(value, f"header {name!r}")))
    return out


def _encode(value: Value, what: str) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} is bytes, str or None, not {value!r}")


def _record(msg: Any, sent_headers: list[tuple[str, bytes | None]] | None = None) -> Record:
    headers = msg.headers() or sent_headers or []
    _kind, timestamp = msg.timestamp()
    return Record(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        key=msg.key(),
        value=msg.value(),
        headers=tuple((k, v) for k, v in headers),
        timestamp=timestamp,
    )


__all__ = [
    "Cluster",
    "ConsumeTimeout",
    "ExternalCluster",
    "NotSupportedHere",
    "ProduceError",
    "Record",
]
