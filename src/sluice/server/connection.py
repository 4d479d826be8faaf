"""One client connection: Kafka framing, in-order request processing, flow control.

Requests on a connection are handled one at a time, in order, as Kafka's own broker does (it
mutes a channel until its response is sent): ordering of produce requests from one producer is
then a property of the connection, not something every handler must get right. Clients still
pipeline; their next frames wait, bounded, in the read buffer. Slow requests (a long-polling
fetch, an fsync wait) hold only their own connection.

The read side is an ``asyncio.BufferedProtocol`` driving a sans-IO
:class:`~sluice.protocol.framing.FrameReader`: small frames are cut out of one reusable buffer,
big ones are read straight into a ``bytearray`` of their own size, so a produce request's record
batches arrive in a writable buffer the log can patch in place without another copy. That buffer
grows as bytes arrive, each growth taken from the broker-wide request memory
(``queued.max.request.bytes``, :mod:`sluice.server.memory`); when there is none, the connection
stops reading until there is. The reader owns the mechanics, the connection the policy.

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
from sluice.broker.context import UnsentAnswers
from sluice.errors import CloseConnection
from sluice.protocol.framing import FrameReader, FrameSizeError
from sluice.protocol.primitives import Buffer
from sluice.server.memory import Account

if TYPE_CHECKING:
    from sluice.config import BrokerConfig
    from sluice.server.connlog import ConnectionLog
    from sluice.server.memory import RequestMemory

log = logging.getLogger(__name__)

_MAX_QUEUED_FRAMES = 32
_MAX_QUEUED_BYTES = 4 * 1024 * 1024


class Owner(Protocol):
    """What a connection needs of the server that accepted it (:class:`~sluice.server.app.Server`
    is one): the settings, the shared request memory, the connection log, and to be forgotten."""

    config: BrokerConfig
    memory: RequestMemory
    connlog: ConnectionLog

    def unregister(self, connection: Connection) -> None: ...


class RequestHandler(Protocol):
    unsent: UnsentAnswers
    """Answers held before their clients take them; a connection counts the one it holds."""

    async def handle(self, frame: bytearray, client: Client) -> Sequence[Buffer] | None:
        """Answer one request frame (without its size prefix); None sends nothing (acks=0);
        CloseConnection drops this connection."""
        ...


class Connection(asyncio.BufferedProtocol):
    def __init__(self, server: Owner, handler: RequestHandler, peer_host: str, peer: str) -> None:
        config = server.config
        self.server = server
        self.handler = handler
        self.memory: RequestMemory = server.memory
        self.unsent = handler.unsent
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
        self._reader = FrameReader(config.request_max_bytes, Account(self.memory, self))
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
        return self._reader.get_buffer()

    def shrink_read_buffer(self) -> None:
        """Housekeeping, for a connection gone quiet: give a grown, empty read buffer back."""
        if not self._closing:
            self._reader.shrink()

    def buffer_updated(self, nbytes: int) -> None:
        try:
            frames = self._reader.feed(nbytes)
        except FrameSizeError as exc:
            # Kafka closes such connections too; nothing was allocated for the body.
            self.server.connlog.note(
                "closed: socket.request.max.bytes",
                self.peer_host,
                "closing %s: request size %d is outside 1..%d (socket.request.max.bytes)",
                self.peer,
                exc.size,
                exc.limit,
            )
            self.abort()
            return
        for frame in frames:
            self._push(frame)
        if self._closing:
            return
        self._track_receive()
        if self._reader.stalled or (
            self._frames_held and self.memory.over() and not self.memory.may_overdraw(self)
        ):
            self._wait_for_memory()

    def eof_received(self) -> bool | None:
        return None  # close once the peer is done sending

    # -- frames ----------------------------------------------------------------------------------

    def _push(self, frame: bytearray) -> None:
        """A whole frame arrived (the reader took its bytes from the request memory): queue it.
        If it was overdrawing, it keeps that privilege until handled."""
        if self.memory.overdraft_received(self):
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
        if not self._reader.received:
            self.receive_started = None
            return
        size = self._reader.declared
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
        return self._reader.received

    # -- flow control ------------------------------------------------------------------------------

    @property
    def reading_paused(self) -> bool:
        return bool(self._pauses)

    @property
    def needs_memory_to_finish(self) -> bool:
        return self._reader.stalled

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
        if self._reader.stalled:
            if not self._reader.grow():
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
                        # Held in memory until the client takes it: counted broker-wide.
                        unsent = transport.get_write_buffer_size()
                        self.unsent.held += unsent
                        try:
                            await self._writable.wait()
                        finally:
                            self.unsent.release(unsent)
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
            self._reader.close()
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
