"""``EmbeddedBroker`` as a product: topics and settings declared up front, kept or temporary
data, restarts on the same port, ``async with`` that leaves the caller's loop free, and two
brokers in one process that know nothing of each other. Checked with real clients."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__
    AdminClient,
    ConfigResource,
    ResourceType,
)

from sluice.errors import InvalidConfigError
from sluice.testing import EmbeddedBroker


def _admin(broker: EmbeddedBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap_servers, "log_level": 0})


def _config(broker: EmbeddedBroker, topic: str, name: str) -> str:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = _admin(broker)  # kept alive until the answer is in
    value: str = admin.describe_configs([resource])[resource].result(30)[name].value
    return value


def test_topics_and_settings_declared_up_front() -> None:
    with EmbeddedBroker(
        settings={"num.partitions": 2, "auto.create.topics.enable": False},
        topics={"orders": 6, "audit": {"partitions": 1, "retention.ms": 60000}, "plain": {}},
    ) as broker:
        topics = _admin(broker).list_topics(timeout=30).topics
        assert {name: len(t.partitions) for name, t in topics.items()} == {
            "orders": 6,
            "audit": 1,
            "plain": 1,
        }
        assert _config(broker, "audit", "retention.ms") == "60000"
        assert broker.created_topics == ["orders", "audit", "plain"]
        # auto.create.topics.enable=false, given as a bool: an unknown topic stays unknown
        reports: list[KafkaError | None] = []
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap_servers, "message.timeout.ms": 2000, "log_level": 0}
        )
        producer.produce("unknown", b"x", on_delivery=lambda err, _msg: reports.append(err))
        producer.flush(10)
        assert [e.code() if e else None for e in reports] in (
            [KafkaError.UNKNOWN_TOPIC_OR_PART],
            [KafkaError._MSG_TIMED_OUT],
        )
        assert "unknown" not in _admin(broker).list_topics(timeout=30).topics


def test_a_bad_setting_is_refused_before_anything_starts() -> None:
    with pytest.raises(InvalidConfigError, match=r"num\.partitions"):
        EmbeddedBroker(settings={"num.partitions": 0})
    with pytest.raises(InvalidConfigError, match=r"unknown broker config 'num\.partition'"):
        EmbeddedBroker(settings={"num.partition": 3})


def test_a_temporary_data_directory_goes_and_a_given_one_stays(tmp_path: Path) -> None:
    with EmbeddedBroker(topics={"t": 1}) as temporary:
        temporary.produce("t", b"gone")
        where = temporary.data_dir
        assert where.is_dir()
    assert not where.exists()

    kept = tmp_path / "kept"
    with EmbeddedBroker(kept, topics={"t": 1}) as first:
        first.produce("t", b"stays")
    assert kept.is_dir()
    with EmbeddedBroker(kept) as second:  # another broker finds the data
        assert [r.value for r in second.consume_all("t")] == [b"stays"]


def test_restart_keeps_the_port_and_the_data() -> None:
    with EmbeddedBroker(topics={"t": 2}) as broker:
        broker.produce("t", b"before", partition=1)
        port = broker.port
        broker.restart()
        assert broker.port == port
        broker.produce("t", b"after", partition=1)
        assert [r.value for r in broker.consume_all("t")] == [b"before", b"after"]
        broker.stop()
        assert not broker.running
        broker.start()  # started again after a stop: the same port too
        assert broker.port == port
        assert broker.created_topics == ["t"]  # declared topics are not created twice


def test_a_start_that_fails_says_why() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(port=taken.getsockname()[1])
        with pytest.raises(RuntimeError, match=r"failed to start: .*Address already in use"):
            broker.start()
        assert not broker.running
        broker.cleanup()


def test_two_brokers_in_one_process_are_independent() -> None:
    with EmbeddedBroker(topics={"shared-name": 1}) as a, EmbeddedBroker(topics={"shared-name": 3}) as b:
        assert a.port != b.port and a.data_dir != b.data_dir
        a.produce("shared-name", b"in a")
        b.faults.fail("Produce", "TOPIC_AUTHORIZATION_FAILED", count=5)
        a.produce("shared-name", b"a is not faulted")
        assert len(_admin(b).list_topics(timeout=30).topics["shared-name"].partitions) == 3
        assert b.consume_all("shared-name") == []
        a.faults.drop_connections()
        b.stop()  # a goes on
        assert [r.value for r in a.consume_all("shared-name")] == [b"in a", b"a is not faulted"]


def test_async_with_leaves_the_callers_loop_free() -> None:
    async def main() -> list[str]:
        events: list[str] = []

        async def meanwhile() -> None:
            events.append("the loop ran while the broker started")

        task = asyncio.get_running_loop().create_task(meanwhile())
        async with EmbeddedBroker(topics={"t": 1}) as broker:
            events.append("started")
            await asyncio.get_running_loop().run_in_executor(None, broker.produce, "t", b"x")
        events.append("stopped")
        await task
        return events

    assert asyncio.run(main()) == [
        "the loop ran while the broker started",
        "started",
        "stopped",
    ]


_FIRST_REQUESTS_ONLY = """
import sys
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from sluice.testing import EmbeddedBroker

with EmbeddedBroker() as broker:
    broker.produce("t", "a", "b")
    assert [r.value for r in broker.consume_until("t", count=2)] == [b"a", b"b"]
    print("after produce and consume:", "sluice.protocol.admin_messages" in sys.modules)
    resource = ConfigResource(ResourceType.TOPIC, "t")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    configs = admin.describe_configs([resource])[resource].result(30)
    print("cleanup.policy:", configs["cleanup.policy"].value)
    print("after describe configs:", "sluice.protocol.admin_messages" in sys.modules)
"""


def test_the_admin_apis_messages_are_built_when_first_asked_for() -> None:
    """A fresh process that starts a broker and produces and consumes never builds the admin and
    transaction APIs' ~90 message classes (a tenth of the broker's import); the first admin
    request builds them and is answered as ever."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _FIRST_REQUESTS_ONLY], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "after produce and consume: False",
        "cleanup.policy: delete",
        "after describe configs: True",
    ]
