"""Dead-letter routing: where a finally failed record goes, and the headers that say why.

Header convention: Kafka Connect's ``__connect.errors.*`` (KIP-298), chosen over Spring Kafka's
``kafka_dlt-*`` because Connect writes every value as a UTF-8 string (Spring writes partitions
and offsets as big-endian binary integers), so the headers read the same from kcat, a console
consumer or any client, and because it is Apache Kafka's own convention. The copy keeps the
original key, value (see below), headers and timestamp, as Connect's does, and adds:

=====================================  =========================================================
``__connect.errors.topic``             the original topic
``__connect.errors.partition``         the original partition, when one was chosen or assigned
``__connect.errors.stage``             ``KAFKA_PRODUCE`` (Connect's stage for a failed send)
``__connect.errors.class.name``        ``sluice.client.Producer``
``__connect.errors.exception.class.name``  ``sluice.client.errors.DeliveryError``
``__connect.errors.exception.message`` the error's text (librdkafka's or the broker's)
``__connect.errors.error.code``        the Kafka error code (librdkafka's own are negative)
``__connect.errors.error.name``        its name, e.g. ``MSG_SIZE_TOO_LARGE``
``__connect.errors.attempts``          times the toolkit handed the record to librdkafka: 1, or 0
                                       when librdkafka refused it on the spot (librdkafka's own
                                       retries within ``delivery.timeout.ms`` are not reported
                                       per record, so they are not counted)
``__connect.errors.timestamp``         when the failure was reported, ms since the epoch
``__connect.errors.key``               the original key, as sent (absent for a keyless record)
``__connect.errors.value.size``        only when the value was left out: its size in bytes
=====================================  =========================================================

The last eight are sluice's, in Connect's namespace so that one prefix finds them all. A record
librdkafka refused on the spot for its size (over ``message.max.bytes``) is copied without its
value, which would fail the same way; ``__connect.errors.value.size`` says what was left out. A
size failure from the broker may be a neighbour's (the broker refuses a whole batch over the
topic's ``max.message.bytes``): that copy keeps its value. A copy the dead-letter topic refuses
for its size in turn (the record was over the limit itself, and the dead-letter topic has the
same one) is written once more without its value, as a record librdkafka refused is.

The consumer (:func:`processing_letter`) writes the same headers for a record its handler failed
on, with ``__connect.errors.offset`` (Connect's) added, the stage ``TASK_PUT`` (Connect's for a
sink task's failure), ``VALUE_CONVERTER``/``KEY_CONVERTER`` for a record the deserializer could
not read, or ``SHED`` (sluice's) for a record the overload policy skipped; ``class.name`` is
``sluice.client.Consumer``, ``attempts`` the handler calls made, and there is no error code.
The copy keeps the record's raw key, value, headers and timestamp.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sluice.client.errors import ConfigurationError, DeliveryError
from sluice.client.records import Headers

PREFIX = "__connect.errors."
TOPIC = PREFIX + "topic"
PARTITION = PREFIX + "partition"
OFFSET = PREFIX + "offset"
STAGE = PREFIX + "stage"
CLASS_NAME = PREFIX + "class.name"
EXCEPTION_CLASS_NAME = PREFIX + "exception.class.name"
EXCEPTION_MESSAGE = PREFIX + "exception.message"
ERROR_CODE = PREFIX + "error.code"
ERROR_NAME = PREFIX + "error.name"
ATTEMPTS = PREFIX + "attempts"
TIMESTAMP = PREFIX + "timestamp"
KEY = PREFIX + "key"
VALUE_SIZE = PREFIX + "value.size"

LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
"""Kafka's rule for a topic name (``Topic.validate``)."""

SIZE_ERRORS = frozenset({"MSG_SIZE_TOO_LARGE", "RECORD_LIST_TOO_LARGE", "INVALID_MSG_SIZE"})
"""Failures for a size: the record's own, or, from the broker, its batch's (a neighbour's)."""


