"""``BrokerProcess.start`` returns only once its own child serves: a port that answers is not
enough, since another process (a broker of another pytest-xdist worker) may hold it, and a test
would then talk to that broker (which knows none of its topics) while its own child fails to
bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from sluice.testing import BrokerProcess, create_topic


def list_topics(bootstrap_servers: str) -> list[str]:
    return sorted(AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=10).topics)


def _listen(port: int) -> socket.socket:
    """Another process's broker on ``port``: a socket that accepts connections there."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_restart_whose_port_was_taken_fails_instead_of_returning(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data", tmp_path / "serve.log") as broker:
        broker.start()
        create_topic(broker.bootstrap_servers, "kept", 1)
        broker.kill()
        with _listen(broker.port), pytest.raises(RuntimeError, match="took port"):
            broker.start()
        assert not broker.running
        broker.start()  # the port is free again: the same broker, its topic
        assert list_topics(broker.bootstrap_servers) == ["kept"]


def test_a_first_start_whose_port_was_taken_moves_to_a_free_one(tmp_path: Path) -> None:
    broker = BrokerProcess(tmp_path / "data", tmp_path / "serve.log")
    taken = broker.port
    with broker, _listen(taken):
        broker.start()
        assert broker.running and broker.port != taken
        create_topic(broker.bootstrap_servers, "here", 1)
        assert list_topics(broker.bootstrap_servers) == ["here"]


def test_misuse_is_a_runtime_error_even_under_python_o(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data", tmp_path / "serve.log") as broker:
        broker.start()
        pid = broker.proc.pid if broker.proc is not None else None
        with pytest.raises(RuntimeError, match="already started"):
            broker.start()
        assert broker.proc is not None and broker.proc.pid == pid  # the first child serves on
        with pytest.raises(RuntimeError, match="without admin=True"):
            broker.admin_url  # noqa: B018 - the property raises
