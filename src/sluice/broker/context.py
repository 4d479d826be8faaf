"""What the API handlers share of the broker, as a small interface of its own: handler modules
import this, never the dispatching module (``broker.py`` imports them), so imports run one way.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from sluice.config import BrokerConfig
from sluice.errors import ErrorCode
from sluice.storage.manager import LogManager


class FetchWaiters:
    """The long polls in progress, so shutdown can answer them at once instead of at timeout."""

    def __init__(self) -> None:
        self._waiting: set[asyncio.Future[None]] = set()
        self.closed = False

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

    @property
    def producer_ids(self) -> ProducerIdSource:
        """Read-only here, so the broker may hold any implementation of it."""
        ...

    def node_endpoint(self) -> tuple[int, str, int]:
        """(node id, advertised host, advertised port)."""
        ...
