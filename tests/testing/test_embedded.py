"""``EmbeddedBroker`` as a product: topics and settings declared up front, kept or temporary
data, restarts on the same port, ``async with`` that leaves the caller's loop free, and two
brokers in one process that know nothing of each other. Checked with real clients."""

from __future__ import annotations

import asyncio
import enum
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__
    AdminClient,
    ConfigResource,
    ResourceType,
)

from sluice.errors import InvalidConfigError, InvalidPartitionsError, InvalidTopicError
from sluice.testing import EmbeddedBroker, ProduceError, TopicCreationError, unique_topic_name


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


class _Policy(enum.Enum):
    COMPACT = "compact"


def test_a_list_or_enum_value_goes_out_as_kafka_writes_it() -> None:
    """A list setting as a list (Kafka's comma-separated string) and an Enum member as its
    value: ``['compact', 'delete']`` went out as that repr and ``_Policy.COMPACT`` as
    ``'_Policy.COMPACT'``, both refused as no cleanup policy."""
    with EmbeddedBroker(
        settings={"log.cleanup.policy": ("compact", "delete")},
        topics={"both": {"cleanup.policy": ["delete", "compact"]}, "named": {"cleanup.policy": _Policy.COMPACT}},
    ) as broker:
        assert _config(broker, "both", "cleanup.policy") in ("compact,delete", "delete,compact")
        assert _config(broker, "named", "cleanup.policy") == "compact"
        name = unique_topic_name("default-policy")
        broker.create_topic(name)
        assert _config(broker, name, "cleanup.policy") in ("compact,delete", "delete,compact")
        made = broker.create_topic(configs={"cleanup.policy": [_Policy.COMPACT]})  # CreateTopics
        assert _config(broker, made, "cleanup.policy") == "compact"


@pytest.mark.parametrize(
    ("settings", "topic_configs", "message"),
    [
        # each was sent as its repr: b"off" was taken as an admin listen address
        ({"sluice.admin.listen": b"off"}, None, r"sluice\.admin\.listen: b'off' is no config value \(decode bytes"),
        ({"message.max.bytes": {"max": 1}}, None, r"message\.max\.bytes: \{'max': 1\} is no config value"),
        ({"auto.create.topics.enable": [True]}, None, r"auto\.create\.topics\.enable: \[True\] is a list; the setting takes one"),
        (None, {"cleanup.policy": {"compact", "delete"}}, r"topic 'x': cleanup\.policy: .* \(a set has no order; give a list\)"),
        (None, {"cleanup.policy": [["compact"]]}, r"topic 'x': cleanup\.policy: a list setting's items are single values"),
        (None, {"cleanup.policy": ["compact,delete", "x"]}, r"topic 'x': cleanup\.policy: the list item 'compact,delete' has a comma"),
        (None, {"retention.ms": [60000]}, r"topic 'x': retention\.ms: \[60000\] is a list"),
    ],
    ids=["bytes", "dict", "bool-in-list", "set", "nested-list", "comma", "list-for-one"],
)
def test_a_value_with_no_kafka_string_is_refused_naming_the_setting(
    settings: dict[str, object] | None, topic_configs: dict[str, object] | None, message: str
) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        EmbeddedBroker(settings=settings, topics=None if topic_configs is None else {"x": topic_configs})


@pytest.fixture
def temporary_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this test's temporary data directories go (so the test sees every one)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_bad_setting_is_refused_before_anything_starts(temporary_dirs: Path) -> None:
    threads = set(threading.enumerate())
    with pytest.raises(InvalidConfigError, match=r"num\.partitions"):
        EmbeddedBroker(settings={"num.partitions": 0})
    with pytest.raises(InvalidConfigError, match=r"unknown broker config 'num\.partition'"):
        EmbeddedBroker(settings={"num.partition": 3})
    for free_form in ("sluice.admin.listen", "log.retention.ms"):  # "None" was taken as a value
        with pytest.raises(InvalidConfigError, match=rf"{free_form}: None is no value; leave"):
            EmbeddedBroker(settings={free_form: None})
    for port in (70000, 65536, -1):
        with pytest.raises(InvalidConfigError, match=rf"port must be 0\.\.65535 .*not {port}"):
            EmbeddedBroker(port=port)
    for wrong in ("9092", True):
        with pytest.raises(TypeError, match=r"port must be an int"):
            EmbeddedBroker(port=wrong)  # type: ignore[arg-type]  # what the check is for
    for blank in ("", " "):  # it listened on every interface, bootstrap_servers ":PORT"
        with pytest.raises(InvalidConfigError, match=r"host must name an address"):
            EmbeddedBroker(host=blank)
    for own, instead in (("listeners", "port="), ("log.dirs", "data_dir="), ("log.dir", "data_dir=")):
        with pytest.raises(InvalidConfigError, match=rf"{own}: EmbeddedBroker sets it .*{instead}"):
            EmbeddedBroker(settings={own: "PLAINTEXT://127.0.0.1:9092" if own == "listeners" else "/x"})
    assert list(temporary_dirs.iterdir()) == []  # no temporary directory made meanwhile
    assert set(threading.enumerate()) <= threads


