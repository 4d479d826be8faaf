"""The toolkit's typed exceptions: a record's own failure is a :class:`RecordError`, carrying the
record and (for delivery failures) Kafka's error code; the producer's own states (queue full,
closed, records left undelivered at close) have exceptions of their own. librdkafka's
``BufferError`` and ``KafkaException`` never reach the caller untranslated."""

from __future__ import annotations

import asyncio
from typing import Any

from sluice.client.records import Record

PURGED = frozenset({"_PURGE_QUEUE", "_PURGE_INFLIGHT"})
"""librdkafka's names for a record purged by ``close()`` before it was delivered."""


class ProducerError(Exception):
    """Base of every exception the toolkit's producer raises."""


class ConsumerError(Exception):
    """Base of every exception the toolkit's consumer raises."""


class ConfigurationError(ProducerError, ConsumerError, ValueError):
    """An option the toolkit or librdkafka refuses (unknown name, bad value)."""


class WrongEventLoopError(ProducerError, ConsumerError, RuntimeError):
    """A producer or consumer used on an event loop other than the one it was started on (a
    second ``asyncio.run``): its thread hands everything to that first loop. Make one per loop,
    and close it on its own."""


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running loop, None on a thread with none running (an executor's: asyncio's own
    error there says nothing of the rule the caller broke)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def check_loop(started_on: asyncio.AbstractEventLoop | None, what: str) -> None:
    """Refuse a loop other than the one ``what`` (a Producer, a Consumer) started on: its
    thread hands records and outcomes to that first loop. Nothing to check before a start."""
    if started_on is not None and running_loop() is not started_on:
        raise WrongEventLoopError(
            f"this {what} was started on another event loop (an earlier asyncio.run?), or is "
            f"called from a thread with no loop running: a {what} belongs to the loop it was "
            "started on; make one per loop and close it on its own loop"
        )


class QueueFullError(ProducerError):
    """``send_nowait`` found librdkafka's queue full (``queue.buffering.max.messages`` or
    ``queue.buffering.max.kbytes``); the record was not accepted. ``await producer.submit(...)``
    waits for space instead."""


class ProducerClosedError(ProducerError):
    """A send on a producer that is closing or closed."""


class RecordError(ProducerError):
    """One record's own failure; the records around it are unaffected. ``record`` is the record
    as given (after coercion of a mapping)."""

    def __init__(self, message: str, record: Record) -> None:
        super().__init__(message)
        self.record = record


class SerializationError(RecordError, TypeError):
    """The value or key is not bytes, str or None and no serializer took it (or the configured
    serializer raised). Never dead-lettered: there are no bytes to write."""


class NotSentError(RecordError):
    """The producer closed while the record waited for queue space: it was never handed to
    librdkafka, so it was not sent."""


MESSAGE_TOO_LARGE = 10
"""Kafka's error code for a batch over the topic's ``max.message.bytes`` (librdkafka's
``MSG_SIZE_TOO_LARGE``, also its name for a record over its own ``message.max.bytes``)."""


