"""Checks of the toolkit's own keyword options, made at construction: a value of the wrong
type or range is a :class:`ConfigurationError` naming the option, not a ``TypeError`` deep in
the first use, a timer that never fires (NaN), or a loop that spins (a commit interval of 0)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
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
    present and a bootstrap list librdkafka can use. Without one librdkafka knows no broker and
    a producer's records wait out their whole timeout (``""``, an unset environment variable,
    ended as "Purged in queue" at close); a malformed one times out likewise."""
    from sluice.hostport import bootstrap_addresses

    servers = settings.get("bootstrap.servers")
    if not isinstance(servers, str) or not servers.strip():
        raise ConfigurationError(
            f"bootstrap_servers={servers!r}: the brokers to connect to, e.g. 'localhost:9092'"
        )
    try:
        bootstrap_addresses(servers)
    except ValueError as exc:
        raise ConfigurationError(f"bootstrap_servers={servers!r}: {exc}") from None


def coroutine_function(name: str, fn: object) -> Callable[..., Awaitable[Any]]:
    """``fn`` as a coroutine function, for ``run``'s handler and the rebalance callbacks. An
    async function (or a ``functools.partial`` of one) is itself; any other callable (a plain
    ``def``, a lambda, a lambda returning a coroutine, an object with an async ``__call__``) is
    called and its result awaited only when it is awaitable. A plain function's ``None`` used
    to be awaited: its work done, it "failed" with ``TypeError``, was run again for each retry
    and then dead-lettered (a rebalance callback's was logged as an error)."""
    if not callable(fn):
        raise ConfigurationError(
            f"{name}={fn!r}: a function called with each "
            + ("record" if name == "handler" else "list of partitions")
            + " (async, or plain)"
        )
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigurationError(
            f"{name}={fn!r} is a generator function (it has a `yield`): calling it runs none "
            "of its body; make it a plain `async def`"
        )
    if inspect.iscoroutinefunction(fn):
        return fn

    async def call(*args: Any) -> Any:
        result = fn(*args)
        if inspect.isawaitable(result):
            return await result
        return result

    return call
