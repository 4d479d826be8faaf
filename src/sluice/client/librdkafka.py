"""What the producer and the consumer do alike when they make their librdkafka client: a client
id of their own, the toolkit's error and statistics callbacks (the user's own ``error_cb`` and
``stats_cb`` are kept, to be chained after them), librdkafka's log on the ``sluice.client``
logger, and a configuration librdkafka refuses raised as :class:`ConfigurationError`.

Logging. librdkafka reports a failure twice: as an error event (``error_cb``) and as a log line
(a failed connection is a ``FAIL`` line at syslog level 3, which confluent-kafka logs at
ERROR). The toolkit logs each error event once (:func:`log_error`: WARNING on ``sluice.client``,
ERROR when fatal), so librdkafka's lines of the facilities that repeat an error event
(:data:`REPORTED`, at ERROR) are left out of ``sluice.client.librdkafka``, which keeps the rest
of librdkafka's log. A ``logger`` given in the settings gets librdkafka's log untouched."""

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

log = logging.getLogger("sluice.client")

REPORTED = frozenset({"FAIL"})
"""librdkafka log facilities whose lines at ERROR repeat an error event the toolkit logs itself
(a connection that failed: ``_TRANSPORT``, ``_AUTHENTICATION``, ``_SSL`` ...)."""


class LibrdkafkaLog:
    """What confluent-kafka's ``logger`` setting is given: librdkafka's log lines, less those
    of :data:`REPORTED` facilities, on ``sluice.client.librdkafka``. (confluent-kafka calls
    ``log(level, "%s [%s] %s", facility, client name, message)``.)"""

    def __init__(self) -> None:
        self.logger = logging.getLogger("sluice.client.librdkafka")

    def log(self, level: int, msg: str, *args: Any) -> None:
        # Only at ERROR (syslog 3 and below): librdkafka's INFO FAIL line for a connection the
        # broker closed ("Disconnected") repeats no error event, and would be logged nowhere.
        if level >= logging.ERROR and args and args[0] in REPORTED:
            return
        self.logger.log(level, msg, *args)


def log_error(client_id: str, error: ck.KafkaError) -> None:
    """librdkafka's error event, one line: WARNING (librdkafka retries: a broker down, a
    connection refused), ERROR when fatal (the client is unusable)."""
    if error.fatal():
        log.error("%s: librdkafka fatal error, the client is unusable: %s (%s)",
                  client_id, error.str(), error.name())
    else:
        log.warning("%s: %s (%s)", client_id, error.str(), error.name())


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
    config.setdefault("logger", LibrdkafkaLog())
    try:
        client = factory(config)
    except (ck.KafkaException, ValueError, TypeError) as exc:
        raise ConfigurationError(f"librdkafka refused the configuration: {exc}") from exc
    return Made(client, config, error_cb, stats_cb)
