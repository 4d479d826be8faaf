"""What the admin side needs of the server and of itself, as small interfaces: its modules read
these instead of importing ``sluice.server.app`` (which starts the admin side), so imports run
one way."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from concurrent.futures import Executor
from typing import Protocol

from sluice.broker.broker import Broker
from sluice.config import Listener
from sluice.server.memory import RequestMemory


class ServerView(Protocol):
    """The server as the admin side sees it (:class:`sluice.server.app.Server` is one)."""

    @property
    def broker(self) -> Broker | None:
        """None while the logs are being opened, and once stopping."""
        ...

    @property
    def connections(self) -> Collection[object]:
        """The open Kafka connections."""
        ...

    @property
    def memory(self) -> RequestMemory: ...

    @property
    def started(self) -> asyncio.Event: ...

    @property
    def should_exit(self) -> asyncio.Event: ...

    @property
    def started_at(self) -> float:
        """``time.monotonic()`` when the server was made."""
        ...

    @property
    def bound(self) -> Listener | None:
        """The Kafka listener's address, once bound."""
        ...


class AdminView(Protocol):
    """The admin side as its routes see it (:class:`.app.AdminServer` is one)."""

    @property
    def server(self) -> ServerView: ...

    @property
    def read_only(self) -> bool: ...

    @property
    def version(self) -> str: ...

    @property
    def browse_executor(self) -> Executor:
        """Where the message browser decodes batches."""
        ...
