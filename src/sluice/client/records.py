"""What the producer takes: :class:`Record`, or a mapping with the same keys, from sync or async
iterables alike.

``Record`` is a slotted dataclass rather than a frozen one or a NamedTuple: applications build
one per message, and that is the cheapest of the three to construct (frozen dataclasses pay
``object.__setattr__`` per field). Treat it as immutable all the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

HeaderValue: TypeAlias = bytes | str | None
Headers: TypeAlias = Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]]
"""Kafka headers: a mapping, or a list of (name, value) pairs when a name repeats."""

FIELDS = frozenset({"topic", "value", "key", "headers", "partition", "timestamp"})


@dataclass(slots=True)
class Record:
    """One record to send. ``value`` and ``key`` are bytes, str (sent as UTF-8), None, or anything
    the producer's serializer takes. ``partition`` None lets librdkafka's partitioner choose (by
    key); ``timestamp`` is milliseconds since the epoch (CreateTime), None for now. A negative
    timestamp is refused (that record's SerializationError); 0 is librdkafka's "not given",
    so it too means now (docs/client.md)."""

    topic: str
    value: Any
    key: Any = None
    headers: Headers | None = None
    partition: int | None = None
    timestamp: int | None = None


RecordLike: TypeAlias = Record | Mapping[str, Any]
Records: TypeAlias = Iterable[RecordLike] | AsyncIterable[RecordLike]


class InvalidRecord(TypeError):
    """Neither a :class:`Record` nor a mapping of its fields; ``given`` is the object."""

    def __init__(self, message: str, given: object) -> None:
        super().__init__(message)
        self.given = given


def as_record(item: RecordLike) -> Record:
    """``item`` itself if it is a Record, else a Record from a mapping with Record's keys."""
    if type(item) is Record:
        return item
    if isinstance(item, Record):
        return item
    if not isinstance(item, Mapping):
        raise InvalidRecord(
            f"expected a sluice.client.Record or a mapping with its keys, got {type(item).__name__}",
            item,
        )
    unknown = set(item) - FIELDS
    if unknown:
        raise InvalidRecord(f"unknown record keys: {sorted(map(str, unknown))}", item)
    topic = item.get("topic")
    if not isinstance(topic, str) or not topic:
        raise InvalidRecord(f"a record needs a topic (a non-empty str), got {topic!r}", item)
    if "value" not in item:
        raise InvalidRecord("a record needs a value (None for a tombstone)", item)
    return Record(**item)


RECORD_OVERHEAD = 448
"""Bytes a consumed record costs beyond its key and value: the :class:`ConsumerRecord` (120),
confluent-kafka's ``Message`` it keeps (136), the message's topic string, its bytes objects'
headers, the offset, the batch list's slot (measured with ``tracemalloc`` over 20,000 fetched
records of a 22-character topic: 448; headers are counted by their own sizes)."""

FETCHED: Any = object()
"""A fetched record's ``key``/``value`` before anything replaced them: read the message's."""


class ConsumerRecord:
    """One consumed record. ``value`` and ``key`` are what the consumer's deserializers made of
    ``raw_value`` and ``raw_key`` (the bytes as stored; the same objects without a
    deserializer). ``timestamp`` is milliseconds since the epoch, None when the broker has none;
    ``headers`` a list of (name, value) pairs, or None when the record has none (never ``[]``:
    Kafka stores no difference between a record sent with ``headers=[]`` and one without, and
    librdkafka gives None for both; a record made or assigned with ``[]`` reads None too).
    ``size`` is what the record counts against ``max_buffer_bytes``.

    A record the consumer fetched keeps confluent-kafka's ``Message`` and reads key, value,
    headers and timestamp from it when asked (properties): copying all ten fields into every
    record up front was most of the fetch thread's Python time, for fields a handler may never
    read. ``topic``, ``partition``, ``offset`` and ``size``, which the consumer itself reads
    per record, are plain attributes. Assigning ``raw_key``, ``raw_value``, ``headers`` or
    ``timestamp`` first copies every field out of the message (it is then let go)."""

    __slots__ = (
        "_headers",
        "_key",
        "_message",
        "_raw_key",
        "_raw_value",
        "_timestamp",
        "_value",
        "offset",
        "partition",
        "size",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]] | None,
        timestamp: int | None,
        size: int,
    ) -> None:
        self._message: Any = None
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self._key: Any = key
        self._value: Any = value
        self._raw_key = key
        self._raw_value = value
        self._headers = headers or None  # no headers: None, as librdkafka gives them
        self._timestamp = timestamp
        self.size = size

    @classmethod
    def fetched(cls, message: Any, size: int) -> ConsumerRecord:
        """A record reading its fields from confluent-kafka's ``message``."""
        return fetched_records([message], [size])[0]

    @property
    def key(self) -> Any:
        k = self._key
        return self._message.key() if k is FETCHED else k

    @key.setter
    def key(self, key: Any) -> None:
        self._key = key

    @property
    def value(self) -> Any:
        v = self._value
        return self._message.value() if v is FETCHED else v

    @value.setter
    def value(self, value: Any) -> None:
        self._value = value

    @property
    def raw_key(self) -> bytes | None:
        m = self._message
        return self._raw_key if m is None else m.key()

    @raw_key.setter
    def raw_key(self, raw_key: bytes | None) -> None:
        self._detach()
        self._raw_key = raw_key

    @property
    def raw_value(self) -> bytes | None:
        m = self._message
        return self._raw_value if m is None else m.value()

    @raw_value.setter
    def raw_value(self, raw_value: bytes | None) -> None:
        self._detach()
        self._raw_value = raw_value

    @property
    def headers(self) -> list[tuple[str, bytes | None]] | None:
        m = self._message
        return self._headers if m is None else (m.headers() or None)

    @headers.setter
    def headers(self, headers: list[tuple[str, bytes | None]] | None) -> None:
        self._detach()
        self._headers = headers or None  # no headers: None, as librdkafka gives them

    @property
    def timestamp(self) -> int | None:
        m = self._message
        if m is None:
            return self._timestamp
        kind, ts = m.timestamp()
        return ts if kind else None

    @timestamp.setter
    def timestamp(self, timestamp: int | None) -> None:
        self._detach()
        self._timestamp = timestamp

    def _detach(self) -> None:
        """Copy every field out of the message and let it go."""
        m = self._message
        if m is None:
            return
        self._raw_key, self._raw_value = m.key(), m.value()
        self._headers, self._timestamp = self.headers, self.timestamp
        if self._key is FETCHED:
            self._key = self._raw_key
        if self._value is FETCHED:
            self._value = self._raw_value
        self._message = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (and copied) by its fields: the librdkafka message is not kept."""
        return (_rebuilt, (self.topic, self.partition, self.offset, self.raw_key,
                           self.raw_value, self.headers, self.timestamp, self.size, self.key,
                           self.value))

    def __repr__(self) -> str:
        return (
            f"ConsumerRecord(topic={self.topic!r}, partition={self.partition}, "
            f"offset={self.offset}, key={self.raw_key!r}, size={self.size})"
        )


def fetched_records(
    messages: list[Any], sizes: Iterable[int], overhead: int = 0
) -> list[ConsumerRecord]:
    """Records reading their fields from confluent-kafka's ``messages`` (none empty of errors),
    each of its size plus ``overhead``. The fetch thread's per-record path: topic, partition and
    offset come from the message type's accessors ``map``-ped over the batch (C-level calls),
    and each record is filled slot by slot without a Python call of its own."""
    if not messages:
        return []
    kind = type(messages[0])
    new = ConsumerRecord.__new__
    records: list[ConsumerRecord] = []
    append = records.append
    for m, size, topic, partition, offset in zip(
        messages, sizes, map(kind.topic, messages), map(kind.partition, messages),
        map(kind.offset, messages), strict=True,
    ):
        r = new(ConsumerRecord)
        r._message = m
        r.topic = topic
        r.partition = partition
        r.offset = offset
        r.size = size + overhead
        r._key = r._value = FETCHED
        append(r)
    return records


def _rebuilt(
    topic: str, partition: int, offset: int, raw_key: bytes | None, raw_value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None, timestamp: int | None, size: int, key: Any,
    value: Any,
) -> ConsumerRecord:
    record = ConsumerRecord(topic, partition, offset, raw_key, raw_value, headers, timestamp, size)
    record.key = key
    record.value = value
    return record
