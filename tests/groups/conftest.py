"""Fixtures for coordinator unit tests: a real GroupCoordinator over a real LogManager in a
temporary directory, on a private event loop, with injected clocks so that session, rebalance
and retention timeouts are driven by the test rather than by sleeping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sluice.broker.groups import GroupConfig, GroupCoordinator
from sluice.broker.groups.consumer_protocol import Subscription, encode_subscription
from sluice.protocol import (
    ApiKey,
    RequestBody,
    decode_request,
    decode_response,
    encode_request,
    encode_response_bytes,
)
from sluice.protocol import messages as m
from sluice.storage.manager import LogManager

T = TypeVar("T")

NODE = (1, "broker.example", 9092)


class FakeClock:
    """Monotonic seconds (sessions, rebalances) and wall-clock ms (retention), moved together."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall_ms = 1_700_000_000_000

    def __call__(self) -> float:
        return self.now

    def wall(self) -> int:
        return self.wall_ms

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall_ms += int(seconds * 1000)


class Harness:
    """One coordinator on one loop. ``call`` runs a request to completion; ``start_call`` returns
    a task for requests that park (JoinGroup, SyncGroup)."""

    def __init__(
        self, data_dir: Path, clock: FakeClock, config: GroupConfig, **kwargs: Any
    ) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.config = config
        self.kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self.logs = LogManager.open(data_dir)
        self.coordinator = self._open()
        self.closed = False

    def _open(self) -> GroupCoordinator:
        c = GroupCoordinator(
            self.logs,
            lambda: NODE,
            clock=self.clock,
            wall_clock=self.clock.wall,
            config=self.config,
            **self.kwargs,
        )
        self.run(self._start(c))
        return c

    @staticmethod
    async def _start(c: GroupCoordinator) -> None:
        c.start()

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def settle(self) -> None:
        """Let every ready callback and task run (tasks parked on futures stay parked)."""
        for _ in range(20):
            self.run(asyncio.sleep(0))

    async def over_the_wire(
        self, api: ApiKey, version: int, body: RequestBody, client_id: str
    ) -> Any:
        """As the broker does it: bytes in, the coordinator, bytes out, then decoded as a client
        would. Every test therefore also checks that requests and answers encode at their
        version (a field a version lacks is dropped here, as on a real connection)."""
        frame = encode_request(api, version, 7, client_id, body)
        request = decode_request(frame[4:])
        response = await self.coordinator.handle(request, "127.0.0.1")
        out = encode_response_bytes(api, version, request.correlation_id, response)
        correlation_id, decoded = decode_response(out[4:], api, version)
        assert correlation_id == 7
        return decoded

    def call(self, api: ApiKey, version: int, body: RequestBody, client_id: str = "client") -> Any:
        return self.run(self.over_the_wire(api, version, body, client_id))

    def start_call(
        self, api: ApiKey, version: int, body: RequestBody, client_id: str = "client"
    ) -> asyncio.Task[Any]:
        task = self.loop.create_task(self.over_the_wire(api, version, body, client_id))
        self.settle()
        return task

    def result(self, task: asyncio.Task[T], timeout: float = 10.0) -> T:
        """The task's answer. It may still be waiting for storage (an fsync in a worker thread),
        so wait for it, bounded; a request that is parked for good fails the test."""
        self.settle()
        if not task.done():
            self.run(asyncio.wait({task}, timeout=timeout))
        assert task.done(), "request is still parked"
        return task.result()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.run(self._poll())
        self.settle()

    async def _poll(self) -> None:
        self.coordinator.poll_timers()

    def restart(self, *, crash: bool = False) -> None:
        """Stop (cleanly, or by abandoning every file as SIGKILL would) and reopen the data."""
        if crash:
            self.run(self._crash())
        else:
            self.run(self.coordinator.close())
            self.run(self.logs.close())
        self.logs = LogManager.open(self.data_dir)
        self.coordinator = self._open()

    async def _crash(self) -> None:
        c = self.coordinator
        # White-box: a crash stops the timers without the shutdown path (begin_shutdown answers
        # parked joins), which no public method does.
        if c._tasks.timer is not None:
            c._tasks.timer.cancel()
        await c.store.partition.drain()  # acknowledged writes are in the file already
        c.store.partition.abandon()
        for p in self.logs.all_partitions():
            await p.drain()
            p.abandon()
        self.logs.executor.shutdown(wait=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.run(self.coordinator.close())
            self.run(self.logs.close())
            self.loop.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_harness(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(config: GroupConfig | None = None, **kwargs: Any) -> Harness:
        h = Harness(tmp_path / f"data-{len(made)}", clock, config or GroupConfig(), **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    harness = make_harness()
    harness.run(harness.logs.create_topic("t", 6))
    harness.run(harness.logs.create_topic("u", 2))
    return harness


def sub(*topics: str, owned: dict[str, list[int]] | None = None, version: int = 1) -> bytes:
    return encode_subscription(Subscription(list(topics), None, owned or {}, version=version))


def join_body(
    group: str = "g",
    member_id: str = "",
    *,
    protocols: list[tuple[str, bytes]] | None = None,
    protocol_type: str = "consumer",
    session_timeout_ms: int = 10_000,
    rebalance_timeout_ms: int = 30_000,
    instance_id: str | None = None,
) -> m.JoinGroupRequest:
    return m.JoinGroupRequest(
        group_id=group,
        session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=rebalance_timeout_ms,
        member_id=member_id,
        group_instance_id=instance_id,
        protocol_type=protocol_type,
        protocols=[
            m.JoinGroupRequestProtocol(name=n, metadata=md)
            for n, md in (protocols if protocols is not None else [("range", sub("t"))])
        ],
    )
