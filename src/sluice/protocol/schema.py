"""A schema-driven codec: message dataclasses describe their wire fields, one engine codes them.

Each message is a class decorated with :func:`message` (a slotted, keyword-only dataclass)
whose fields are declared with :func:`f`, stating the Kafka type and the version ranges as in Apache Kafka's message JSON
(``versions``, ``nullableVersions``, ``taggedVersions``/``tag``, ``default``). The engine compiles
one reader and one writer per (class, version, flexible) on first use, so the per-message cost is
a loop over prepared closures, not a re-interpretation of the schema.

Fields absent at a version take their dataclass default when decoding and are skipped when
encoding. Fields with a tag are written in the tagged-field section only when they differ from
their default, as Kafka does.
"""

from __future__ import annotations

import dataclasses
import operator
import struct
import uuid
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar, dataclass_transform

from sluice.dataclass import build, dataclass
from sluice.protocol.primitives import (
    F64,
    I8,
    I16,
    I32,
    I64,
    U16,
    U32,
    ZERO_UUID,
    Buffer,
    ProtocolError,
    Reader,
    uvarint_bytes,
    write_compact_nullable_bytes,
    write_compact_nullable_string,
    write_nullable_bytes,
    write_nullable_string,
    write_uvarint,
)

INT8 = "int8"
INT16 = "int16"
INT32 = "int32"
INT64 = "int64"
UINT16 = "uint16"
UINT32 = "uint32"
FLOAT64 = "float64"
BOOL = "bool"
STRING = "string"
BYTES = "bytes"
UUID = "uuid"
RECORDS = "records"

_ZERO: dict[str, Any] = {
    INT8: 0,
    INT16: 0,
    INT32: 0,
    INT64: 0,
    UINT16: 0,
    UINT32: 0,
    FLOAT64: 0.0,
    BOOL: False,
    STRING: "",
    BYTES: b"",
    UUID: ZERO_UUID,
    RECORDS: None,
}


Records = Buffer
"""A record set as the codec carries it: opaque bytes, never decoded here."""


@dataclass(frozen=True, slots=True)
class Versions:
    lo: int
    hi: int  # inclusive; 32767 for "N+"

    @staticmethod
    @cache  # a few dozen distinct strings, parsed for ~500 fields at import
    def parse(text: str | None) -> Versions:
        if text is None or text == "none":
            return Versions(1, 0)  # empty
        if text.endswith("+"):
            return Versions(int(text[:-1]), 0x7FFF)
        lo, _, hi = text.partition("-")
        return Versions(int(lo), int(hi or lo))

    def __contains__(self, version: int) -> bool:
        return self.lo <= version <= self.hi


@dataclass(frozen=True, slots=True)
class Array:
    """``[]T``: ``of`` is a primitive type name or a message dataclass."""

    of: str | type


@dataclass(frozen=True, slots=True)
class FieldMeta:
    type: str | type | Array
    versions: Versions
    nullable: Versions
    tag: int | None
    tagged: Versions


_MISSING: Any = dataclasses.MISSING


def f(
    ftype: str | type | Array,
    versions: str = "0+",
    *,
    nullable: str | None = None,
    tag: int | None = None,
    tagged: str | None = None,
    default: Any = _MISSING,
) -> Any:
    """Declare a wire field. ``default`` is the schema default; otherwise the type's zero
    (0, "", b"", [], zero UUID), or None for records and struct fields."""
    md = _metadata(ftype, versions, nullable, tag, tagged)
    if default is _MISSING:
        if isinstance(ftype, Array):
            return dataclasses.field(default_factory=list, metadata=md)
        default = _ZERO.get(ftype) if isinstance(ftype, str) else None
    return dataclasses.field(default=default, metadata=md)


@cache
def _metadata(
    ftype: str | type | Array,
    versions: str,
    nullable: str | None,
    tag: int | None,
    tagged: str | None,
) -> dict[str, FieldMeta]:
    """One shared (read-only) metadata mapping per distinct declaration: ~600 fields at import
    share ~250 of them, and building a FieldMeta costs more than looking one up."""
    meta = FieldMeta(
        ftype,
        Versions.parse(versions),
        Versions.parse(nullable),
        tag,
        Versions.parse(tagged if tagged is not None else (versions if tag is not None else None)),
    )
    return {"kafka": meta}


def arr(of: str | type) -> Array:
    return Array(of)


# -- message classes -----------------------------------------------------------------------------

T = TypeVar("T")


@dataclass_transform(kw_only_default=True)
def message(cls: type[T]) -> type[T]:
    """``@dataclass(slots=True, kw_only=True)``, built by :func:`sluice.dataclass.build` (a
    fraction of the standard decorator's cost: there are ~150 messages)."""
    built = build(cls, kw_only=True)
    if built is None:
        raise TypeError(f"{cls.__name__}: a message declares plain fields only")
    return built


# -- compiled plans ------------------------------------------------------------------------------

ReadFn = Callable[[Reader], Any]
WriteFn = Callable[[bytearray, Any], None]


