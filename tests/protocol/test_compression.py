"""Streaming decompression of every Kafka codec: identical output to the one-shot decoders, chunks
never above their bound, typed errors for truncated or garbage input, and bombs streamed through
without ever holding their output."""

from __future__ import annotations

import contextlib
import gzip
import os
import struct
import tracemalloc
from collections.abc import Callable

import cramjam
import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.errors import CorruptRecordError, InvalidRecordError
from sluice.protocol.compression import (
    ZSTD_MAX_WINDOW,
    Compression,
    UncompressedTooLargeError,
    compress,
    compress_raw_snappy,
    compress_xerial,
    decompress,
    inflate,
)

DATA = os.urandom(70_000) + b"kafka " * 60_000 + os.urandom(3_000)


def _zstd_streamed(data: bytes) -> bytes:
    """No content size in the frame, a window from the level: what Java's zstd-jni writes."""
    obj = zstandard.ZstdCompressor(level=3).compressobj()
    return obj.compress(data) + obj.flush()


# Each codec as producers write it: (codec, name, compressor).
ENCODINGS: list[tuple[int, str, Callable[[bytes], bytes]]] = [
    (Compression.GZIP, "gzip-cramjam", lambda d: bytes(cramjam.gzip.compress(d))),
    (Compression.GZIP, "gzip-two-members", lambda d: gzip.compress(d[:999]) + gzip.compress(d[999:])),
    (Compression.SNAPPY, "snappy-raw", compress_raw_snappy),
    (Compression.SNAPPY, "snappy-xerial", compress_xerial),
    (Compression.LZ4, "lz4-cramjam", lambda d: bytes(cramjam.lz4.compress(d))),
    (Compression.LZ4, "lz4-two-frames", lambda d: lz4.frame.compress(d[:7]) + lz4.frame.compress(d[7:])),
    (Compression.ZSTD, "zstd-cramjam", lambda d: bytes(cramjam.zstd.compress(d))),
    (Compression.ZSTD, "zstd-streamed", _zstd_streamed),
    (
        Compression.ZSTD,
        "zstd-two-frames",
        lambda d: bytes(cramjam.zstd.compress(d[:10])) + _zstd_streamed(d[10:]),
    ),
]
IDS = [name for _, name, _ in ENCODINGS]


def _drain(chunks: object) -> tuple[int, int]:
    """(total bytes, largest chunk) of an iterator of chunks, holding none of them."""
    total = biggest = 0
    for chunk in chunks:  # type: ignore[attr-defined]
        assert len(chunk) > 0
        total += len(chunk)
        biggest = max(biggest, len(chunk))
    return total, biggest


@pytest.mark.parametrize(("codec", "name", "encode"), ENCODINGS, ids=IDS)
@pytest.mark.parametrize("chunk_size", [1, 1000, 65536])
def test_round_trip_in_bounded_chunks(
    codec: int, name: str, encode: Callable[[bytes], bytes], chunk_size: int
) -> None:
    data = DATA if chunk_size > 1 else DATA[:20_000]
    chunks = list(inflate(codec, encode(data), chunk_size=chunk_size))
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) <= chunk_size
    assert min(len(c) for c in chunks) > 0


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD])
def test_what_the_broker_compresses_every_client_decodes(codec: int) -> None:
    """compress() (recompression) agrees with the reference one-shot decoders."""
    packed = compress(codec, DATA)
    references: dict[int, Callable[[bytes], bytes]] = {
        Compression.GZIP: lambda b: bytes(cramjam.gzip.decompress(b)),
        Compression.LZ4: lambda b: bytes(cramjam.lz4.decompress(b)),
        Compression.ZSTD: lambda b: bytes(cramjam.zstd.decompress(b)),
        Compression.SNAPPY: _xerial_reference,
    }
    assert references[codec](packed) == DATA
    assert decompress(codec, packed, limit=len(DATA)) == DATA


def _xerial_reference(blob: bytes) -> bytes:
    assert blob.startswith(b"\x82SNAPPY\x00")
    out, pos = bytearray(), 16
    while pos < len(blob):
        (n,) = struct.unpack_from(">i", blob, pos)
        out += bytes(cramjam.snappy.decompress_raw(blob[pos + 4 : pos + 4 + n]))
        pos += 4 + n
    return bytes(out)


@given(data=st.binary(max_size=5000), index=st.integers(0, len(ENCODINGS) - 1), chunk=st.integers(1, 3000))
@settings(max_examples=200, deadline=None)
def test_round_trip_of_any_bytes(data: bytes, index: int, chunk: int) -> None:
    codec, _, encode = ENCODINGS[index]
    assert b"".join(inflate(codec, encode(data), chunk_size=chunk)) == data


SINGLE_STREAM = [e for e in ENCODINGS if "two" not in e[1]]
"""Encodings whose every proper prefix is truncated (a prefix of two frames can be one whole)."""


