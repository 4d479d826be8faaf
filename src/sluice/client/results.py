"""What a send gives back: one :class:`RecordMetadata` per record, and ``send_batch``'s
:class:`BatchResults`, which keeps a batch's outcomes in flat arrays and builds each
RecordMetadata only when it is read.

``RecordMetadata`` is a NamedTuple (as kafka-python's is): the cheapest record-sized object to
build in CPython, which matters at a few hundred thousand results a second.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

from sluice.client.errors import RecordError
from sluice.client.records import Record, RecordLike, as_record

UNKNOWN = -1
"""Kafka's sentinel for a partition, offset or timestamp that is not known."""


class RecordMetadata(NamedTuple):
    """Where a record was stored: ``topic``, ``partition``, ``offset`` and ``timestamp`` (ms since
    the epoch, as stored: CreateTime, or the broker's LogAppendTime).

    ``error`` is None for a delivered record. A failed record's result (in ``send_ordered`` and
    ``send_batch``, or when its failure was dead-lettered) has ``error`` set, ``offset`` -1 and
    ``partition`` -1 unless it was known; ``dead_letter`` is then where the dead-letter copy was
    stored, if it was. ``latency`` is librdkafka's own measure, in seconds, from the toolkit handing
    the record over to the broker's acknowledgement (None where librdkafka has none).
    """

    topic: str
    partition: int
    offset: int
    timestamp: int
    error: RecordError | None = None
    dead_letter: RecordMetadata | None = None
    latency: float | None = None

    @property
    def ok(self) -> bool:
        """True when the record itself was delivered."""
        return self.error is None


def failed(
    record: Record,
    error: RecordError,
    partition: int | None = None,
    dead_letter: RecordMetadata | None = None,
) -> RecordMetadata:
    """The result of a record that was not delivered."""
    if partition is None:
        partition = record.partition
    return RecordMetadata(
        record.topic, UNKNOWN if partition is None else partition, UNKNOWN, UNKNOWN, error,
        dead_letter,
    )


class BatchResults(Sequence[RecordMetadata]):
    """``send_batch``'s results, in the order of its records: a read-only sequence of
    :class:`RecordMetadata`, built on access from arrays (about 28 bytes a record instead of a
    couple of hundred). ``failures`` lists the failed results alone."""

    __slots__ = ("_failures", "_latencies", "_offsets", "_partitions", "_records", "_timestamps")

    def __init__(
        self,
        records: Sequence[RecordLike],
        partitions: array[int],
        offsets: array[int],
        timestamps: array[int],
        latencies: array[float],
        failures: dict[int, RecordMetadata],
    ) -> None:
        self._records = records
        self._partitions = partitions
        self._offsets = offsets
        self._timestamps = timestamps
        self._latencies = latencies
        self._failures = failures

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, i: int) -> RecordMetadata: ...
    @overload
    def __getitem__(self, i: slice) -> list[RecordMetadata]: ...
    def __getitem__(self, i: int | slice) -> RecordMetadata | list[RecordMetadata]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("batch result index out of range")
        found = self._failures.get(i)
        if found is not None:
            return found
        return RecordMetadata(
            as_record(self._records[i]).topic,
            self._partitions[i],
            self._offsets[i],
            self._timestamps[i],
            None,
            None,
            self._latencies[i],
        )

    def __iter__(self) -> Iterator[RecordMetadata]:
        for i in range(len(self)):
            yield self[i]

    @property
    def failures(self) -> list[RecordMetadata]:
        """The failed records' results, in order (dead-lettered ones included)."""
        return [self._failures[i] for i in sorted(self._failures)]

    @property
    def offsets(self) -> array[int]:
        """Every record's offset (-1 where it failed), without building results."""
        return self._offsets

    @property
    def latencies(self) -> array[float]:
        """Every record's delivery latency in seconds (0.0 where it failed)."""
        return self._latencies

    def __repr__(self) -> str:
        return f"<BatchResults of {len(self)} records, {len(self._failures)} failed>"