@pytest.mark.parametrize(
    ("topics", "error", "message"),
    [
        ({"x": 0}, InvalidPartitionsError, r"topic 'x': partitions must be 1\.\.10000 .*not 0"),
        ({"x": -2}, InvalidPartitionsError, r"topic 'x': partitions must be 1\.\.10000 .*not -2"),
        ({"x": {"retention.ms": "abc"}}, InvalidConfigError, r"topic 'x': retention\.ms .*'abc'"),
        ({"x": {"retention.ms": None}}, InvalidConfigError, r"topic 'x': retention\.ms: None is no value"),
        ({"x": {"message.timestamp.type": None}}, InvalidConfigError, r"topic 'x': message\.timestamp\.type: None is no"),
        ({"x": {"no.such": 1}}, InvalidConfigError, r"topic 'x': unknown topic config 'no\.such'"),
        ({"bad name!": 1}, InvalidTopicError, r"invalid topic name 'bad name!'"),
        ({"x": {"partitions": "3"}}, TypeError, r"topic 'x': partitions must be an int, not '3'"),
        ({"x": True}, TypeError, r"topic 'x': a partition count or a mapping"),
        # a list of names was an AttributeError ('list' object has no attribute 'items')
        (["x", "y"], TypeError, r"topics is a mapping of topic name .*got list"),
    ],
)
def test_a_bad_topic_is_refused_before_anything_starts(
    topics: dict[str, object], error: type[Exception], message: str, temporary_dirs: Path
) -> None:
    threads = set(threading.enumerate())
    with pytest.raises(error, match=message):
        EmbeddedBroker(topics=topics)  # type: ignore[arg-type]
    assert list(temporary_dirs.iterdir()) == []
    assert set(threading.enumerate()) <= threads


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_start_the_broker_refuses_stops_everything_it_started(
    temporary_dirs: Path, tmp_path: Path
) -> None:
    threads = set(threading.enumerate())
    internal = EmbeddedBroker(topics={"__consumer_offsets": 1})  # the broker keeps that name
    with pytest.raises(TopicCreationError, match=r"reserved for internal topics"), internal:
        pass
    assert not internal.running
    assert _refused(internal.config.listen.port)
    assert set(threading.enumerate()) <= threads
    assert list(temporary_dirs.iterdir()) == []

    kept = tmp_path / "kept"
    with EmbeddedBroker(kept, topics={"a": 3}) as first:
        first.produce("a", b"kept", partition=2)
    # 3 partitions there already and 2 more declared: over the limit, which only the broker knows
    over = EmbeddedBroker(kept, settings={"max.broker.partitions": 4}, topics={"b": 2})
    with pytest.raises(TopicCreationError, match=r"creating topic 'b' failed"):
        over.start()
    assert not over.running
    assert _refused(over.config.listen.port)
    assert set(threading.enumerate()) <= threads
    with EmbeddedBroker(kept) as again:  # the data directory was left alone
        assert [r.value for r in again.consume_all("a")] == [b"kept"]


def test_cancelled_while_starting_the_broker_is_stopped_and_cleaned_up(temporary_dirs: Path) -> None:
    threads = set(threading.enumerate())
    entered: list[EmbeddedBroker] = []

    async def main() -> None:
        async def use() -> None:
            async with EmbeddedBroker(topics={"t": 1}) as broker:
                entered.append(broker)
                await asyncio.sleep(60)

        task = asyncio.get_running_loop().create_task(use())
        await asyncio.sleep(0)  # the task is waiting for the start now
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert entered == []  # cancelled while starting, not in the block
    assert set(threading.enumerate()) <= threads
    assert list(temporary_dirs.iterdir()) == []


def test_stopping_sends_a_delayed_answer_now(tmp_path: Path) -> None:
    """A stop clears the faults first: a delayed produce's answer goes out at once rather than
    holding the stop for the shutdown grace (10 s)."""
    with EmbeddedBroker(tmp_path / "data", topics={"t": 1}) as broker:
        reports: list[KafkaError | None] = []
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "log_level": 0})
        delay = broker.faults.delay("Produce", 60)
        producer.produce("t", b"held", on_delivery=lambda err, _msg: reports.append(err))
        deadline = time.monotonic() + 10
        while delay.hits == 0 and time.monotonic() < deadline:  # the produce is being held
            producer.poll(0.01)
        assert delay.hits == 1
        started = time.monotonic()
        broker.restart()
        took = time.monotonic() - started
        assert producer.flush(10) == 0
        assert reports == [None]
        assert took < 5, f"the restart took {took:.1f} s"
        assert [r.value for r in broker.consume_all("t")] == [b"held"]


