"""The record and topic helpers (``produce``, ``consume_until``, ``consume_all``,
``create_topics``) when things go wrong: a call that fails leaves nothing behind that harms a
later call or brings a deleted topic back, and says why it failed."""

from __future__ import annotations

import time

import confluent_kafka as ck
import pytest

from sluice.errors import InvalidTopicError
from sluice.testing import (
    ConsumeTimeout,
    EmbeddedBroker,
    ProduceError,
    TopicCreationError,
    delete_topics,
    unique_topic_name,
)

pytest_plugins = ["pytester"]


def _topics(broker: EmbeddedBroker) -> list[str]:
    def names() -> list[str]:
        assert broker.server is not None and broker.server.broker is not None
        return sorted(broker.server.broker.logs.list_topics())

    return broker.call(names)


def _connections(broker: EmbeddedBroker) -> int:
    def count() -> int:
        assert broker.server is not None
        return len(broker.server.connections)

    return broker.call(count)


def _until_no_client_is_connected(broker: EmbeddedBroker, timeout: float = 10.0) -> None:
    """Return once the broker has no client connection left (each closed client's connection
    goes when the broker reads its end); fail if one stays."""
    deadline = time.monotonic() + timeout
    while _connections(broker):
        if time.monotonic() > deadline:
            pytest.fail(f"{_connections(broker)} client connections still open after {timeout} s")
        time.sleep(0.01)


def test_no_client_of_the_helpers_outlives_its_call_so_a_deleted_topic_stays_deleted(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    """librdkafka refreshes the metadata of every topic a client knows (after a reconnect, and
    every topic.metadata.refresh.interval.ms); a helper client kept between calls would so
    create a deleted topic again on a broker that creates topics on first use."""
    broker = sluice_fresh_broker
    gone = broker.create_topic("gone")
    broker.produce(gone, "x")
    assert [r.value for r in broker.consume_all(gone)] == [b"x"]
    delete_topics(broker.bootstrap_servers, [gone])  # deleted by anyone, not only the helpers
    broker.faults.drop_connections()  # what made a kept producer reconnect and refresh
    other = broker.create_topic("other")
    broker.produce(other, "y")
    assert [r.value for r in broker.consume_until(other)] == [b"y"]
    _until_no_client_is_connected(broker)  # nothing left that could ask about `gone`
    assert _topics(broker) == [other]


def test_a_produce_to_a_missing_topic_says_so_and_harms_no_later_call() -> None:
    with EmbeddedBroker(settings={"auto.create.topics.enable": False}, topics={"ok": 1}) as broker:
        with pytest.raises(ProduceError, match="UNKNOWN_TOPIC_OR_PART") as refused:
            broker.produce("missing", "x", timeout=1)
        assert [e.code() for e in refused.value.errors] == [ck.KafkaError.UNKNOWN_TOPIC_OR_PART]
        started = time.monotonic()
        stored = broker.produce("ok", "fine", timeout=5)  # not held up by the failed record
        assert time.monotonic() - started < 5
        assert [(r.value, r.offset) for r in stored] == [(b"fine", 0)]
        assert "missing" not in _topics(broker)


def test_a_produce_that_times_out_says_so_and_the_next_call_waits_for_its_own_records(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    sluice_broker.faults.delay("Produce", 2.0, count=1)
    with pytest.raises(ProduceError, match="_MSG_TIMED_OUT") as late:
        sluice_broker.produce(sluice_topic, "slow", timeout=0.5)
    assert [e.code() for e in late.value.errors] == [ck.KafkaError._MSG_TIMED_OUT]
    started = time.monotonic()
    stored = sluice_broker.produce(sluice_topic, "fine", "too", timeout=5)
    assert time.monotonic() - started < 5
    assert [r.value for r in stored] == [b"fine", b"too"]  # its own records, and only those


def test_produce_takes_any_timeout_above_0_and_refuses_others(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    # librdkafka caps its own timeouts (message.timeout.ms at ~24 days, the metadata
    # propagation wait at an hour): a longer timeout is no configuration error
    assert [r.offset for r in sluice_broker.produce(sluice_topic, "x", timeout=1e12)] == [0]
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="above 0"):
            sluice_broker.produce(sluice_topic, "x", timeout=bad)
    with pytest.raises(TypeError, match="number of seconds"):
        sluice_broker.produce(sluice_topic, "x", timeout="1")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "kwargs", "says"),
    [
        ((b"ok", 3), {}, r"value 1 is bytes, str or None, not 3"),
        ((b"ok",), {"key": 5}, r"key is bytes, str or None, not 5"),
        ((b"ok",), {"headers": {"h": 3}}, r"header 'h' is bytes, str or None, not 3"),
        ((b"ok",), {"partition": True}, r"partition is an int or None, not True"),
        ((b"ok",), {"partition": "0"}, r"partition is an int or None, not '0'"),
        ((b"ok",), {"headers": [("h", 3)]}, r"header 'h' is bytes, str or None, not 3"),
        ((b"ok",), {"headers": [("h",)]}, r"a header is a \(name, value\) pair .*not \('h',\)"),
        ((b"ok",), {"headers": {1: "v"}}, r"a header is a \(name, value\) pair .*not \(1, 'v'\)"),
        ((b"ok",), {"headers": "h=v"}, r"headers is a mapping or \(name, value\) pairs"),
    ],
    ids=[
        "value", "key", "header", "bool-partition", "str-partition", "pair-header",
        "short-pair", "int-name", "str-headers",
    ],
)
def test_a_bad_argument_to_produce_is_named_before_anything_is_sent(
    sluice_broker: EmbeddedBroker, sluice_topic: str, args: tuple[object, ...],
    kwargs: dict[str, object], says: str,
) -> None:
    """librdkafka's TypeError named no argument ("a bytes-like object is required, not
    'int'"), came after the records before it were queued, and True went out as partition
    1."""
    with pytest.raises(TypeError, match=says):
        sluice_broker.produce(sluice_topic, *args, **kwargs)  # type: ignore[arg-type]
    assert sluice_broker.consume_all(sluice_topic) == []


