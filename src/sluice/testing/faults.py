"""Scripted faults on an embedded broker, in the spirit of franz-go's kfake control functions:
how a test makes the broker misbehave on cue, to exercise a client's retries, idempotence, time
outs and dead-letter paths against the real protocol.

``broker.faults`` (an :class:`EmbeddedBroker`'s) offers:

- :meth:`Faults.fail`: the next N requests of an API are answered with an error code, per
  partition, topic or group where the API has such codes (see :mod:`sluice.testing.answers`);
  the handler does not run, so nothing is appended, committed or created.
- :meth:`Faults.delay`: the answers of an API are held back for a while (the request was
  processed: a produce is stored, but its acknowledgement is late).
- :meth:`Faults.drop_after`: the next N requests of an API are processed, then the connection is
  closed before the answer is sent (the client cannot know the request took effect).
- :meth:`Faults.drop_connections`: every client connection is closed now.
- :meth:`Faults.pause_appends`: appends to a partition wait (their produce requests with them)
  until resumed.

The test's thread calls these while the broker runs in its own thread: every change is made on
the broker's event loop and returns once it is in effect. A broker with no faults pays one
attribute check per request (and per append). The ``sluice_broker`` fixture clears the faults
after each test; stopping the broker clears them too.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, TypeVar

from sluice.dataclass import dataclass
from sluice.errors import CloseConnection, ErrorCode
from sluice.protocol import ApiKey, Request, ResponseBody
from sluice.protocol import messages as m
from sluice.testing.answers import ANSWERABLE, error_answer

if TYPE_CHECKING:
    from sluice.broker.broker import Broker
    from sluice.server.app import Server

T = TypeVar("T")


class Host(Protocol):
    """What the faults need of the embedded broker that owns them."""

    @property
    def server(self) -> Server | None: ...

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the broker's event loop and return its result."""
        ...


ApiName = ApiKey | int | str
"""An API: ``ApiKey.PRODUCE``, ``0``, ``"Produce"``, ``"PRODUCE"`` or ``"produce"``."""

ErrorName = ErrorCode | int | str
"""An error code: ``ErrorCode.NOT_LEADER_OR_FOLLOWER``, ``6`` or ``"NOT_LEADER_OR_FOLLOWER"``."""


def api_key(api: ApiName) -> ApiKey:
    """The API named by ``api`` (any spelling of :data:`ApiName`)."""
    if isinstance(api, str):
        wanted = "".join(c for c in api if c not in "_- .").lower()  # Produce, OFFSET_COMMIT,
        for key in ApiKey:  # list_offsets, offset-commit, "Offset Commit"
            if key.name.replace("_", "").lower() == wanted:
                return key
        raise ValueError(f"no API named {api!r}")
    return ApiKey(api)


def error_code(error: ErrorName) -> ErrorCode:
    """The error code named by ``error`` (any spelling of :data:`ErrorName`)."""
    if isinstance(error, str):
        try:
            return ErrorCode[error.strip().replace("-", "_").replace(" ", "_").upper()]
        except KeyError:
            raise ValueError(f"no error code named {error!r}") from None
    return ErrorCode(error)


@dataclass(slots=True)
class Fault:
    """One scripted fault. ``hits`` counts the requests it has affected so far; ``remaining`` is
    how many more it will (None: every one until cleared)."""

    api: ApiKey
    action: str
    remaining: int | None
    error: ErrorCode = ErrorCode.NONE
    seconds: float = 0.0
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0


class _Gate(asyncio.Event):
    """A paused partition's gate: appends wait on it, and the test thread can see how many do."""

    def __init__(self, changed: threading.Condition) -> None:
        super().__init__()
        self.waiting = 0
        self._changed = changed

    async def wait(self) -> bool:  # type: ignore[override]  # Literal[True] upstream
        self._count(+1)
        try:
            return await super().wait()
        finally:
            self._count(-1)

    def _count(self, step: int) -> None:
        with self._changed:
            self.waiting += step
            self._changed.notify_all()


class PausedAppends:
    """Appends to one partition, paused (see :meth:`Faults.pause_appends`). A context manager:
    leaving the block resumes them."""

    def __init__(self, faults: Faults, topic: str, partition: int, gate: _Gate) -> None:
        self.topic = topic
        self.partition = partition
        self._faults = faults
        self._gate = gate

    @property
    def waiting(self) -> int:
        """Appends waiting now (one per produce request that reached this partition)."""
        return self._gate.waiting

    def wait_for_waiting(self, count: int = 1, timeout: float = 10.0) -> None:
        """Return once at least ``count`` appends wait (a producer's request has arrived and is
        stuck); TimeoutError if they do not within ``timeout`` seconds."""
        with self._faults._changed:
            if not self._faults._changed.wait_for(lambda: self._gate.waiting >= count, timeout):
                raise TimeoutError(
                    f"{self._gate.waiting} appends to {self.topic}-{self.partition} waiting "
                    f"after {timeout} s, not {count}"
                )

    def resume(self) -> None:
        """Let the waiting appends go, in the order they arrived, and stop pausing new ones."""
        self._faults._resume(self)

    def __enter__(self) -> PausedAppends:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.resume()