def test_clearing_the_faults_sends_a_delayed_answer_now(sluice_broker: EmbeddedBroker) -> None:
    topic = sluice_broker.create_topic()
    reports: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": sluice_broker.bootstrap_servers, "log_level": 0})
    delay = sluice_broker.faults.delay("Produce", 60)
    producer.produce(topic, b"held", on_delivery=lambda err, _msg: reports.append(err))
    deadline = time.monotonic() + 10
    while delay.hits == 0 and time.monotonic() < deadline:
        producer.poll(0.01)
    assert delay.hits == 1 and reports == []
    sluice_broker.faults.clear()
    assert producer.flush(5) == 0
    assert reports == [None]


def test_stopping_resumes_paused_appends_before_closing_the_helpers(tmp_path: Path) -> None:
    """The helpers' producer is closed (flushed, up to 5 s) after the faults are cleared, so
    a record it holds for a paused partition does not hold the stop."""
    with EmbeddedBroker(tmp_path / "data", topics={"t": 1}) as broker:
        broker.faults.pause_appends("t")
        with pytest.raises(ProduceError):
            broker.produce("t", "held", timeout=0.5)
        started = time.monotonic()
        broker.stop()
        took = time.monotonic() - started
        assert took < 4, f"the stop took {took:.1f} s"


def test_an_ipv6_host_is_bracketed_in_bootstrap_servers() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    with EmbeddedBroker(host="::1", topics={"t": 1}) as broker:
        assert broker.bootstrap_servers == f"[::1]:{broker.port}"
        broker.produce("t", "over IPv6", timeout=10)
        assert [r.value for r in broker.consume_all("t")] == [b"over IPv6"]
    with EmbeddedBroker(host="[::1]") as bracketed:  # as a bootstrap address writes it
        assert bracketed.bootstrap_servers == f"[::1]:{bracketed.port}"


def test_a_temporary_broker_entered_again_cleans_up_each_time(temporary_dirs: Path) -> None:
    broker = EmbeddedBroker(topics={"t": 1})
    with broker:
        broker.produce("t", "first")
        first = broker.data_dir
    assert not first.exists()
    with broker:  # a fresh temporary directory, with the declared topics
        assert broker.data_dir.is_dir()
        assert broker.consume_all("t") == []
    assert list(temporary_dirs.iterdir()) == []


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


def test_cleanup_refuses_while_the_broker_runs() -> None:
    broker = EmbeddedBroker()
    with broker:
        with pytest.raises(RuntimeError, match="stop"):
            broker.cleanup()
        assert broker.data_dir.is_dir()  # still there, under the running broker
        broker.produce("t", b"kept")
        assert [r.value for r in broker.consume_all("t")] == [b"kept"]
    assert not broker.data_dir.exists()


def test_a_failed_second_with_keeps_the_running_brokers_data() -> None:
    with EmbeddedBroker() as broker:
        broker.produce("t", b"kept")
        with pytest.raises(RuntimeError, match="started already"), broker:
            pass
        assert broker.running and broker.data_dir.is_dir()
        assert [r.value for r in broker.consume_all("t")] == [b"kept"]
    assert not broker.data_dir.exists()


def test_a_declared_topic_the_data_directory_holds_otherwise_is_refused(tmp_path: Path) -> None:
    """Declared topics are created with exist_ok: one that exists with another partition count
    or other configs was kept as it was, without a word. The start refuses it now, naming the
    topic and each difference, and changes nothing (creates no other declared topic either)."""
    kept = tmp_path / "kept"
    with EmbeddedBroker(kept, topics={"t": {"partitions": 3, "retention.ms": 60000}}) as first:
        first.produce("t", b"stored", partition=2)
    for declared, said in (
        ({"t": 6, "new": 1}, r"partitions 3, declared 6 \("),
        ({"t": 1, "new": 1}, r"partitions 3, declared 1 \("),
        (
            {"t": {"partitions": 3, "retention.ms": 1000}, "new": 1},
            r"retention\.ms 60000, declared 1000 \(",
        ),
        (
            {"new": 1, "t": {"partitions": 6, "cleanup.policy": "compact"}},
            r"partitions 3, declared 6; cleanup\.policy delete, declared compact \(",
        ),
    ):
        broker = EmbeddedBroker(kept, topics=declared)  # type: ignore[arg-type]
        with pytest.raises(
            TopicCreationError, match=rf"topic 't' failed: TOPIC_ALREADY_EXISTS .*{said}"
        ) as refused:
            broker.start()
        assert str(kept) in str(refused.value)
        assert not broker.running
    # declared as it is (a value as a string or a number alike): started, nothing changed
    with EmbeddedBroker(kept, topics={"t": {"partitions": 3, "retention.ms": "60000"}}) as same:
        topics = _admin(same).list_topics(timeout=30).topics
        assert sorted(topics) == ["t"] and len(topics["t"].partitions) == 3
        assert _config(same, "t", "retention.ms") == "60000"
        assert [(r.partition, r.value) for r in same.consume_all("t")] == [(2, b"stored")]


