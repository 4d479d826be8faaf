"""The admin side's connection cap against hostile HTTP clients: connections that connect and
say nothing, or trickle half a request, cannot lock out a liveness probe (a newcomer past the
cap closes the one idle longest), and a request body that never arrives is answered 408 instead
of holding its connection for ever. Only when every connection is handling a request is a
newcomer refused (503)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sluice.server.admin import api
from sluice.server.admin.app import MAX_CONNECTIONS, AdminServer
from sluice.testing import EmbeddedBroker
from tests.admin.http import request


def _port(broker: EmbeddedBroker) -> int:
    return int(broker.admin_url.rsplit(":", 1)[1])


def _admin(broker: EmbeddedBroker) -> AdminServer:
    server = broker.server
    assert server is not None
    admin = server.admin
    assert isinstance(admin, AdminServer)
    return admin


def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _closed_by_server(sock: socket.socket) -> bool:
    """The server closed it (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def test_idle_and_trickling_connections_cannot_lock_out_a_health_check(tmp_path: Path) -> None:
    with EmbeddedBroker(tmp_path, admin=True) as broker:
        port = _port(broker)
        held: list[socket.socket] = []
        try:
            for i in range(2 * MAX_CONNECTIONS):
                sock = socket.create_connection(("127.0.0.1", port))
                if i % 2:  # half a request head, never finished
                    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.")
                held.append(sock)
            _until(lambda: _admin(broker).connections >= MAX_CONNECTIONS, "connections accepted")
            # A liveness probe while all of them are still open: it displaces the idlest.
            answer = request(broker.admin_url + "/healthz", timeout=10)
            assert (answer.status, answer.body) == (200, b"ok\n")
            # Those displaced were the oldest; the newest are still served.
            _until(
                lambda: all(_closed_by_server(s) for s in held[:MAX_CONNECTIONS]),
                "the oldest connections closed",
            )
            assert not any(_closed_by_server(s) for s in held[-MAX_CONNECTIONS // 2 :])
        finally:
            for sock in held:
                sock.close()


def _post_without_its_body(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /api/topics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Sluice-Console: 1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name": '
    )
    return sock


def _answer(sock: socket.socket, timeout: float) -> bytes:
    """One HTTP answer: its head and its Content-Length of body (or what came before EOF)."""
    sock.settimeout(timeout)
    out = b""
    while True:
        head, sep, body = out.partition(b"\r\n\r\n")
        if sep:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                None,
            )
            if length is not None and len(body) >= length:
                return out
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def test_a_body_that_never_arrives_is_answered_408(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "BODY_TIMEOUT_S", 0.5)
    with EmbeddedBroker(tmp_path, admin=True) as broker:
        sock = _post_without_its_body(_port(broker))
        try:
            answer = _answer(sock, timeout=10)
        finally:
            sock.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer
        assert json.loads(body)["error"] == "REQUEST_TIMEOUT"
        assert b"Connection: close" in head  # the rest of the body is not read as a request


def test_only_when_every_connection_is_busy_is_a_newcomer_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "BODY_TIMEOUT_S", 3.0)
    with EmbeddedBroker(tmp_path, admin=True) as broker:
        port = _port(broker)
        admin = _admin(broker)
        busy = [_post_without_its_body(port) for _ in range(MAX_CONNECTIONS)]
        try:
            _until(lambda: admin.handling == MAX_CONNECTIONS, "every connection handling a POST")
            newcomer = socket.create_connection(("127.0.0.1", port))
            try:
                assert _answer(newcomer, timeout=10).startswith(b"HTTP/1.1 503 ")
            finally:
                newcomer.close()
            # None of the busy ones was displaced; each is answered once its body is late.
            for sock in busy:
                assert _answer(sock, timeout=10).startswith(b"HTTP/1.1 408 ")
        finally:
            for sock in busy:
                sock.close()
        _until(lambda: request(broker.admin_url + "/healthz").status == 200, "served again")
        # Stopped once the server has let them go (it reads what is left of an answered body).
        _until(lambda: admin.connections == 0, "the answered connections closed")


def test_a_client_gone_before_its_body_is_not_logged_as_a_server_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp logged each one with a traceback at ERROR (about 2 KB of log for 100 bytes
    sent): a log any client could flood, on the disk the logs may share with the data."""
    with EmbeddedBroker(tmp_path, admin=True) as broker:
        admin = _admin(broker)
        for _ in range(3):
            sock = _post_without_its_body(_port(broker))
            _until(lambda: admin.handling == 1, "the POST being handled")
            sock.close()
            _until(lambda: admin.handling == 0, "the POST given up")
        assert request(broker.admin_url + "/healthz").status == 200
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("aiohttp")
    ]
    assert errors == [], [r.getMessage() for r in errors]