class Faults:
    """The scripted faults of one embedded broker (its ``faults`` attribute)."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._rules: list[Fault] = []
        self._paused: list[PausedAppends] = []

    # -- scripting (the test's thread) -------------------------------------------------------------

    def fail(self, api: ApiName, error: ErrorName, *, count: int = 1) -> Fault:
        """Answer the next ``count`` requests of ``api`` with ``error`` instead of handling them
        (per partition, topic or group where the API has codes there; an acks=0 produce, which
        gets no answer, has its connection closed, as Kafka does)."""
        key = api_key(api)
        if key not in ANSWERABLE:
            raise ValueError(
                f"{key.name} has no scripted error answer; use drop_after() or delay() instead"
            )
        code = error_code(error)
        if code == ErrorCode.NONE:
            raise ValueError(
                "NONE is no error: the client would be told its request succeeded while "
                "nothing was done; name an error code"
            )
        return self._add(Fault(key, "fail", _count(count), error=code))

    def delay(self, api: ApiName, seconds: float, *, count: int | None = None) -> Fault:
        """Hold back the answers of ``api`` by ``seconds`` (the next ``count`` of them, or all
        until cleared). The request is processed first: a delayed produce is stored, and the
        connection answers nothing else meanwhile, as a slow broker would."""
        remaining = None if count is None else _count(count)
        return self._add(Fault(api_key(api), "delay", remaining, seconds=_seconds(seconds)))

    def drop_after(self, api: ApiName, *, count: int = 1) -> Fault:
        """Process the next ``count`` requests of ``api``, then close their connection instead
        of answering: the client sees a broken connection and cannot tell that the request took
        effect (a produce retried then is stored twice, unless the producer is idempotent)."""
        return self._add(Fault(api_key(api), "drop_after", _count(count)))

    def drop_connections(self) -> int:
        """Close every client connection now (unsent answers are lost); returns how many."""

        def drop() -> int:
            server = self._host.server
            assert server is not None
            connections = list(server.connections)
            for connection in connections:
                connection.abort()
            return len(connections)

        return self._host.call(drop)

    def pause_appends(self, topic: str, partition: int = 0) -> PausedAppends:
        """Make appends to ``topic``'s ``partition`` wait until :meth:`PausedAppends.resume` (or
        the end of a ``with`` block, or :meth:`clear`): the produce requests that reach it are
        not answered meanwhile, and their connections wait with them. Raises
        UnknownTopicOrPartitionError for a partition that does not exist."""
        gate = _Gate(self._changed)

        def pause() -> None:
            target = self._broker().logs.get_partition(topic, partition)
            if target.append_gate is not None:
                raise ValueError(f"appends to {topic}-{partition} are paused already")
            target.append_gate = gate

        self._host.call(pause)
        paused = PausedAppends(self, topic, partition, gate)
        with self._lock:
            self._paused.append(paused)
        return paused

    def clear(self) -> None:
        """Remove every fault and resume every paused partition."""
        with self._lock:
            self._rules.clear()
            paused, self._paused = self._paused, []
        if self._host.server is None:
            return
        for p in paused:
            self._release(p)

        def uninstall() -> None:
            broker = self._host.server.broker if self._host.server is not None else None
            if broker is not None and broker.faults is self:
                broker.faults = None

        self._host.call(uninstall)

    @property
    def active(self) -> list[Fault]:
        """The faults that will still affect requests."""
        with self._lock:
            return [f for f in self._rules if not f.exhausted]

    # -- the broker's side (its event loop) --------------------------------------------------------

    async def before(self, request: Request) -> ResponseBody | None:
        with self._lock:
            fault = self._take(request.api_key, "fail")
        if fault is None:
            return None
        body = request.body
        if isinstance(body, m.ProduceRequest) and body.acks == 0:
            raise CloseConnection(f"scripted fault: {fault.error.name} for an acks=0 produce")
        return error_answer(request, fault.error, self._broker().node_endpoint())

    async def after(self, request: Request) -> None:
        with self._lock:
            delay = self._take(request.api_key, "delay")
            drop = self._take(request.api_key, "drop_after")
        if delay is not None:
            await self._hold(delay.seconds)
        if drop is not None:
            raise CloseConnection("scripted fault: connection dropped after processing")

    # -- internals ---------------------------------------------------------------------------------

    _hold = staticmethod(asyncio.sleep)  # how a delay waits (the embedded broker's is cut short)

    def _add(self, fault: Fault) -> Fault:
        """Install the faults on the broker, then record ``fault``: a broker that is not running
        refuses it (RuntimeError), and a refused fault must not fire after a later start."""

        def install() -> None:
            self._broker().faults = self

        self._host.call(install)
        with self._lock:
            self._rules.append(fault)
        return fault

    def _take(self, api: int, action: str) -> Fault | None:
        """The first live fault for ``api`` and ``action``, counted as used (under the lock)."""
        for fault in self._rules:
            if fault.api == api and fault.action == action and not fault.exhausted:
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                if fault.exhausted:
                    self._rules.remove(fault)
                return fault
        return None

    def _broker(self) -> Broker:
        server = self._host.server
        if server is None or server.broker is None:
            raise RuntimeError("the embedded broker is not running")
        return server.broker

    def _resume(self, paused: PausedAppends) -> None:
        with self._lock:
            if paused not in self._paused:
                return
            self._paused.remove(paused)
        self._release(paused)

    def _release(self, paused: PausedAppends) -> None:
        gate = paused._gate

        def release() -> None:
            gate.set()
            server = self._host.server
            if server is None or server.broker is None:
                return
            try:
                target = server.broker.logs.get_partition(paused.topic, paused.partition)
            except Exception:  # deleted meanwhile: its appends were released above
                return
            if target.append_gate is gate:
                target.append_gate = None

        self._host.call(release)


def _count(count: int) -> int:
    """``count`` checked: a whole number of requests, at least one (a fractional or absent
    count would never run out)."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count must be an int of at least 1, not {count!r}")
    if count < 1:
        raise ValueError(f"count is at least 1, not {count}")
    return count


def _seconds(seconds: float) -> float:
    """A delay checked: a finite number of seconds, at least 0 (NaN or infinity would break
    every connection the fault touches)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"a delay is a number of seconds, not {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a delay is a finite number of seconds, at least 0, not {seconds!r}")
    return float(seconds)