def test_a_restart_keeps_what_the_test_itself_changed_on_a_declared_topic() -> None:
    from confluent_kafka.admin import NewPartitions  # type: ignore[attr-defined]

    with EmbeddedBroker(topics={"t": 2}) as broker:
        admin = _admin(broker)
        admin.create_partitions([NewPartitions("t", 4)])["t"].result(30)
        broker.restart()  # the directory was checked when this broker created "t"
        assert len(_admin(broker).list_topics(timeout=30).topics["t"].partitions) == 4
        broker.stop()
        broker.topics["t"] = 3  # declared anew: checked anew
        with pytest.raises(TopicCreationError, match=r"partitions 4, declared 3"):
            broker.start()
        assert not broker.running


def _status(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as answer:
        status: int = answer.status
        return status


def test_a_restart_keeps_the_admin_port_as_it_keeps_the_kafka_port() -> None:
    with EmbeddedBroker(admin=True) as broker:
        url, port = broker.admin_url, broker.port
        broker.restart()
        assert (broker.admin_url, broker.port) == (url, port)
        assert _status(url + "/healthz") == 200
        broker.stop()
        broker.start()
        assert (broker.admin_url, broker.port) == (url, port)
        assert _status(url + "/healthz") == 200


def test_lifecycle_calls_on_the_brokers_own_thread_are_refused_and_change_nothing(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    """stop() inside call() could never join its own thread: it raised "cannot join current
    thread" after it had asked the broker to exit."""
    broker = sluice_fresh_broker
    port, topic = broker.port, broker.create_topic()
    attempts: dict[str, Callable[[], object]] = {
        "stop()": broker.stop,
        "restart()": broker.restart,
        "start()": broker.start,
        "leaving a with block": lambda: broker.__exit__(None, None, None),
    }
    for offset, (what, attempt) in enumerate(attempts.items()):
        with pytest.raises(RuntimeError, match=rf"^{re.escape(what)} on the embedded broker's own"):
            broker.call(attempt)
        assert broker.running and broker.port == port and broker.data_dir.is_dir()
        assert [r.offset for r in broker.produce(topic, "still served")] == [offset]
    broker.stop()  # from this thread, as ever
    assert not broker.running


def test_helpers_on_the_brokers_own_thread_are_refused_at_once(
    sluice_broker: EmbeddedBroker,
) -> None:
    """create_topic() (and the other helpers that wait for the broker) inside call() blocked
    the very loop that should answer it for the whole timeout, then raised a TimeoutError
    saying the broker may still do it (it did, once the loop was free)."""
    broker = sluice_broker
    topic = broker.create_topic()
    name = unique_topic_name("in-call")
    attempts: dict[str, Callable[[], object]] = {
        "create_topics()": lambda: broker.create_topic(name, timeout=5),
        "delete_topics()": lambda: broker.delete_topics([topic], timeout=5),
        "produce()": lambda: broker.produce(topic, "x", timeout=5),
        "consume_until()": lambda: broker.consume_until(topic, 1, timeout=5),
        "consume_all()": lambda: broker.consume_all(topic, timeout=5),
    }
    for what, attempt in attempts.items():
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=rf"^{re.escape(what)} on the embedded broker's own"):
            broker.call(attempt)
        assert time.monotonic() - started < 2.5, what  # refused, not timed out
    assert [r.offset for r in broker.produce(topic, "still served")] == [0]
    broker.create_topic(name)  # not created by the refused call


def test_a_bad_broker_wide_topic_default_is_named_as_given() -> None:
    """Broker-wide defaults of topic settings (log.retention.ms for retention.ms) were named
    by their topic setting's name in the error."""
    with pytest.raises(InvalidConfigError, match=r"^log\.retention\.ms must be an integer, not 'abc'$"):
        EmbeddedBroker(settings={"log.retention.ms": "abc"})
    with pytest.raises(InvalidConfigError, match=r"^message\.max\.bytes must be an integer, not 'x'$"):
        EmbeddedBroker(settings={"message.max.bytes": "x"})
    with pytest.raises(
        InvalidConfigError,
        match=r"^log\.cleaner\.min\.compaction\.lag\.ms \(10\) must not exceed "
        r"log\.cleaner\.max\.compaction\.lag\.ms \(5\)$",
    ):
        EmbeddedBroker(
            settings={
                "log.cleaner.min.compaction.lag.ms": 10,
                "log.cleaner.max.compaction.lag.ms": 5,
            }
        )