def _as_bytes(value: Any) -> Buffer:
    if isinstance(value, bytes | bytearray | memoryview):
        return value
    raise TypeError(f"expected a buffer, got {type(value).__name__}")


def _primitive_reader(t: str, flexible: bool, nullable: bool) -> ReadFn:
    if t == INT8:
        return Reader.int8
    if t == INT16:
        return Reader.int16
    if t == INT32:
        return Reader.int32
    if t == INT64:
        return Reader.int64
    if t == UINT16:
        return Reader.uint16
    if t == UINT32:
        return Reader.uint32
    if t == FLOAT64:
        return Reader.float64
    if t == BOOL:
        return Reader.bool
    if t == UUID:
        return Reader.uuid
    if t == STRING:
        if flexible:
            return Reader.compact_nullable_string if nullable else Reader.compact_string
        return Reader.nullable_string if nullable else Reader.string
    if t in (BYTES, RECORDS):
        if flexible:
            return Reader.compact_nullable_bytes if nullable else Reader.compact_bytes
        return Reader.nullable_bytes if nullable else Reader.bytes
    raise TypeError(f"unknown type {t}")


def _fixed_writer(st: Any) -> WriteFn:
    pack = st.pack

    def write(out: bytearray, value: Any) -> None:
        out += pack(value)

    return write


def _primitive_writer(t: str, flexible: bool, nullable: bool, name: str) -> WriteFn:
    fixed = {INT8: I8, INT16: I16, INT32: I32, INT64: I64, UINT16: U16, UINT32: U32, FLOAT64: F64}
    if t in fixed:
        return _fixed_writer(fixed[t])
    if t == BOOL:
        return lambda out, v: out.append(1 if v else 0)
    if t == UUID:

        def write_uuid(out: bytearray, v: uuid.UUID) -> None:
            out += v.bytes

        return write_uuid

    def check_null(v: Any) -> None:
        if v is None and not nullable:
            raise ValueError(f"{name} is not nullable at this version")

    if t == STRING:
        sw = write_compact_nullable_string if flexible else write_nullable_string

        def write_string(out: bytearray, v: str | None) -> None:
            check_null(v)
            sw(out, v)

        return write_string
    if t in (BYTES, RECORDS):
        bw = write_compact_nullable_bytes if flexible else write_nullable_bytes

        def write_bytes(out: bytearray, v: Any) -> None:
            check_null(v)
            bw(out, None if v is None else _as_bytes(v))

        return write_bytes
    raise TypeError(f"unknown type {t}")


def _field_reader(
    ftype: str | type | Array, version: int, flexible: bool, nullable: bool
) -> ReadFn:
    if isinstance(ftype, str):
        return _primitive_reader(ftype, flexible, nullable)
    if isinstance(ftype, type):
        read_struct = plan(ftype, version, flexible).read
        if not nullable:
            return read_struct

        def read_nullable_struct(r: Reader) -> Any:
            # Kafka's nullable struct: an int8 marker, -1 for null, 1 for a struct that follows.
            marker = r.int8()
            if marker < 0:
                return None
            return read_struct(r)

        return read_nullable_struct
    elem = _field_reader(ftype.of, version, flexible, False)
    length = Reader.compact_array_length if flexible else Reader.array_length

    def read_array(r: Reader) -> list[Any] | None:
        n = length(r)
        if n < 0:
            if not nullable:
                raise ProtocolError("null in a non-nullable array")
            return None
        return [elem(r) for _ in range(n)]

    return read_array


def _field_writer(
    ftype: str | type | Array, version: int, flexible: bool, nullable: bool, name: str
) -> WriteFn:
    if isinstance(ftype, str):
        return _primitive_writer(ftype, flexible, nullable, name)
    if isinstance(ftype, type):
        write_struct = plan(ftype, version, flexible).write
        if not nullable:
            return write_struct

        def write_nullable_struct(out: bytearray, v: Any) -> None:
            if v is None:
                out.append(0xFF)
                return
            out.append(1)
            write_struct(out, v)

        return write_nullable_struct
    elem = _field_writer(ftype.of, version, flexible, False, name)

    def write_array(out: bytearray, v: list[Any] | None) -> None:
        if v is None:
            if not nullable:
                raise ValueError(f"{name} is not nullable at this version")
            if flexible:
                out.append(0)
            else:
                out += b"\xff\xff\xff\xff"
            return
        if flexible:
            write_uvarint(out, len(v) + 1)
        else:
            out += I32.pack(len(v))
        for item in v:
            elem(out, item)

    return write_array


_FIXED = {
    INT8: "b",
    INT16: "h",
    INT32: "i",
    INT64: "q",
    UINT16: "H",
    UINT32: "I",
    FLOAT64: "d",
    BOOL: "?",
}


def _run_reader(st: struct.Struct) -> ReadFn:
    size, unpack = st.size, st.unpack_from

    def read_run(r: Reader) -> tuple[Any, ...]:
        pos = r.pos
        if pos + size > r.end:
            raise ProtocolError(f"truncated: need {size} bytes at {pos}, have {r.end - pos}")
        r.pos = pos + size
        return unpack(r.buf, pos)

    return read_run


