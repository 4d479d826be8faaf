"""What the API handlers share of the broker, as a small interface of its own: handler modules
import this, never the dispatching module (``broker.py`` imports them), so imports run one way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

from sluice.broker.stats import BrokerStats
from sluice.config import BrokerConfig
from sluice.errors import ErrorCode
from sluice.storage.manager import LogManager


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

    def marker_epoch_beyond(self, producer_id: int, epoch: int) -> int | None:
        """The current epoch of the transactional id ``producer_id`` belongs to, if ``epoch``
        is past it; None otherwise (or for a producer no transactional id holds)."""
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
