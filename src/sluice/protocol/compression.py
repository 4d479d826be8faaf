"""Kafka's batch codecs, decompressed as a stream of bounded chunks (sans-IO: bytes in, bytes out).

A compressed batch of a few KiB can inflate to gigabytes (a "compression bomb"), so nothing in the
broker decompresses a records section in one piece: :func:`inflate` yields it in chunks of at most
``chunk_size`` bytes, each codec's decoder keeping only its own fixed state (zlib's 32 KiB window,
an lz4 block of at most 4 MiB, a zstd window of at most :data:`ZSTD_MAX_WINDOW`). A consumer that
stops early never pays for the rest.

Raw snappy (what librdkafka sends) is the one format that cannot stream: it is one block. Its
declared length is read first and the block is refused if it exceeds ``max_block`` or more than
snappy can encode in the bytes present (at most 64 bytes per 3-byte copy), so a forged length
never makes the broker allocate anything. Java clients frame snappy the xerial way: a sequence of
small raw blocks, each checked the same way.

Errors are typed: malformed or truncated input raises :class:`CorruptRecordError`; output past a
caller's ``limit`` raises :class:`UncompressedTooLargeError`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from sluice.errors import CorruptRecordError, InvalidRecordError

# cramjam, lz4 and zstandard are imported where a codec is used: together they cost more than
# the rest of the protocol package, and most processes (an embedded broker in a test, the tools)
# never decompress anything.


class Compression:
    """The codec ids of a batch's attributes (bits 0-2)."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


CODEC_NAMES = {
    Compression.NONE: "none",
    Compression.GZIP: "gzip",
    Compression.SNAPPY: "snappy",
    Compression.LZ4: "lz4",
    Compression.ZSTD: "zstd",
}

CHUNK_SIZE = 64 * 1024
"""Default bound of one decompressed chunk: the fixed buffer of every streaming consumer."""
ZSTD_MAX_WINDOW = 1 << 25
"""Largest zstd window decoded (32 MiB): what zstd levels up to 20 use even when the producer
streams without declaring a size (Java's zstd-jni). A window is decompressed data the decoder
keeps, so it is the memory one zstd decode can take; bigger windows are refused."""
DEFAULT_MAX_BLOCK = 64 * 1024 * 1024
"""Default bound of an unstreamable (raw snappy) block decoded whole."""

_IN_SLICE = 64 * 1024
"""Input fed to zlib and lz4 per call: both copy their unconsumed input on every call, so feeding
a whole batch at once would cost O(input) per output chunk."""
_SNAPPY_MAX_RATIO = 22
"""Snappy's densest element is a 3-byte copy of 64 bytes (21.3x): no honest block inflates more."""
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = 16  # magic, version (int32), compatible version (int32)
_XERIAL_BLOCK = 32 * 1024  # what Java's SnappyOutputStream (and so Kafka's broker) writes
_LENGTH = struct.Struct(">i")
_ZSTD_MAGIC = 0xFD2FB528


class UncompressedTooLargeError(InvalidRecordError):
    """Decompressed data beyond what the caller (a broker setting) allows for one batch."""


def inflate(
    codec: int,
    data: bytes | bytearray | memoryview,
    *,
    chunk_size: int = CHUNK_SIZE,
    limit: int | None = None,
    max_block: int = DEFAULT_MAX_BLOCK,
) -> Iterator[bytes]:
    """Yield the decompressed ``data`` in chunks of 1 to ``chunk_size`` bytes.

    ``limit`` bounds the total (UncompressedTooLargeError past it); ``max_block`` bounds a raw
    snappy block, the one thing decoded whole. Raises CorruptRecordError for malformed or
    truncated input (detected when the stream is read to its end)."""
    if codec == Compression.NONE:
        chunks = _plain(memoryview(data), chunk_size)
    elif codec == Compression.GZIP:
        chunks = _gzip(memoryview(data), chunk_size)
    elif codec == Compression.SNAPPY:
        chunks = _snappy(memoryview(data), chunk_size, max_block if limit is None else min(limit, max_block))
    elif codec == Compression.LZ4:
        chunks = _lz4(memoryview(data), chunk_size)
    elif codec == Compression.ZSTD:
        chunks = _zstd(memoryview(data), chunk_size)
    else:
        raise CorruptRecordError(f"unknown compression codec {codec}")
    if limit is None:
        return chunks
    return _bounded(chunks, limit, codec)


def decompress(
    codec: int, data: bytes | bytearray | memoryview, *, limit: int, max_block: int = DEFAULT_MAX_BLOCK
) -> bytes:
    """The whole decompressed ``data``, refused (UncompressedTooLargeError) past ``limit`` bytes:
    for the few paths that must hold every record at once (recompression, tools)."""
    return b"".join(inflate(codec, data, limit=limit, max_block=max_block, chunk_size=1 << 20))


