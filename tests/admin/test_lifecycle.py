"""The admin side's place in the broker's lifecycle: it answers /healthz while the logs are
still opening (and /readyz says not yet), an explicitly chosen address that cannot be bound
stops the start, the default one being taken does not, and ``sluice serve`` serves it and
stops cleanly."""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import socket
import threading
from pathlib import Path

import pytest

from sluice.broker.broker import Broker
from sluice.config import DEFAULT_ADMIN_PORT, BrokerConfig, Listener
from sluice.errors import InvalidConfigError
from sluice.server.app import Server
from tests.admin.http import request
from tests.server.serve import ServeProcess, run_serve

_ADMIN_LINE = re.compile(r"admin side on http://127\.0\.0\.1:(\d+)/")


def test_healthz_answers_while_the_logs_open_and_readyz_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opening = threading.Event()
    release = threading.Event()
    real_open = Broker.open

    def held_open(config: BrokerConfig) -> Broker:
        """The real Broker.open, held at its start as a long recovery would hold it."""
        opening.set()
        assert release.wait(30)
        return real_open(config)

    monkeypatch.setattr(Broker, "open", staticmethod(held_open))
    config = BrokerConfig.from_settings(
        {"sluice.admin.listen": "127.0.0.1:0"},
        listen=Listener("127.0.0.1", 0),
        data_dir=tmp_path / "data",
    )
    server = Server(config)
    seen: dict[str, tuple[int, bytes]] = {}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        starting = asyncio.ensure_future(server.startup())
        assert await loop.run_in_executor(None, opening.wait, 30)
        assert server.admin is not None and server.admin.bound is not None
        url = f"http://127.0.0.1:{server.admin.bound.port}"
        for path in ("/healthz", "/readyz", "/api/overview"):
            answer = await loop.run_in_executor(None, request, url + path)
            seen[f"starting {path}"] = (answer.status, answer.body[:40])
        release.set()
        await starting
        answer = await loop.run_in_executor(None, request, url + "/readyz")
        seen["started /readyz"] = (answer.status, answer.body)
        server.request_exit()
        await server.shutdown()

    try:
        asyncio.run(scenario())
    finally:
        release.set()
    assert seen["starting /healthz"] == (200, b"ok\n")
    assert seen["starting /readyz"] == (503, b"starting: opening the logs\n")
    assert seen["starting /api/overview"][0] == 503
    assert seen["started /readyz"] == (200, b"ready\n")


def test_an_explicit_admin_address_that_is_taken_stops_the_start(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run_serve(
            [
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(tmp_path / "d"),
                "--admin-listen",
                f"127.0.0.1:{port}",
            ],
            cwd=tmp_path,
        )
    assert done.returncode == 1, done.stderr
    assert f"cannot serve the admin side (metrics, console) on 127.0.0.1:{port}" in done.stderr
    assert "--admin-listen" in done.stderr


def test_an_empty_admin_address_is_refused_not_every_interface(tmp_path: Path) -> None:
    """An unset variable in ``--admin-listen "$ADMIN"`` served the console, which deletes
    topics, on 0.0.0.0:9644."""
    done = run_serve(
        ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d"), "--admin-listen", ""],
        cwd=tmp_path,
        timeout=15,
    )
    assert done.returncode == 2, done.stderr
    assert "sluice.admin.listen" in done.stderr and "is empty" in done.stderr, done.stderr
    assert "admin side on" not in done.stderr
    with pytest.raises(InvalidConfigError, match="is empty"):  # --set, the TOML file
        BrokerConfig.from_settings({"sluice.admin.listen": " "}, data_dir=tmp_path)


def test_the_default_admin_address_taken_is_logged_and_the_broker_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two brokers on one machine with default settings: the second runs without its admin
    side rather than not at all."""
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", DEFAULT_ADMIN_PORT))
            holder.listen()
        except OSError:
            pass  # someone else holds it: taken just the same
        config = BrokerConfig.from_settings({}, listen=Listener("127.0.0.1", 0), data_dir=tmp_path)
        assert config.admin_listen == Listener("127.0.0.1", DEFAULT_ADMIN_PORT)
        server = Server(config)

        async def scenario() -> tuple[bool, bool]:
            await server.startup()
            running = server.broker is not None and server.started.is_set()
            admin = server.admin is not None
            server.request_exit()
            await server.shutdown()
            return running, admin

        with caplog.at_level(logging.ERROR, logger="sluice"):
            assert asyncio.run(scenario()) == (True, False)
    assert "running without the admin side" in caplog.text
    assert "--admin-listen" in caplog.text


def test_sluice_serve_serves_the_admin_side_and_stops_cleanly(tmp_path: Path) -> None:
    args = ["--listen", "127.0.0.1:0", "--data-dir", "data", "--admin-listen", "127.0.0.1:0"]
    with ServeProcess(args, cwd=tmp_path) as proc:
        proc.wait_ready()
        port = int(proc.wait_for_line(_ADMIN_LINE).group(1))
        url = f"http://127.0.0.1:{port}"
        assert request(url + "/healthz").status == 200
        assert request(url + "/readyz").body == b"ready\n"
        page = request(url + "/")
        assert page.status == 200 and b"sluice console" in page.body
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        assert b"sluice_build_info" in request(url + "/metrics").body
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
