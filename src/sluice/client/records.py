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
    key); ``timestamp`` is milliseconds since the epoch (CreateTime), None for now."""

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


RECORD_OVERHEAD = 240
"""Bytes a consumed record costs beyond its key and value: the :class:`ConsumerRecord`, its
bytes objects' headers, the topic reference (measured with ``sys.getsizeof``; headers are
counted by their own sizes)."""


class ConsumerRecord:
    """One consumed record. ``value`` and ``key`` are what the consumer's deserializers made of
    ``raw_value`` and ``raw_key`` (the bytes as stored; the same objects without a
    deserializer). ``timestamp`` is milliseconds since the epoch, None when the broker has none;
    ``headers`` a list of (name, value) pairs, or None. ``size`` is what the record counts
    against ``max_buffer_bytes``."""

    __slots__ = (
        "headers",
        "key",
        "offset",
        "partition",
        "raw_key",
        "raw_value",
        "size",
        "timestamp",
        "topic",
        "value",
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
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key: Any = key
        self.value: Any = value
        self.headers = headers
        self.timestamp = timestamp
        self.raw_key = key
        self.raw_value = value
        self.size = size

    def __repr__(self) -> str:
        return (
            f"ConsumerRecord(topic={self.topic!r}, partition={self.partition}, "
            f"offset={self.offset}, key={self.raw_key!r}, size={self.size})"
        )