class DeliveryError(RecordError):
    """Kafka (or librdkafka locally) refused the record or gave up on it.

    ``code`` is the error code, Kafka's protocol code (e.g. 10, MESSAGE_TOO_LARGE) or one of
    librdkafka's local codes, which are negative (e.g. -192, ``_MSG_TIMED_OUT``); ``name`` its
    name as librdkafka spells it. ``retriable`` says whether trying again could succeed
    (librdkafka has already retried within ``delivery.timeout.ms``: a retriable error here means
    the time ran out). ``fatal`` means the producer instance itself is unusable (an idempotence
    failure). ``purged`` means ``close()`` gave up on the record: it may or may not have been
    written. When a dead-letter topic is configured and writing there failed too,
    ``dead_letter_error`` is that second failure.
    """

    def __init__(
        self,
        message: str,
        record: Record,
        *,
        code: int,
        name: str,
        retriable: bool = False,
        fatal: bool = False,
    ) -> None:
        super().__init__(message, record)
        self.code = code
        self.name = name
        self.retriable = retriable
        self.fatal = fatal
        self.dead_letter_error: DeliveryError | None = None

    @property
    def purged(self) -> bool:
        return self.name in PURGED

    @classmethod
    def from_kafka(cls, error: Any, record: Record, *, reported: bool = False) -> DeliveryError:
        """From a confluent-kafka ``KafkaError``; ``reported``: from a delivery report (the
        broker's answer to the batch the record went in), not refused by librdkafka at once."""
        hint = ""
        if reported and error.code() == MESSAGE_TOO_LARGE:
            hint = (
                ": the broker refused the batch this record went in, which may be for its "
                "neighbours' size, not its own; a batch is up to librdkafka's batch.size "
                "(1000000 bytes by default), so for a topic whose max.message.bytes is lower, "
                "set batch.size and message.max.bytes to at most that"
            )
        return cls(
            f"{record.topic}: {error.str()} ({error.name()}, code {error.code()}){hint}",
            record,
            code=error.code(),
            name=error.name(),
            retriable=bool(error.retriable()),
            fatal=bool(error.fatal()),
        )

    def __str__(self) -> str:
        text = super().__str__()
        if self.dead_letter_error is not None:
            text += f"; writing it to the dead-letter topic failed too: {self.dead_letter_error}"
        return text


class UndeliveredError(ProducerError):
    """``close(timeout)`` ran out of time: ``errors`` holds one :class:`DeliveryError` per record
    that was accepted but not delivered (purged; each was also reported at its own awaitable)."""

    def __init__(self, errors: list[DeliveryError]) -> None:
        first = f", e.g. {errors[0]}" if errors else ""
        super().__init__(f"{len(errors)} accepted records were not delivered before close{first}")
        self.errors = errors

    @property
    def records(self) -> list[Record]:
        return [e.record for e in self.errors]


class ConsumerClosedError(ConsumerError):
    """A read or a ``run`` on a consumer that is closing or closed."""


class RebalanceCallbackError(ConsumerError):
    """A call an ``on_assign``/``on_revoke`` callback may not make: ``close()``. The fetch
    thread waits for the callback, and closing stops that thread, so the close would wait for
    itself; ``stop()`` there ends ``run``, and the consumer is closed after the callback."""


class PartitionRevokedError(ConsumerError):
    """A ``seek()`` on a partition being revoked (its records in processing draining, or its
    ``on_revoke`` running). The partition is leaving: its next owner starts at the offset
    committed for it, the drained watermark, so the seek cannot apply to it. ``partition`` is
    the ``(topic, partition)``."""

    def __init__(self, message: str, partition: tuple[str, int]) -> None:
        super().__init__(message)
        self.partition = partition


class InvalidArgumentError(ConsumerError, ValueError):
    """A call's argument that is not what it names -- a ``(topic, partition)`` pair, an offset
    of 0 or more, a record count -- refused before anything is done (librdkafka took a
    negative commit offset as "nothing to commit", and the commit looked made)."""


class DeserializationError(ConsumerError):
    """The consumer's value or key deserializer could not read a record (a poison pill).
    ``record`` is the record with its raw bytes; the consumer's position is already past it, so
    the next read goes on with the next record."""

    def __init__(self, message: str, record: Any) -> None:
        super().__init__(message)
        self.record = record


class ProcessingError(ConsumerError):
    """``run``'s handler failed for ``record`` after ``attempts`` tries and there is no
    dead-letter topic (or writing there failed too: ``dead_letter_error``). The record was not
    committed: a restarted consumer reads it again. The handler's exception is the ``__cause__``."""

    def __init__(self, message: str, record: Any, attempts: int) -> None:
        super().__init__(message)
        self.record = record
        self.attempts = attempts
        self.dead_letter_error: BaseException | None = None
