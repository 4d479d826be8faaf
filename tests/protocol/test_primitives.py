"""Primitive encodings: property round trips, known byte forms, and typed errors on bad input."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.protocol.primitives import (
    I16,
    I32,
    I64,
    ProtocolError,
    Reader,
    write_compact_nullable_bytes,
    write_compact_nullable_string,
    write_nullable_bytes,
    write_nullable_string,
    write_uuid,
    write_uvarint,
    write_varint,
    write_varlong,
)


@given(st.integers(0, 2**32 - 1))
def test_uvarint_round_trip(v: int) -> None:
    out = bytearray()
    write_uvarint(out, v)
    r = Reader(out)
    assert r.uvarint() == v
    assert r.remaining == 0
    assert len(out) == max(1, (v.bit_length() + 6) // 7)


@given(st.integers(-(2**31), 2**31 - 1))
def test_varint_round_trip(v: int) -> None:
    out = bytearray()
    write_varint(out, v)
    assert Reader(out).varint() == v


@given(st.integers(-(2**63), 2**63 - 1))
def test_varlong_round_trip(v: int) -> None:
    out = bytearray()
    write_varlong(out, v)
    assert Reader(out).varlong() == v


def test_varint_known_forms() -> None:
    # zigzag: 0 -> 0, -1 -> 1, 1 -> 2, 300 -> 600 = ac 04 (as in the protobuf docs)
    for v, b in [(0, "00"), (-1, "01"), (1, "02"), (-64, "7f"), (64, "8001"), (300, "d804")]:
        out = bytearray()
        write_varint(out, v)
        assert out.hex() == b
    out = bytearray()
    write_uvarint(out, 300)
    assert out.hex() == "ac02"


@given(st.one_of(st.none(), st.text(max_size=50)))
def test_strings_round_trip(s: str | None) -> None:
    out = bytearray()
    write_nullable_string(out, s)
    write_compact_nullable_string(out, s)
    r = Reader(out)
    assert r.nullable_string() == s
    assert r.compact_nullable_string() == s
    assert r.remaining == 0


@given(st.one_of(st.none(), st.binary(max_size=300)))
def test_bytes_round_trip(b: bytes | None) -> None:
    out = bytearray()
    write_nullable_bytes(out, b)
    write_compact_nullable_bytes(out, b)
    r = Reader(out)
    assert r.nullable_bytes() == b
    assert r.compact_nullable_bytes() == b
    assert r.remaining == 0


@given(st.integers(-(2**63), 2**63 - 1), st.uuids())
def test_fixed_width(v: int, u: uuid.UUID) -> None:
    out = bytearray(I16.pack(v >> 48) + I32.pack(v >> 32) + I64.pack(v) + b"\x01")
    write_uuid(out, u)
    r = Reader(out)
    assert (r.int16(), r.int32(), r.int64(), r.bool(), r.uuid()) == (v >> 48, v >> 32, v, True, u)


def test_null_and_empty_forms() -> None:
    out = bytearray()
    write_nullable_string(out, None)
    write_nullable_string(out, "")
    write_compact_nullable_string(out, None)
    write_compact_nullable_string(out, "")
    write_nullable_bytes(out, None)
    assert out.hex() == "ffff00000001ffffffff"


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("int8", ""),
        ("int16", "00"),
        ("int32", "000000"),
        ("int64", "00" * 7),
        ("uuid", "00" * 15),
        ("uvarint", "80"),
        ("uvarint", "ffffffffff7f"),  # more than 5 bytes
        ("string", "ffff"),  # null where not nullable
        ("string", "fffe"),  # negative length
        ("string", "0005616263"),  # shorter than its length
        ("string", "0002c328"),  # invalid UTF-8
        ("compact_string", "00"),
        ("compact_string", "05616263"),
        ("bytes", "ffffffff"),
        ("nullable_bytes", "fffffff0"),
        ("nullable_bytes", "7fffffff00"),
        ("compact_bytes", "ff"),
        ("array_length", "7fffffff"),  # more elements than bytes left
        ("array_length", "fffffffe"),
        ("compact_array_length", "ffffffff07"),
        ("skip_tagged_fields", "010105aa"),
    ],
)
def test_bad_input_raises_protocol_error(method: str, data: str) -> None:
    with pytest.raises(ProtocolError):
        getattr(Reader(bytes.fromhex(data)), method)()


def test_reader_respects_its_end() -> None:
    r = Reader(b"\x00\x00\x00\x01\x00\x00\x00\x02", 0, 4)
    assert r.int32() == 1
    with pytest.raises(ProtocolError):
        r.int32()
