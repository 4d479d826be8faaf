"""Accepting connections, and running out of file descriptors.

The broker accepts on its listening sockets itself rather than through ``loop.create_server``,
because neither event loop copes with descriptor exhaustion in a way an operator can see: uvloop
(libuv) accepts and closes such connections without a word, and asyncio logs an error with a
traceback every second while the connections wait unanswered. Here:

- ``sluice.fd.reserve`` descriptors are kept for everything but connections (segment and index
  files above all): a connection that would take one of them is refused, so a flood of
  connections cannot leave the logs unable to open a file.
- Out of descriptors anyway (EMFILE; ENFILE when the whole system is), each waiting connection is
  accepted with a spare descriptor held back for the purpose and closed at once, so clients see a
  prompt close rather than a hang and retry. One line says when that starts (the cause and the
  limit), one a minute while it lasts, and one when accepting has worked again for a few
  seconds (how many were refused, from where): a process hovering at its limit has one episode,
  not a pair of lines per connection. Accepting resumes by itself as soon as descriptors are free.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sluice.config import canonical_host
from sluice.hostport import host_port
from sluice.server.connlog import ConnectionLog

log = logging.getLogger("sluice.server.connections")

Admit = Callable[[socket.socket, str, int], None]

_BATCH = 64
"""Connections accepted per wakeup, so a burst of connects does not hold up the loop."""
_RETRY_S = (0.05, 1.0)
_PROGRESS_EVERY_S = 60.0
_SETTLE_S = 5.0
"""Accepting must work this long before an episode of exhaustion is over."""


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a broker holds a descriptor per client and
    several per partition), log both, and return the soft limit in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else _nr_open(soft)
    if soft == resource.RLIM_INFINITY or target <= soft:
        log.info(
            "file descriptors: soft limit %s, hard limit %s",
            "unlimited" if soft == resource.RLIM_INFINITY else soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
        )
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning(
            "file descriptors: soft limit %d, cannot raise it to the hard limit %d: %s",
            soft,
            target,
            exc,
        )
        return soft
    log.info("file descriptors: soft limit raised from %d to %d (the hard limit)", soft, target)
    return target


def _nr_open(fallback: int) -> int:
    """An unlimited hard limit still stops at the kernel's nr_open."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return fallback


def listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address ``host`` resolves to (as
    ``loop.create_server`` would; with port 0, they all share the first one's port)."""
    # An ASCII name goes as bytes: for those the IDNA codec returns the same bytes, and not
    # calling it spares importing it (with unicodedata and stringprep) on every start.
    name = host.encode("ascii") if host.isascii() else host
    try:
        infos = socket.getaddrinfo(
            name or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve listener host {host!r}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"cannot listen on {host_port(host, port)}: {exc.strerror}"
                ) from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets




class _Exhaustion:
    """One episode of running out of descriptors."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        self.began = time.monotonic()
        self.logged = self.began
        self.recovered: float | None = None
        self.ending: asyncio.TimerHandle | None = None
        self.refused = 0
        self.hosts: Counter[str] = Counter()

    def by_address(self) -> str:
        return ", ".join(f"{h}: {n}" for h, n in self.hosts.most_common(5)) or "none"


class Acceptor:
    def __init__(
        self,
        sockets: list[socket.socket],
        admit: Admit,
        connlog: ConnectionLog,
        *,
        fd_limit: int,
        fd_reserve: int,
    ) -> None:
        self.sockets = sockets
        self._admit = admit
        self._connlog = connlog
        self._fd_limit = fd_limit
        self._fd_reserve = min(fd_reserve, fd_limit // 2)
        self._fd_ceiling = fd_limit - self._fd_reserve
        self._spare: int | None = None
        self._episode: _Exhaustion | None = None
        self._retry_s = _RETRY_S[0]
        self._retries: dict[int, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def fd_ceiling(self) -> int:
        """Connections are refused from this descriptor number up (the rest is the reserve)."""
        return self._fd_ceiling

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._spare = _open_spare()
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)

    def close(self) -> None:
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()
        for sock in self.sockets:
            if self._loop is not None and sock.fileno() >= 0:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
        if self._episode is not None:
            self._end_episode()

    # -- accepting -------------------------------------------------------------------------------

    def _on_readable(self, lsock: socket.socket) -> None:
        for _ in range(_BATCH):
            try:
                sock, address = lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while it waited: nothing to do
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._out_of_descriptors(lsock, exc)
                else:
                    # ENOBUFS, ENOMEM and the unforeseen: wait a little rather than spin.
                    self._connlog.note(
                        "accept failed",
                        "?",
                        "accepting a connection failed: %s; retrying in %.2f s",
                        exc,
                        self._retry_s,
                    )
                    self._back_off(lsock)
                return
            self._retry_s = _RETRY_S[0]
            self._accepted(sock, address)

    def _accepted(self, sock: socket.socket, address: Any) -> None:
        episode = self._episode
        if episode is not None and episode.ending is None and self._loop is not None:
            episode.recovered = time.monotonic()
            episode.ending = self._loop.call_later(_SETTLE_S, self._end_episode)
        host = canonical_host(str(address[0])) if isinstance(address, tuple) else str(address)
        port = int(address[1]) if isinstance(address, tuple) else 0
        fd = sock.fileno()
        if fd >= self._fd_ceiling:
            self._connlog.note(
                "refused: sluice.fd.reserve",
                host,
                "refused %s: it would take file descriptor %d of the %d the process may open, "
                "and the last %d are kept for the logs (sluice.fd.reserve)",
                host_port(host, port),
                fd,
                self._fd_limit,
                self._fd_reserve,
            )
            sock.close()
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._admit(sock, host, port)
        except Exception:
            log.exception("admitting %s failed; closing it", host_port(host, port))
            sock.close()

    # -- out of descriptors ------------------------------------------------------------------------

    def _out_of_descriptors(self, lsock: socket.socket, exc: OSError) -> None:
        # Linux takes a descriptor before it looks at the queue: EMFILE may mean nobody waits
        # (after the last connection accepted took the last descriptor). The spare descriptor
        # tells the two apart, and lets each waiting connection be accepted and closed at once
        # instead of waiting in the backlog for a slot that may not come.
        refused: list[str] = []
        if self._spare is None:
            self._spare = _open_spare()
        drained = self._spare is not None
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
            while True:
                try:
                    sock, address = lsock.accept()
                except ConnectionAbortedError:
                    continue
                except OSError:
                    break  # drained (EAGAIN), or the spare was taken by another thread
                sock.close()
                refused.append(canonical_host(str(address[0])))
            self._spare = _open_spare()
        if self._spare is None:
            self._back_off(lsock)  # nothing to accept with: let the backlog wait a little
        if drained and not refused:
            return  # nobody was waiting: not refused, not an episode
        episode = self._episode
        if episode is None:
            cause = f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"
            episode = self._episode = _Exhaustion(cause)
            log.error(
                "out of file descriptors (%s; this process may open %d): new connections are "
                "closed as soon as they are accepted, until descriptors are free again",
                cause,
                self._fd_limit,
            )
        elif episode.ending is not None:
            episode.ending.cancel()  # not over after all: the same episode goes on
            episode.ending = episode.recovered = None
        episode.refused += len(refused)
        episode.hosts.update(refused)
        now = time.monotonic()
        if now - episode.logged >= _PROGRESS_EVERY_S:
            episode.logged = now
            log.error(
                "still out of file descriptors (%s) after %.0f s: %d connections refused so far "
                "(by address: %s)",
                episode.cause,
                now - episode.began,
                episode.refused,
                episode.by_address(),
            )

    def _end_episode(self) -> None:
        episode, self._episode = self._episode, None
        assert episode is not None
        if episode.ending is not None:
            episode.ending.cancel()
        log.warning(
            "file descriptors available again: accepting connections after %.1f s in which %d "
            "were refused for lack of descriptors (%s; by address: %s)",
            (episode.recovered or time.monotonic()) - episode.began,
            episode.refused,
            episode.cause,
            episode.by_address(),
        )

    def _back_off(self, lsock: socket.socket) -> None:
        loop = self._loop
        fd = lsock.fileno()
        if loop is None or fd in self._retries:
            return
        loop.remove_reader(fd)

        def retry() -> None:
            del self._retries[fd]
            if lsock.fileno() >= 0:
                loop.add_reader(fd, self._on_readable, lsock)

        self._retries[fd] = loop.call_later(self._retry_s, retry)
        self._retry_s = min(self._retry_s * 2, _RETRY_S[1])


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
