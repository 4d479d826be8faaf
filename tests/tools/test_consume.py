"""``sluice consume``: what it prints for records put in place by a reference producer."""

from __future__ import annotations

import json

import pytest

from tests.tools.conftest import Run
from tests.tools.reference import Reference


@pytest.fixture
def filled(ref: Reference, topic: str) -> str:
    """A 2-partition topic: partition 0 holds a0..a2, partition 1 holds b0..b3 (with keys,
    headers, a null key and a null value)."""
    ref.create_topic(topic, 2)
    ref.produce(
        topic,
        [{"value": f"a{i}".encode(), "key": f"ka{i}".encode(), "partition": 0} for i in range(3)]
        + [
            {
                "value": b"b0",
                "key": b"kb0",
                "partition": 1,
                "headers": [("h1", b"x"), ("h2", b"y")],
            },
            {"value": b"b1", "partition": 1},
            {"value": None, "key": b"tombstone", "partition": 1},
            {"value": b"b3", "key": b"kb3", "partition": 1},
        ],
    )
    return topic


def by_partition(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        part, _, rest = line.partition(" ")
        out.setdefault(part, []).append(rest)
    return out


def test_from_beginning_prints_values(sluice: Run, filled: str) -> None:
    r = sluice("consume", filled, "--from-beginning", "--exit-at-end")
    assert r.code == 0, r.err
    assert r.err == ""
    lines = r.lines
    assert sorted(lines) == sorted(["a0", "a1", "a2", "b0", "b1", "null", "b3"])
    # Per partition, in offset order.
    assert [x for x in lines if x.startswith("a")] == ["a0", "a1", "a2"]
    assert [x for x in lines if x[0] in "bn"] == ["b0", "b1", "null", "b3"]


def test_format_template_has_every_field(sluice: Run, ref: Reference, filled: str) -> None:
    r = sluice(
        "consume",
        filled,
        "--from-beginning",
        "-e",
        "--format",
        r"{partition} {topic}\t{offset}\t{key}\t{value}\t{headers}\t{timestamp}",
    )
    assert r.code == 0, r.err
    stored = {(x.partition, x.offset): x for x in ref.read(filled)}
    seen = set()
    for line in r.lines:
        part, rest = line.split(" ", 1)
        topic, offset, key, value, headers, ts = rest.split("\t")
        rec = stored[(int(part), int(offset))]
        assert topic == filled
        assert key == ("null" if rec.key is None else rec.key.decode())
        assert value == ("null" if rec.value is None else rec.value.decode())
        assert headers == ",".join(f"{k}:{v.decode() if v else 'null'}" for k, v in rec.headers)
        assert int(ts) == rec.timestamp
        seen.add((rec.partition, rec.offset))
    assert seen == set(stored)
    assert "h1:x,h2:y" in r.text


def test_print_key_with_separator(sluice: Run, filled: str) -> None:
    r = sluice(
        "consume",
        filled,
        "--from-beginning",
        "-e",
        "--partition",
        "1",
        "--print-key",
        "--key-separator",
        " => ",
    )
    assert r.code == 0, r.err
    assert r.lines == ["kb0 => b0", "null => b1", "tombstone => null", "kb3 => b3"]


def test_json_output(sluice: Run, filled: str) -> None:
    r = sluice("consume", filled, "--from-beginning", "-e", "-p", "1", "--json")
    assert r.code == 0, r.err
    records = [json.loads(line) for line in r.lines]
    assert [(x["partition"], x["offset"], x["key"], x["value"]) for x in records] == [
        (1, 0, "kb0", "b0"),
        (1, 1, None, "b1"),
        (1, 2, "tombstone", None),
        (1, 3, "kb3", "b3"),
    ]
    assert records[0]["headers"] == [["h1", "x"], ["h2", "y"]]
    assert all(x["topic"] == filled and x["timestamp"] > 0 for x in records)


def test_explicit_offset_on_a_partition(sluice: Run, filled: str) -> None:
    r = sluice(
        "consume", filled, "--partition", "1", "--offset", "2", "-e", "-F", "{offset}:{value}"
    )
    assert r.code == 0, r.err
    assert r.lines == ["2:null", "3:b3"]


def test_offset_beyond_the_end_is_reported(sluice: Run, filled: str) -> None:
    r = sluice(
        "consume", filled, "--partition", "0", "--offset", "50", "-e", "--timeout-ms", "10000"
    )
    assert r.code == 1
    assert "OFFSET_OUT_OF_RANGE" in r.err or "_AUTO_OFFSET_RESET" in r.err


def test_offset_outside_the_log_names_the_offsets_it_holds(sluice: Run, filled: str) -> None:
    """librdkafka's words ("fetch failed due to requested offset not available on the broker")
    left the user to look the range up with another command."""
    r = sluice("consume", filled, "--partition", "1", "--offset", "99", "-e")
    assert r.code == 1
    assert r.err.strip() == (
        f"sluice consume: error: consuming {filled!r} (partition 1): offset 99 is outside the "
        "log (it holds offsets 0 to 3; OFFSET_OUT_OF_RANGE)"
    )


def test_last_n_records_of_each_partition(sluice: Run, filled: str) -> None:
    r = sluice("consume", filled, "--offset", "-2", "-e", "-F", "{partition} {offset} {value}")
    assert r.code == 0, r.err
    assert by_partition(r.lines) == {"0": ["1 a1", "2 a2"], "1": ["2 null", "3 b3"]}


def test_earliest_and_latest_words(sluice: Run, filled: str) -> None:
    r = sluice("consume", filled, "--offset", "earliest", "-p", "0", "-e")
    assert r.lines == ["a0", "a1", "a2"]
    r = sluice("consume", filled, "--offset", "latest", "-p", "0", "-e")
    assert (r.code, r.lines) == (0, [])


def test_count_stops_early(sluice: Run, filled: str) -> None:
    r = sluice("consume", filled, "--from-beginning", "--partition", "0", "--count", "2")
    assert r.code == 0, r.err
    assert r.lines == ["a0", "a1"]


@pytest.mark.parametrize("option", ["-n", "--max-messages"])
def test_count_has_kcat_and_kafka_console_consumer_spellings(
    sluice: Run, filled: str, option: str
) -> None:
    r = sluice("consume", filled, "--from-beginning", "--partition", "1", option, "1")
    assert r.code == 0, r.err
    assert r.lines == ["b0"]


def test_default_starts_at_the_end(sluice: Run, filled: str) -> None:
    # Nothing was produced after the consumer started: it prints nothing and leaves when idle.
    r = sluice("consume", filled, "--timeout-ms", "1500")
    assert (r.code, r.out) == (0, b"")


def test_timeout_ms_exits_when_idle(sluice: Run, filled: str) -> None:
    r = sluice("consume", filled, "--from-beginning", "--timeout-ms", "4000", "-F", "{value}")
    assert r.code == 0, r.err
    assert len(r.lines) == 7


def test_group_consumption_commits_and_resumes(sluice: Run, ref: Reference, filled: str) -> None:
    group = f"{filled}.group"
    # --timeout-ms only bounds a failure: the group is expected to be served at once.
    r = sluice(
        "consume",
        filled,
        "--group",
        group,
        "--from-beginning",
        "--count",
        "7",
        "--timeout-ms",
        "20000",
    )
    assert r.code == 0, r.err
    assert sorted(r.lines) == sorted(["a0", "a1", "a2", "b0", "b1", "null", "b3"])
    assert ref.committed(group) == {(filled, 0): 3, (filled, 1): 4}
    ref.produce(filled, [{"value": b"new", "partition": 0}])
    r = sluice(
        "consume",
        filled,
        "--group",
        group,
        "--from-beginning",
        "--count",
        "1",
        "--timeout-ms",
        "20000",
    )
    assert (r.code, r.lines) == (0, ["new"])  # resumed from the committed offsets
    assert ref.committed(group)[(filled, 0)] == 4


def test_unknown_topic_and_partition(sluice: Run, filled: str, topic: str) -> None:
    r = sluice("consume", f"{topic}.missing", "-e")
    assert r.code == 1
    assert r.err.strip() == f"sluice consume: error: unknown topic '{topic}.missing'"
    r = sluice("consume", filled, "-p", "5", "-e")
    assert r.code == 1
    assert "has no partition 5" in r.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--offset", "3"],  # an absolute offset needs --partition
        ["--offset", "soon"],
        ["--from-beginning", "--offset", "earliest"],
        ["--group", "g", "--partition", "0"],
        ["--group", "g", "--offset", "-1"],
        ["--format", "{nope}"],
        ["--format", "{value"],
        ["--format", "{value}", "--print-key"],
        ["--format", "{value!z}"],  # no such conversion
        ["--format", "{value.real}"],  # a str has no such attribute
        ["--format", "{offset:s}"],  # an int takes no 's'
        ["--count", "0"],
    ],
)
def test_usage_errors(sluice: Run, topic: str, argv: list[str]) -> None:
    r = sluice("consume", topic, *argv)
    assert r.code == 2
    assert r.out == b""


