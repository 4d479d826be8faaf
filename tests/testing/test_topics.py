"""sluice.testing's topic helpers, checked with a real client (confluent-kafka's admin)."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__
    AdminClient,
    ConfigResource,
    ResourceType,
)

from sluice.errors import ErrorCode
from sluice.testing import (
    EmbeddedBroker,
    TopicCreationError,
    TopicDeletionError,
    create_topic,
    delete_topics,
    unique_topic_name,
)
from sluice.testing.topics import MAX_TOPIC_NAME


def _admin(broker: EmbeddedBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap_servers, "log_level": 0})


def test_unique_topic_name_is_legal_unique_and_keeps_the_end_of_a_long_hint() -> None:
    names = {unique_topic_name("tests/x.py::test_a[p/1 ü]") for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
        assert name.startswith("tests-x.py-test_a-p-1-")
    long = unique_topic_name("a" * 300 + "-the-end")
    assert len(long) == MAX_TOPIC_NAME
    assert "-the-end-" in long
    assert re.fullmatch(r"topic-[0-9a-f]{12}", unique_topic_name("???"))


def test_create_topic_with_partitions_and_configs(sluice_broker: EmbeddedBroker) -> None:
    name = unique_topic_name("created")
    assert (
        create_topic(sluice_broker.bootstrap_servers, name, 3, configs={"retention.ms": "12345"})
        == name
    )
    admin = _admin(sluice_broker)
    assert len(admin.list_topics(name, timeout=30).topics[name].partitions) == 3
    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result(30)
    assert entries["retention.ms"].value == "12345"


def test_create_topic_reports_the_brokers_refusal(sluice_broker: EmbeddedBroker) -> None:
    name = create_topic(sluice_broker.bootstrap_servers, unique_topic_name("twice"))
    with pytest.raises(TopicCreationError, match="TOPIC_ALREADY_EXISTS") as refused:
        create_topic(sluice_broker.bootstrap_servers, name)
    assert refused.value.code == ErrorCode.TOPIC_ALREADY_EXISTS
    with pytest.raises(TopicCreationError) as invalid:
        create_topic(sluice_broker.bootstrap_servers, unique_topic_name("bad"), 0)
    assert invalid.value.code == ErrorCode.INVALID_PARTITIONS
    # a bool is no partition count: True made a topic of 1 partition
    for wrong in (True, "2", 2.0):
        with pytest.raises(TypeError, match="partitions must be an int"):
            create_topic(sluice_broker.bootstrap_servers, unique_topic_name("bool"), wrong)  # type: ignore[arg-type]


def test_sluice_topic_fixture(sluice_broker: EmbeddedBroker, sluice_topic: str) -> None:
    assert "test_sluice_topic_fixture" in sluice_topic
    topics = _admin(sluice_broker).list_topics(timeout=30).topics
    assert len(topics[sluice_topic].partitions) == 1


@pytest.fixture
def down() -> Iterator[list[str]]:
    """Two loopback addresses where nothing listens: each socket is bound, never listening,
    so a connection to it is refused and no other process can take the port meanwhile."""
    sockets = [socket.socket(), socket.socket()]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        yield [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_the_topic_functions_try_each_bootstrap_address(
    sluice_broker: EmbeddedBroker, down: list[str]
) -> None:
    """Only the first address of a bootstrap list was tried: with it down, creating a topic
    failed although the others were up."""
    up = sluice_broker.bootstrap_servers
    name = create_topic(f"{down[0]},{down[1]}, {up}", unique_topic_name("through-the-third"))
    assert name in _admin(sluice_broker).list_topics(timeout=30).topics
    assert delete_topics(f"{down[0]},{up}", [name]) == [name]
    with pytest.raises(ConnectionError, match=r"no broker of .* took a connection") as none:
        create_topic(",".join(down), unique_topic_name("nowhere"))
    for address in down:  # each named, with why
        assert f"{address} ([Errno 111] Connection refused)" in str(none.value)
    with pytest.raises(ValueError, match=r"not HOST:PORT with a port of 1-65535: 'h:99999'"):
        delete_topics(f"{up},h:99999", [name])


def test_a_bootstrap_list_is_read_as_librdkafka_reads_it(sluice_broker: EmbeddedBroker) -> None:
    """The topic helpers connect where a librdkafka client given the same string does (the
    tools' rule, one parser now): a ``PLAINTEXT://`` prefix, and an entry without a port is on
    9092. The prefix was read into the host name (a ConnectionError), a bare host refused."""
    up = sluice_broker.bootstrap_servers
    name = create_topic(f"PLAINTEXT://{up}", unique_topic_name("prefixed"))
    assert name in _admin(sluice_broker).list_topics(timeout=30).topics
    # an empty entry is skipped, as librdkafka skips it; nothing at all is refused
    assert create_topic(f"{up},", unique_topic_name("trailing-comma")).startswith("trailing-comma")
    with pytest.raises(ValueError, match=r"no broker address"):
        create_topic(" , ", unique_topic_name("nothing"))
    from sluice.hostport import bootstrap_addresses

    assert bootstrap_addresses("h, [::1]:1, ::1, PLAINTEXT://k:2") == [
        ("h", 9092), ("::1", 1), ("::1", 9092), ("k", 2)
    ]


def test_deleting_a_missing_topic_is_refused_unless_missing_ok(
    sluice_broker: EmbeddedBroker,
) -> None:
    """As Kafka's admin clients do (DeleteTopics answers UNKNOWN_TOPIC_OR_PARTITION); it
    returned silently."""
    bootstrap = sluice_broker.bootstrap_servers
    there, missing = create_topic(bootstrap, unique_topic_name("there")), unique_topic_name("never")
    with pytest.raises(
        TopicDeletionError, match=rf"deleting topic '{missing}' failed: UNKNOWN_TOPIC_OR_PARTITION"
    ) as refused:
        delete_topics(bootstrap, [there, missing])
    assert refused.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert refused.value.deleted == [there]  # the one that was there is gone all the same
    assert there not in _admin(sluice_broker).list_topics(timeout=30).topics
    assert delete_topics(bootstrap, [there, missing], missing_ok=True) == []

    # the same through the cluster helpers, which forget what is gone either way
    made, kept = sluice_broker.create_topic(), sluice_broker.create_topic()
    with pytest.raises(TopicDeletionError, match="UNKNOWN_TOPIC_OR_PARTITION"):
        sluice_broker.delete_topics([made, missing])
    assert made not in sluice_broker.created_topics and kept in sluice_broker.created_topics
    assert sluice_broker.delete_topics([kept, missing], missing_ok=True) == [kept]
    assert kept not in sluice_broker.created_topics



def test_a_port_out_of_range_is_refused_not_wrapped(sluice_broker: EmbeddedBroker) -> None:
    """A port beyond 65535 reached the port 65536 below it (getaddrinfo wraps it): a typo
    such as ``:{port + 65536}`` created the topic on whatever listened there; port 0 was tried
    as an address."""
    up = sluice_broker.port
    for port in (up + 65536, 65536, 0):
        name = unique_topic_name("wrapped-port")
        with pytest.raises(ValueError, match=r"port of 1-65535"):
            create_topic(f"127.0.0.1:{port}", name, timeout=5)
        create_topic(sluice_broker.bootstrap_servers, name)  # not created by the above


def test_a_topic_named_twice_in_one_deletion_is_deleted_once(sluice_broker: EmbeddedBroker) -> None:
    """It was deleted, then the same request's second mention raised TopicDeletionError
    UNKNOWN_TOPIC_OR_PARTITION ("deleting topic failed") for the topic it had just deleted."""
    bootstrap = sluice_broker.bootstrap_servers
    name = create_topic(bootstrap, unique_topic_name("twice"))
    assert delete_topics(bootstrap, [name, name]) == [name]
    create_topic(bootstrap, name)  # it is gone
    assert delete_topics(bootstrap, [name, name]) == [name]


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", r"does not answer as a Kafka broker does \(its answer begins b'HTTP'"),
        (b"\x00\x00\x00\x06\x00\x00\x00\x01\x00\x01", r"not a CREATE_TOPICS v7 response \(truncated"),
        (b"\x00\x00\x00\x04\x00\x00\x00\x09", r"answered request 1 as request 9"),
    ],
    ids=["http", "truncated", "wrong-correlation"],
)
def test_an_answer_that_is_not_kafka_is_named_as_such(answer: bytes, says: str) -> None:
    """A server that is not a Kafka broker (an HTTP port given by mistake) answered with bytes
    read as a 1.2 GB frame size: the helper waited for them until its timeout and then said
    the broker did not answer."""

    def send(conn: socket.socket, done: threading.Event) -> None:
        conn.sendall(answer)
        done.wait(30)  # the connection stays open, as an HTTP server's keep-alive would

    with _serve_once(send) as address:
        with pytest.raises(ConnectionError, match=says) as info:
            create_topic(address, unique_topic_name("not-kafka"), timeout=20)
        assert address in str(info.value)


@contextlib.contextmanager
def _serve_once(answer: Callable[[socket.socket, threading.Event], None]) -> Iterator[str]:
    """A one-connection server that reads a request and hands the connection to ``answer``
    (with an event set when the test is done); yields its address."""
    server = socket.create_server(("127.0.0.1", 0))
    host, port = server.getsockname()[:2]
    done = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            with contextlib.suppress(OSError):  # the helper gave up and closed its end
                answer(conn, done)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield f"{host}:{port}"
    finally:
        done.set()
        thread.join()
        server.close()


def test_an_answer_trickled_a_byte_at_a_time_is_held_to_the_timeout() -> None:
    """The socket timeout was per ``recv``: a peer sending a byte every 0.2 s held a call with
    ``timeout=1`` for as long as it kept trickling (here 20 s), then failed on the bytes."""

    def trickle(conn: socket.socket, done: threading.Event) -> None:
        conn.sendall(b"\x00\x00\x00\x64")  # a frame of 100 bytes
        for _ in range(100):
            if done.wait(0.2):  # the pace of the trickle, not a readiness wait
                return
            conn.sendall(b"\x00")

    with _serve_once(trickle) as address:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"CREATE_TOPICS: no answer from .* within 1\.0 s"):
            create_topic(address, unique_topic_name("trickled"), timeout=1.0)
        took = time.monotonic() - started
        assert took < 5, f"a call with timeout=1 took {took:.1f} s"


def test_a_peer_that_closes_mid_answer_is_named() -> None:
    def half(conn: socket.socket, done: threading.Event) -> None:
        conn.sendall(b"\x00\x00\x00\x64" + b"\x00\x00\x00\x01" + bytes(6))  # 10 of 100 bytes

    with _serve_once(half) as address, pytest.raises(
        ConnectionError, match=r"CREATE_TOPICS: 127\.0\.0\.1:\d+ closed the connection after 10 of 100"
    ):
        create_topic(address, unique_topic_name("half"), timeout=10)


def test_a_str_given_for_the_names_to_delete_is_refused() -> None:
    """``delete_topics(bootstrap, "ab")`` iterated the str: it deleted topic ``a``, one
    nobody named (with ``missing_ok``, silently)."""
    with EmbeddedBroker(topics={"a": 1, "ab": 1}) as broker:
        refused = r"an iterable of str, not the str 'ab': give \['ab'\]"
        with pytest.raises(TypeError, match=refused):
            delete_topics(broker.bootstrap_servers, "ab", missing_ok=True)
        with pytest.raises(TypeError, match=refused):
            broker.delete_topics("ab", missing_ok=True)
        with pytest.raises(TypeError, match="a topic name is a str, not 5"):
            delete_topics(broker.bootstrap_servers, ["ab", 5])  # type: ignore[list-item]
        assert {"a", "ab"} <= set(_admin(broker).list_topics(timeout=30).topics)
