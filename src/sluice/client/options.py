"""Checks of the toolkit's own keyword options, made at construction: a value of the wrong
type or range is a :class:`ConfigurationError` naming the option, not a ``TypeError`` deep in
the first use, a timer that never fires (NaN), or a loop that spins (a commit interval of 0)."""

from __future__ import annotations

import contextlib
import decimal
import inspect
import math
import numbers
import operator
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sluice.client.errors import ConfigurationError


def seconds(name: str, value: object, *, zero: bool = True) -> float:
    """A duration: a real number of seconds (any: numpy's, a Decimal, a Fraction; not a bool),
    finite, 0 or more (more than 0 unless ``zero``), as a float."""
    as_float: float | None = None
    if isinstance(value, numbers.Real | decimal.Decimal) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError, ValueError, TypeError):
            as_float = float(value)
    if (
        as_float is None
        or not math.isfinite(as_float)
        or as_float < 0
        or (as_float == 0 and not zero)
    ):
        least = "0 or more" if zero else "more than 0"
        raise ConfigurationError(f"{name}={value!r}: seconds, a finite number, {least}")
    return as_float


def integer(value: object) -> int | None:
    """``value`` as an int if it is of an integer type (numpy's, an IntEnum), else None. Not a
    bool: ``True`` taken as 1 hides a mistake (a flag passed where a count was meant)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def count(name: str, value: object, *, least: int, most: int | None = None) -> int:
    """A whole number (see :func:`integer`) from ``least`` to ``most``, as an int."""
    n = integer(value)
    if n is None or n < least or (most is not None and n > most):
        bounds = f"{least} or more" if most is None else f"from {least} to {most}"
        raise ConfigurationError(f"{name}={value!r}: an integer, {bounds}")
    return n


def mapping(name: str, value: object) -> Mapping[str, Any]:
    """librdkafka settings given as a mapping (None: none)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{name}={value!r}: librdkafka settings as a mapping, e.g. {{'linger.ms': 20}}"
        )
    return value


BOOTSTRAP_KEYS = ("bootstrap.servers", "metadata.broker.list")
"""librdkafka's names for the bootstrap list (the second an alias of the first)."""
MOCK_CLUSTER = "test.mock.num.brokers"
"""librdkafka's in-process mock cluster, which needs no bootstrap list (it sets its own)."""


def bootstrap(settings: Mapping[str, Any]) -> None:
    """The bootstrap list a client is made with (``bootstrap_servers``, the setting or its alias
    ``metadata.broker.list``; none for librdkafka's mock cluster): present, with one entry at
    least. Without one librdkafka knows no broker and a producer's records wait out
    their whole timeout (``""``, an unset environment variable, ended as "Purged in queue" at
    close). Empty entries are skipped, as librdkafka skips them (``"a:9092,"``), but one entry
    at least must be left; each entry's form is librdkafka's to read (the toolkit imports
    nothing of sluice's other layers, whose parser is sluice.hostport's)."""
    given = [k for k in settings if k in BOOTSTRAP_KEYS]
    if not given and settings.get(MOCK_CLUSTER) is not None:
        return
    name = given[-1] if given else "bootstrap.servers"  # librdkafka: the last one set
    option = "bootstrap_servers" if name == "bootstrap.servers" else name
    servers = settings.get(name)
    entries = [e for e in servers.split(",") if e.strip()] if isinstance(servers, str) else []
    if not entries:
        raise ConfigurationError(
            f"{option}={servers!r}: the brokers to connect to, e.g. 'localhost:9092'"
        )


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
