"""``queued.max.request.bytes``: one broker-wide bound on the memory held by requests that are
partly received or waiting to be handled, on every connection together.

Memory is taken as it is allocated, not as a size prefix announces it: a frame's buffer grows
with the bytes that arrive, and each growth asks the pool first. When the pool is full, the
connection that wants more stops reading (its bytes wait in the kernel and, behind it, in the
client) until memory is given back; nothing is refused or dropped.

Two rules keep that from ever deadlocking or starving a client:

- A connection holding nothing may always read one buffer's worth, so a small request from any
  client is still answered while big ones wait.
- When a waiter holds part of a frame it cannot finish with the room left, the longest such
  waiter is let through to the end of that one frame, and keeps that privilege until the frame
  has been handled, so there is only ever one such frame (Kafka's memory pool likewise lets one
  request take it past its bound): partly received frames alone could otherwise hold all of
  the memory, each waiting for the others. The bound is therefore exceeded by at most one frame
  (``socket.request.max.bytes``) and a read buffer per connection.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Protocol

log = logging.getLogger(__name__)

UNBOUNDED = sys.maxsize
_LOG_EVERY_S = 60.0


class MemoryUser(Protocol):
    held: int
    """Bytes this user holds from the pool; the pool keeps it up to date."""

    @property
    def peer(self) -> str: ...

    @property
    def needs_memory_to_finish(self) -> bool:
        """Holds part of a frame whose buffer is full: only more memory lets it complete."""
        ...

    def memory_available(self) -> bool:
        """Memory may be free: take what is needed and read on (True), or keep waiting."""
        ...


class Account:
    """One user's share of the pool, as the :class:`~sluice.protocol.framing.Budget` its frame
    reader draws on: the reader decides how to grow, the pool decides whether it may."""

    __slots__ = ("pool", "user")

    def __init__(self, pool: RequestMemory, user: MemoryUser) -> None:
        self.pool = pool
        self.user = user

    def room(self) -> int:
        return self.pool.room(self.user)

    def take(self, nbytes: int) -> None:
        self.pool.take(self.user, nbytes)

    def give_back(self, nbytes: int) -> None:
        self.pool.give_back(self.user, nbytes)


class RequestMemory:
    def __init__(self, limit: int) -> None:
        self.limit = limit if limit > 0 else None
        self.used = 0
        self.peak = 0
        self._waiting: dict[MemoryUser, None] = {}  # insertion order: longest waiter first
        self._overdraft: MemoryUser | None = None
        self._overdraft_receiving = False
        self._waking = False
        self._full_since: float | None = None
        self._last_logged = -_LOG_EVERY_S
        self._most_waiting = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def over(self) -> bool:
        return self.limit is not None and self.used >= self.limit

    def may_overdraw(self, user: MemoryUser) -> bool:
        return (
            self.limit is None
            or (user is self._overdraft and self._overdraft_receiving)
            or self.used == user.held
        )

    def room(self, user: MemoryUser) -> int:
        """Bytes ``user`` may take now."""
        if self.limit is None or self.may_overdraw(user):
            return UNBOUNDED
        return max(0, self.limit - self.used)

    def take(self, user: MemoryUser, nbytes: int) -> None:
        self.used += nbytes
        user.held += nbytes
        self.peak = max(self.peak, self.used)

    def give_back(self, user: MemoryUser, nbytes: int) -> None:
        self.used -= nbytes
        user.held -= nbytes
        if self._waiting:
            self._wake(user)
        elif self._full_since is not None:
            self._episode_over()

    def wait(self, user: MemoryUser) -> None:
        """``user`` has stopped reading until :meth:`MemoryUser.memory_available` says go."""
        self._waiting[user] = None
        self._most_waiting = max(self._most_waiting, len(self._waiting))
        if self._full_since is None:
            self._full_since = time.monotonic()
            if self._full_since - self._last_logged >= _LOG_EVERY_S:
                self._last_logged = self._full_since
                log.warning(
                    "request memory full: %d bytes held by partly received and queued requests "
                    "(queued.max.request.bytes=%d); connections that want more stop reading "
                    "until it frees (first: %s)",
                    self.used,
                    self.limit,
                    user.peer,
                )
        self._wake(None)

    def overdraft_received(self, user: MemoryUser) -> bool:
        """``user`` has received a whole frame: if it was overdrawing, it stops (the frame
        keeps the privilege until :meth:`overdraft_done`). True if it was."""
        if user is self._overdraft and self._overdraft_receiving:
            self._overdraft_receiving = False
            return True
        return False

    def overdraft_done(self, user: MemoryUser) -> None:
        """The frame ``user`` overdrew for has been handled and its memory given back: the
        next one may overdraw (only one overdrawn frame exists at a time, received or not)."""
        if user is self._overdraft:
            self._overdraft = None
            self._wake(None)

    def forget(self, user: MemoryUser) -> None:
        """``user`` is gone: everything it held is free."""
        self._waiting.pop(user, None)
        if user is self._overdraft:
            self._overdraft = None
        self.used -= user.held
        user.held = 0
        self._wake(None)

    def _wake(self, releasing: MemoryUser | None) -> None:
        if self._waking:
            return
        self._waking = True
        try:
            if releasing is not None and releasing in self._waiting and releasing.held == 0:
                self._go(releasing)
            if not self.over():
                for user in list(self._waiting):
                    if self.over():
                        break
                    self._go(user)
            # Whoever still waits cannot go with the room there is. If one of them holds part
            # of a frame, it may be all that is held (nothing else will free): let one through.
            if self._overdraft is None:
                for user in self._waiting:
                    if user.needs_memory_to_finish:
                        self._overdraft = user
                        self._overdraft_receiving = True
                        self._go(user)
                        break
        finally:
            self._waking = False
        self._episode_over()

    def _go(self, user: MemoryUser) -> None:
        if user.memory_available():
            self._waiting.pop(user, None)

    def _episode_over(self) -> None:
        """Log the end of a spell of full memory: nobody waits, nobody overdraws, and what is
        held is within the bound again."""
        if self._full_since is None or self._waiting or self._overdraft is not None or self.over():
            return
        began, self._full_since = self._full_since, None
        if began == self._last_logged:
            log.info(
                "request memory: no connection waits any more, after %.1f s (peak %d bytes "
                "held, %d connections waiting at once at most)",
                time.monotonic() - began,
                self.peak,
                self._most_waiting,
            )
        self._most_waiting = 0
