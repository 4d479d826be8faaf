"""``sluice groups``: a reference confluent-kafka consumer makes a group with committed offsets;
the tools describe it, reset its offsets and delete it, checked with a reference admin client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import confluent_kafka as ck
import pytest

from sluice.testing import EmbeddedBroker
from tests.tools.conftest import Run
from tests.tools.reference import Reference

CLIENT_ID = "tools-test-member"


class Member:
    """One live group member that has read a topic and committed chosen offsets."""

    def __init__(self, bootstrap: str, group: str, topic: str, expect: int) -> None:
        self.consumer = ck.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": CLIENT_ID,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "log_level": 0,
            }
        )
        self.consumer.subscribe([topic])
        got = 0
        deadline = time.monotonic() + 30
        while got < expect:
            assert time.monotonic() < deadline, f"the member read {got} of {expect} records"
            m = self.consumer.poll(0.5)
            if m is not None and m.error() is None:
                got += 1

    def commit(self, topic: str, offsets: dict[int, int]) -> None:
        self.consumer.commit(
            offsets=[ck.TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def group_topic(ref: Reference, topic: str) -> str:
    """Partition 0 holds 5 records, partition 1 holds 3."""
    ref.create_topic(topic, 2)
    ref.produce(
        topic, [{"value": b"x", "partition": 0}] * 5 + [{"value": b"y", "partition": 1}] * 3
    )
    return topic


@pytest.fixture
def member(broker: EmbeddedBroker, group_topic: str) -> Iterator[Member]:
    m = Member(broker.bootstrap_servers, f"{group_topic}.g", group_topic, expect=8)
    m.commit(group_topic, {0: 2, 1: 3})
    try:
        yield m
    finally:
        m.close()


def test_describe_active_group(sluice: Run, member: Member, group_topic: str) -> None:
    group = f"{group_topic}.g"
    r = sluice("groups", "describe", group, "-o", "json")
    assert r.code == 0, r.err
    [d] = json.loads(r.out)
    assert d["group"] == group
    assert d["state"] == "Stable"
    [m] = d["members"]
    assert m["member_id"] == member.consumer.memberid()
    assert m["client_id"] == CLIENT_ID
    assert m["assignment"] == [
        {"topic": group_topic, "partition": 0},
        {"topic": group_topic, "partition": 1},
    ]
    assert [
        (o["partition"], o["current_offset"], o["log_end_offset"], o["lag"], o["member_id"])
        for o in d["offsets"]
    ] == [
        (0, 2, 5, 3, m["member_id"]),
        (1, 3, 3, 0, m["member_id"]),
    ]

    text = sluice("groups", "describe", group)
    assert text.code == 0, text.err
    assert text.lines[0].startswith(f"Group: {group}  State: Stable")
    assert text.lines[1].split() == [
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]
    rows = [line.split() for line in text.lines[2:]]
    assert [row[:6] for row in rows] == [
        [group_topic, "0", "2", "5", "3", m["member_id"]],
        [group_topic, "1", "3", "3", "0", m["member_id"]],
    ]
    assert all(row[-1] == CLIENT_ID for row in rows)

    members = sluice("groups", "describe", group, "--members")
    assert members.code == 0
    assert members.lines[2].split()[0] == m["member_id"]
    assert f"{group_topic}:0,{group_topic}:1" in members.lines[2]


def test_list_groups(sluice: Run, member: Member, group_topic: str) -> None:
    group = f"{group_topic}.g"
    r = sluice("groups", "list")
    assert r.code == 0, r.err
    assert group in r.lines
    r = sluice("groups", "list", "--state")
    assert [group, "Stable"] in [line.split() for line in r.lines]
    r = sluice("groups", "list", "-o", "json")
    assert {"group": group, "state": "Stable", "simple": False} in json.loads(r.out)


def test_list_groups_in_given_states(
    sluice: Run, ref: Reference, member: Member, group_topic: str
) -> None:
    """``--state Stable,Empty`` keeps the groups in those states, as Kafka's
    ``kafka-consumer-groups --list --state`` does; it was a usage error."""
    stable = f"{group_topic}.g"
    r = sluice(
        "groups",
        "reset-offsets",
        f"{group_topic}.e",
        "--topic",
        group_topic,
        "--to-earliest",
        "--execute",
    )
    assert r.code == 0, r.err
    empty = f"{group_topic}.e"
    r = sluice("groups", "list", "--state", "stable")
    assert r.code == 0, r.err
    listed = [line.split() for line in r.lines]
    assert [stable, "Stable"] in listed and [empty, "Empty"] not in listed
    assert all(state == "Stable" for _, state in listed[1:])
    r = sluice("groups", "list", "--state", "Stable,EMPTY", "-o", "json")
    groups = {g["group"]: g["state"] for g in json.loads(r.out)}
    assert groups[stable] == "Stable" and groups[empty] == "Empty"
    assert set(groups.values()) <= {"Stable", "Empty"}
    r = sluice("groups", "list", "--state", "Idle")
    assert r.code == 2
    assert "unknown group state 'Idle'" in r.err


def test_active_group_is_not_reset_or_deleted(
    sluice: Run, ref: Reference, member: Member, group_topic: str
) -> None:
    group = f"{group_topic}.g"
    r = sluice("groups", "reset-offsets", group, "--all-topics", "--to-earliest", "--execute")
    assert r.code == 1
    assert r.err == (
        f"sluice groups reset-offsets: error: group {group!r} is Stable with 1 member: offsets "
        "can only be reset while it has no members; stop its consumers first\n"
    )
    r = sluice("groups", "delete", group)
    assert r.code == 1
    assert "active members" in r.err
    assert ref.committed(group) == {(group_topic, 0): 2, (group_topic, 1): 3}


def test_empty_group_after_members_leave(sluice: Run, member: Member, group_topic: str) -> None:
    group = f"{group_topic}.g"
    member.close()
    r = sluice("groups", "describe", group, "-o", "json")
    assert r.code == 0, r.err
    [d] = json.loads(r.out)
    assert d["state"] == "Empty"
    assert d["members"] == []
    assert [
        (o["partition"], o["current_offset"], o["lag"], o["member_id"]) for o in d["offsets"]
    ] == [
        (0, 2, 3, None),
        (1, 3, 0, None),
    ]


@pytest.fixture
def empty_group(member: Member, group_topic: str) -> str:
    member.close()
    return f"{group_topic}.g"


def test_reset_dry_run_changes_nothing(
    sluice: Run, ref: Reference, empty_group: str, group_topic: str
) -> None:
    r = sluice("groups", "reset-offsets", empty_group, "--all-topics", "--to-earliest")
    assert r.code == 0, r.err
    assert "Dry run" in r.err
    assert [line.split() for line in r.lines[1:]] == [
        [empty_group, group_topic, "0", "2", "0"],
        [empty_group, group_topic, "1", "3", "0"],
    ]
    assert ref.committed(empty_group) == {(group_topic, 0): 2, (group_topic, 1): 3}


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        (["--to-earliest"], {0: 0, 1: 0}),
        (["--to-latest"], {0: 5, 1: 3}),
        (["--to-offset", "4"], {0: 4, 1: 3}),  # kept within each log
        (["--shift-by", "-2"], {0: 0, 1: 1}),
        (["--shift-by", "10"], {0: 5, 1: 3}),
    ],
)
def test_reset_execute(
    sluice: Run,
    ref: Reference,
    empty_group: str,
    group_topic: str,
    how: list[str],
    expected: dict[int, int],
) -> None:
    r = sluice("groups", "reset-offsets", empty_group, "--topic", group_topic, *how, "--execute")
    assert r.code == 0, r.err
    assert ref.committed(empty_group) == {(group_topic, p): o for p, o in expected.items()}


def test_reset_some_partitions(
    sluice: Run, ref: Reference, empty_group: str, group_topic: str
) -> None:
    r = sluice(
        "groups",
        "reset-offsets",
        empty_group,
        "--topic",
        f"{group_topic}:1",
        "--to-offset",
        "1",
        "--execute",
    )
    assert r.code == 0, r.err
    assert ref.committed(empty_group) == {(group_topic, 0): 2, (group_topic, 1): 1}


def test_reset_to_datetime(sluice: Run, ref: Reference, empty_group: str, group_topic: str) -> None:
    before = datetime.now(UTC)
    ref.produce(
        group_topic,
        [{"value": b"later", "partition": 0, "timestamp": int(before.timestamp() * 1000) + 60_000}],
    )
    at = datetime.fromtimestamp(before.timestamp() + 30, UTC).isoformat()
    r = sluice(
        "groups",
        "reset-offsets",
        empty_group,
        "--topic",
        group_topic,
        "--to-datetime",
        at,
        "--execute",
    )
    assert r.code == 0, r.err
    # Partition 0: the record stamped a minute ahead; partition 1: nothing that late, so its end.
    assert ref.committed(empty_group) == {(group_topic, 0): 5, (group_topic, 1): 3}


def test_reset_to_a_datetime_before_1970_is_the_earliest(
    sluice: Run, ref: Reference, empty_group: str, group_topic: str
) -> None:
    """librdkafka refused the negative time ('Partition 0 has an invalid offset
    -31536000000', exit 1); every record is at or after such a time."""
    r = sluice(
        "groups", "reset-offsets", empty_group, "--topic", group_topic,
        "--to-datetime", "1969-01-01T00:00:00Z", "--execute",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert ref.committed(empty_group) == {(group_topic, 0): 0, (group_topic, 1): 0}
    r = sluice(
        "groups", "reset-offsets", empty_group, "--all-topics",
        "--to-datetime", "0001-01-01T00:00:00",
    )  # fmt: skip
    assert r.code == 2
    assert r.err.splitlines()[-1].endswith(
        "argument --to-datetime: out of range: '0001-01-01T00:00:00'"
    )


def test_reset_new_group(sluice: Run, ref: Reference, group_topic: str) -> None:
    group = f"{group_topic}.new"
    r = sluice(
        "groups",
        "reset-offsets",
        group,
        "--topic",
        group_topic,
        "--to-latest",
        "--execute",
        "-o",
        "json",
    )
    assert r.code == 0, r.err
    assert json.loads(r.out) == [
        {
            "group": group,
            "topic": group_topic,
            "partition": 0,
            "current_offset": None,
            "new_offset": 5,
        },
        {
            "group": group,
            "topic": group_topic,
            "partition": 1,
            "current_offset": None,
            "new_offset": 3,
        },
    ]
    assert ref.committed(group) == {(group_topic, 0): 5, (group_topic, 1): 3}


def test_reset_errors(sluice: Run, empty_group: str, group_topic: str) -> None:
    r = sluice(
        "groups", "reset-offsets", empty_group, "--topic", f"{group_topic}.missing", "--to-earliest"
    )
    assert r.code == 1 and "unknown topic" in r.err
    r = sluice(
        "groups", "reset-offsets", empty_group, "--topic", f"{group_topic}:7", "--to-earliest"
    )
    assert r.code == 1 and "no partition 7" in r.err
    r = sluice("groups", "reset-offsets", f"{empty_group}.none", "--all-topics", "--to-earliest")
    assert r.code == 1 and "no committed offsets" in r.err
    assert sluice("groups", "reset-offsets", empty_group, "--to-earliest").code == 2  # no scope
    assert sluice("groups", "reset-offsets", empty_group, "--all-topics").code == 2  # no target
    assert (
        sluice(
            "groups", "reset-offsets", empty_group, "--all-topics", "--to-earliest", "--to-latest"
        ).code
        == 2
    )
    assert (
        sluice("groups", "reset-offsets", empty_group, "--all-topics", "--to-offset", "-1").code
        == 2
    )
    assert (
        sluice(
            "groups", "reset-offsets", empty_group, "--all-topics", "--to-datetime", "yesterday"
        ).code
        == 2
    )


def test_delete_group(sluice: Run, ref: Reference, empty_group: str) -> None:
    r = sluice("groups", "delete", empty_group)
    assert r.code == 0, r.err
    assert r.lines == [f"Deleted group {empty_group}."]
    assert empty_group not in ref.groups()
    assert ref.committed(empty_group) == {}
    r = sluice("groups", "delete", empty_group)
    assert r.code == 1
    assert f"unknown group {empty_group!r}" in r.err


def test_describe_unknown_group(sluice: Run, topic: str) -> None:
    r = sluice("groups", "describe", f"{topic}.nobody")
    assert r.code == 1
    assert f"unknown group '{topic}.nobody'" in r.err


@pytest.mark.parametrize(
    "argv",
    [
        ("groups", "describe", ""),
        ("groups", "delete", ""),
        ("groups", "reset-offsets", "", "--all-topics", "--to-earliest"),
    ],
)
def test_an_empty_group_id_is_a_usage_error(sluice: Run, argv: tuple[str, ...]) -> None:
    """describe and reset-offsets ended in librdkafka's ValueError traceback ('group_id'
    cannot be empty), delete in 'unknown group'."""
    r = sluice(*argv)
    assert r.code == 2, r.err
    assert r.err.splitlines()[-1] == (
        f"sluice groups {argv[1]}: error: argument GROUP: a group id cannot be empty"
    )


def test_a_group_id_of_spaces_is_a_group_like_any_other(sluice: Run, topic: str) -> None:
    r = sluice("groups", "describe", " ")
    assert r.code == 1
    assert "unknown group ' '" in r.err
