"""Checks of the toolkit's own keyword options, made at construction: a value of the wrong
type or range is a :class:`ConfigurationError` naming the option, not a ``TypeError`` deep in
the first use, a timer that never fires (NaN), or a loop that spins (a commit interval of 0)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sluice.client.errors import ConfigurationError


def seconds(name: str, value: object, *, zero: bool = True) -> float:
    """A duration: a real number of seconds, finite, 0 or more (more than 0 unless ``zero``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero)
    ):
        least = "0 or more" if zero else "more than 0"
        raise ConfigurationError(f"{name}={value!r}: seconds, a finite number, {least}")
    return float(value)


def count(name: str, value: object, *, least: int, most: int | None = None) -> int:
    """A whole number (not a bool) from ``least`` to ``most``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < least
        or (most is not None and value > most)
    ):
        bounds = f"{least} or more" if most is None else f"from {least} to {most}"
        raise ConfigurationError(f"{name}={value!r}: an integer, {bounds}")
    return value


def mapping(name: str, value: object) -> Mapping[str, Any]:
    """librdkafka settings given as a mapping (None: none)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{name}={value!r}: librdkafka settings as a mapping, e.g. {{'linger.ms': 20}}"
        )
    return value


def bootstrap(settings: Mapping[str, Any]) -> None:
    """The ``bootstrap.servers`` a client is made with (``bootstrap_servers`` or the setting):
    present and not blank. Without one librdkafka knows no broker, and a producer's records
    wait out their whole timeout (``""``, an unset environment variable, ended as "Purged in
    queue" at close). Its form is librdkafka's to read (the toolkit imports nothing of sluice)."""
    servers = settings.get("bootstrap.servers")
    if not isinstance(servers, str) or not servers.strip():
        raise ConfigurationError(
            f"bootstrap_servers={servers!r}: the brokers to connect to, e.g. 'localhost:9092'"
        )
