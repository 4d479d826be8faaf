"""``sluice topics``: each action against the real broker, checked with a reference admin client."""

from __future__ import annotations

import json

import pytest

from sluice.testing import EmbeddedBroker
from tests.tools.conftest import NUM_PARTITIONS, Run
from tests.tools.reference import Reference

DYNAMIC_TOPIC_CONFIG = 1


def test_create_with_partitions_and_configs(sluice: Run, ref: Reference, topic: str) -> None:
    r = sluice(
        "topics",
        "create",
        topic,
        "--partitions",
        "4",
        "--config",
        "retention.ms=123456",
        "-c",
        "segment.ms=600000",
    )
    assert r.code == 0, r.err
    assert r.lines == [f"Created topic {topic}."]
    assert ref.partitions(topic) == 4
    configs = ref.configs(topic)
    assert configs["retention.ms"] == ("123456", DYNAMIC_TOPIC_CONFIG)
    assert configs["segment.ms"] == ("600000", DYNAMIC_TOPIC_CONFIG)


def test_create_without_partitions_uses_broker_default(
    sluice: Run, ref: Reference, topic: str
) -> None:
    assert sluice("topics", "create", topic).code == 0
    assert ref.partitions(topic) == NUM_PARTITIONS


def test_create_existing_fails_unless_if_not_exists(
    sluice: Run, ref: Reference, topic: str
) -> None:
    ref.create_topic(topic, 2)
    r = sluice("topics", "create", topic, "--partitions", "5")
    assert r.code == 1
    assert r.err.strip() == f"sluice topics create: error: topic {topic!r} already exists"
    r = sluice("topics", "create", topic, "--partitions", "5", "--if-not-exists")
    assert (r.code, r.out, r.err) == (0, b"", "")
    assert ref.partitions(topic) == 2  # untouched


def test_create_validate_only_creates_nothing(sluice: Run, ref: Reference, topic: str) -> None:
    r = sluice("topics", "create", topic, "--validate-only")
    assert r.code == 0, r.err
    assert r.lines == [f"Validated topic {topic}."]
    assert topic not in ref.topics()


def test_create_refused_config_is_one_line_error(sluice: Run, ref: Reference, topic: str) -> None:
    r = sluice("topics", "create", topic, "--config", "retention.ms=soon")
    assert r.code == 1
    assert len(r.err.splitlines()) == 1
    assert "INVALID_CONFIG" in r.err and "retention.ms" in r.err
    assert topic not in ref.topics()


def test_list_text_and_json(sluice: Run, ref: Reference, topic: str) -> None:
    names = [f"{topic}.b", f"{topic}.a"]
    for n in names:
        ref.create_topic(n)
    r = sluice("topics", "list")
    assert r.code == 0, r.err
    listed = r.lines
    assert listed == sorted(listed)
    assert set(names) <= set(listed)
    r = sluice("topics", "list", "--output", "json")
    assert r.code == 0
    assert json.loads(r.out) == listed


def test_describe_shows_partitions_offsets_and_overrides(
    sluice: Run, ref: Reference, topic: str
) -> None:
    ref.create_topic(topic, 2, retention_ms="86400000")
    ref.produce(topic, [{"value": b"x", "partition": 1}] * 3 + [{"value": b"y", "partition": 0}])
    r = sluice("topics", "describe", topic, "-o", "json")
    assert r.code == 0, r.err
    [d] = json.loads(r.out)
    assert d["topic"] == topic
    assert d["partition_count"] == 2
    assert d["replication_factor"] == 1
    assert d["configs"] == {"retention.ms": "86400000"}  # only the override
    assert [
        (p["partition"], p["log_start_offset"], p["log_end_offset"]) for p in d["partitions"]
    ] == [
        (0, 0, 1),
        (1, 0, 3),
    ]
    assert all(
        p["leader"] == 0 and p["replicas"] == [0] and p["isr"] == [0] for p in d["partitions"]
    )

    text = sluice("topics", "describe", topic)
    assert text.code == 0
    assert (
        text.lines[0]
        == f"Topic: {topic}  PartitionCount: 2  ReplicationFactor: 1  Configs: retention.ms=86400000"
    )
    assert text.lines[1].split() == [
        "PARTITION",
        "LEADER",
        "REPLICAS",
        "ISR",
        "LOG-START-OFFSET",
        "LOG-END-OFFSET",
    ]
    assert [line.split() for line in text.lines[2:]] == [
        ["0", "0", "0", "0", "0", "1"],
        ["1", "0", "0", "0", "0", "3"],
    ]


def test_describe_all_configs(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic)
    r = sluice("topics", "describe", topic, "--all-configs", "-o", "json")
    assert r.code == 0, r.err
    [d] = json.loads(r.out)
    assert {k: v for k, (v, _) in ref.configs(topic).items() if v is not None} == d["configs"]


def test_describe_unknown_topic(sluice: Run, topic: str) -> None:
    r = sluice("topics", "describe", topic)
    assert r.code == 1
    assert r.err.strip() == f"sluice topics describe: error: unknown topic {topic!r}"
    assert r.out == b""


