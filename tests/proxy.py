"""A fault-injecting TCP proxy between Kafka clients and a broker, on loopback.

It exists for one fault: the broker has received a Produce request, appended it and answered,
and the connection drops before the answer reaches the client. The client cannot tell that from
a request that never arrived, so it sends the batch again; only an idempotent producer (and a
broker that deduplicates) keeps that from writing the batch twice.

The proxy cuts both directions into Kafka frames (a 4-byte size, then the body) and forwards
every frame byte for byte. It reads each request's api key and correlation id from the header
(int16 at offset 0, int32 at offset 4 of the body) and each response's correlation id (int32 at
offset 0), so it knows which answer belongs to a Produce request. A drop happens when such an
answer arrives from the broker: the answer is discarded and both connections are aborted.
The proxy can also hold Produce answers back (and every answer behind one) until told to deliver
them, so a test can kill the broker while the client waits for answers the broker already sent.

It runs its own event loop in a background thread because the clients under test are mostly
synchronous; every public method is safe to call from any thread. Clients learn broker addresses
from Metadata, so the broker must advertise the proxy's address (``advertised.listeners``), or
clients would connect past it after their first request.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import threading
from dataclasses import dataclass
from types import TracebackType

PRODUCE = 0
"""The Produce api key."""

_SIZE = struct.Struct(">i")
_REQUEST_HEADER = struct.Struct(">hhi")  # api key, api version, correlation id
_CORRELATION_ID = struct.Struct(">i")


@dataclass(frozen=True)
class ProxyStats:
    """Counts since the proxy started (a snapshot)."""

    connections: int
    """Client connections accepted."""
    requests: int
    """Request frames forwarded to the broker."""
    responses: int
    """Response frames forwarded to clients (a dropped answer is not counted)."""
    produce_requests: int
    """Produce request frames forwarded to the broker."""
    drops: int
    """Connections dropped between a Produce request reaching the broker and its answer
    reaching the client."""
    held: int
    """Answers held back right now (see :meth:`FaultProxy.hold_answers`)."""
    lost: int
    """Answers that never reached their client: dropped, or held until their connection
    closed."""


@dataclass
class _RandomDrops:
    rng: random.Random
    probability: float
    remaining: int


class _Link:
    """One client connection and its connection to the broker."""

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.doomed: dict[int, bool] = {}
        """Correlation id of each Produce request awaiting its answer -> whether that answer is
        to be dropped (decided when the request went out, by :meth:`FaultProxy.drop_after_produce`)."""
        self.held: list[bytes] = []
        """Answers held back, in order (the first a Produce answer)."""

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()


class FaultProxy:
    """Forwards ``host:<port>`` (a free port) to ``upstream``; use as a context manager.

    ``upstream`` may be given later with :meth:`forward_to` (before the first client connects),
    since a broker that advertises the proxy's address needs its port before it starts.
    """

    def __init__(self, upstream: tuple[str, int] | None = None, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self._upstream = upstream
        self._port: int | None = None
        self._lock = threading.Lock()
        self._connections = 0
        self._requests = 0
        self._responses = 0
        self._produce_requests = 0
        self._drops = 0
        self._held = 0
        self._lost = 0
        self._holding = False
        self._drop_at: set[int] = set()
        self._random: _RandomDrops | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._links: set[_Link] = set()
        self._serving: set[asyncio.Task[None]] = set()
        self._failures: list[BaseException] = []

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._port is not None, "proxy not started"
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` for ``bootstrap.servers`` or the broker's ``advertised.listeners``."""
        return f"{self.host}:{self.port}"

    def forward_to(self, host: str, port: int) -> None:
        """Where new client connections are forwarded (open ones keep theirs)."""
        with self._lock:
            self._upstream = (host, port)

    # -- faults ------------------------------------------------------------------------------

    def drop_after_produce(self, n: int = 1) -> None:
        """Drop the connection that carries the ``n``-th Produce request from now, once the
        broker has answered it and before the answer reaches the client. (An acks=0 request has
        no answer, so it is never dropped.)"""
        assert n >= 1
        with self._lock:
            self._drop_at.add(self._produce_requests + n)

    def drop_randomly(self, probability: float, *, max_drops: int, seed: int) -> None:
        """Drop after each Produce answer with ``probability``, at most ``max_drops`` times.
        One draw per Produce answer, in the order the answers arrive, from ``random.Random(seed)``:
        the n-th answer is dropped when the n-th draw is below ``probability``."""
        assert 0.0 <= probability <= 1.0 and max_drops >= 0
        with self._lock:
            self._random = _RandomDrops(random.Random(seed), probability, max_drops)

    def hold_answers(self) -> None:
        """From now on, hold back each connection's answers from its first Produce answer on
        (the broker has the batch, the client does not know yet), until :meth:`release_answers`;
        a connection that closes meanwhile (the broker is killed, say) loses what it held."""
        with self._lock:
            self._holding = True

    def release_answers(self) -> None:
        """Deliver every held answer, in order, and hold no more."""
        with self._lock:
            self._holding = False
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._release)

    def stop_dropping(self) -> None:
        """Forget every fault still planned; traffic passes untouched from now on."""
        with self._lock:
            self._drop_at.clear()
            self._random = None

    @property
    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                self._connections,
                self._requests,
                self._responses,
                self._produce_requests,
                self._drops,
                self._held,
                self._lost,
            )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> FaultProxy:
        assert self._thread is None, "already started"
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("fault proxy did not start in time")
        if self._error is not None:
            raise RuntimeError("fault proxy failed to start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection, and end the thread."""
        if self._thread is None:
            return
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("fault proxy did not stop in time")
        self._thread = None
        error, self._error = self._error, None
        if error is None and self._failures:
            error = self._failures[0]
        if error is not None:
            raise RuntimeError("fault proxy failed") from error

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._serve, self.host, 0)
        self._port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        server.close()
        for link in list(self._links):
            link.abort()
        await server.wait_closed()
        if self._serving:
            await asyncio.wait(self._serving)

    # -- forwarding --------------------------------------------------------------------------

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        try:
            await self._link(client_in, client_out)
        finally:
            self._serving.discard(task)

    async def _link(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        with self._lock:
            self._connections += 1
            upstream = self._upstream
        if upstream is None:
            client_out.transport.abort()
            return
        try:
            broker_in, broker_out = await asyncio.open_connection(*upstream)
        except OSError:  # the broker is down: the client sees the connection fail
            client_out.transport.abort()
            return
        link = _Link(client_out, broker_out)
        assert self._stopping is not None
        if self._stopping.is_set():  # stop() came while connecting
            link.abort()
            return
        self._links.add(link)
        pumps = [
            asyncio.ensure_future(self._pump_requests(client_in, link)),
            asyncio.ensure_future(self._pump_responses(broker_in, link)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            self._forget_held(link)  # before the client can see the close
            # One side closed (or a drop aborted both): close the other side too, politely, so
            # what was forwarded still arrives.
            for writer in (client_out, broker_out):
                writer.close()
            await asyncio.wait(pumps)
        finally:
            self._links.discard(link)
            link.abort()
            self._forget_held(link)
        for pump in pumps:
            error = None if pump.cancelled() else pump.exception()
            if error is not None and not isinstance(error, ConnectionError):
                self._failures.append(error)  # a bug of the proxy's: stop() raises it

    async def _pump_requests(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """Client -> broker, frame by frame, noting which requests are Produce requests."""
        writer = link.upstream
        while True:
            frame = await _read_frame(reader, writer)
            if frame is None:
                return
            body = memoryview(frame)[4:]
            if len(body) >= _REQUEST_HEADER.size:
                api_key, _version, correlation_id = _REQUEST_HEADER.unpack_from(body)
                with self._lock:
                    self._requests += 1
                    if api_key == PRODUCE:
                        self._produce_requests += 1
                        doomed = self._produce_requests in self._drop_at
                        self._drop_at.discard(self._produce_requests)
                        link.doomed[correlation_id] = doomed
            else:
                with self._lock:
                    self._requests += 1
            writer.write(frame)
            await writer.drain()

    async def _pump_responses(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """Broker -> client, frame by frame; where a fault says so, a Produce answer is
        discarded and the link aborted instead, or held back with every answer behind it."""
        writer = link.client
        while True:
            frame = await _read_frame(reader, writer)
            if frame is None:
                return
            body = memoryview(frame)[4:]
            doomed = None
            if len(body) >= _CORRELATION_ID.size:
                (correlation_id,) = _CORRELATION_ID.unpack_from(body)
                doomed = link.doomed.pop(correlation_id, None)
                if doomed is not None and self._drop_now(doomed):
                    link.abort()
                    return
            with self._lock:
                hold = bool(link.held) or (doomed is not None and self._holding)
                if hold:
                    self._held += 1
                else:
                    self._responses += 1
            if hold:
                link.held.append(frame)
                continue
            writer.write(frame)
            await writer.drain()

    def _forget_held(self, link: _Link) -> None:
        with self._lock:
            self._held -= len(link.held)
            self._lost += len(link.held)
        link.held.clear()

    def _release(self) -> None:
        for link in self._links:
            with self._lock:
                self._held -= len(link.held)
                self._responses += len(link.held)
            for frame in link.held:
                link.client.write(frame)
            link.held.clear()

    def _drop_now(self, doomed: bool) -> bool:
        """Whether to drop at this Produce answer (counted if so)."""
        with self._lock:
            chance = self._random
            if not doomed and chance is not None and chance.remaining > 0:
                doomed = chance.rng.random() < chance.probability
                if doomed:
                    chance.remaining -= 1
            if doomed:
                self._drops += 1
                self._lost += 1
            return doomed


async def _read_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
    """One whole frame, size prefix included; None at the end of the stream. A partial frame
    before the end, or a size that cannot be a frame, is forwarded as it is and ends the frames
    (so even malformed traffic passes byte for byte, and the broker judges it)."""
    got = b""
    try:
        got = await reader.readexactly(4)
        (size,) = _SIZE.unpack(got)
        if size < 0:
            writer.write(got)
            await _pipe(reader, writer)
            return None
        return got + await reader.readexactly(size)
    except asyncio.IncompleteReadError as partial:
        rest = got + partial.partial
        if rest:
            writer.write(rest)
            await writer.drain()
        return None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(1 << 16):
        writer.write(chunk)
        await writer.drain()
