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
from typing import TYPE_CHECKING, Self, TypeVar

from sluice.hostport import host_port
from sluice.testing.cluster import Cluster
from sluice.testing.faults import Faults, Host
from sluice.testing.tmpdir import TemporaryDirectory
from sluice.testing.topics import (
    TopicCreationError,
    TopicSpec,
    broker_settings,
    config_value,
    topic_spec,
)

if TYPE_CHECKING:
    from sluice.config import BrokerConfig
    from sluice.server.app import Server
    from sluice.storage.manager import Topic

T = TypeVar("T")


class _Faults(Faults):
    """The embedded broker's faults: clearing them (as stopping does, first) also sends the
    answers a delay holds back now, so a stop never waits out a delay in flight."""

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._holds: set[asyncio.Future[None]] = set()  # the broker loop's alone

    async def _hold(self, seconds: float) -> None:
        cut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._holds.add(cut)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cut, seconds)
        finally:
            self._holds.discard(cut)

    def clear(self) -> None:
        super().clear()
        if self._host.server is None:
            return

        def cut_short() -> None:
            for hold in list(self._holds):
                if not hold.done():
                    hold.set_result(None)

        self._host.call(cut_short)


_OWN_SETTINGS = {
    "listeners": "host= and port=",
    "log.dirs": "data_dir=",
    "log.dir": "data_dir=",
}
"""Broker settings an embedded broker takes from its own arguments."""


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

        _check_listener(host, port)
        if host.startswith("[") and host.endswith("]"):  # "[::1]", as in a bootstrap address
            host = host[1:-1]
        given = broker_settings(settings, "EmbeddedBroker", _OWN_SETTINGS)
        if "sluice.admin.listen" not in given:
            given["sluice.admin.listen"] = host_port(host, 0) if admin else "off"
        # everything is checked before a temporary directory exists
        self.config: BrokerConfig = BrokerConfig.from_settings(
            given, listen=Listener(host, port), data_dir=Path("sluice-temporary" if data_dir is None else data_dir)
        )
        self.topics: dict[str, TopicSpec] = _checked_topics(topics or {}, self.config)
        self._temporary = data_dir is None
        self._tmp: TemporaryDirectory | None = None
        self._tmp_served = False
        self.data_dir = self.config.data_dir
        if self._temporary:
            self._new_temporary_dir()
        self.faults: Faults = _Faults(self)
        """Scripted faults (:class:`~sluice.testing.faults.Faults`)."""
        self.server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()  # stop() asked, maybe before the server existed
        self._error: BaseException | None = None
        self._checked: tuple[Path, dict[str, tuple[int, dict[str, str]]]] | None = None
        """The data directory whose topics the declared ones were last checked against (or
        created in), and the declarations then: a restart does not hold the test's own later
        changes to them (CreatePartitions, AlterConfigs) against it."""

    def __repr__(self) -> str:
        where = self.bootstrap_servers if self.running else "stopped"
        return f"EmbeddedBroker({where}, data_dir={str(self.data_dir)!r})"

    @property
    def bootstrap_servers(self) -> str:  # type: ignore[override]  # a property here
        return host_port(self.config.listen.host, self.port)

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

    def start(self, timeout: float = 30.0) -> Self:
        """Start serving; returns once the broker accepts connections and the declared topics
        exist. Started again after :meth:`stop`, it listens on the port it had (and serves the
        admin side on the port that had); a temporary data directory removed by
        :meth:`cleanup` (the end of a ``with`` block) is made afresh. A declared topic the data
        directory holds already must have the declared partition count and configs
        (:class:`TopicCreationError` otherwise: nothing stored is changed). A start that fails
        stops whatever it started (and removes a temporary directory no start had served yet)
        before it raises."""
        self._not_on_own_thread("start()")
        if self._thread is not None:
            raise RuntimeError("the embedded broker is started already")
        if self._temporary and self._tmp is None:
            self._new_temporary_dir()
        self._ready.clear()
        self._stopping.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="sluice-embedded", daemon=True)
        self._thread.start()
        try:
            if not self._ready.wait(timeout):
                raise TimeoutError("embedded sluice broker did not start in time")
            if self._error is not None:
                raise RuntimeError(
                    f"embedded sluice broker failed to start: {self._error}"
                ) from self._error
            if self.topics:
                self._check_declared_topics(timeout)
                self.create_topics(self.topics, exist_ok=True, timeout=timeout)
                declared = {name: topic_spec(spec) for name, spec in self.topics.items()}
                self._checked = (self.data_dir, declared)
        except BaseException:
            self._abandon(timeout)
            if not self._tmp_served:  # nothing of a user's is in it yet
                self._remove_temporary()
            raise
        self._tmp_served = True
        return self

    def _check_declared_topics(self, timeout: float) -> None:
        """Refuse declared topics that the data directory holds with another partition count
        or other configs: created with ``exist_ok``, they would be kept as they are without a
        word, and the test would run against a topic other than the one it declared. Neither
        is changed here (partitions added to a keyed topic move keys, and configs would be
        overwritten), so the test's author decides. Topics this broker already checked or
        created in this directory, as declared now, are left alone (the test may have changed
        them itself since)."""
        checked_dir, checked = self._checked or (None, {})
        unchecked = {
            name: spec
            for name, spec in self.topics.items()
            if checked_dir != self.data_dir or checked.get(name) != topic_spec(spec)
        }
        if not unchecked:
            return

        def existing() -> dict[str, Topic]:
            assert self.server is not None and self.server.broker is not None
            topics = self.server.broker.logs.topics
            return {name: topics[name] for name in unchecked if name in topics}

        for name, topic in self.call(existing, timeout).items():
            differences = _differences(unchecked[name], topic)
            if differences:
                from sluice.errors import ErrorCode

                raise TopicCreationError(
                    name,
                    ErrorCode.TOPIC_ALREADY_EXISTS,
                    f"it exists in {self.data_dir} other than declared: {'; '.join(differences)} "
                    "(a declared topic is created, never changed: declare it as it is, or use "
                    "another data_dir)",
                )

    def _abandon(self, timeout: float) -> None:
        """Stop what a failed start started; the start's own error is what the caller sees."""
        try:
            self.stop(max(timeout, 10.0))  # a start that timed out may be well on its way
        except Exception:  # the broker failed (reported by start) or would not stop in time
            if self._thread is not None and not self._thread.is_alive():
                self._thread = None
        finally:
            self._error = None

    def _run(self) -> None:
        import uvloop

        from sluice.server.app import Server

        loop = uvloop.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            server = Server(self.config)
            self.server = server
            if self._stopping.is_set():  # a start given up on (timed out) before this
                server.request_exit()
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
            with contextlib.suppress(Exception):  # its worker threads end with the broker
                loop.run_until_complete(loop.shutdown_default_executor())
            self._ready.set()
            loop.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown, exactly as SIGTERM does for ``sluice serve``. Faults are cleared
        first, so paused appends finish and delayed answers go out now. Not from the broker's
        own thread (a function given to :meth:`call`): a RuntimeError, and nothing is changed."""
        self._not_on_own_thread("stop()")
        if self._thread is None:
            return
        self._stopping.set()
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop finished meanwhile
                self.faults.clear()
        self.close()  # the helpers' producer, before its broker goes
        if self.server is not None:
            self._keep_ports(self.server)
        if loop is not None and not loop.is_closed() and self._thread.is_alive():
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

    def restart(self, timeout: float = 30.0) -> Self:
        """Stop cleanly and start again on the same ports (Kafka and admin) and data
        directory."""
        self._not_on_own_thread("restart()")
        self.stop(timeout)
        return self.start(timeout)

    def _keep_ports(self, server: Server) -> None:
        """Listen where ``server`` did when started again: the Kafka port, and the admin
        side's (``admin_url`` stays the same across a restart)."""
        import dataclasses

        from sluice.config import Listener

        config = self.config
        if server.bound is not None:
            kafka = Listener(config.listen.host, server.bound.port)
            config = dataclasses.replace(config, listen=kafka)
        admin = server.admin
        if config.admin_listen is not None and admin is not None and admin.bound is not None:
            kept = Listener(config.admin_listen.host, admin.bound.port)
            config = dataclasses.replace(config, admin_listen=kept)
        self.config = config

    def _not_on_own_thread(self, what: str) -> None:
        """Refuse a lifecycle call made on the broker's own thread (from :meth:`call`),
        before it changes anything: stopping there would wait for the thread it runs on."""
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError(
                f"{what} on the embedded broker's own thread (inside call()): call it from "
                "another thread"
            )

    def cleanup(self) -> None:
        """Remove the temporary data directory (one that was given is kept). Not while the
        broker runs: its data would go from under it."""
        if self.running:
            raise RuntimeError("cleanup() while the broker runs: stop() it first")
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _new_temporary_dir(self) -> None:
        import dataclasses

        self._tmp = TemporaryDirectory(prefix="sluice-")
        self._tmp_served = False
        self.data_dir = Path(self._tmp.name)
        self.config = dataclasses.replace(self.config, data_dir=self.data_dir)

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

    def __enter__(self) -> Self:
        # A failed start removes a temporary directory nothing was served from yet; one that
        # served (this broker's data, maybe running: a second `with` on it) stays.
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._not_on_own_thread("leaving a with block")  # the directory would go under it
        try:
            self.stop()
        finally:
            self._remove_temporary()

    async def __aenter__(self) -> Self:
        """Started in an executor thread: the caller's event loop goes on meanwhile. Cancelled
        while starting, it waits for the start to end and stops the broker, then is cancelled."""
        loop = asyncio.get_running_loop()
        starting = loop.run_in_executor(None, self.__enter__)
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            await _wait_out(starting)
            if starting.exception() is None:  # started: nobody else will stop it
                stopping = loop.run_in_executor(None, self.__exit__, None, None, None)
                await _wait_out(stopping)
                stopping.exception()  # the cancellation is what the caller sees
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stopped in an executor thread; cancelled meanwhile, it still waits for the stop."""
        stopping = asyncio.get_running_loop().run_in_executor(None, self.__exit__, exc_type, exc, tb)
        cancelled = await _wait_out(stopping)
        stopping.result()
        if cancelled:
            raise asyncio.CancelledError


async def _wait_out(work: asyncio.Future[T]) -> bool:
    """Wait until ``work`` (an executor's) is done, even when the waiting task is cancelled
    meanwhile, so a broker is never left half started or half stopped; returns whether it
    was cancelled (the caller raises that once it has cleaned up)."""
    cancelled = False
    while not work.done():
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def _check_listener(host: str, port: int) -> None:
    from sluice.errors import InvalidConfigError

    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {host!r}")
    if not host.strip():
        # it would listen on every interface and give clients ":PORT" to connect to
        raise InvalidConfigError(
            "host must name an address to listen on, e.g. 127.0.0.1 (the default), ::1, or "
            "0.0.0.0 for every interface; not an empty string"
        )
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {port!r}")
    if not 0 <= port <= 65535:
        raise InvalidConfigError(f"port must be 0..65535 (0: a free one), not {port}")


def _checked_topics(topics: Mapping[str, TopicSpec], config: BrokerConfig) -> dict[str, TopicSpec]:
    """The declared topics, checked as the broker would check them, so a bad one is refused
    before anything starts (the broker still checks them when it creates them)."""
    from sluice.config import LogConfig
    from sluice.errors import InvalidConfigError, InvalidPartitionsError
    from sluice.storage.manager import validate_topic_name

    if not isinstance(topics, Mapping):
        raise TypeError(
            f"topics is a mapping of topic name to partition count or topic configs, e.g. "
            f"{{'orders': 3}}; got {type(topics).__name__}"
        )
    limit = config.max_partitions_per_topic
    for name, spec in topics.items():
        if not isinstance(name, str):
            raise TypeError(f"a topic name is a str, not {name!r}")
        validate_topic_name(name)
        if isinstance(spec, Mapping):
            partitions = spec.get("partitions", 1)
            configs = {
                str(k): config_value(v, f"topic {name!r}: {k}", key=str(k))
                for k, v in spec.items()
                if k != "partitions"
            }
        elif isinstance(spec, int) and not isinstance(spec, bool):
            partitions, configs = spec, {}
        else:
            raise TypeError(
                f"topic {name!r}: a partition count or a mapping of topic configs, not {spec!r}"
            )
        if isinstance(partitions, bool) or not isinstance(partitions, int):
            raise TypeError(f"topic {name!r}: partitions must be an int, not {partitions!r}")
        if not 1 <= partitions <= limit:
            raise InvalidPartitionsError(
                f"topic {name!r}: partitions must be 1..{limit} "
                f"(sluice.max.partitions.per.topic), not {partitions}"
            )
        try:
            LogConfig.from_dict(configs, config.topic_defaults)
        except InvalidConfigError as exc:
            raise InvalidConfigError(f"topic {name!r}: {exc}") from None
    return dict(topics)


def _differences(declared: TopicSpec, topic: Topic) -> list[str]:
    """How an existing topic differs from its declaration: the partition count, and each
    declared config whose value (as parsed: ``60000`` and ``"60000"`` are the same) differs."""
    from sluice.config import TOPIC_SETTINGS

    partitions, configs = topic_spec(declared)
    found = []
    if partitions != len(topic.partitions):
        found.append(f"partitions {len(topic.partitions)}, declared {partitions}")
    for name, value in configs.items():
        setting = TOPIC_SETTINGS.get(name)
        if setting is None:  # put in .topics after the constructor checked them
            found.append(f"{name} is no topic config, declared {value}")
            continue
        has = getattr(topic.config, setting.attr)
        try:
            differs = setting.parse(value) != has
        except ValueError:  # likewise
            differs = True
        if differs:
            found.append(f"{name} {setting.render(has)}, declared {value}")
    return found