def test_delete(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(f"{topic}.1")
    ref.create_topic(f"{topic}.2")
    r = sluice("topics", "delete", f"{topic}.1", f"{topic}.2")
    assert r.code == 0, r.err
    assert r.lines == [f"Deleted topic {topic}.1.", f"Deleted topic {topic}.2."]
    assert not {f"{topic}.1", f"{topic}.2"} & ref.topics()


def test_delete_unknown_fails_unless_if_exists(sluice: Run, topic: str) -> None:
    r = sluice("topics", "delete", topic)
    assert r.code == 1
    assert f"unknown topic {topic!r}" in r.err
    assert sluice("topics", "delete", topic, "--if-exists").code == 0


def test_alter_sets_and_deletes_configs(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, retention_ms="1000000")
    r = sluice(
        "topics", "alter", topic, "--config", "segment.ms=700000", "--delete-config", "retention.ms"
    )
    assert r.code == 0, r.err
    configs = ref.configs(topic)
    assert configs["segment.ms"] == ("700000", DYNAMIC_TOPIC_CONFIG)
    assert configs["retention.ms"][1] != DYNAMIC_TOPIC_CONFIG  # back to the default
    # Incremental: an unrelated override survives the next change.
    assert sluice("topics", "alter", topic, "-c", "retention.bytes=1048576").code == 0
    configs = ref.configs(topic)
    assert configs["segment.ms"] == ("700000", DYNAMIC_TOPIC_CONFIG)
    assert configs["retention.bytes"] == ("1048576", DYNAMIC_TOPIC_CONFIG)


def test_alter_refused_config(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic)
    r = sluice("topics", "alter", topic, "--config", "no.such.config=1")
    assert r.code == 1
    assert "no.such.config" in r.err
    assert "no.such.config" not in ref.configs(topic)


def test_alter_an_empty_config_name_is_a_usage_error(
    sluice: Run, ref: Reference, topic: str
) -> None:
    """librdkafka's admin client raised a ValueError traceback ('Config name mustn't be
    empty')."""
    ref.create_topic(topic)
    r = sluice("topics", "alter", topic, "--delete-config", "")
    assert r.code == 2, r.err
    assert r.err.splitlines()[-1] == (
        "sluice topics alter: error: argument --delete-config/-d: a config name cannot be "
        "empty: ''"
    )


def test_alter_partitions(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, 2)
    r = sluice("topics", "alter", topic, "--partitions", "5")
    assert r.code == 0, r.err
    assert r.lines == [f"Raised partition count of topic {topic} from 2 to 5."]
    assert ref.partitions(topic) == 5
    r = sluice("topics", "alter", topic, "--partitions", "3")
    assert r.code == 1
    assert "can only grow" in r.err
    assert ref.partitions(topic) == 5


def test_alter_unknown_topic(sluice: Run, topic: str) -> None:
    r = sluice("topics", "alter", topic, "--partitions", "3")
    assert r.code == 1
    assert f"unknown topic {topic!r}" in r.err


def test_usage_errors_exit_2(sluice: Run, topic: str) -> None:
    assert sluice("topics").code == 2
    assert sluice("topics", "create").code == 2
    assert sluice("topics", "create", topic, "--partitions", "0").code == 2
    assert sluice("topics", "create", topic, "--config", "novalue").code == 2
    r = sluice("topics", "alter", topic)
    assert r.code == 2
    assert "nothing to change" in r.err
    assert sluice("topics", "alter", topic, "-c", "a=1", "-d", "a").code == 2


def test_connection_options_on_either_level(
    sluice: Run, broker: EmbeddedBroker, topic: str
) -> None:
    # The environment names the session broker; a bad address given on either level wins.
    for argv in (
        ["topics", "-b", "127.0.0.1:1", "--timeout", "1", "list"],
        ["topics", "list", "-b", "127.0.0.1:1", "--timeout", "1"],
    ):
        r = sluice(*argv)
        assert r.code == 1 and "cannot reach 127.0.0.1:1" in r.err
    bs = broker.bootstrap_servers
    assert sluice("topics", "--bootstrap-server", bs, "create", topic).code == 0
    r = sluice("topics", "list", "-b", bs)
    assert r.code == 0 and topic in r.lines


def test_unreachable_broker(sluice: Run) -> None:
    r = sluice("topics", "list", "--bootstrap-server", "127.0.0.1:1", "--timeout", "1")
    assert r.code == 1
    assert r.err.startswith("sluice topics list: error: cannot reach 127.0.0.1:1")
    assert len(r.err.splitlines()) == 1


@pytest.mark.parametrize("count", ["0", "-1"])
def test_a_partition_count_below_1_is_told_the_bound(sluice: Run, topic: str, count: str) -> None:
    """-1 was told ``must be >= 0`` (the bound of another option), though 0 is refused too."""
    r = sluice("topics", "create", topic, "--partitions", count)
    assert r.code == 2
    assert r.err.splitlines()[-1] == (
        f"sluice topics create: error: argument --partitions/-p: must be >= 1: '{count}'"
    )


@pytest.mark.parametrize(
    ("servers", "said"),
    [
        ("", "no broker address in ''"),
        (" , ,", "no broker address in ' , ,'"),
        ("PLAINTEXT://", "no address after the protocol: 'PLAINTEXT://'"),
        ("127.0.0.1:99999", "not HOST:PORT with a port of 1-65535: '127.0.0.1:99999'"),
        ("127.0.0.1:x", "not HOST:PORT with a port of 1-65535: '127.0.0.1:x'"),
        ("[::1]:0", "not HOST:PORT with a port of 1-65535: '[::1]:0'"),
        ("h:1:2", "not HOST:PORT (an IPv6 address with a port goes in brackets: [::1]:9092): "
         "'h:1:2'"),
    ],
)
def test_a_bootstrap_address_that_cannot_work_is_a_usage_error(
    sluice: Run, servers: str, said: str
) -> None:
    """librdkafka only times out on these: the tool said "cannot reach" after --timeout."""
    r = sluice("topics", "list", "-b", servers, "--timeout", "2")
    assert r.code == 2
    assert r.err.splitlines()[-1] == f"sluice topics list: error: --bootstrap-server: {said}"