def compress(codec: int, data: bytes | bytearray | memoryview) -> bytes:
    """Compress a records section the way Kafka's own broker does (snappy: xerial framing, which
    every client reads)."""
    raw = bytes(data)
    if codec == Compression.NONE:
        return raw
    if codec == Compression.SNAPPY:
        return compress_xerial(raw)
    if codec == Compression.LZ4:
        import lz4.frame

        return bytes(lz4.frame.compress(raw))
    import cramjam

    if codec == Compression.GZIP:
        return bytes(cramjam.gzip.compress(raw))
    if codec == Compression.ZSTD:
        return bytes(cramjam.zstd.compress(raw))
    raise InvalidRecordError(f"unknown compression codec {codec}")


def compress_raw_snappy(data: bytes | bytearray | memoryview) -> bytes:
    """One raw snappy block, as librdkafka sends it."""
    import cramjam

    return bytes(cramjam.snappy.compress_raw(bytes(data)))


def compress_xerial(data: bytes | bytearray | memoryview) -> bytes:
    """Xerial-framed snappy in 32 KiB blocks, as Java's SnappyOutputStream writes it."""
    import cramjam

    view = memoryview(data)
    out = bytearray(_XERIAL_MAGIC)
    out += struct.pack(">ii", 1, 1)
    for start in range(0, len(view), _XERIAL_BLOCK):
        block = bytes(cramjam.snappy.compress_raw(bytes(view[start : start + _XERIAL_BLOCK])))
        out += _LENGTH.pack(len(block))
        out += block
    return bytes(out)


# -- one generator per codec -------------------------------------------------------------------


def _bounded(chunks: Iterator[bytes], limit: int, codec: int) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise UncompressedTooLargeError(
                f"{CODEC_NAMES[codec]} records decompress to more than {limit} bytes "
                "(sluice.batch.uncompressed.max.bytes)"
            )
        yield chunk


def _plain(data: memoryview, chunk_size: int) -> Iterator[bytes]:
    for start in range(0, len(data), chunk_size):
        yield bytes(data[start : start + chunk_size])


def _gzip(data: memoryview, chunk_size: int) -> Iterator[bytes]:
    """Kafka's gzip is the gzip format (GZIPOutputStream, zlib's 15+16); members may follow each
    other, as GZIPInputStream reads them."""
    if not data:
        raise CorruptRecordError("gzip records are empty")
    pos = 0
    end = len(data)
    d = zlib.decompressobj(31)
    pending = b""
    try:
        while True:
            if not pending:
                if pos >= end:
                    if d.eof:
                        return
                    # No input left: whatever zlib still holds comes out now, or it is truncated.
                    out = d.decompress(b"", chunk_size)
                    if out:
                        yield out
                        continue
                    raise CorruptRecordError("gzip records are truncated")
                pending = bytes(data[pos : pos + _IN_SLICE])
                pos += len(pending)
            out = d.decompress(pending, chunk_size)
            pending = d.unconsumed_tail
            if out:
                yield out
            if d.eof:
                # At the end of a member zlib reports what follows as unused_data (and, when
                # the output was cut at max_length, as unconsumed_tail too: not both).
                rest = d.unused_data + bytes(data[pos:])
                if not rest:
                    return
                data, pos, end, pending = memoryview(rest), 0, len(rest), b""
                d = zlib.decompressobj(31)
    except zlib.error as exc:
        raise CorruptRecordError(f"gzip records are malformed: {exc}") from None


def _lz4(data: memoryview, chunk_size: int) -> Iterator[bytes]:
    """Standard LZ4 frames (Kafka's v2 batches; the broken-checksum variant was magic 0/1 only)."""
    import lz4.frame

    if not data:
        raise CorruptRecordError("lz4 records are empty")
    d = lz4.frame.LZ4FrameDecompressor()
    pos = 0
    end = len(data)
    ended = False
    try:
        while True:
            if d.needs_input:
                if pos >= end:
                    if not ended:
                        raise CorruptRecordError("lz4 records are truncated")
                    return
                piece = bytes(data[pos : pos + _IN_SLICE])
                pos += len(piece)
            else:
                piece = b""
            out = d.decompress(piece, max_length=chunk_size)
            ended = d.eof
            if out:
                yield out
            if ended and d.unused_data:
                # Another frame follows: start it from its first byte.
                rest = d.unused_data + bytes(data[pos:])
                data, pos, end = memoryview(rest), 0, len(rest)
                d = lz4.frame.LZ4FrameDecompressor()
    except RuntimeError as exc:
        raise CorruptRecordError(f"lz4 records are malformed: {exc}") from None


