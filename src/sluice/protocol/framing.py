"""Kafka framing: every request and response is a 4-byte big-endian size, then that many bytes.

:class:`FrameReader` is a receive buffer that cuts frames, sans-IO as h11's receive buffer is: the
caller asks it where the next bytes go (:meth:`~FrameReader.get_buffer`), reads into that, says how
many came (:meth:`~FrameReader.feed`) and gets whole frames back. It owns the mechanics (a small
shared buffer, a big frame's own growing buffer, when to grow, the size check before any body is
allocated); the memory policy stays with whoever supplies its :class:`Budget`.
"""

from __future__ import annotations

import sys
from typing import Protocol

from sluice.protocol.primitives import I32, Buffer, ProtocolError

SIZE_PREFIX = 4


def frame_size(buf: Buffer, offset: int = 0) -> int | None:
    """The body size of the frame starting at ``buf[offset]``, or None if fewer than 4 bytes
    are there yet. A negative size is a ProtocolError (garbage: close the connection)."""
    if len(buf) - offset < SIZE_PREFIX:
        return None
    size = int(I32.unpack_from(buf, offset)[0])
    if size < 0:
        raise ProtocolError(f"negative frame size {size}")
    return size


class FrameSizeError(ProtocolError):
    """A size prefix outside 1..``limit``: seen before any of the body is allocated or read."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame size {size} is outside 1..{limit}")
        self.size = size
        self.limit = limit


class Budget(Protocol):
    """Where a :class:`FrameReader` gets memory: it asks ``room()`` before growing a buffer,
    ``take``s every byte it allocates beyond its first small buffer and every byte of a frame it
    hands out, and ``give_back``s what it frees itself. A frame handed out stays taken until
    its new owner gives it back."""

    def room(self) -> int: ...

    def take(self, nbytes: int) -> None: ...

    def give_back(self, nbytes: int) -> None: ...


class Unbounded:
    """A budget that always has room and keeps no account (clients, tools, tests)."""

    def room(self) -> int:
        return sys.maxsize

    def take(self, nbytes: int) -> None:
        pass

    def give_back(self, nbytes: int) -> None:
        pass


BUFFER_MIN = 16 * 1024
BUFFER_MAX = 256 * 1024
FIRST_BODY = 1024 * 1024
MIN_GROWTH = 64 * 1024


class FrameReader:
    """Cuts frames (bodies, without their size prefix) out of a byte stream.

    Small frames are read into one shared buffer and copied out once each. The shared buffer
    starts at ``buffer_min`` (a bytearray is zeroed, so all of it is resident: an idle
    connection costs that much) and doubles up to ``buffer_max`` while reads keep filling it.
    A frame too big for it is read straight into a ``bytearray`` of its own, which is what
    :meth:`feed` returns, so a produce request's batches arrive writable and uncopied.

    That buffer starts at ``first_body`` (or the frame's size, if smaller) and doubles as bytes
    arrive, each growth only as the budget allows: a size prefix alone never makes the reader
    allocate memory the peer never sends. When the budget refuses, the reader is
    :attr:`stalled`: the caller should stop reading and call :meth:`grow` when memory frees.
    """

    __slots__ = (
        "_body",
        "_body_size",
        "_budget",
        "_buf",
        "_end",
        "_filled",
        "_filled_up",
        "_start",
        "buffer_max",
        "buffer_min",
        "first_body",
        "max_frame",
        "min_growth",
    )

    def __init__(
        self,
        max_frame: int,
        budget: Budget,
        *,
        buffer_min: int = BUFFER_MIN,
        buffer_max: int = BUFFER_MAX,
        first_body: int = FIRST_BODY,
        min_growth: int = MIN_GROWTH,
    ) -> None:
        if not SIZE_PREFIX < buffer_min <= buffer_max:
            raise ValueError("need 4 < buffer_min <= buffer_max")
        self.max_frame = max_frame
        self.buffer_min = buffer_min
        self.buffer_max = buffer_max
        self.first_body = first_body
        self.min_growth = min_growth
        self._budget = budget
        self._buf = bytearray(buffer_min)
        self._filled_up = False  # the last read took all the room the shared buffer offered
        self._start = 0  # the shared buffer's unconsumed bytes are [_start, _end)
        self._end = 0
        self._body: bytearray | None = None  # the big frame now arriving, if any
        self._filled = 0
        self._body_size = 0

    # -- what the caller reads into, and tells about -----------------------------------------------

    def get_buffer(self) -> memoryview:
        """Where the next bytes go: never empty."""
        body = self._body
        if body is not None:
            if self._filled == len(body):
                # The caller should have stopped reading (see stalled); should a read come
                # anyway, take a little rather than fail it.
                self._grow(force=True)
                body = self._body
                assert body is not None
            return memoryview(body)[self._filled :]
        if self._end == len(self._buf):
            self._compact()
        if self._filled_up and self._end == 0 and len(self._buf) < self.buffer_max:
            self._grow_shared()
        return memoryview(self._buf)[self._end :]

    def feed(self, nbytes: int) -> list[bytearray]:
        """``nbytes`` were written at the start of the last :meth:`get_buffer`: the frames now
        complete, in order. Raises :class:`FrameSizeError` at a size outside 1..max_frame
        (frames cut from the same read are dropped with it: the stream is garbage)."""
        body = self._body
        if body is None:
            self._filled_up = self._end + nbytes == len(self._buf)
            self._end += nbytes
            return self._cut()
        self._filled += nbytes
        if self._filled == self._body_size:  # the buffer never outgrows the frame
            self._body = None
            self._filled = 0
            return [body]
        if self._filled == len(body):
            self._grow()
        return []

    # -- the frame now arriving --------------------------------------------------------------------

    @property
    def received(self) -> int:
        """Bytes of the frame now arriving (size prefix included); 0 between frames."""
        if self._body is not None:
            return SIZE_PREFIX + self._filled
        return self._end - self._start

    @property
    def declared(self) -> int | None:
        """The body size the frame now arriving announced, once its prefix is in."""
        if self._body is not None:
            return self._body_size
        if self._end - self._start >= SIZE_PREFIX:
            return int(I32.unpack_from(self._buf, self._start)[0])
        return None

    @property
    def stalled(self) -> bool:
        """A big frame's buffer is full and the budget had no room to grow it."""
        return self._body is not None and self._filled == len(self._body)

    def grow(self) -> bool:
        """Try again to make room for the big frame now arriving; True once there is room."""
        if self.stalled:
            self._grow()
        return not self.stalled

    # -- memory ------------------------------------------------------------------------------------

    def shrink(self) -> None:
        """Give a grown shared buffer back, if it holds nothing (for a connection gone quiet)."""
        extra = len(self._buf) - self.buffer_min
        if extra > 0 and self._start == self._end:
            self._buf = bytearray(self.buffer_min)
            self._start = self._end = 0
            self._filled_up = False
            self._budget.give_back(extra)

    def close(self) -> None:
        """Drop what is buffered and give back what it held: the reader starts afresh."""
        held = len(self._buf) - self.buffer_min
        if self._body is not None:
            held += len(self._body)
            self._body = None
        self._buf = bytearray(self.buffer_min)
        self._start = self._end = self._filled = 0
        self._filled_up = False
        if held:
            self._budget.give_back(held)

    # -- mechanics ---------------------------------------------------------------------------------

    def _cut(self) -> list[bytearray]:
        frames: list[bytearray] = []
        buf = self._buf
        start, end = self._start, self._end
        while end - start >= SIZE_PREFIX:
            size = int(I32.unpack_from(buf, start)[0])
            if size <= 0 or size > self.max_frame:
                # Checked before the body: such a size never allocates anything.
                self._start = start
                raise FrameSizeError(size, self.max_frame)
            begin = start + SIZE_PREFIX
            available = end - begin
            if available >= size:
                # One copy: a memoryview slice, then the bytearray it fills.
                frames.append(bytearray(memoryview(buf)[begin : begin + size]))
                self._budget.take(size)
                start = begin + size
                continue
            if size + SIZE_PREFIX > len(buf):
                self._begin_body(size, memoryview(buf)[begin:end])
                start = end = 0
            elif start + SIZE_PREFIX + size > len(buf):
                self._start = start
                self._compact()
                return frames
            break
        if start == end:
            start = end = 0
        self._start, self._end = start, end
        return frames

    def _begin_body(self, size: int, arrived: memoryview) -> None:
        """A frame too big for the shared buffer: give it one of its own. What has arrived is
        taken whatever the budget says (it is in memory already); room to read more only as
        the budget allows."""
        available = len(arrived)
        want = min(size, max(available, self.first_body)) - available
        capacity = available + min(want, self._budget.room())
        body = bytearray(capacity)
        self._budget.take(capacity)
        body[:available] = arrived
        self._body, self._filled, self._body_size = body, available, size
        if available == capacity:
            self._grow()

    def _compact(self) -> None:
        """Move the partial frame to the front of the shared buffer (it fits: it is small)."""
        pending = self._end - self._start
        self._buf[:pending] = self._buf[self._start : self._end]
        self._start, self._end = 0, pending

    def _grow_shared(self) -> None:
        """Reads keep filling the empty shared buffer: double it, if the budget has room (it
        holds nothing, so nothing is copied)."""
        self._filled_up = False
        more = len(self._buf)
        if self._budget.room() >= more:
            self._budget.take(more)
            self._buf = bytearray(2 * more)

    def _grow(self, *, force: bool = False) -> None:
        """Make room in the big frame's buffer for more bytes, if the budget allows (a new
        buffer, not a resize, which a view the caller still holds would forbid). Steps of at
        least a quarter of the buffer keep the copying linear in the frame's size."""
        body = self._body
        assert body is not None
        size = len(body)
        want = min(self._body_size, max(2 * size, self.min_growth)) - size
        step = min(want, self._budget.room())
        if step < min(want, max(self.min_growth, size // 4)):
            if not force:
                return
            step = min(want, self.min_growth)
        grown = bytearray(size + step)
        grown[: self._filled] = memoryview(body)[: self._filled]
        self._budget.take(step)
        self._body = grown
