"""``EmbeddedBroker``: the real server on a free loopback port, in a background thread.

A thread of its own (with its own event loop) because the clients people test with are mostly
synchronous (confluent-kafka, kafka-python) and would block a shared loop; an asyncio test uses
``async with``, which starts and stops it in an executor thread, so the test's loop never waits
on it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from sluice.testing.cluster import Cluster
from sluice.testing.faults import Faults
from sluice.testing.topics import TopicSpec, config_value

if TYPE_CHECKING:
    import tempfile

    from sluice.config import BrokerConfig
    from sluice.server.app import Server

T = TypeVar("T")


class EmbeddedBroker(Cluster):
    """A sluice broker in this process.

    ``data_dir``: kept after the broker stops (a restart, or another broker, finds the data);
    None for a temporary directory, removed when the ``with`` block ends (or by
    :meth:`cleanup`). ``settings``: broker settings by Kafka name (``{"num.partitions": 3}``;
    values are turned into Kafka's strings). ``topics``: created at start, name -> partition
    count, or -> topic configs by Kafka name with an optional ``"partitions"``
    (``{"orders": 6, "audit": {"partitions": 1, "retention.ms": 60000}}``).
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        settings: Mapping[str, object] | None = None,
        topics: Mapping[str, TopicSpec] | None = None,
        admin: bool = False,
    ) -> None:
        """``admin``: serve the admin side (metrics, health, console) on a free port of
        ``host`` (:attr:`admin_url`); off otherwise, unless ``settings`` name
        ``sluice.admin.listen``."""
        super().__init__()
        from sluice.config import BrokerConfig, Listener

        given = {k: config_value(v) for k, v in (settings or {}).items()}
        if "sluice.admin.listen" not in given:
            address = f"[{host}]:0" if ":" in host else f"{host}:0"
            given["sluice.admin.listen"] = address if admin else "off"
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="sluice-")
            data_dir = self._tmp.name
        self.data_dir = Path(data_dir)
        self.config: BrokerConfig = BrokerConfig.from_settings(
            given, listen=Listener(host, port), data_dir=self.data_dir
        )
        self.topics: dict[str, TopicSpec] = dict(topics or {})
        self.faults = Faults(self)
        """Scripted faults (:class:`~sluice.testing.faults.Faults`)."""
        self.server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self.running else "stopped"
        return f"EmbeddedBroker({where}, data_dir={str(self.data_dir)!r})"

    @property
    def bootstrap_servers(self) -> str:  # type: ignore[override]  # a property here
        return f"{self.config.listen.host}:{self.port}"

    @property
    def port(self) -> int:
        if self.server is None or self.server.bound is None:
            raise RuntimeError("the embedded broker is not started")
        return self.server.bound.port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set()

    @property
    def admin_url(self) -> str:
        """``http://host:port`` of the admin side (started with ``admin=True``)."""
        if self.server is None:
            raise RuntimeError("the embedded broker is not started")
        admin = self.server.admin
        if admin is None or admin.bound is None:
            raise RuntimeError("the admin side is off (EmbeddedBroker(admin=True) serves it)")
        host = admin.bound.host
        return f"http://[{host}]:{admin.bound.port}" if ":" in host else f"http://{host}:{admin.bound.port}"

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start serving; returns once the broker accepts connections and the declared topics
        exist. Started again after :meth:`stop`, it listens on the port it had."""
        if self._thread is not None:
            raise RuntimeError("the embedded broker is started already")
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="sluice-embedded", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("embedded sluice broker did not start in time")
        if self._error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError(
                f"embedded sluice broker failed to start: {self._error}"
            ) from self._error
        if self.topics:
            self.create_topics(self.topics, exist_ok=True, timeout=timeout)
        return self

    def _run(self) -> None:
        import uvloop

        from sluice.server.app import Server

        loop = uvloop.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            server = Server(self.config)
            self.server = server
            waiter = asyncio.ensure_future(server.started.wait())
            serving = asyncio.ensure_future(server.serve())
            await asyncio.wait([waiter, serving], return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                waiter.cancel()
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
        """Clean shutdown, exactly as SIGTERM does for ``sluice serve`` (faults are cleared
        first, so paused appends finish)."""
        if self._thread is None:
            return
        self.close()  # the helpers' producer, before its broker goes
        if self.server is not None and self.server.bound is not None:
            self._keep_port(self.server.bound.port)
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop finished meanwhile
                self.faults.clear()
            with contextlib.suppress(RuntimeError):
                server = self.server
                if server is not None:
                    loop.call_soon_threadsafe(server.request_exit)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("embedded sluice broker did not stop in time")
        self._thread = None
        self._loop = None
        self.server = None
        error, self._error = self._error, None
        if error is not None and not isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise RuntimeError("embedded sluice broker failed") from error

    def restart(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Stop cleanly and start again on the same port and data directory."""
        self.stop(timeout)
        return self.start(timeout)

    def _keep_port(self, port: int) -> None:
        import dataclasses

        from sluice.config import Listener

        listen = Listener(self.config.listen.host, port)
        self.config = dataclasses.replace(self.config, listen=listen)

    def cleanup(self) -> None:
        """Remove the temporary data directory (one that was given is kept)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the broker's event loop (its thread) and return what it returns: how
        a test reaches into the running broker safely."""
        loop = self._loop
        if loop is None or loop.is_closed() or not self._ready.is_set():
            raise RuntimeError("the embedded broker is not running")
        if threading.current_thread() is self._thread:
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout)

    def __enter__(self) -> EmbeddedBroker:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        finally:
            self.cleanup()

    async def __aenter__(self) -> EmbeddedBroker:
        """Started in an executor thread: the caller's event loop goes on meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(None, self.__enter__)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.__exit__, exc_type, exc, tb)