def _zstd(data: memoryview, chunk_size: int) -> Iterator[bytes]:
    import zstandard

    if not data:
        raise CorruptRecordError("zstd records are empty")
    try:
        window = zstandard.get_frame_parameters(bytes(data[:18])).window_size
    except zstandard.ZstdError as exc:
        raise CorruptRecordError(f"zstd records are malformed: {exc}") from None
    if window > ZSTD_MAX_WINDOW:
        raise InvalidRecordError(
            f"zstd records need a {window}-byte window; the broker decodes windows of up to "
            f"{ZSTD_MAX_WINDOW} bytes (compression levels up to 20)"
        )
    dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
    reader = dctx.stream_reader(data, read_size=_IN_SLICE, read_across_frames=True)
    try:
        while True:
            out = reader.read(chunk_size)
            if not out:
                break
            yield out
    except zstandard.ZstdError as exc:
        raise CorruptRecordError(f"zstd records are malformed: {exc}") from None
    # The reader stops quietly where the input does: only the frames' structure tells a whole
    # stream from a truncated one. Walked once, at the end, by readers that get there.
    problem = _zstd_frames_problem(data)
    if problem:
        raise CorruptRecordError(f"zstd records are {problem}")


def _zstd_frames_problem(data: memoryview) -> str | None:
    """Walk the frames' headers and block headers (RFC 8878) without decoding; None if every
    frame is whole and nothing follows the last one."""
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 4:
            return "truncated (frame magic)"
        (magic,) = struct.unpack_from("<I", data, pos)
        if magic & 0xFFFFFFF0 == 0x184D2A50:  # skippable frame
            if end - pos < 8:
                return "truncated (skippable frame)"
            (size,) = struct.unpack_from("<I", data, pos + 4)
            pos += 8 + size
            continue
        if magic != _ZSTD_MAGIC:
            return "malformed (not a zstd frame)"
        pos += 4
        if pos >= end:
            return "truncated (frame header)"
        fhd = data[pos]
        single_segment = (fhd >> 5) & 1
        fcs_size = (0 if not single_segment else 1, 2, 4, 8)[fhd >> 6]
        pos += 1 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3] + fcs_size
        while True:
            if end - pos < 3:
                return "truncated (block header)"
            b = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            kind, size = (b >> 1) & 3, b >> 3
            pos += 3 + (1 if kind == 1 else size)
            if kind == 3:
                return "malformed (reserved block type)"
            if b & 1:
                break
        if (fhd >> 2) & 1:
            pos += 4  # content checksum
        if pos > end:
            return "truncated (last block)"
    return None


def _snappy(data: memoryview, chunk_size: int, max_block: int) -> Iterator[bytes]:
    if bytes(data[: len(_XERIAL_MAGIC)]) == _XERIAL_MAGIC:
        yield from _xerial(data, chunk_size, max_block)
    else:
        yield from _slices(_snappy_block(data, max_block), chunk_size)


def _xerial(data: memoryview, chunk_size: int, max_block: int) -> Iterator[bytes]:
    pos, end = _XERIAL_HEADER, len(data)
    if end < pos:
        raise CorruptRecordError("snappy (xerial) records are truncated in their header")
    while pos < end:
        if end - pos < 4:
            raise CorruptRecordError("snappy (xerial) records are truncated at a block length")
        (n,) = _LENGTH.unpack_from(data, pos)
        pos += 4
        if n < 0 or n > end - pos:
            raise CorruptRecordError(
                f"snappy (xerial) block of {n} bytes at byte {pos} runs past the records"
            )
        yield from _slices(_snappy_block(data[pos : pos + n], max_block), chunk_size)
        pos += n


def _snappy_block(block: memoryview, max_block: int) -> memoryview:
    import cramjam

    raw = bytes(block)
    try:
        declared = cramjam.snappy.decompress_raw_len(raw)
    except cramjam.DecompressionError as exc:
        raise CorruptRecordError(f"snappy records are malformed: {exc}") from None
    if declared > _SNAPPY_MAX_RATIO * len(raw):
        raise CorruptRecordError(
            f"snappy block declares {declared} bytes, more than snappy can encode in {len(raw)}"
        )
    if declared > max_block:
        raise UncompressedTooLargeError(
            f"snappy block declares {declared} bytes, over the {max_block}-byte bound of a block "
            "decoded whole (sluice.batch.uncompressed.max.bytes)"
        )
    try:
        return memoryview(cramjam.snappy.decompress_raw(raw))
    except cramjam.DecompressionError as exc:
        raise CorruptRecordError(f"snappy records are malformed: {exc}") from None


def _slices(view: memoryview, chunk_size: int) -> Iterator[bytes]:
    for start in range(0, len(view), chunk_size):
        yield bytes(view[start : start + chunk_size])
