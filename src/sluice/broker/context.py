"""What the API handlers share of the broker, as a small interface of its own: handler modules
import this, never the dispatching module (``broker.py`` imports them), so imports run one way.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Collection, Iterable
from typing import Any, Protocol

from sluice.broker.stats import BrokerStats
from sluice.config import BrokerConfig
from sluice.errors import ErrorCode
from sluice.storage.manager import LogManager

ELEMENTS_PER_TURN = 4096
"""Entries of one request (partitions, topics) a handler goes through before it lets the loop
run other work (``await asyncio.sleep(0)``): a request may hold 200,000
(``sluice.request.max.array.elements``), a second or more of handling during which every other
client waited."""


async def turn_after(done: int) -> None:
    """Called after each entry of a request (``done`` so far, from 1): every
    :data:`ELEMENTS_PER_TURN` of them, the loop runs other work. For the handlers off the hot
    path; Produce and Fetch count inline."""
    if not done % ELEMENTS_PER_TURN:
        await asyncio.sleep(0)


class FetchWaiters:
    """The long polls in progress, so shutdown can answer them at once instead of at timeout."""

    def __init__(self) -> None:
        self._waiting: set[asyncio.Future[None]] = set()
        self.closed = False

    def __len__(self) -> int:
        """How many long polls are parked now."""
        return len(self._waiting)

    def add(self, future: asyncio.Future[None]) -> None:
        self._waiting.add(future)

    def discard(self, future: asyncio.Future[None]) -> None:
        self._waiting.discard(future)

    def wake_all(self) -> None:
        self.closed = True
        for future in list(self._waiting):
            if not future.done():
                future.set_result(None)


class HeavyRequests:
    """One request past ``INLINE_ELEMENTS`` (:mod:`sluice.broker.broker`) decoded, handled and
    encoded at a time. Each is tens of MiB of Python objects decoded (200,000 elements) and as
    much again answered; run side by side, the decodes queued on the one codec thread while
    the handlers of those before them went on, so all of them were in memory at once: ten
    connections sending a 190,000-topic Metadata request each grew the broker by 673 MiB, 133
    MiB when they were handled one after another, as before the codec thread. A Fetch waiting
    for data gives its turn up meanwhile (:meth:`paused`), as a long poll held it for up to
    ``max_wait_ms``."""

    __slots__ = ("_holder", "_lock")

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None

    @contextlib.asynccontextmanager
    async def turn(self, unsent: UnsentAnswers | None = None) -> AsyncIterator[None]:
        """With ``unsent``, the turn starts only while there is room for answers: any API but
        Fetch (which sizes its answer to the room) may answer a request of 200,000 elements
        with hundreds of MiB (CreateTopics with its topics' configs: 225 MB), held until its
        client reads it, so such answers held past the bound wait for them to be taken."""
        while True:
            if unsent is not None:
                await unsent.wait_for_room()
            await self._lock.acquire()
            if unsent is None or unsent.room() > 0:
                break
            self._lock.release()  # taken meanwhile: wait again
        me = self._holder = asyncio.current_task()
        try:
            yield
        finally:
            if self._holder is me:  # not given up by a paused() cancelled while taking it back
                self._holder = None
                self._lock.release()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """The caller's turn given up meanwhile, if it holds it (else nothing happens)."""
        me = asyncio.current_task()
        if me is None or self._holder is not me:
            yield
            return
        self._holder = None
        self._lock.release()
        try:
            yield
        finally:
            await self._lock.acquire()
            self._holder = me


class UnsentAnswers:
    """``sluice.unsent.response.max.bytes``: one broker-wide bound on the memory of answers
    not yet taken by their clients.

    Kafka sends a Fetch answer's records from the page cache (``sendfile``), so an answer a
    client never reads costs it nothing. sluice reads them into memory first (uvloop has no
    ``sendfile``), so connections that ask for big answers and never read them would hold each
    in memory until closed: 900 connections (one address's share of ``max.connections``) at
    55 MiB apiece is 48 GiB. Fetch counts the bytes it reads here while it reads them; the
    connection then counts what its transport holds past the write buffer's high-water mark,
    until it drains (or the connection closes). Fetch reads only the room left."""

    __slots__ = ("_waiting", "held", "limit")

    def __init__(self, limit: int = -1) -> None:
        self.limit = sys.maxsize if limit < 0 else limit
        self.held = 0
        self._waiting: list[asyncio.Future[None]] = []

    def room(self) -> int:
        """Bytes of answers that may still be held (0 or less: none)."""
        return self.limit - self.held

    def release(self, nbytes: int) -> None:
        """``nbytes`` counted in :attr:`held` are no longer held (taken, dropped or sent on)."""
        self.held -= nbytes
        if self._waiting and self.held < self.limit:
            for waiter in self._waiting:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiting.clear()

    async def wait_for_room(self) -> None:
        """Until some answers may be held again: what a request whose answer may be big does
        before it starts, as only Fetch sizes its answer to the room left."""
        while self.held >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)


class ProducerIdSource(Protocol):
    """What InitProducerId needs: ids never handed out twice, and KIP-360 epoch bumps."""

    async def init(self, pid: int, epoch: int, version: int) -> tuple[ErrorCode, int, int]:
        """(error, producer id, epoch) for a producer asking with ``pid``/``epoch`` (-1: new)."""
        ...


class BrokerContext(Protocol):
    """The broker as handlers see it (:class:`sluice.broker.broker.Broker` is one)."""

    config: BrokerConfig
    logs: LogManager
    fetch_waiters: FetchWaiters
    advertised: dict[int, tuple[int, int]]
    """The API versions ApiVersions lists."""
    stats: BrokerStats | None
    """Traffic counters by topic, when metrics are kept."""
    unsent: UnsentAnswers
    """Answers held in memory before their clients take them: what Fetch may still read."""
    heavy: HeavyRequests
    """The turn of the requests past the inline element count (a Fetch gives it up to wait)."""

    @property
    def producer_ids(self) -> ProducerIdSource:
        """Read-only here, so the broker may hold any implementation of it."""
        ...

    def node_endpoint(self) -> tuple[int, str, int]:
        """(node id, advertised host, advertised port)."""
        ...

    def verify_produce(
        self, txn_id: str | None, producer_id: int, epoch: int, topic: str, partition: int
    ) -> tuple[ErrorCode, str] | None:
        """For a transactional batch (the Produce request's transactional id, the batch's
        producer): None to append it, or the error and message to answer instead."""
        ...

    def current_epochs(self, producer_ids: Collection[int]) -> dict[int, int]:
        """The current epoch of each of ``producer_ids`` that a transactional id holds (the
        others are left out)."""
        ...

    async def write_txn_markers(
        self,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int | None,
        commit: bool,
        partitions: Iterable[tuple[str, int]],
    ) -> dict[tuple[str, int], ErrorCode]:
        """Markers on every partition (concurrently); per partition NONE or the error
        (UNKNOWN_TOPIC_OR_PARTITION for a partition that no longer exists, INVALID_PRODUCER_EPOCH,
        KAFKA_STORAGE_ERROR ...)."""
        ...
