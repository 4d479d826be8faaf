"""Turning values and keys into bytes: a serializer hook per producer, with JSON, msgspec and
pydantic out of the box.

The rule, the same for values and keys: bytes (and bytearray, memoryview) are sent as they are,
already serialized; None stays None (a tombstone value, or no key); anything else goes through
the producer's serializer if it has one, and a str without one is sent as UTF-8. Anything else
is a :class:`~sluice.client.errors.SerializationError` for that record alone.

``value_serializer="json"`` (or ``"msgspec"``, ``"pydantic"``) picks a built-in by name; any
``Callable[[object], bytes]`` works too.
"""

from __future__ import annotations

import dataclasses
import inspect
import json as _json
from collections.abc import Callable
from typing import Any, TypeAlias

from sluice.client.errors import ConfigurationError, SerializationError
from sluice.client.records import Record

Serializer: TypeAlias = Callable[[Any], bytes]


def _builtin(obj: Any) -> Any:
    """``json.dumps``'s fallback: pydantic models, msgspec structs and dataclasses as plain data."""
    dump = getattr(obj, "model_dump", None)  # pydantic v2
    if callable(dump):
        return dump(mode="json")
    if type(obj).__module__ != "builtins" and hasattr(type(obj), "__struct_fields__"):
        import msgspec  # a msgspec Struct: msgspec is installed

        return msgspec.to_builtins(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def json(obj: Any) -> bytes:
    """Compact JSON (UTF-8) with the standard library; pydantic models, msgspec structs and
    dataclasses become objects."""
    return _json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_builtin).encode()


def msgspec_json(obj: Any) -> bytes:
    """msgspec's JSON encoder: structs, dataclasses, attrs classes, datetimes, UUIDs, and the
    builtins, several times faster than the standard library."""
    import msgspec

    return msgspec.json.encode(obj, enc_hook=_builtin)


def pydantic_json(obj: Any) -> bytes:
    """pydantic's JSON: ``model_dump_json`` for a model, pydantic-core's ``to_json`` for
    anything else it knows (dataclasses, datetimes, UUIDs, the builtins), msgspec structs
    included."""
    dump = getattr(obj, "model_dump_json", None)
    if callable(dump):
        out: str = dump()
        return out.encode()
    import pydantic_core

    data: bytes = pydantic_core.to_json(obj, fallback=_builtin)
    return data


BUILTIN: dict[str, Serializer] = {"json": json, "msgspec": msgspec_json, "pydantic": pydantic_json}


def _not_async(spec: Any, option: str) -> None:
    """(De)serializers are called without await: an ``async def`` one's coroutine became the
    record's value (consumer) or failed every record as not bytes (producer)."""
    if inspect.iscoroutinefunction(spec) or inspect.isasyncgenfunction(spec):
        raise ConfigurationError(
            f"{option}={spec!r} is an async function: it is called without await, so every "
            "value would be a coroutine; make it a plain function"
        )


def resolve(spec: str | Serializer | None, option: str) -> Serializer | None:
    """A serializer from an option value: a built-in's name, a callable, or None."""
    if spec is None or callable(spec):
        _not_async(spec, option)
        return spec
    try:
        return BUILTIN[spec]
    except KeyError:
        raise ConfigurationError(
            f"{option}={spec!r}: expected a callable or one of {sorted(BUILTIN)}"
        ) from None


def encode(obj: Any, serializer: Serializer | None, record: Record, what: str) -> bytes | None:
    """``obj`` (a record's value or key) as bytes by the rule above; the slow path, called only
    when ``obj`` is not already bytes."""
    if obj is None or type(obj) is bytes:
        return obj
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    if serializer is None:
        if isinstance(obj, str):
            return obj.encode()
        raise SerializationError(
            f"{record.topic}: the {what} is of type {type(obj).__name__}, not bytes or str, and "
            f"the producer has no {what}_serializer (e.g. {what}_serializer='json')",
            record,
        )
    try:
        out = serializer(obj)
    except Exception as exc:
        raise SerializationError(
            f"{record.topic}: the {what} serializer failed on a {type(obj).__name__}: {exc}",
            record,
        ) from exc
    if isinstance(out, str):
        return out.encode()
    if not isinstance(out, bytes | bytearray | memoryview):
        raise SerializationError(
            f"{record.topic}: the {what} serializer returned {type(out).__name__}, not bytes",
            record,
        )
    return bytes(out)


# -- the consumer's side ---------------------------------------------------------------------

Deserializer: TypeAlias = Callable[[bytes], Any]


def json_loads(data: bytes) -> Any:
    """The standard library's JSON reader."""
    return _json.loads(data)


def msgspec_json_loads(data: bytes) -> Any:
    """msgspec's JSON decoder, to plain data (several times faster than the standard library)."""
    import msgspec

    return msgspec.json.decode(data)


def utf8(data: bytes) -> str:
    """Bytes as a UTF-8 string (strict: bad UTF-8 is a poison pill, not replaced)."""
    return data.decode()


BUILTIN_DESERIALIZERS: dict[str, Deserializer] = {
    "json": json_loads,
    "msgspec": msgspec_json_loads,
    "str": utf8,
}
"""For a pydantic model or a msgspec struct pass a callable, e.g. ``Model.model_validate_json``
or ``msgspec.json.Decoder(Struct).decode``."""


def resolve_deserializer(spec: str | Deserializer | None, option: str) -> Deserializer | None:
    """A deserializer from an option value: a built-in's name, a callable, or None (bytes as
    stored)."""
    if spec is None or callable(spec):
        _not_async(spec, option)
        return spec
    try:
        return BUILTIN_DESERIALIZERS[spec]
    except KeyError:
        raise ConfigurationError(
            f"{option}={spec!r}: expected a callable or one of {sorted(BUILTIN_DESERIALIZERS)}"
        ) from None
