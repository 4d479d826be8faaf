"""One client connection: Kafka framing, in-order request processing, flow control.

Requests on a connection are handled one at a time, in order, as Kafka's own broker does (it
mutes a channel until its response is sent): ordering of produce requests from one producer is
then a property of the connection, not something every handler must get right. Clients still
pipeline; their next frames wait, bounded, in the read buffer. Slow requests (a long-polling
fetch, an fsync wait) hold only their own connection.

The read side is an ``asyncio.BufferedProtocol``: small frames are cut out of one reusable buffer,
big ones are read straight into a ``bytearray`` of their own size, so a produce request's record
batches arrive in a writable buffer the log can patch in place without another copy. That buffer
grows as bytes arrive, each growth taken from the broker-wide request memory
(``queued.max.request.bytes``, :mod:`sluice.server.memory`); when there is none, the connection
stops reading until there is.

Once the first byte of a request has arrived, the whole request must arrive within
``sluice.request.receive.timeout.ms`` plus its size at ``sluice.request.receive.min.bytes.per.sec``
(the server's housekeeping closes connections past that). Only completed requests and sent
responses count as activity for ``connections.max.idle.ms``: a trickle of bytes does not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, cast

from sluice.broker.broker import Client
from sluice.errors import CloseConnection
from sluice.protocol.primitives import Buffer

if TYPE_CHECKING:
    from sluice.config import BrokerConfig
    from sluice.server.connlog import ConnectionLog
    from sluice.server.memory import RequestMemory

log = logging.getLogger(__name__)

_READ_BUFFER_MIN = 16 * 1024
_READ_BUFFER_MAX = 256 * 1024
"""The shared read buffer starts small (a connection that is idle or trickling costs 16 KiB,
not 256: a bytearray is zeroed, so all of it is resident) and doubles, from the request memory,
while reads keep filling it."""
_MAX_QUEUED_FRAMES = 32
_MAX_QUEUED_BYTES = 4 * 1024 * 1024
_FIRST_BODY_BYTES = 1024 * 1024
"""A big frame's buffer starts this large (or at its size, if smaller) and doubles as bytes
arrive: a size prefix alone must not make the broker allocate memory the peer never sends."""
_FORCED_GROWTH = 64 * 1024


class Owner(Protocol):
    """What a connection needs of the server that accepted it (:class:`~sluice.server.app.Server`
    is one): the settings, the shared request memory, the connection log, and to be forgotten."""

    config: BrokerConfig
    memory: RequestMemory
    connlog: ConnectionLog

    def unregister(self, connection: Connection) -> None: ...


class RequestHandler(Protocol):
    async def handle(self, frame: bytearray, client: Client) -> Sequence[Buffer] | None:
        """Answer one request frame (without its size prefix); None sends nothing (acks=0);
        CloseConnection drops this connection."""
        ...


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: Owner, handler: RequestHandler, peer_host: str, peer: str) -> None:
        config = server.config
        self.server = server
        self.handler = handler
        self.max_frame = config.request_max_bytes
        self.memory: RequestMemory = server.memory
        self.peer = peer
        self.peer_host = peer_host
        self.client = Client(host=peer_host)
        self.held = 0
        """Bytes held from the request memory: the big frame's buffer and the queued frames."""
        self.last_active = time.monotonic()
        """When the last request was completely received, or the last response sent."""
        self.busy = False
        self.receive_started: float | None = None
        """When the first byte of the request now arriving came (None: none is arriving)."""
        self.receive_deadline = 0.0
        self.receive_size: int | None = None
        self._receive_timeout = config.request_receive_timeout_ms / 1000
        self._receive_rate = config.request_receive_min_rate
        self._buf = bytearray(_READ_BUFFER_MIN)
        self._buf_filled_up = False  # the last read took all the room the buffer offered
        self._start = 0
        self._end = 0
        self._body: bytearray | None = None
        self._filled = 0
        self._body_size = 0
        self._frames: deque[bytearray] = deque()
        self._queued_bytes = 0
        self._frames_held = 0  # bytes of queued frames and the one being handled
        self._overdrawn: bytearray | None = None  # a frame received past the memory bound
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._pauses: set[str] = set()  # why reading is paused: queue, memory, stopping
        self._paused_at = 0.0
        self._closing = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    # -- protocol callbacks ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
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
                # Reading pauses before the buffer is full and no memory is left for it; should
                # a read come anyway, take a little rather than fail the transport.
                self._grow(force=True)
            return memoryview(self._body)[self._filled :]
        if self._end == len(self._buf):
            self._compact()
        if self._buf_filled_up and self._end == 0 and len(self._buf) < _READ_BUFFER_MAX:
            self._grow_read_buffer()
        return memoryview(self._buf)[self._end :]

    def _grow_read_buffer(self) -> None:
        """Reads keep filling the (empty) shared buffer: double it, if the request memory has
        room (it holds nothing, so nothing is copied)."""
        self._buf_filled_up = False
        more = len(self._buf)
        if self.memory.room(self) >= more:
            self.memory.take(self, more)
            self._buf = bytearray(2 * more)

    def shrink_read_buffer(self) -> None:
        """Housekeeping, for a connection gone quiet: give a grown, empty read buffer back."""
        extra = len(self._buf) - _READ_BUFFER_MIN
        if extra > 0 and self._start == self._end and not self._closing:
            self._buf = bytearray(_READ_BUFFER_MIN)
            self._start = self._end = 0
            self._buf_filled_up = False
            self.memory.give_back(self, extra)

    def buffer_updated(self, nbytes: int) -> None:
        if self._body is not None:
            self._filled += nbytes
            if self._filled == self._body_size:
                body, self._body = self._body, None
                self._push(body, held=True)
        else:
            self._buf_filled_up = self._end + nbytes == len(self._buf)
            self._end += nbytes
            self._cut_frames()
        if self._closing:
            return
        self._track_receive()
        if self._body is not None and self._filled == len(self._body):
            if not self._grow():
                self._wait_for_memory()
        elif self._frames_held and self.memory.over() and not self.memory.may_overdraw(self):
            self._wait_for_memory()

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
                self.server.connlog.note(
                    "closed: socket.request.max.bytes",
                    self.peer_host,
                    "closing %s: request size %d is outside 1..%d (socket.request.max.bytes)",
                    self.peer,
                    size,
                    self.max_frame,
                )
                self.abort()
                return
            available = self._end - self._start - 4
            if available >= size:
                begin = self._start + 4
                self._push(bytearray(buf[begin : begin + size]), held=False)
                self._start = begin + size
                continue
            if size + 4 > len(buf):  # too big for the shared buffer: read into its own
                # What has arrived is taken whatever the pool says (it is in memory already);
                # room to read more only as the pool allows.
                want = min(size, max(available, _FIRST_BODY_BYTES)) - available
                capacity = available + min(want, self.memory.room(self))
                body = bytearray(capacity)
                self.memory.take(self, capacity)
                body[:available] = buf[self._start + 4 : self._end]
                self._body, self._filled, self._body_size = body, available, size
                self._start = self._end = 0
            elif self._start + 4 + size > len(buf):
                self._compact()
            return
        if self._start == self._end:
            self._start = self._end = 0

    def _grow(self, *, force: bool = False) -> bool:
        """Make room in the big frame's buffer for more bytes, if the request memory allows (a
        new buffer, not a resize, which a view the transport still holds would forbid). Steps
        of at least a quarter of the buffer keep the copying linear in the frame's size."""
        body = self._body
        assert body is not None
        size = len(body)
        want = min(self._body_size, max(2 * size, _FORCED_GROWTH)) - size
        step = min(want, self.memory.room(self))
        if step < min(want, max(_FORCED_GROWTH, size // 4)):
            if not force:
                return False
            step = min(want, _FORCED_GROWTH)
        grown = bytearray(size + step)
        grown[: self._filled] = memoryview(body)[: self._filled]
        self._body = grown
        self.memory.take(self, step)
        return True

    def _push(self, frame: bytearray, *, held: bool) -> None:
        """A whole frame arrived: queue it. A big frame's buffer is already held from the request
        memory; a small one, cut from the shared buffer, is taken now (it arrived already)."""
        if not held:
            self.memory.take(self, len(frame))
        elif self.memory.overdraft_received(self):
            self._overdrawn = frame
        self._frames_held += len(frame)
        self._frames.append(frame)
        self._queued_bytes += len(frame)
        self.receive_started = None
        self.last_active = time.monotonic()
        if len(self._frames) >= _MAX_QUEUED_FRAMES or self._queued_bytes >= _MAX_QUEUED_BYTES:
            self._pause("queue")
        self._wake()

    def _track_receive(self) -> None:
        """Start the receive deadline at a request's first byte, and lengthen it by the
        request's size once the size prefix is in."""
        if self._body is not None:
            size: int | None = self._body_size
        elif self._end > self._start:
            start = self._start
            size = (
                int.from_bytes(self._buf[start : start + 4], "big")
                if self._end - start >= 4
                else None
            )
        else:
            self.receive_started = None
            return
        if self.receive_started is None:
            now = time.monotonic()
            self.receive_started = now
            self.receive_deadline = now + self._receive_timeout
            self.receive_size = None
        if size is not None and self.receive_size is None:
            self.receive_size = size
            self.receive_deadline += size / self._receive_rate

    @property
    def received(self) -> int:
        """Bytes of the request now arriving that have arrived (size prefix included)."""
        if self._body is not None:
            return 4 + self._filled
        return self._end - self._start

    # -- flow control ------------------------------------------------------------------------------

    @property
    def reading_paused(self) -> bool:
        return bool(self._pauses)

    @property
    def needs_memory_to_finish(self) -> bool:
        return self._body is not None and self._filled == len(self._body)

    def _pause(self, reason: str) -> None:
        if not self._pauses:
            self._paused_at = time.monotonic()
            if self._transport is not None and not self._closing:
                self._transport.pause_reading()
        self._pauses.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._pauses:
            return
        self._pauses.discard(reason)
        if self._pauses or self._closing or self._transport is None:
            return
        if self.receive_started is not None:
            # The time the broker kept the connection from reading is not the peer's.
            self.receive_deadline += time.monotonic() - self._paused_at
        self._transport.resume_reading()

    def _wait_for_memory(self) -> None:
        self._pause("memory")
        self.memory.wait(self)

    def memory_available(self) -> bool:
        if self._closing:
            return True
        if self._body is not None and self._filled == len(self._body):
            if not self._grow():
                return False
        elif self._frames_held and self.memory.over() and not self.memory.may_overdraw(self):
            return False
        self._resume("memory")
        return True

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
                size = len(frame)
                self._queued_bytes -= size
                if (
                    len(self._frames) < _MAX_QUEUED_FRAMES // 2
                    and self._queued_bytes < _MAX_QUEUED_BYTES // 2
                ):
                    self._resume("queue")
                self.busy = True
                try:
                    response = await self.handler.handle(frame, self.client)
                finally:
                    self.busy = False
                    self._frames_held -= size
                    self.memory.give_back(self, size)
                    if frame is self._overdrawn:
                        self._overdrawn = None
                        self.memory.overdraft_done(self)
                    del frame
                    self.last_active = time.monotonic()
                if response is not None and not self._closing:
                    transport.writelines(response)
                    if not self._writable.is_set():
                        await self._writable.wait()
                    self.last_active = time.monotonic()
        except CloseConnection as exc:
            log.info("closing %s: %s", self.peer, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("closing %s after an unexpected error", self.peer)
        finally:
            self.close()
            self._frames.clear()
            self._body = None
            self._frames_held = 0
            self.memory.forget(self)

    # -- lifecycle ---------------------------------------------------------------------------------

    def stop_reading(self) -> None:
        """Shutdown: take no new requests; the one in progress is answered, then we close."""
        self._stopping = True
        dropped = sum(len(f) for f in self._frames)
        self._frames.clear()
        self._queued_bytes = 0
        self._frames_held -= dropped
        self.memory.give_back(self, dropped)
        self._pause("stopping")
        self._wake()

    async def wait_closed(self) -> None:
        if self._task is not None:
            await asyncio.shield(self._task)

    def close(self) -> None:
        """Close once what was written has been sent."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._closing = True
        self._wake()

    def abort(self) -> None:
        """Close now, dropping anything unsent: for a peer that is closed by policy (it may not
        be reading at all, and a graceful close would wait for it forever)."""
        if self._transport is not None:
            self._transport.abort()
        self._closing = True
        self._wake()
        self._writable.set()
