"""What the producer and the consumer do alike when they make their librdkafka client: a client
id of their own, the toolkit's error and statistics callbacks (the user's own ``error_cb`` and
``stats_cb`` are kept, to be chained after them), librdkafka's log on the ``sluice.client``
logger, and a configuration librdkafka refuses raised as :class:`ConfigurationError`."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import confluent_kafka as ck

from sluice.client.errors import ConfigurationError

C = TypeVar("C")
"""The client class librdkafka makes: Producer or Consumer."""

_numbers = itertools.count(1)


def next_number() -> int:
    """A number no other client of this process has (for default ids and group names)."""
    return next(_numbers)


@dataclass(frozen=True, slots=True)
class Made(Generic[C]):
    client: C
    config: dict[str, Any]
    """The librdkafka configuration the client was made with."""
    error_cb: Callable[..., Any] | None
    stats_cb: Callable[..., Any] | None


def make(
    factory: Callable[[dict[str, Any]], C],
    settings: Mapping[str, Any],
    *,
    kind: str,
    on_error: Callable[..., Any],
    on_statistics: Callable[..., Any],
) -> Made[C]:
    """``factory(settings)`` with what both clients add (see the module)."""
    config = dict(settings)
    config.setdefault("client.id", f"sluice-{kind}-{next_number()}")
    error_cb = config.pop("error_cb", None)
    stats_cb = config.pop("stats_cb", None)
    config["error_cb"] = on_error
    config["stats_cb"] = on_statistics
    config.setdefault("logger", logging.getLogger("sluice.client.librdkafka"))
    try:
        client = factory(config)
    except (ck.KafkaException, ValueError, TypeError) as exc:
        raise ConfigurationError(f"librdkafka refused the configuration: {exc}") from exc
    return Made(client, config, error_cb, stats_cb)
