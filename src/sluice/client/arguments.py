"""Checks of what the consumer's calls are given (``assign=``, ``commit(offsets)``, ``seek``,
``pause``, ``resume``, ``getmany``): a wrong one is refused before anything is done, with an
error naming the call and the entry, not a ``TypeError`` from librdkafka or an offset silently
taken as another. Partitions and offsets take any integer type (numpy's too), never a bool.
The keyword options given at construction are checked in :mod:`sluice.client.options`."""

from __future__ import annotations

from collections.abc import Mapping

import confluent_kafka as ck

from sluice.client import options
from sluice.client.buffer import TP
from sluice.client.errors import ConfigurationError, InvalidArgumentError

LOGICAL_OFFSETS = (ck.OFFSET_BEGINNING, ck.OFFSET_END, ck.OFFSET_STORED)
"""librdkafka's named offsets an ``assign=`` entry may start at (the log's start, its end, the
group's committed offset)."""


def natural(value: object) -> int | None:
    """``value`` as an int if it is an integer (:func:`options.integer`) of 0 or more, else None."""
    n = options.integer(value)
    return n if n is not None and n >= 0 else None


def offset_or_named(value: object, named: tuple[int, ...]) -> int | None:
    """``value`` as an int if it is an offset of 0 or more or one of ``named`` (librdkafka's
    logical offsets the call takes), else None; never a bool."""
    n = options.integer(value)
    return n if n is not None and (n >= 0 or n in named) else None


def assignment(a: object) -> tuple[str, int, int | None]:
    """One ``assign=`` entry: ``(topic, partition)`` or ``(topic, partition, offset)``, an
    offset of 0 or more or one of :data:`LOGICAL_OFFSETS`, as ints."""
    if isinstance(a, tuple | list) and len(a) in (2, 3) and isinstance(a[0], str) and a[0]:
        partition = natural(a[1])
        offset = None if len(a) == 2 else offset_or_named(a[2], LOGICAL_OFFSETS)
        if partition is not None and (len(a) == 2 or offset is not None):
            return (a[0], partition, offset)
    raise ConfigurationError(
        f"assign: {a!r} is not (topic, partition) or (topic, partition, offset): a topic name, "
        f"a partition of 0 or more, an offset of 0 or more (or confluent_kafka.OFFSET_BEGINNING, "
        f"OFFSET_END or OFFSET_STORED)"
    )


def partition(tp: object, call: str, outcome: str) -> TP:
    """``tp`` as a ``(topic, partition)`` pair -- a non-empty str and an integer of 0 or more --
    or :class:`InvalidArgumentError` naming ``call`` and saying ``outcome``."""
    number = natural(tp[1]) if isinstance(tp, tuple) and len(tp) == 2 else None
    if number is None or not isinstance(tp[0], str) or not tp[0]:  # type: ignore[index]
        raise InvalidArgumentError(
            f"{call}: {tp!r} is not a (topic, partition) pair such as ('orders', 0); {outcome}"
        )
    return (tp[0], number)  # type: ignore[index]


def offsets(given: object) -> dict[TP, int]:
    """``commit(offsets)``'s argument as a dict, or :class:`InvalidArgumentError` naming the
    first entry that is not ``(topic, partition): offset``."""
    if not isinstance(given, Mapping):
        raise InvalidArgumentError(
            f"commit(offsets): a mapping of (topic, partition) to the next offset to read, "
            f"e.g. {{('orders', 0): 42}}; got {type(given).__name__}; nothing was committed"
        )
    checked: dict[TP, int] = {}
    for tp, offset in given.items():
        topic, number = partition(tp, "commit(offsets)", "nothing was committed")
        value = natural(offset)
        if value is None:
            raise InvalidArgumentError(
                f"commit(offsets): {topic}[{number}]: {offset!r} is not an offset (the next "
                f"offset to read, an integer of 0 or more); nothing was committed"
            )
        checked[(topic, number)] = value
    return checked
