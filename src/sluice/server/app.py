"""The broker process's lifecycle, in uvicorn's shape: startup, serve until told to stop, then a
clean shutdown (stop accepting, answer in-flight requests, flush logs, write clean markers); and
the connection limits that need the whole server's view: ``max.connections``,
``max.connections.per.ip`` (with its overrides), ``connections.max.idle.ms`` and the receive
deadline of a started request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from typing import TYPE_CHECKING

from sluice.config import BrokerConfig, Listener
from sluice.errors import SluiceError
from sluice.hostport import host_port
from sluice.server.accept import Acceptor, listen, raise_fd_limit
from sluice.server.connection import Connection
from sluice.server.connlog import ConnectionLog
from sluice.server.memory import RequestMemory
from sluice.storage.lock import DataDirLock

if TYPE_CHECKING:
    from sluice.broker.broker import Broker
    from sluice.server.admin.app import AdminServer

log = logging.getLogger(__name__)


class StartupError(Exception):
    """The broker could not start (port taken, data directory in use or unreadable...)."""


class ShutdownError(Exception):
    """Shutting down could not make everything durable (an fsync failed); acknowledged data that
    was durable stays, and the next start recovers the logs."""


class Server:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.connections: set[Connection] = set()
        self.per_host: dict[str, int] = {}
        self.memory = RequestMemory(config.queued_max_request_bytes)
        self.connlog = ConnectionLog()
        self.started = asyncio.Event()
        self.should_exit = asyncio.Event()
        self.acceptor: Acceptor | None = None
        self._attaching: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._lock: DataDirLock | None = None
        self.broker: Broker | None = None
        self.bound: Listener | None = None
        self.admin: AdminServer | None = None
        """The admin HTTP side (metrics, health, console), unless ``sluice.admin.listen`` is off."""
        self.started_at = time.monotonic()

    # -- connection bookkeeping ------------------------------------------------------------------

    def admit(self, sock: socket.socket, host: str, port: int) -> None:
        """A connection just accepted: refuse it (closed at once, logged with the cause) or
        hand it to a :class:`Connection`. The per-address limit is checked first: it names the
        address a flood comes from, and it is what keeps slots for everyone else."""
        peer = host_port(host, port)
        held = self.per_host.get(host, 0)
        limit = self.config.per_ip_limit_for(host)
        if held >= limit:
            self.connlog.note(
                "refused: max.connections.per.ip",
                host,
                "refused %s: %s already has %d connections (max.connections.per.ip%s=%d)",
                peer,
                host,
                held,
                "" if limit == self.config.per_ip_limit else ".overrides",
                limit,
            )
            sock.close()
            return
        if len(self.connections) >= self.config.max_connections:
            self.connlog.note(
                "refused: max.connections",
                host,
                "refused %s: %d connections are open (max.connections=%d)",
                peer,
                len(self.connections),
                self.config.max_connections,
            )
            sock.close()
            return
        assert self.broker is not None
        connection = Connection(self, self.broker, host, peer)
        self.connections.add(connection)
        self.per_host[host] = held + 1
        task = asyncio.get_running_loop().create_task(self._attach(connection, sock))
        self._attaching.add(task)
        task.add_done_callback(self._attaching.discard)

    async def _attach(self, connection: Connection, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: connection, sock)
        except OSError as exc:  # the peer may be gone already
            sock.close()
            self.unregister(connection)
            self.connlog.note(
                "accept failed",
                connection.peer_host,
                "dropping %s: setting up the connection failed: %s",
                connection.peer,
                exc,
                level=logging.INFO,
            )

    def unregister(self, connection: Connection) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        left = self.per_host[connection.peer_host] - 1
        if left:
            self.per_host[connection.peer_host] = left
        else:
            del self.per_host[connection.peer_host]

    # -- lifecycle ---------------------------------------------------------------------------------

    async def startup(self) -> None:
        from sluice.broker.broker import Broker

        loop = asyncio.get_running_loop()
        # Before anything is opened: a second broker on this directory must touch nothing.
        self._lock = DataDirLock.acquire(self.config.data_dir)
        fd_limit = raise_fd_limit()
        # Bind before opening the logs (a taken port fails fast, with nothing recovered for
        # nothing), but accept only once the broker is open.
        sockets = listen(self.config.listen.host, self.config.listen.port, backlog=1024)
        self.acceptor = Acceptor(
            sockets,
            self.admit,
            self.connlog,
            fd_limit=fd_limit,
            fd_reserve=self.config.fd_reserve,
        )
        self._check_fd_budget(fd_limit)
        # Before the logs open: /healthz answers (and /readyz says why not yet) during a long
        # recovery.
        await self._start_admin()
        broker = await loop.run_in_executor(None, Broker.open, self.config)
        if self.admin is not None:
            from sluice.broker.stats import BrokerStats

            broker.stats = BrokerStats()
        self.broker = broker
        sock = sockets[0].getsockname()
        self.bound = Listener(str(sock[0]), int(sock[1]))
        if self.config.listen.port == 0:
            # An ephemeral port (tests): advertise the port actually bound.
            self.config = _with_port(self.config, self.bound.port)
            broker.config = self.config
        broker.start()
        self.acceptor.start()
        self._reaper = loop.create_task(self._housekeeping(), name="connection-housekeeping")
        self.started.set()
        log.info(
            "sluice listening on %s (advertised %s), data in %s",
            self.bound,
            self.config.advertised_listener,
            self.config.data_dir,
        )

    async def _start_admin(self) -> None:
        """Serve the admin side if configured. The default address being taken (another
        broker on this machine) is logged and the broker runs without it; an address the
        operator chose must work, or the start fails."""
        listener = self.config.admin_listen
        if listener is None:
            return
        from sluice.server.admin.app import AdminServer

        admin = AdminServer(self, listener, read_only=self.config.admin_read_only)
        try:
            bound = await admin.start()
        except OSError as exc:
            await admin.close()
            if "sluice.admin.listen" in self.config.static_keys:
                raise OSError(
                    f"cannot serve the admin side (metrics, console) on {listener}: {exc} "
                    "(sluice.admin.listen / --admin-listen; off disables it)"
                ) from exc
            log.error(
                "running without the admin side (metrics, health, console): cannot listen on "
                "%s, the default sluice.admin.listen: %s; choose another with --admin-listen "
                "HOST:PORT, or --admin-listen off",
                listener,
                exc,
            )
            return
        self.admin = admin
        log.info(
            "admin side on http://%s/ (metrics /metrics, health /healthz /readyz, console /)%s",
            f"[{bound.host}]:{bound.port}" if ":" in bound.host else bound,
            ", read-only" if admin.read_only else "",
        )

    async def serve(self) -> None:
        """Run until SIGINT/SIGTERM (or :meth:`request_exit`), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_exit)
                installed.append(sig)
        try:
            try:
                await self.startup()
            except (OSError, SluiceError) as exc:
                raise StartupError(str(exc)) from exc
            await self.should_exit.wait()
        finally:
            await self.shutdown()
            for sig in installed:
                loop.remove_signal_handler(sig)

    def request_exit(self) -> None:
        self.should_exit.set()

    async def shutdown(self) -> None:
        if self.acceptor is not None:
            self.acceptor.close()
        if self._reaper is not None:
            self._reaper.cancel()
        if self._attaching:  # connections accepted a moment ago: let them get their transport
            await asyncio.wait(list(self._attaching), timeout=1.0)
        for connection in list(self.connections):
            connection.stop_reading()
        if self.broker is not None:
            # Answer long polls and parked group joins now: waiting for their max_wait_ms or
            # rebalance timeout would hold shutdown past the grace period.
            self.broker.begin_shutdown()
        if self.connections:
            waits = [c.wait_closed() for c in list(self.connections)]
            _done, pending = await asyncio.wait(
                [asyncio.ensure_future(w) for w in waits],
                timeout=self.config.shutdown_grace_ms / 1000,
            )
            for task in pending:
                task.cancel()
        for connection in list(self.connections):
            connection.abort()  # past the grace period: do not wait for peers to read
        self.connlog.flush()
        try:
            if self.broker is not None:
                broker, self.broker = self.broker, None
                try:
                    await broker.close()
                except (OSError, SluiceError) as exc:
                    log.error(
                        "shutdown did not complete cleanly: %s; the next start recovers the logs",
                        exc,
                    )
                    raise ShutdownError(str(exc)) from exc
                log.info("sluice stopped cleanly")
        finally:
            if self.admin is not None:
                admin, self.admin = self.admin, None
                await admin.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _check_fd_budget(self, fd_limit: int) -> None:
        assert self.acceptor is not None
        ceiling = self.acceptor.fd_ceiling
        if self.config.max_connections >= ceiling:
            log.warning(
                "max.connections=%d, but this process may open %d file descriptors and keeps "
                "%d of them for the logs (sluice.fd.reserve): connections past descriptor %d "
                "will be refused; raise the hard limit (ulimit -Hn, LimitNOFILE=) to use them",
                self.config.max_connections,
                fd_limit,
                fd_limit - ceiling,
                ceiling,
            )

    async def _housekeeping(self) -> None:
        """Close connections idle for longer than connections.max.idle.ms, and those whose
        request has not arrived by its receive deadline; quiet ones give back grown buffers."""
        config = self.config
        idle = config.idle_timeout_ms / 1000
        receive = config.request_receive_timeout_ms / 1000
        interval = max(0.02, min(idle / 4, receive / 4, 1.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for connection in list(self.connections):
                if connection.receive_started is not None:
                    # A request is arriving: its deadline governs, not idleness (a big request
                    # on a slow link may take longer than connections.max.idle.ms).
                    if connection.reading_paused or now <= connection.receive_deadline:
                        continue
                    self.connlog.note(
                        "closed: sluice.request.receive.timeout.ms",
                        connection.peer_host,
                        "closing %s: %d of %s request bytes arrived in %.1f s, past its deadline "
                        "(sluice.request.receive.timeout.ms=%d plus its size at "
                        "sluice.request.receive.min.bytes.per.sec=%d)",
                        connection.peer,
                        connection.received,
                        "?" if connection.receive_size is None else connection.receive_size + 4,
                        now - connection.receive_started,
                        config.request_receive_timeout_ms,
                        config.request_receive_min_rate,
                    )
                    connection.abort()
                    continue
                quiet = now - connection.last_active
                if quiet > interval:
                    connection.shrink_read_buffer()
                if not connection.busy and quiet > idle:
                    # Not busy yet with frames queued: it waits for the peer to read a response.
                    self.connlog.note(
                        "closed: connections.max.idle.ms",
                        connection.peer_host,
                        "closing %s: no request for %.1f s (connections.max.idle.ms=%d)",
                        connection.peer,
                        quiet,
                        config.idle_timeout_ms,
                        level=logging.INFO,
                    )
                    connection.abort()
            self.connlog.tick()


def _with_port(config: BrokerConfig, port: int) -> BrokerConfig:
    import dataclasses

    listen = Listener(config.listen.host, port)
    advertised = config.advertised
    if advertised is not None and advertised.port == 0:
        advertised = Listener(advertised.host, port)
    return dataclasses.replace(config, listen=listen, advertised=advertised)
