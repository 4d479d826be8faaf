"""``BrokerProcess.start`` returns only once its own child serves: a port that answers is not
enough, since another process (a broker of another pytest-xdist worker) may hold it, and a test
would then talk to that broker (which knows none of its topics) while its own child fails to
bind."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from sluice.errors import InvalidConfigError
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


def test_settings_go_to_the_child_as_kafka_writes_them(tmp_path: Path) -> None:
    """Each value was ``str()``-ed onto the command line: a list reached the child as
    ``['compact', 'delete']`` and failed its start, ``False`` as ``False``."""
    settings = {"log.cleanup.policy": ["compact", "delete"], "auto.create.topics.enable": False}
    with BrokerProcess(tmp_path / "data", tmp_path / "serve.log", settings=settings) as broker:
        broker.start()
        create_topic(broker.bootstrap_servers, "t", 1)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        (described,) = admin.describe_configs([ConfigResource("topic", "t")]).values()
        assert described.result(timeout=10)["cleanup.policy"].value == "compact,delete"
        (node,) = admin.describe_configs([ConfigResource("broker", "0")]).values()
        assert node.result(timeout=10)["auto.create.topics.enable"].value == "false"


def test_a_setting_with_no_kafka_string_is_refused_before_any_child(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match=r"log\.retention\.ms: None is no value"):
        BrokerProcess(tmp_path / "data", tmp_path / "serve.log", settings={"log.retention.ms": None})


def test_a_child_that_exits_at_start_says_why_in_this_runs_words(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    log.write_text("an earlier run's output\n")
    broker = BrokerProcess(tmp_path / "data", log, settings={"no.such.setting": 1})
    with pytest.raises(RuntimeError, match=r"unknown broker config 'no\.such\.setting'") as raised:
        broker.start()
    assert "earlier run" not in str(raised.value)


@pytest.mark.parametrize("name", ["listeners", "log.dirs", "log.dir"])
def test_a_setting_the_process_sets_itself_is_refused(tmp_path: Path, name: str) -> None:
    """The command line's --listen and --data-dir won over them without a word: the child
    served elsewhere than the test asked (EmbeddedBroker refuses them too)."""
    with pytest.raises(InvalidConfigError, match="BrokerProcess sets it itself"):
        BrokerProcess(tmp_path / "data", tmp_path / "serve.log", settings={name: "x"})
