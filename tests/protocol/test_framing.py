"""The frame reader, sans-IO: a stream cut into any reads gives the same frames, sizes are checked
before a body is allocated, big frames grow only as the budget allows, small frames are copied
once, and every byte taken from the budget is given back."""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.protocol.framing import FrameReader, FrameSizeError, Unbounded, frame_size
from sluice.protocol.primitives import ProtocolError

# Small sizes, so that a few KiB exercise every path: shared buffer growth, big frames, growth.
SMALL = {"buffer_min": 64, "buffer_max": 256, "first_body": 128, "min_growth": 32}


class Pool:
    """A budget with an optional limit that records what it lent."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0

    def room(self) -> int:
        return sys.maxsize if self.limit is None else max(0, self.limit - self.used)

    def take(self, nbytes: int) -> None:
        assert nbytes >= 0
        self.used += nbytes
        self.peak = max(self.peak, self.used)

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes
        assert self.used >= 0


def stream(bodies: list[bytes]) -> bytes:
    return b"".join(len(b).to_bytes(4, "big") + b for b in bodies)


def drive(
    reader: FrameReader, pool: Pool, data: bytes, chunks: Iterator[int], *, read_when_stalled: bool
) -> list[bytes]:
    """Play the transport and the connection: read what ``chunks`` says (as much as the buffer
    offers at most), hand each frame on and give its bytes back. A stalled reader gets memory as
    the server's pool would give it (one frame at a time past the limit), or a read anyway."""
    pos = 0
    out: list[bytes] = []
    limit = pool.limit
    while pos < len(data):
        if reader.stalled:
            assert not reader.grow()
            if not read_when_stalled:
                pool.limit = None  # let this one frame through
                assert reader.grow()
        view = reader.get_buffer()
        assert len(view) > 0
        n = min(len(view), next(chunks), len(data) - pos)
        view[:n] = data[pos : pos + n]
        del view
        pos += n
        for frame in reader.feed(n):
            out.append(bytes(frame))
            pool.give_back(len(frame))
            pool.limit = limit
    return out


@settings(max_examples=300)
@given(
    st.lists(st.binary(min_size=1, max_size=700), max_size=12),
    st.lists(st.integers(1, 400), min_size=1),
    st.one_of(st.none(), st.integers(0, 1000)),
    st.booleans(),
)
def test_any_split_of_a_stream_gives_the_same_frames(
    bodies: list[bytes], reads: list[int], limit: int | None, read_when_stalled: bool
) -> None:
    pool = Pool(limit)
    reader = FrameReader(1000, pool, **SMALL)
    chunks = iter(reads * (1 + len(stream(bodies))))
    got = drive(reader, pool, stream(bodies), chunks, read_when_stalled=read_when_stalled)
    assert got == bodies
    assert reader.received == 0
    assert reader.declared is None
    reader.shrink()  # what is left held is a grown shared buffer; quiet, it goes back
    assert pool.used == 0


def test_frame_size() -> None:
    assert frame_size(b"\0\0\0") is None
    assert frame_size(b"\0\0\1\0rest") == 256
    assert frame_size(b"xx\0\0\0\5", 2) == 5
    with pytest.raises(ProtocolError):
        frame_size(b"\xff\xff\xff\xfe")


def _feed(reader: FrameReader, data: bytes) -> list[bytearray]:
    view = reader.get_buffer()
    assert len(view) >= len(data)
    view[: len(data)] = data
    del view
    return reader.feed(len(data))


@pytest.mark.parametrize("size", [0, -1, -(2**31), 1001, 2**31 - 1])
def test_a_size_outside_the_limit_is_refused_from_its_prefix_alone(size: int) -> None:
    pool = Pool()
    reader = FrameReader(1000, pool, **SMALL)
    with pytest.raises(FrameSizeError) as info:
        _feed(reader, size.to_bytes(4, "big", signed=True))
    assert (info.value.size, info.value.limit) == (size, 1000)
    assert pool.used == 0