def test_headers_may_be_pairs_with_a_name_repeated(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    """As a Record has them, and as Kafka allows: a list of pairs was an AttributeError."""
    (sent,) = sluice_broker.produce(sluice_topic, "v", headers=[("h", "1"), ("h", b"2")])
    assert sent.headers == (("h", b"1"), ("h", b"2"))
    (stored,) = sluice_broker.consume_all(sluice_topic)
    assert stored.headers == (("h", b"1"), ("h", b"2"))
    (mapped,) = sluice_broker.produce(sluice_topic, "w", headers={"a": "x", "b": None})
    assert mapped.headers == (("a", b"x"), ("b", None))


def test_a_value_over_message_max_bytes_is_a_produce_error(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    """librdkafka refuses a record over message.max.bytes on the spot: its KafkaException
    came out of ``produce`` as it was, and the records before it were purged unsent or, in
    flight, maybe stored. Now it is a ProduceError naming it, the records before it are
    stored and acknowledged, and the ones after it are not sent."""
    with pytest.raises(ProduceError, match=r"failed for 2 of 3 records: .*MSG_SIZE_TOO_LARGE") as big:
        sluice_broker.produce(sluice_topic, "before", b"x" * 2_000_000, "after", timeout=10)
    assert big.value.errors[0].code() == ck.KafkaError.MSG_SIZE_TOO_LARGE
    assert "1 records after it not sent" in str(big.value)
    assert [r.value for r in sluice_broker.consume_all(sluice_topic)] == [b"before"]


@pytest.mark.parametrize("how", ["consume_all", "consume_until"])
def test_reading_a_topic_no_topic_can_be_is_refused_at_once(
    sluice_broker: EmbeddedBroker, how: str
) -> None:
    """None (a fixture value not set, say) and an illegal name were waited for until the
    timeout, then reported as a topic that does not exist."""
    read = getattr(sluice_broker, how)
    started = time.monotonic()
    with pytest.raises(TypeError, match="a topic name is a str, not None"):
        read(None, timeout=5)
    for illegal in ("", "bad topic!", ".."):
        with pytest.raises(InvalidTopicError, match="invalid topic name"):
            read(illegal, timeout=5)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("count", [1_000_001, 2**70])
def test_waiting_for_more_than_a_million_records_reads_what_there_is(
    sluice_broker: EmbeddedBroker, sluice_topic: str, count: int
) -> None:
    """librdkafka's consume() takes at most 1M records a call: waiting for more was a
    ValueError from inside the helper (num_messages must be between 0 and 1000000), and a
    count of 2**64 or more read nothing in its time, saying 0 records arrived."""
    sluice_broker.produce(sluice_topic, "a", "b")
    with pytest.raises(ConsumeTimeout, match=rf"2 records from .* waiting for {count} records") as late:
        sluice_broker.consume_until(sluice_topic, count, timeout=1)
    assert [r.value for r in late.value.records] == [b"a", b"b"]


@pytest.mark.parametrize("how", ["consume_all", "consume_until"])
def test_reading_a_missing_topic_is_a_consume_timeout_and_closes_its_consumer(
    sluice_fresh_broker: EmbeddedBroker, how: str
) -> None:
    broker = sluice_fresh_broker
    read = getattr(broker, how)
    broker.faults.delay("Metadata", 1.0)  # librdkafka's metadata request times out first
    with pytest.raises(ConsumeTimeout, match="does not exist"):
        read("never-there", timeout=0.3)
    broker.faults.clear()
    for attempt in range(5):
        with pytest.raises(ConsumeTimeout, match="does not exist") as timed_out:
            read("never-there", timeout=0.1 + attempt * 0.05)
        assert timed_out.value.records == []
    _until_no_client_is_connected(broker)  # every reader was closed
    assert _topics(broker) == []  # and none created the topic


def test_offsets_that_do_not_come_in_time_are_a_consume_timeout(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    broker = sluice_fresh_broker
    topic = broker.create_topic()
    broker.produce(topic, "x")
    broker.faults.delay("ListOffsets", 1.0)
    with pytest.raises(ConsumeTimeout, match=f"no offsets for {topic}-0"):
        broker.consume_all(topic, timeout=0.3)
    broker.faults.clear()
    _until_no_client_is_connected(broker)
    assert [r.value for r in broker.consume_all(topic)] == [b"x"]


def test_topics_a_partly_refused_create_topics_made_are_recorded(
    sluice_broker: EmbeddedBroker,
) -> None:
    good, bad = unique_topic_name("good"), unique_topic_name("bad")
    with pytest.raises(TopicCreationError, match="INVALID_PARTITIONS") as refused:
        sluice_broker.create_topics({bad: 0, good: 1})  # the refused one first
    assert refused.value.name == bad and refused.value.created == [good]
    assert good in sluice_broker.created_topics and bad not in sluice_broker.created_topics
    assert good in _topics(sluice_broker)


CLEANUP_MODULE = """
import time
import pytest
from sluice.testing import TopicCreationError, delete_topics

NAMES = {}

def topics(broker):
    return broker.call(lambda: sorted(broker.server.broker.logs.list_topics()))

def test_1_makes_topics(sluice_broker, sluice_topic):
    NAMES["fixture"] = sluice_topic
    sluice_broker.produce(sluice_topic, "x")
    # deleted by the test itself, behind the helpers' back: the fixture's cleanup takes that
    delete_topics(sluice_broker.bootstrap_servers, [sluice_broker.create_topic()])
    with pytest.raises(TopicCreationError):
        sluice_broker.create_topics({"partly-good": 1, "partly-bad": 0})

def test_2_finds_them_deleted_for_good(sluice_broker):
    assert NAMES["fixture"] not in topics(sluice_broker)
    assert "partly-good" not in topics(sluice_broker)
    sluice_broker.faults.drop_connections()
    sluice_broker.produce(sluice_broker.create_topic(), "y")
    deadline = time.monotonic() + 10
    while sluice_broker.call(lambda: len(sluice_broker.server.connections)):
        assert time.monotonic() < deadline, "a client of the helpers stays connected"
        time.sleep(0.01)
    assert NAMES["fixture"] not in topics(sluice_broker)
"""


def test_the_fixture_deletes_every_topic_a_test_made_and_none_comes_back(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_cleanup=CLEANUP_MODULE)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_the_consume_helpers_check_their_arguments(
    sluice_broker: EmbeddedBroker, sluice_topic: str
) -> None:
    sluice_broker.produce(sluice_topic, b"a")
    for bad in (float("nan"), 0, -1, float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            sluice_broker.consume_all(sluice_topic, timeout=bad)
        with pytest.raises(ValueError, match="timeout"):
            sluice_broker.consume_until(sluice_topic, 1, timeout=bad)
    with pytest.raises(TypeError, match="timeout"):
        sluice_broker.consume_all(sluice_topic, timeout="1")  # type: ignore[arg-type]
    for count in ("1", 0, 1.5):
        with pytest.raises(ValueError, match="count"):
            sluice_broker.consume_until(sluice_topic, count)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="until"):
        sluice_broker.consume_until(sluice_topic, until=3)  # type: ignore[arg-type]
    assert [r.value for r in sluice_broker.consume_until(sluice_topic, 1)] == [b"a"]


def test_a_create_topics_without_an_answer_in_time_names_it_and_is_cleaned_up(
    sluice_broker: EmbeddedBroker,
) -> None:
    name = "created-late-" + str(time.monotonic_ns())
    sluice_broker.faults.delay("CreateTopics", 2, count=1)
    with pytest.raises(TimeoutError, match="CREATE_TOPICS: no answer"):
        sluice_broker.create_topic(name, timeout=0.5)
    assert name in sluice_broker.created_topics  # so the fixture deletes it
    with pytest.raises(ValueError, match="timeout"):
        sluice_broker.create_topic(timeout=0)