def test_a_template_a_record_cannot_fill_ends_the_tool_saying_which(
    sluice: Run, filled: str
) -> None:
    """``{value[2]}`` is fine for a sample value but not for "a0": exit 1 naming the record,
    not a traceback."""
    r = sluice("consume", filled, "-p", "0", "--from-beginning", "-e", "--format", "{value[2]}")
    assert (r.code, r.out) == (1, b"")
    assert r.err == (
        f"sluice consume: error: --format cannot print the record at {filled}[0] offset 0: "
        "string index out of range\n"
    )


def test_with_a_group_a_record_the_template_cannot_print_is_not_committed(
    sluice: Run, ref: Reference, topic: str
) -> None:
    """The tool stops at a record its ``--format`` cannot print; the group's offset stays at
    that record, so a rerun with a mended template prints it. (Offsets were stored as
    ``poll()`` returned records, and the close committed past it: the rerun skipped it.)"""
    ref.create_topic(topic, 1)
    ref.produce(topic, [{"value": v, "partition": 0} for v in (b"abcdef", b"ab", b"abcdefgh")])
    group = f"{topic}.group"
    r = sluice("consume", topic, "--group", group, "--from-beginning", "--timeout-ms", "20000",
               "--format", "{value[3]}")
    assert r.code == 1, r.err
    assert r.lines == ["d"]
    assert "offset 1" in r.err
    assert ref.committed(group) == {(topic, 0): 1}
    r = sluice("consume", topic, "--group", group, "--count", "2", "--timeout-ms", "20000")
    assert (r.code, r.lines) == (0, ["ab", "abcdefgh"])
    assert ref.committed(group) == {(topic, 0): 3}
