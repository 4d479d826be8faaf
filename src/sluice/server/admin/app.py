"""The admin HTTP side: ``/metrics``, ``/healthz``, ``/readyz`` and the web console, served by
aiohttp on the broker's own event loop (``sluice.admin.listen``, default 127.0.0.1:9644).

Why aiohttp: it is an asyncio server through and through (it runs on whatever loop is running,
uvloop included, with no thread or process of its own), it is mature and small enough to embed,
and its connections are ordinary asyncio protocols: a client that stalls holds only its own
connection and handler, never the loop. uvicorn would want to own the process and its signals;
a hand-written HTTP/1.1 parser would be one more thing to get wrong.

What keeps HTTP clients from hurting the Kafka listener:

* at most :data:`MAX_CONNECTIONS` admin connections (they would otherwise take descriptors the
  logs need). A connection past the cap closes the one idle longest (no request being handled:
  kept alive, or still sending its request's head), so idle or trickling connections cannot lock
  out a scrape or a liveness probe; only when every connection is handling a request is the
  newcomer answered 503 and closed. A request body must arrive within
  :data:`.api.BODY_TIMEOUT_S` (408), so no body that never comes holds a handler for ever;
* a scrape copies state on the loop a slice of partitions at a time and renders its text in a
  thread of its own (:mod:`.metrics`); scrapes run one at a time;
* idle keep-alive connections close after :data:`KEEPALIVE_S`; a response nobody reads waits in
  its own connection's buffers, bounded by that connection's one response.

And what keeps other web pages from using the console: when it listens on loopback (the
default), requests must name a loopback ``Host`` (a DNS-rebinding page cannot reach it under
its own name), writes need the console's ``X-Sluice-Console`` header (a cross-site form cannot
send it) and a same-origin ``Origin``, and every page is served with a strict Content Security
Policy (no inline or foreign scripts: even a value that slipped through unescaped could not
run).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from sluice.config import Listener
from sluice.server.admin import api, metrics
from sluice.server.admin.context import ServerView

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64
KEEPALIVE_S = 15.0
LINGER_S = 1.0
"""How long the rest of an unread body (a refused or timed-out write's) is read and dropped
before its connection closes (aiohttp's 10 s held such a connection even once its client had
gone)."""
SHUTDOWN_S = 1.0
"""How long a stop waits for admin requests in progress (a stalled scrape is not waited for)."""
STATIC = Path(__file__).parent / "static"
CONSOLE_PAGES = ("/", "/topics", "/topics/{name}", "/groups", "/groups/{group}", "/settings")
WRITE_HEADER = "X-Sluice-Console"

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class AdminServer:
    def __init__(self, server: ServerView, listener: Listener, *, read_only: bool) -> None:
        import sluice

        self.server = server
        self.listener = listener
        self.read_only = read_only
        self.version = sluice.__version__
        self.bound: Listener | None = None
        self._loopback = _is_loopback(listener.host)
        self._runner: web.AppRunner | None = None
        self._listening: asyncio.AbstractServer | None = None
        self._render = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-metrics")
        self.browse_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-browse")
        """Where the message browser decodes batches: one at a time, however many pages are
        asked for at once (a batch may inflate to 64 MiB)."""
        self._scrape = asyncio.Lock()
        self._page: str | None = None
        self._busy: set[object] = set()
        """Connections handling a request (inside the middleware): never closed to make room."""
        self._used: dict[object, float] = {}
        """Connection -> when it was opened or last began a request (the longest idle goes first)."""

    @property
    def connections(self) -> int:
        runner = self._runner
        return 0 if runner is None or runner.server is None else len(runner.server.connections)

    @property
    def handling(self) -> int:
        """Connections handling a request now (those a newcomer past the cap cannot displace)."""
        return len(self._busy)

    async def start(self) -> Listener:
        """Bind and serve; raises OSError if the address cannot be bound."""
        app = web.Application(middlewares=[self._guard], client_max_size=4 * 1024 * 1024)
        app.on_response_prepare.append(self._headers)
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
                *(web.get(path, self._console) for path in CONSOLE_PAGES),
                web.static("/static", STATIC),
                *api.routes(self),
            ]
        )
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=KEEPALIVE_S,
            shutdown_timeout=SHUTDOWN_S,
            lingering_time=LINGER_S,
        )
        await runner.setup()
        handlers = runner.server
        assert handlers is not None

        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.BaseProtocol:
            connections = handlers.connections
            # Closed ones linger in the list until their task ends: they do not count.
            live = [c for c in connections if c.transport is not None]
            if len(live) >= MAX_CONNECTIONS:
                idle = [c for c in live if c not in self._busy]
                if not idle:
                    return _Refuse()
                min(idle, key=lambda c: self._used.get(c, 0.0)).force_close()
            if len(self._used) > 2 * MAX_CONNECTIONS:
                known = set(connections)
                self._used = {c: t for c, t in self._used.items() if c in known}
            handler = handlers()
            self._used[handler] = loop.time()
            return handler

        try:
            self._listening = await loop.create_server(
                protocol, self.listener.host, self.listener.port, backlog=128, reuse_address=True
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        sockets = self._listening.sockets
        host, port = sockets[0].getsockname()[:2]
        self.bound = Listener(str(host), int(port))
        return self.bound

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._render.shutdown(wait=False, cancel_futures=True)
        self.browse_executor.shutdown(wait=False, cancel_futures=True)

    # -- middleware: who may ask, and the headers every answer carries ------------------------------

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        refusal = self._refusal(request)
        if refusal is not None:
            return web.json_response({"error": "FORBIDDEN", "message": refusal}, status=403)
        connection = request.protocol
        self._busy.add(connection)
        self._used[connection] = asyncio.get_running_loop().time()
        try:
            return await handler(request)
        finally:
            self._busy.discard(connection)

    @staticmethod
    async def _headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(_SECURITY_HEADERS)

    def _refusal(self, request: web.Request) -> str | None:
        if self._loopback and not _is_loopback(_hostname(request.headers.get("Host", ""))):
            return (
                f"Host {request.host!r} is not a loopback name; the console listens on "
                f"{self.listener} and answers only to 127.0.0.1, [::1] or localhost"
            )
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return None
        if WRITE_HEADER not in request.headers:
            return f"writes must come from the console (the {WRITE_HEADER} header)"
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            return f"a write from origin {origin!r} is refused (not this console)"
        return None

    # -- endpoints ----------------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        """The process is serving (answers even while the logs are being recovered)."""
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        """Logs opened and the Kafka listener accepting; 503 while starting or stopping."""
        server = self.server
        if server.should_exit.is_set():
            return web.Response(status=503, text="stopping\n")
        if server.broker is None or not server.started.is_set():
            return web.Response(status=503, text="starting: opening the logs\n")
        return web.Response(text="ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        async with self._scrape:
            snap = await metrics.take_snapshot(self.server, self.connections, self.version)
            body = await loop.run_in_executor(self._render, metrics.render, snap)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _console(self, request: web.Request) -> web.Response:
        """Every console page is the same document; its script draws the page the path names.
        Its assets are named with the version, so a browser never runs an old script against a
        newer broker."""
        if self._page is None:
            self._page = (STATIC / "index.html").read_text().replace("__VERSION__", self.version)
        return web.Response(
            text=self._page, content_type="text/html", headers={"Cache-Control": "no-cache"}
        )


class _Refuse(asyncio.Protocol):
    """A connection over :data:`MAX_CONNECTIONS`: told so and closed without reading it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's, but write like them.
        writer = cast(asyncio.WriteTransport, transport)
        writer.write(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        writer.close()


def _hostname(host: str) -> str:
    """The name part of a Host header (``[::1]:9644`` -> ``::1``)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
