"""``EmbeddedBroker``: the real server on a free loopback port, in a background thread.

A thread of its own (with its own event loop) because the clients people test with are mostly
synchronous (confluent-kafka, kafka-python) and would block a shared loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from sluice.config import BrokerConfig, Listener
from sluice.server.app import Server


class EmbeddedBroker:
    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: dict[str, str] | None = None,
        admin: bool = False,
    ) -> None:
        """``admin``: serve the admin side (metrics, health, console) on a free port of
        ``host`` (:attr:`admin_url`); off otherwise, unless ``settings`` name
        ``sluice.admin.listen``."""
        settings = dict(settings or {})
        if "sluice.admin.listen" not in settings:
            address = f"[{host}]:0" if ":" in host else f"{host}:0"
            settings["sluice.admin.listen"] = address if admin else "off"
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sluice-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.config = BrokerConfig.from_settings(
            settings, listen=Listener(host, port), data_dir=self.data_dir
        )
        self.server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def bootstrap_servers(self) -> str:
        assert self.server is not None and self.server.bound is not None, "broker not started"
        return f"{self.config.listen.host}:{self.server.bound.port}"

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.bound is not None, "broker not started"
        return self.server.bound.port

    @property
    def admin_url(self) -> str:
        """``http://host:port`` of the admin side (started with ``admin=True``)."""
        assert self.server is not None, "broker not started"
        admin = self.server.admin
        assert admin is not None and admin.bound is not None, "the admin side is off"
        host = admin.bound.host
        return f"http://[{host}]:{admin.bound.port}" if ":" in host else f"http://{host}:{admin.bound.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="sluice-embedded", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("embedded sluice broker did not start in time")
        if self._error is not None:
            raise RuntimeError("embedded sluice broker failed to start") from self._error
        return self

    def _run(self) -> None:
        import uvloop

        loop = uvloop.new_event_loop()
        self._loop = loop
        server = Server(self.config)
        self.server = server

        async def main() -> None:
            waiter = asyncio.ensure_future(server.started.wait())
            serving = asyncio.ensure_future(server.serve())
            await asyncio.wait([waiter, serving], return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                serving.result()  # raises the startup error
            self._ready.set()
            await serving

        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to start() or stop()
            self._error = exc
        finally:
            self._ready.set()
            loop.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown, exactly as SIGTERM does for ``sluice serve``."""
        if self._thread is None:
            return
        if self._loop is not None and self.server is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop already finished
                self._loop.call_soon_threadsafe(self.server.request_exit)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("embedded sluice broker did not stop in time")
        self._thread = None
        error, self._error = self._error, None
        if error is not None and not isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise RuntimeError("embedded sluice broker failed") from error

    def restart(self) -> EmbeddedBroker:
        """Stop cleanly and start again on the same port and data directory."""
        port = self.port
        self.stop()
        self.config = dataclasses.replace(self.config, listen=Listener(self.config.listen.host, port))
        return self.start()

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()