@pytest.mark.parametrize(("codec", "name", "encode"), SINGLE_STREAM, ids=[e[1] for e in SINGLE_STREAM])
def test_every_truncation_is_a_corrupt_message(
    codec: int, name: str, encode: Callable[[bytes], bytes]
) -> None:
    blob = encode(DATA[:5000] + b"z" * 5000)
    cuts = {*range(0, min(len(blob), 40)), *range(40, len(blob), max(1, len(blob) // 50)), len(blob) - 1}
    if name == "snappy-xerial":
        cuts.discard(16)  # the xerial header alone is a whole, empty stream
    for cut in sorted(cuts):
        with pytest.raises(CorruptRecordError):
            _drain(inflate(codec, blob[:cut]))


@pytest.mark.parametrize("codec", [Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD])
@given(garbage=st.binary(min_size=0, max_size=300))
@settings(max_examples=100, deadline=None)
def test_garbage_is_a_typed_error(codec: int, garbage: bytes) -> None:
    with contextlib.suppress(CorruptRecordError, InvalidRecordError):  # refused with a Kafka code
        _drain(inflate(codec, garbage))


@pytest.mark.parametrize(("codec", "name", "encode"), ENCODINGS, ids=IDS)
def test_trailing_garbage_is_refused(codec: int, name: str, encode: Callable[[bytes], bytes]) -> None:
    with pytest.raises(CorruptRecordError):
        _drain(inflate(codec, encode(DATA[:3000]) + b"\x01garbage-after-the-stream"))


def test_zstd_bomb_of_1_gib_streams_without_being_held() -> None:
    """32 KiB of zstd inflating to 1 GiB (the issue's bomb) streams through 64 KiB chunks: the
    decoder's window is its only state, and no Python object ever holds more than one chunk."""
    obj = zstandard.ZstdCompressor(level=3).compressobj()
    bomb = b"".join(obj.compress(bytes(1 << 20)) for _ in range(1024)) + obj.flush()
    assert len(bomb) < 64 * 1024
    tracemalloc.start()
    try:
        total, biggest = _drain(inflate(Compression.ZSTD, bomb, chunk_size=65536))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 1 << 30
    assert biggest == 65536
    assert peak < 1 << 20, f"Python held {peak} bytes while streaming"


@pytest.mark.parametrize(
    ("codec", "bomb", "ratio"),
    [
        (Compression.GZIP, lambda n: bytes(cramjam.gzip.compress(bytes(n), level=9)), 1000),
        (Compression.LZ4, lambda n: lz4.frame.compress(bytes(n)), 200),
        (Compression.SNAPPY, lambda n: compress_xerial(bytes(n)), 20),  # snappy tops out at ~21x
    ],
    ids=["gzip", "lz4", "snappy-xerial"],
)
def test_other_bombs_stream_in_bounded_memory(
    codec: int, bomb: Callable[[int], bytes], ratio: int
) -> None:
    size = 256 << 20
    blob = bomb(size)
    assert len(blob) * ratio < size
    tracemalloc.start()
    try:
        total, biggest = _drain(inflate(codec, blob, chunk_size=65536))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert biggest <= 65536
    assert peak < 2 << 20, f"Python held {peak} bytes while streaming"


@pytest.mark.parametrize(("codec", "name", "encode"), ENCODINGS, ids=IDS)
def test_limit_refuses_past_it(codec: int, name: str, encode: Callable[[bytes], bytes]) -> None:
    blob = encode(DATA)
    assert decompress(codec, blob, limit=len(DATA)) == DATA
    with pytest.raises(UncompressedTooLargeError, match=r"sluice\.batch\.uncompressed\.max\.bytes"):
        decompress(codec, blob, limit=len(DATA) - 1)


def test_raw_snappy_lying_about_its_length_is_refused_before_allocating() -> None:
    """Raw snappy is one block: its declared length is checked against what snappy can encode in
    the bytes present, and against the block bound, before anything is decoded."""
    block = compress_raw_snappy(b"abc" * 10)
    forged = b"\xff\xff\xff\xff\x0f" + block[1:]  # declares 4 GiB in ~20 bytes
    with pytest.raises(CorruptRecordError, match="more than snappy can encode"):
        _drain(inflate(Compression.SNAPPY, forged))
    honest = compress_raw_snappy(bytes(1 << 20))
    with pytest.raises(UncompressedTooLargeError, match="decoded whole"):
        _drain(inflate(Compression.SNAPPY, honest, max_block=1 << 19))
    assert _drain(inflate(Compression.SNAPPY, honest, max_block=1 << 20))[0] == 1 << 20


def test_zstd_window_beyond_the_bound_is_refused_with_a_reason() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(
        1, window_log=26, write_content_size=False
    )
    obj = zstandard.ZstdCompressor(compression_params=params).compressobj()
    blob = obj.compress(b"x" * 1000) + obj.flush()
    assert zstandard.get_frame_parameters(blob).window_size > ZSTD_MAX_WINDOW
    with pytest.raises(InvalidRecordError, match="window"):
        _drain(inflate(Compression.ZSTD, blob))


def test_unknown_codec_is_corrupt() -> None:
    with pytest.raises(CorruptRecordError, match=r"codec 6"):
        _drain(inflate(6, b"data"))


def test_none_is_sliced() -> None:
    assert list(inflate(Compression.NONE, b"abcdefg", chunk_size=3)) == [b"abc", b"def", b"g"]