def test_sizes_at_the_limits_are_read() -> None:
    pool = Pool()
    reader = FrameReader(1000, pool, **SMALL)
    assert _feed(reader, b"\0\0\0\1x") == [bytearray(b"x")]
    body = bytes(range(250)) * 4
    assert drive(reader, pool, stream([body]), iter([300] * 10), read_when_stalled=False) == [body]


def test_a_lying_size_allocates_only_the_first_body_buffer() -> None:
    """100 MiB announced, nothing sent: the reader holds 1 MiB for it, not 100."""
    pool = Pool()
    reader = FrameReader(100 * 1024 * 1024, pool)
    assert _feed(reader, (100 * 1024 * 1024).to_bytes(4, "big")) == []
    assert reader.declared == 100 * 1024 * 1024
    assert reader.received == 4
    assert pool.used == 1024 * 1024
    assert len(reader.get_buffer()) == 1024 * 1024
    reader.close()
    assert pool.used == 0


def test_a_big_frame_grows_only_as_the_budget_allows() -> None:
    pool = Pool(limit=0)
    reader = FrameReader(1000, pool, **SMALL)
    assert _feed(reader, (600).to_bytes(4, "big") + b"a" * 20) == []
    # What arrived is held (it is in memory already); no room for more.
    assert (pool.used, reader.received, reader.declared) == (20, 24, 600)
    assert reader.stalled
    assert not reader.grow()
    pool.limit = 60  # memory freed elsewhere: the buffer doubles
    assert reader.grow()
    assert pool.used == 40
    assert len(reader.get_buffer()) == 20
    # Full again; doubling needs 40, a step of less than 32 is not worth a copy: stalled.
    assert _feed(reader, b"b" * 20) == []
    assert reader.stalled
    assert pool.used == 40
    # A read that comes anyway (the caller had not yet paused) gets a little, not a failure.
    view = reader.get_buffer()
    assert len(view) == 32
    assert pool.used == 72
    del view
    pool.limit = None
    rest = b"c" * (600 - 40)
    (frame,) = drive(reader, pool, rest, iter([1000] * 10), read_when_stalled=False)
    assert frame == b"a" * 20 + b"b" * 20 + b"c" * 560
    assert pool.used == 0


def test_a_small_frame_is_taken_even_with_no_room_and_the_buffer_does_not_grow() -> None:
    pool = Pool(limit=0)
    reader = FrameReader(1000, pool, **SMALL)
    for _ in range(3):  # fill the shared buffer exactly, three times
        frames = _feed(reader, stream([b"x" * 60]))
        assert [bytes(f) for f in frames] == [b"x" * 60]
        pool.give_back(60)
    assert len(reader.get_buffer()) == 64  # it would have doubled had there been room
    pool.limit = None
    _feed(reader, stream([b"y" * 60]))
    pool.give_back(60)
    assert len(reader.get_buffer()) == 128
    assert pool.used == 64
    reader.shrink()
    assert pool.used == 0
    assert len(reader.get_buffer()) == 64


def test_a_big_frame_is_read_into_the_buffer_it_is_returned_in() -> None:
    reader = FrameReader(1000, Unbounded(), **SMALL)
    _feed(reader, (500).to_bytes(4, "big"))
    owners = set()
    frames: list[bytearray] = []
    while not frames:
        view = reader.get_buffer()
        owners.add(id(view.obj))
        n = min(len(view), 100)
        view[:n] = b"z" * n
        del view
        frames = reader.feed(n)
    (frame,) = frames
    assert frame == b"z" * 500
    assert id(frame) in owners  # the last bytes went straight into the frame handed out


def test_a_small_frame_is_copied_once() -> None:
    size = 50_000
    reader = FrameReader(1 << 20, Unbounded(), buffer_min=64 * 1024, buffer_max=64 * 1024)
    view = reader.get_buffer()
    view[: 4 + size] = stream([b"q" * size])
    del view
    tracemalloc.start()
    try:
        (frame,) = reader.feed(4 + size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frame == b"q" * size
    assert size <= peak < 1.5 * size, peak  # a second copy would make it 2x
