"""The broker process's lifecycle, in uvicorn's shape: startup, serve until told to stop, then a
clean shutdown (stop accepting, answer in-flight requests, flush logs, write clean markers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import TYPE_CHECKING

from sluice.server.config import BrokerConfig, Listener
from sluice.server.connection import Connection
from sluice.storage.lock import DataDirLock

if TYPE_CHECKING:
    from sluice.broker.broker import Broker

log = logging.getLogger(__name__)


class Server:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.connections: set[Connection] = set()
        self.started = asyncio.Event()
        self.should_exit = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._lock: DataDirLock | None = None
        self.broker: Broker | None = None
        self.bound: Listener | None = None

    # -- connection bookkeeping ------------------------------------------------------------------

    def register(self, connection: Connection) -> bool:
        if len(self.connections) >= self.config.max_connections:
            return False
        self.connections.add(connection)
        return True

    def unregister(self, connection: Connection) -> None:
        self.connections.discard(connection)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def startup(self) -> None:
        from sluice.broker.broker import Broker

        loop = asyncio.get_running_loop()
        # Before anything is opened: a second broker on this directory must touch nothing.
        self._lock = DataDirLock.acquire(self.config.data_dir)
        listen = self.config.listen
        max_frame = self.config.request_max_bytes

        def connection() -> Connection:
            assert self.broker is not None
            return Connection(self, self.broker, max_frame)

        # Bind before opening the logs (a taken port fails fast, with nothing recovered for
        # nothing), but accept only once the broker is open.
        self._server = await loop.create_server(
            connection,
            host=listen.host,
            port=listen.port,
            reuse_address=True,
            backlog=1024,
            start_serving=False,
        )
        broker = await loop.run_in_executor(None, Broker.open, self.config)
        self.broker = broker
        sock = self._server.sockets[0].getsockname()
        self.bound = Listener(str(sock[0]), int(sock[1]))
        if listen.port == 0:
            # An ephemeral port (tests): advertise the port actually bound.
            self.config = _with_port(self.config, self.bound.port)
            broker.config = self.config
        broker.start()
        await self._server.start_serving()
        self._reaper = loop.create_task(self._reap_idle(), name="idle-reaper")
        self.started.set()
        log.info(
            "sluice listening on %s (advertised %s), data in %s",
            self.bound,
            self.config.advertised_listener,
            self.config.data_dir,
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
            await self.startup()
            await self.should_exit.wait()
        finally:
            await self.shutdown()
            for sig in installed:
                loop.remove_signal_handler(sig)

    def request_exit(self) -> None:
        self.should_exit.set()

    async def shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._reaper is not None:
            self._reaper.cancel()
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
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
        if self.broker is not None:
            await self.broker.close()
            self.broker = None
            log.info("sluice stopped cleanly")
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def _reap_idle(self) -> None:
        idle = self.config.idle_timeout_ms / 1000
        interval = max(0.05, min(idle / 4, 10.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for connection in list(self.connections):
                if not connection.busy and now - connection.last_active > idle:
                    log.info(
                        "closing %s: idle for over %d ms",
                        connection.peer,
                        self.config.idle_timeout_ms,
                    )
                    connection.close()


def _with_port(config: BrokerConfig, port: int) -> BrokerConfig:
    import dataclasses

    listen = Listener(config.listen.host, port)
    advertised = config.advertised
    if advertised is not None and advertised.port == 0:
        advertised = Listener(advertised.host, port)
    return dataclasses.replace(config, listen=listen, advertised=advertised)
