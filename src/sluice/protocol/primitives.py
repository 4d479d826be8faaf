"""Kafka wire primitives: a bounds-checked reader over a buffer and append-to-bytearray writers.

Every read checks the remaining length first, so malformed input surfaces as
:class:`ProtocolError` (never ``IndexError`` or ``struct.error``). Byte fields come back as
``memoryview`` slices of the input: record sets in particular are never copied by the codec.
"""

from __future__ import annotations

import struct
import sys
import uuid
from collections.abc import Callable

from sluice.errors import ErrorCode, SluiceError

Buffer = bytes | bytearray | memoryview
"""Any buffer the codec accepts or produces."""

ZERO_UUID = uuid.UUID(int=0)


class ProtocolError(SluiceError):
    """Bytes that are not a well-formed Kafka message (truncated, bad lengths, bad UTF-8).

    Kafka answers such a request by closing the connection; the code is INVALID_REQUEST.
    """

    code = ErrorCode.INVALID_REQUEST


class TooManyElementsError(ProtocolError):
    """A request whose arrays hold more elements in all than the reader's budget: each becomes
    an object of its own (and often an answer of its own), so a few MiB of tiny elements cost
    the broker seconds and hundreds of MiB before any handler could refuse them."""


class UnsupportedVersionError(ProtocolError):
    """An API key or version this codec does not speak. ``api_key``/``api_version`` tell which;
    ``correlation_id``/``client_id`` are set when the header could be read, so the broker can
    still answer (ApiVersions does, with a v0 response and this code)."""

    code = ErrorCode.UNSUPPORTED_VERSION

    def __init__(
        self,
        message: str,
        api_key: int,
        api_version: int,
        correlation_id: int | None = None,
        client_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.api_key = api_key
        self.api_version = api_version
        self.correlation_id = correlation_id
        self.client_id = client_id


I8 = struct.Struct(">b")
I16 = struct.Struct(">h")
I32 = struct.Struct(">i")
I64 = struct.Struct(">q")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
F64 = struct.Struct(">d")


_u8: Callable[[Buffer, int], tuple[int]] = I8.unpack_from
_u16: Callable[[Buffer, int], tuple[int]] = I16.unpack_from
_u32: Callable[[Buffer, int], tuple[int]] = I32.unpack_from
_u64: Callable[[Buffer, int], tuple[int]] = I64.unpack_from


class Reader:
    """A cursor over ``buf[pos:end]``. Methods consume and return one value each."""

    __slots__ = ("buf", "elements", "end", "pos")

    def __init__(
        self, data: Buffer, pos: int = 0, end: int | None = None, *, max_elements: int = sys.maxsize
    ) -> None:
        buf = data if isinstance(data, memoryview) else memoryview(data)
        if buf.format != "B" or buf.ndim != 1:
            buf = buf.cast("B")
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end
        self.elements = max_elements
        """Array elements the rest of the message may still hold (TooManyElementsError past it)."""

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def _take(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise ProtocolError(f"truncated: need {n} bytes at {pos}, have {self.end - pos}")
        self.pos = pos + n
        return pos

    def skip(self, n: int) -> None:
        self._take(n)

    def int8(self) -> int:
        pos = self.pos
        if pos + 1 > self.end:
            raise ProtocolError(f"truncated: need 1 bytes at {pos}, have {self.end - pos}")
        self.pos = pos + 1
        return _u8(self.buf, pos)[0]

    def bool(self) -> bool:
        return self.buf[self._take(1)] != 0

    def int16(self) -> int:
        pos = self.pos
        if pos + 2 > self.end:
            raise ProtocolError(f"truncated: need 2 bytes at {pos}, have {self.end - pos}")
        self.pos = pos + 2
        return _u16(self.buf, pos)[0]

    def uint16(self) -> int:
        return int(U16.unpack_from(self.buf, self._take(2))[0])

    def int32(self) -> int:
        pos = self.pos
        if pos + 4 > self.end:
            raise ProtocolError(f"truncated: need 4 bytes at {pos}, have {self.end - pos}")
        self.pos = pos + 4
        return _u32(self.buf, pos)[0]

    def uint32(self) -> int:
        return int(U32.unpack_from(self.buf, self._take(4))[0])

    def int64(self) -> int:
        pos = self.pos
        if pos + 8 > self.end:
            raise ProtocolError(f"truncated: need 8 bytes at {pos}, have {self.end - pos}")
        self.pos = pos + 8
        return _u64(self.buf, pos)[0]

    def float64(self) -> float:
        return float(F64.unpack_from(self.buf, self._take(8))[0])

    def uuid(self) -> uuid.UUID:
        pos = self._take(16)
        return uuid.UUID(bytes=bytes(self.buf[pos : pos + 16]))

    def uvarint(self, max_bytes: int = 5) -> int:
        """Unsigned LEB128; ``max_bytes`` is 5 for 32-bit values and 10 for 64-bit ones."""
        buf, pos, end = self.buf, self.pos, self.end
        result = 0
        shift = 0
        for i in range(max_bytes):
            if pos + i >= end:
                raise ProtocolError(f"truncated varint at {pos}")
            b = buf[pos + i]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                self.pos = pos + i + 1
                return result
            shift += 7
        raise ProtocolError(f"varint longer than {max_bytes} bytes at {pos}")

    def uvarlong(self) -> int:
        return self.uvarint(10)

    def varint(self) -> int:
        v = self.uvarint(5)
        return (v >> 1) ^ -(v & 1)

    def varlong(self) -> int:
        v = self.uvarint(10)
        return (v >> 1) ^ -(v & 1)

    def raw(self, n: int) -> memoryview:
        pos = self._take(n)
        return self.buf[pos : pos + n]

    def _text(self, n: int) -> str:
        pos = self._take(n)
        try:
            return str(self.buf[pos : pos + n], "utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolError(f"invalid UTF-8 in string at {pos}") from e

    # Legacy (int16/int32 length, -1 = null) and compact (uvarint length + 1, 0 = null) forms.

    def nullable_string(self) -> str | None:
        n = self.int16()
        if n < 0:
            if n != -1:
                raise ProtocolError(f"negative string length {n}")
            return None
        return self._text(n)

    def string(self) -> str:
        s = self.nullable_string()
        if s is None:
            raise ProtocolError("null in a non-nullable string")
        return s

    def compact_nullable_string(self) -> str | None:
        n = self.uvarint()
        return None if n == 0 else self._text(n - 1)

    def compact_string(self) -> str:
        s = self.compact_nullable_string()
        if s is None:
            raise ProtocolError("null in a non-nullable compact string")
        return s

    def nullable_bytes(self) -> memoryview | None:
        n = self.int32()
        if n < 0:
            if n != -1:
                raise ProtocolError(f"negative bytes length {n}")
            return None
        return self.raw(n)

    def bytes(self) -> memoryview:
        b = self.nullable_bytes()
        if b is None:
            raise ProtocolError("null in non-nullable bytes")
        return b

    def compact_nullable_bytes(self) -> memoryview | None:
        n = self.uvarint()
        return None if n == 0 else self.raw(n - 1)

    def compact_bytes(self) -> memoryview:
        b = self.compact_nullable_bytes()
        if b is None:
            raise ProtocolError("null in non-nullable compact bytes")
        return b

    def array_length(self) -> int:
        """Legacy array count; -1 (null) is returned as -1. The count is checked against the
        bytes left (every element takes at least one byte) so garbage cannot ask for 2**31."""
        n = self.int32()
        if n < -1:
            raise ProtocolError(f"negative array length {n}")
        if n > self.end - self.pos:
            raise ProtocolError(f"array of {n} elements in {self.end - self.pos} bytes")
        if n > 0:
            self._count(n)
        return n

    def _count(self, n: int) -> None:
        self.elements -= n
        if self.elements < 0:
            raise TooManyElementsError(f"more array elements than allowed (an array of {n})")

    def compact_array_length(self) -> int:
        """Compact array count, -1 for null."""
        n = self.uvarint() - 1
        if n > self.end - self.pos:
            raise ProtocolError(f"array of {n} elements in {self.end - self.pos} bytes")
        if n > 0:
            self._count(n)
        return n

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()
            self.skip(self.uvarint())


# -- writers: append to a bytearray ------------------------------------------------------------


def uvarint_bytes(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"unsigned varint of negative {value}")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def zigzag(value: int, bits: int = 32) -> int:
    return (value << 1) ^ (value >> (bits - 1))


def write_uvarint(out: bytearray, value: int) -> None:
    if 0 <= value < 0x80:
        out.append(value)
    else:
        out += uvarint_bytes(value)


def write_varint(out: bytearray, value: int) -> None:
    write_uvarint(out, zigzag(value, 32))


def write_varlong(out: bytearray, value: int) -> None:
    write_uvarint(out, zigzag(value, 64))


def write_nullable_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out += b"\xff\xff"
        return
    data = value.encode()
    if len(data) > 0x7FFF:
        raise ValueError(f"string of {len(data)} bytes exceeds int16 length")
    out += I16.pack(len(data))
    out += data


def write_compact_nullable_string(out: bytearray, value: str | None) -> None:
    if value is None:
        out.append(0)
        return
    data = value.encode()
    write_uvarint(out, len(data) + 1)
    out += data


def write_nullable_bytes(out: bytearray, value: Buffer | None) -> None:
    if value is None:
        out += b"\xff\xff\xff\xff"
        return
    out += I32.pack(len(value) if not isinstance(value, memoryview) else value.nbytes)
    out += value


def write_compact_nullable_bytes(out: bytearray, value: Buffer | None) -> None:
    if value is None:
        out.append(0)
        return
    write_uvarint(out, (len(value) if not isinstance(value, memoryview) else value.nbytes) + 1)
    out += value


def write_uuid(out: bytearray, value: uuid.UUID) -> None:
    out += value.bytes