@dataclass(frozen=True)
class DeadLetter:
    """The copy of a failed record bound for the dead-letter topic."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | str | None]]
    timestamp: int


class DeadLetterRoute:
    """``template`` is a topic name, or a template with ``{topic}`` for the original topic
    (``"{topic}.dlq"``). A template that is always the record's own topic (``"{topic}"``) is
    refused here; a name that happens to be the topic a record is sent to is refused per record
    by the producer (topics come with each record)."""

    def __init__(self, template: str) -> None:
        if not isinstance(template, str):
            raise ConfigurationError(
                f"dead_letter_topic={template!r}: a topic name (a str), or a template such as "
                f"\"{{topic}}.dlq\""
            )
        try:
            probe = template.format(topic="t")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigurationError(
                f"dead_letter_topic={template!r}: a topic name, or a template whose only field "
                f"is {{topic}} ({exc!r})"
            ) from None
        if not probe:
            raise ConfigurationError("dead_letter_topic is empty")
        if not LEGAL_NAME.fullmatch(probe) or probe in (".", ".."):
            # every copy would fail (INVALID_TOPIC_EXCEPTION): the failures it should keep
            # would be reported as failed twice over, at run time
            raise ConfigurationError(
                f"dead_letter_topic={template!r}: a topic name is ASCII letters, digits, '.', "
                f"'_' and '-' (Kafka's rule), at most 249 of them"
            )
        if probe == "t" and template.format(topic="u") == "u":
            raise ConfigurationError(
                f"dead_letter_topic={template!r} is every record's own topic: a failed record "
                f"would be written back into the topic it failed in (e.g. \"{{topic}}.dlq\")"
            )
        self.template = template

    def topic_for(self, topic: str) -> str:
        return self.template.format(topic=topic)

    @staticmethod
    def routes(error: DeliveryError) -> bool:
        """Whether a failure goes to the dead-letter topic: every delivery failure except a
        record purged by ``close()`` (not a failure of the record: the producer stopped)."""
        return not error.purged

    def letter(
        self,
        error: DeliveryError,
        *,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        attempts: int,
    ) -> DeadLetter:
        record = error.record
        headers = _pairs(record.headers)
        headers.append((TOPIC, record.topic))
        if partition is not None and partition >= 0:
            headers.append((PARTITION, str(partition)))
        headers += [
            (STAGE, "KAFKA_PRODUCE"),
            (CLASS_NAME, "sluice.client.Producer"),
            (EXCEPTION_CLASS_NAME, f"{type(error).__module__}.{type(error).__qualname__}"),
            (EXCEPTION_MESSAGE, str(error)),
            (ERROR_CODE, str(error.code)),
            (ERROR_NAME, error.name),
            (ATTEMPTS, str(attempts)),
            (TIMESTAMP, str(time.time_ns() // 1_000_000)),
        ]
        if key is not None:
            headers.append((KEY, key))
        if value is not None and error.name in SIZE_ERRORS and attempts == 0:
            # librdkafka refused the record itself (over message.max.bytes): so would it the
            # copy. A size failure from the broker may be a neighbour's (the broker refuses a
            # whole batch over the topic's max.message.bytes): that copy keeps its value.
            headers.append((VALUE_SIZE, str(len(value))))
            value = None
        return DeadLetter(
            self.topic_for(record.topic), key, value, headers, record.timestamp or 0
        )


def without_value(letter: DeadLetter) -> DeadLetter:
    """``letter`` without its value (``__connect.errors.value.size`` says what was left out):
    the copy a broker refused for its size is written again so (see :class:`DeadLetterRoute`)."""
    assert letter.value is not None
    headers = [*letter.headers, (VALUE_SIZE, str(len(letter.value)))]
    return DeadLetter(letter.topic, letter.key, None, headers, letter.timestamp)


def _pairs(headers: Headers | None) -> list[tuple[str, bytes | str | None]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def processing_letter(
    topic: str,
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes | None]] | None,
    timestamp: int | None,
    stage: str,
    error: BaseException,
    attempts: int,
) -> DeadLetter:
    """The dead-letter copy of a consumed record the consumer gave up on (or shed)."""
    out: list[tuple[str, bytes | str | None]] = list(headers or [])
    out += [
        (TOPIC, source_topic),
        (PARTITION, str(partition)),
        (OFFSET, str(offset)),
        (STAGE, stage),
        (CLASS_NAME, "sluice.client.Consumer"),
        (EXCEPTION_CLASS_NAME, f"{type(error).__module__}.{type(error).__qualname__}"),
        (EXCEPTION_MESSAGE, str(error)),
        (ATTEMPTS, str(attempts)),
        (TIMESTAMP, str(time.time_ns() // 1_000_000)),
    ]
    if key is not None:
        out.append((KEY, key))
    return DeadLetter(topic, key, value, out, timestamp or 0)
