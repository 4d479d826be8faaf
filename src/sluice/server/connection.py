"""One client connection: Kafka framing, in-order request processing, flow control.

Requests on a connection are handled one at a time, in order, as Kafka's own broker does (it
mutes a channel until its response is sent): ordering of produce requests from one producer is
then a property of the connection, not something every handler must get right. Clients still
pipeline; their next frames wait, bounded, in the read buffer. Slow requests (a long-polling
fetch, an fsync wait) hold only their own connection.

The read side is an ``asyncio.BufferedProtocol``: small frames are cut out of one reusable buffer,
big ones are read straight into a ``bytearray`` of their own size, so a produce request's record
batches arrive in a writable buffer the log can patch in place without another copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from sluice.server.app import Server

log = logging.getLogger(__name__)

Buffer = bytes | bytearray | memoryview

_READ_BUFFER = 256 * 1024
_MAX_QUEUED_FRAMES = 32
_MAX_QUEUED_BYTES = 4 * 1024 * 1024
_FIRST_BODY_BYTES = 1024 * 1024
"""A big frame's buffer starts this large (or at its size, if smaller) and doubles as bytes
arrive: a size prefix alone must not make the broker allocate memory the peer never sends."""


class CloseConnection(Exception):
    """Raised by a handler when the protocol says to drop the connection (garbage, bad frames)."""


class RequestHandler(Protocol):
    async def handle(self, frame: bytearray, connection: Connection) -> Sequence[Buffer] | None:
        """Answer one request frame (without its size prefix); None sends nothing (acks=0)."""
        ...


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: Server, handler: RequestHandler, max_frame: int) -> None:
        self.server = server
        self.handler = handler
        self.max_frame = max_frame
        self.peer = "?"
        self.peer_host = ""
        self.last_active = time.monotonic()
        self.busy = False
        self._buf = bytearray(_READ_BUFFER)
        self._start = 0
        self._end = 0
        self._body: bytearray | None = None
        self._filled = 0
        self._body_size = 0
        self._frames: deque[bytearray] = deque()
        self._queued_bytes = 0
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading_paused = False
        self._closing = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # -- protocol callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.peer_host = str(peer[0]) if isinstance(peer, tuple) else ""
        if not self.server.register(self):
            log.warning("refusing %s: max.connections reached", self.peer)
            self._closing = True
            self._transport.abort()
            return
        self._task = self._loop.create_task(self._process(), name=f"conn:{self.peer}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.server.unregister(self)
        self._wake()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body is not None:
            if self._filled == len(self._body):
                # Full, but the frame is not: grow into a new buffer (not a resize, which a
                # view the transport still holds would forbid).
                grown = bytearray(min(self._body_size, 2 * len(self._body)))
                grown[: self._filled] = self._body
                self._body = grown
            return memoryview(self._body)[self._filled :]
        if self._end == len(self._buf):
            self._compact()
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.last_active = time.monotonic()
        if self._body is not None:
            self._filled += nbytes
            if self._filled == self._body_size:
                self._push(self._body)
                self._body = None
            return
        self._end += nbytes
        self._cut_frames()

    def eof_received(self) -> bool | None:
        return None  # close once the peer is done sending

    # -- framing -----------------------------------------------------------------------------------

    def _compact(self) -> None:
        pending = self._end - self._start
        self._buf[:pending] = self._buf[self._start : self._end]
        self._start, self._end = 0, pending

    def _cut_frames(self) -> None:
        buf = self._buf
        while self._end - self._start >= 4 and not self._closing:
            size = int.from_bytes(buf[self._start : self._start + 4], "big", signed=True)
            if size <= 0 or size > self.max_frame:
                # Checked before reading the body: an oversized or negative size never
                # allocates anything. Kafka closes such connections too.
                log.warning(
                    "closing %s: frame size %d outside 1..%d", self.peer, size, self.max_frame
                )
                self.close()
                return
            available = self._end - self._start - 4
            if available >= size:
                begin = self._start + 4
                self._push(bytearray(buf[begin : begin + size]))
                self._start = begin + size
                continue
            if size + 4 > len(buf):  # too big for the shared buffer: read into its own
                body = bytearray(min(size, max(available, _FIRST_BODY_BYTES)))
                body[:available] = buf[self._start + 4 : self._end]
                self._body, self._filled, self._body_size = body, available, size
                self._start = self._end = 0
            elif self._start + 4 + size > len(buf):
                self._compact()
            return
        if self._start == self._end:
            self._start = self._end = 0

    def _push(self, frame: bytearray) -> None:
        self._frames.append(frame)
        self._queued_bytes += len(frame)
        if (
            (len(self._frames) >= _MAX_QUEUED_FRAMES or self._queued_bytes >= _MAX_QUEUED_BYTES)
            and not self._reading_paused
            and self._transport is not None
        ):
            self._transport.pause_reading()
            self._reading_paused = True
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- processing --------------------------------------------------------------------------------

    async def _process(self) -> None:
        transport = self._transport
        assert transport is not None
        try:
            while not self._closing:
                if not self._frames:
                    if self._stopping:
                        break
                    self._wakeup = self._loop.create_future()
                    await self._wakeup
                    continue
                frame = self._frames.popleft()
                self._queued_bytes -= len(frame)
                if (
                    self._reading_paused
                    and not self._stopping
                    and len(self._frames) < _MAX_QUEUED_FRAMES // 2
                ):
                    transport.resume_reading()
                    self._reading_paused = False
                self.busy = True
                try:
                    response = await self.handler.handle(frame, self)
                finally:
                    self.busy = False
                    self.last_active = time.monotonic()
                if response is not None and not self._closing:
                    transport.writelines(response)
                    if not self._writable.is_set():
                        await self._writable.wait()
        except CloseConnection as exc:
            log.info("closing %s: %s", self.peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("closing %s after an unexpected error", self.peer)
        finally:
            self.close()

    # -- lifecycle ---------------------------------------------------------------------------------

    def stop_reading(self) -> None:
        """Shutdown: take no new requests; the one in progress is answered, then we close."""
        self._stopping = True
        self._frames.clear()
        if self._transport is not None and not self._reading_paused:
            self._transport.pause_reading()
            self._reading_paused = True
        self._wake()

    async def wait_closed(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._closing = True
        self._wake()