def _run_writer(st: struct.Struct, names: tuple[str, ...]) -> WriteFn:
    pack = st.pack
    getter = operator.attrgetter(*names)

    if len(names) == 1:

        def write_one(out: bytearray, obj: Any) -> None:
            out += pack(getter(obj))

        return write_one

    def write_run(out: bytearray, obj: Any) -> None:
        out += pack(*getter(obj))

    return write_run


class Plan:
    """The compiled reader and writer of one struct at one version."""

    __slots__ = ("cls", "fields", "flexible", "tagged", "tags", "version")

    def __init__(self, cls: type, version: int, flexible: bool) -> None:
        self.cls = cls
        self.version = version
        self.flexible = flexible
        self.fields: list[tuple[str | tuple[str, ...], ReadFn, WriteFn]] = []
        self.tagged: list[tuple[int, str, ReadFn, WriteFn, Any]] = []
        self.tags: dict[int, tuple[str, ReadFn]] = {}

    def build(self) -> None:
        version, flexible = self.version, self.flexible
        run: list[tuple[str, str]] = []  # consecutive fixed-width fields: one struct call
        for fld in dataclasses.fields(self.cls):
            meta: FieldMeta | None = fld.metadata.get("kafka")
            if meta is None or version not in meta.versions:
                continue
            nullable = version in meta.nullable
            rd = _field_reader(meta.type, version, flexible, nullable)
            wr = _field_writer(meta.type, version, flexible, nullable, fld.name)
            if flexible and meta.tag is not None and version in meta.tagged:
                if fld.default_factory is not dataclasses.MISSING:
                    default = fld.default_factory()
                else:
                    default = fld.default
                self.tagged.append((meta.tag, fld.name, rd, wr, default))
                self.tags[meta.tag] = (fld.name, rd)
            elif isinstance(meta.type, str) and meta.type in _FIXED:
                run.append((fld.name, _FIXED[meta.type]))
            else:
                self._flush_run(run)
                self.fields.append((fld.name, rd, wr))
        self._flush_run(run)
        self.tagged.sort(key=lambda t: t[0])

    def _flush_run(self, run: list[tuple[str, str]]) -> None:
        if not run:
            return
        names = tuple(name for name, _ in run)
        st = struct.Struct(">" + "".join(code for _, code in run))
        run.clear()
        self.fields.append((names, _run_reader(st), _run_writer(st, names)))

    def read(self, r: Reader) -> Any:
        kwargs: dict[str, Any] = {}
        for name, rd, _ in self.fields:
            if name.__class__ is tuple:
                kwargs.update(zip(name, rd(r), strict=True))
            else:
                kwargs[name] = rd(r)  # type: ignore[index]
        if self.flexible:
            self.read_tagged(r, kwargs)
        return self.cls(**kwargs)

    def read_tagged(self, r: Reader, kwargs: dict[str, Any]) -> None:
        last = -1
        for _ in range(r.uvarint()):
            tag = r.uvarint()
            size = r.uvarint()
            if tag <= last:
                raise ProtocolError(f"tagged fields out of order: {tag} after {last}")
            last = tag
            known = self.tags.get(tag)
            if known is None:
                r.skip(size)
                continue
            start = r.pos
            r.skip(size)
            sub = Reader(r.buf, start, start + size, max_elements=r.elements)
            kwargs[known[0]] = known[1](sub)
            r.elements = sub.elements

    def write(self, out: bytearray, obj: Any) -> None:
        for name, _, wr in self.fields:
            wr(out, obj if name.__class__ is tuple else getattr(obj, name))  # type: ignore[arg-type]
        if self.flexible:
            self.write_tagged(out, obj)

    def write_tagged(self, out: bytearray, obj: Any) -> None:
        present = []
        for tag, name, _, wr, default in self.tagged:
            value = getattr(obj, name)
            if value != default:
                data = bytearray()
                wr(data, value)
                present.append((tag, data))
        write_uvarint(out, len(present))
        for tag, data in present:
            out += uvarint_bytes(tag)
            out += uvarint_bytes(len(data))
            out += data


_PLANS: dict[tuple[type, int, bool], Plan] = {}


def plan(cls: type, version: int, flexible: bool) -> Plan:
    key = (cls, version, flexible)
    p = _PLANS.get(key)
    if p is None:
        p = Plan(cls, version, flexible)
        _PLANS[key] = p  # before build(): recursive types find the plan being built
        try:
            p.build()
        except BaseException:
            del _PLANS[key]
            raise
    return p


def decode_struct(cls: type, data: Buffer | Reader, version: int, flexible: bool) -> Any:
    """Read one ``cls`` from ``data``; ProtocolError on any malformed input."""
    r = data if isinstance(data, Reader) else Reader(data)
    return plan(cls, version, flexible).read(r)


def encode_struct(
    obj: Any, version: int, flexible: bool, out: bytearray | None = None
) -> bytearray:
    out = bytearray() if out is None else out
    plan(type(obj), version, flexible).write(out, obj)
    return out
