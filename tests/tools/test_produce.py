"""``sluice produce``: records sent from stdin or a file, read back with a reference consumer."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import confluent_kafka as ck
import pytest

from sluice.protocol.records import scan_batches
from sluice.storage.manager import partition_dir
from sluice.testing import EmbeddedBroker
from tests.tools.conftest import Run
from tests.tools.reference import Reference

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def test_lines_from_stdin(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, 1)
    r = sluice("produce", topic, stdin=b"one\ntwo\n\nfour with spaces\r\nfive")
    assert (r.code, r.out, r.err) == (0, b"", "")
    records = ref.read(topic)
    assert [x.value for x in records] == [b"one", b"two", b"", b"four with spaces", b"five"]
    assert all(x.key is None and x.headers == [] for x in records)


def test_binary_safe_lines(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, 1)
    payload = bytes(range(256)).replace(b"\n", b"")
    assert sluice("produce", topic, stdin=payload + b"\n").code == 0
    assert [x.value for x in ref.read(topic)] == [payload]


def test_keys_headers_and_partition(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, 3)
    r = sluice(
        "produce",
        topic,
        "--key-separator",
        "::",
        "--header",
        "source=cli",
        "-H",
        "trace=a=b",
        "--partition",
        "2",
        stdin=b"k1::v1\nk2::v::2\n::empty key\n",
    )
    assert r.code == 0, r.err
    records = ref.read(topic)
    assert [(x.partition, x.key, x.value) for x in records] == [
        (2, b"k1", b"v1"),
        (2, b"k2", b"v::2"),  # split at the first separator only
        (2, b"", b"empty key"),
    ]
    assert all(x.headers == [("source", b"cli"), ("trace", b"a=b")] for x in records)


def test_escaped_tab_separator(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, 1)
    assert sluice("produce", topic, "-K", r"\t", stdin=b"k\tv\n").code == 0
    [rec] = ref.read(topic)
    assert (rec.key, rec.value) == (b"k", b"v")


def test_keys_are_partitioned_like_java_clients(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, 5)
    keys = [f"key-{i}".encode() for i in range(20)]
    assert sluice("produce", topic, "-K", "=", stdin=b"".join(k + b"=v\n" for k in keys)).code == 0
    records = ref.read(topic)
    assert len(records) == len(keys)
    for rec in records:
        assert rec.key is not None
        assert rec.partition == ck.murmur2(rec.key, 5)


def test_a_keyless_burst_lands_on_one_partition(
    sluice: Run, ref: Reference, topic: str, tmp_path: Path
) -> None:
    """librdkafka's sticky partitioner, as docs/cli.md says, once it has set up the partitions'
    leaders: before that (the first moments of a run, longer on a loaded machine) it moves on
    at every record. So the input comes through a FIFO: one line, then, once that record is
    stored, the other nine. The sticky partition moves on after ``sticky.partitioning.linger.ms``
    (10 ms), which a loaded machine can spend between two lines: a minute here makes the
    burst's timing irrelevant."""
    ref.create_topic(topic, 6)
    fifo = tmp_path / "input"
    os.mkfifo(fifo)
    failures: list[BaseException] = []

    def feed() -> None:
        try:
            with open(fifo, "wb", buffering=0) as f:  # opened once the tool opens it to read
                f.write(b"0\n")
                deadline = time.monotonic() + 30
                while sum(ref.end_offsets(topic).values()) < 1:
                    assert time.monotonic() < deadline, "the first record was never stored"
                    time.sleep(0.01)  # polling the topic's end offsets
                f.write(b"".join(b"%d\n" % i for i in range(1, 10)))
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        result = sluice(
            "produce", topic, "--file", str(fifo), "-X", "sticky.partitioning.linger.ms=60000"
        )
    finally:
        feeder.join(60)
    assert not failures, failures
    assert result.code == 0, result.err
    records = ref.read(topic)
    assert len(records) == 10
    assert len({rec.partition for rec in records}) == 1


def test_null_marker(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, 1)
    r = sluice("produce", topic, "-K", ":", "--null-marker", "NULL", stdin=b"a:NULL\nNULL:b\nc:d\n")
    assert r.code == 0, r.err
    assert [(x.key, x.value) for x in ref.read(topic)] == [(b"a", None), (None, b"b"), (b"c", b"d")]


def test_from_file(sluice: Run, ref: Reference, topic: str, tmp_path: Path) -> None:
    ref.create_topic(topic, 1)
    path = tmp_path / "input.txt"
    path.write_bytes(b"".join(f"line {i}\n".encode() for i in range(1000)))
    r = sluice("produce", topic, "--file", str(path), stdin=b"not this\n")
    assert r.code == 0, r.err
    assert [x.value for x in ref.read(topic)] == [f"line {i}".encode() for i in range(1000)]


def test_missing_file(sluice: Run, tmp_path: Path, topic: str) -> None:
    r = sluice("produce", topic, "--file", str(tmp_path / "nope.txt"))
    assert r.code == 1
    assert "cannot read" in r.err and "nope.txt" in r.err


@pytest.mark.parametrize("codec", list(CODECS))
def test_compression_is_used(
    sluice: Run, ref: Reference, broker: EmbeddedBroker, topic: str, codec: str
) -> None:
    ref.create_topic(topic, 1)
    lines = [f"{codec} record {i} ".encode() * 10 for i in range(50)]
    r = sluice("produce", topic, "--compression", codec, stdin=b"\n".join(lines) + b"\n")
    assert r.code == 0, r.err
    assert [x.value for x in ref.read(topic)] == lines
    # sluice stores batches as produced: their attributes say which codec the tool used.
    batches = [
        b
        for seg in sorted(partition_dir(broker.data_dir, topic, 0).glob("*.log"))
        for b in scan_batches(seg.read_bytes())
    ]
    assert batches
    assert {b.attributes & 0x7 for b in batches} == {CODECS[codec]}


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks(sluice: Run, ref: Reference, topic: str, acks: str) -> None:
    ref.create_topic(topic, 1)
    r = sluice("produce", topic, "--acks", acks, stdin=b"a\nb\nc\n")
    assert r.code == 0, r.err
    if acks == "0":  # nothing waits for the broker's append: the tool may end before it
        deadline = time.monotonic() + 30
        while sum(ref.end_offsets(topic).values()) < 3:
            assert time.monotonic() < deadline, "the records were never stored"
            time.sleep(0.01)  # polling the topic's end offsets
    assert [x.value for x in ref.read(topic)] == [b"a", b"b", b"c"]


def test_line_without_separator_stops_with_error(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, 1)
    r = sluice("produce", topic, "-K", ":", stdin=b"k:1\nk:2\nno separator\nk:4\n")
    assert r.code == 1
    assert "line 3 has no key separator" in r.err
    assert len(r.err.splitlines()) == 1
    # What came before the bad line was delivered; nothing after it was sent.
    assert [x.value for x in ref.read(topic)] == [b"1", b"2"]


def test_unknown_partition_fails_before_reading(sluice: Run, ref: Reference, topic: str) -> None:
    """It read all its input first, failing each line (`tail -f log | sluice produce t -p 7`
    never ended); test_process.py shows it with an input that never ends."""
    ref.create_topic(topic, 2)
    r = sluice("produce", topic, "--partition", "7", "--timeout", "5", stdin=b"x\ny\n")
    assert (r.code, r.err) == (
        1,
        f"sluice produce: error: topic {topic!r} has no partition 7 (it has 2)\n",
    )
    assert ref.end_offsets(topic) == {0: 0, 1: 0}


def test_auto_creates_topic_like_kafka_console_producer(
    sluice: Run, ref: Reference, topic: str
) -> None:
    assert sluice("produce", topic, stdin=b"hello\n").code == 0
    assert [x.value for x in ref.read(topic)] == [b"hello"]


def test_too_large_record_is_reported(sluice: Run, ref: Reference, topic: str) -> None:
    ref.create_topic(topic, 1, max_message_bytes="2000")
    r = sluice("produce", topic, "--timeout", "10", stdin=b"x" * 5000 + b"\n")
    assert r.code == 1
    assert "1 of 1 records not delivered" in r.err
    assert "MSG_SIZE_TOO_LARGE" in r.err
    assert ref.end_offsets(topic) == {0: 0}


def test_small_records_batched_with_a_too_large_one_fail_with_it_and_the_error_says_why(
    sluice: Run, ref: Reference, topic: str
) -> None:
    """The broker refuses a whole batch over the topic's max.message.bytes, so the small lines
    batched with a big one failed too, with nothing but MSG_SIZE_TOO_LARGE to say why. The
    error now says so and what to pass; with that, only the big line fails."""
    ref.create_topic(topic, 1, max_message_bytes="2000")
    lines = b"x" * 5000 + b"\nsmall-1\nsmall-2\n"
    r = sluice("produce", topic, "--timeout", "10", stdin=lines)
    assert r.code == 1
    assert "3 of 3 records not delivered" in r.err
    assert "-X batch.size=N -X message.max.bytes=N" in r.err
    r = sluice("produce", topic, "--timeout", "10", "-X", "batch.size=2000",
               "-X", "message.max.bytes=2000", stdin=lines)
    assert r.code == 1
    assert "1 of 3 records not delivered: line 1: MSG_SIZE_TOO_LARGE" in r.err
    assert "batch.size=N" not in r.err  # librdkafka refused the big line itself, at once
    assert [x.value for x in ref.read(topic)] == [b"small-1", b"small-2"]


def test_usage_errors(sluice: Run, topic: str) -> None:
    assert sluice("produce").code == 2
    assert sluice("produce", topic, "--compression", "brotli").code == 2
    assert sluice("produce", topic, "--acks", "2").code == 2
    assert sluice("produce", topic, "--partition", "-1").code == 2
    assert sluice("produce", topic, "--header", "novalue").code == 2
    assert sluice("produce", topic, "--key-separator", "").code == 2


def test_an_unknown_topic_the_broker_will_not_create_fails_at_once(sluice: Run, topic: str) -> None:
    """With auto.create.topics.enable=false the records got no delivery error until --timeout
    ran out, then only librdkafka's _MSG_TIMED_OUT."""
    with EmbeddedBroker(settings={"auto.create.topics.enable": False}) as strict:
        started = time.monotonic()
        r = sluice("produce", topic, "-b", strict.bootstrap_servers, "--timeout", "30",
                   stdin=b"x\n")
        took = time.monotonic() - started
    assert (r.code, r.out) == (1, b"")
    assert r.err == (
        f"sluice produce: error: unknown topic {topic!r} (the broker creates no topic on first "
        f"use: sluice topics create {topic})\n"
    )
    assert took < 10  # not the --timeout (30 s), with room for a loaded machine


def test_an_invalid_topic_name_is_named(sluice: Run) -> None:
    r = sluice("produce", "bad name!", stdin=b"x\n")
    assert (r.code, r.out) == (1, b"")
    assert r.err == "sluice produce: error: topic 'bad name!': TOPIC_EXCEPTION: Broker: Invalid topic\n"


@pytest.mark.parametrize(
    "argv",
    [["--linger-ms", "60000"], ["--linger-ms", "900000", "--timeout", "5"]],
    ids=["linger-above-default-timeout", "librdkafkas-longest-linger"],
)
def test_a_long_linger_is_accepted_and_delivers_at_the_end_of_input(
    sluice: Run, ref: Reference, topic: str, argv: list[str]
) -> None:
    """--linger-ms 60000 failed at once with librdkafka's "message.timeout.ms must be greater
    than linger.ms", a setting the user never gave (it came from --timeout, 30 s): a record
    may now take --linger-ms plus --timeout. The end of the input sends what lingers at once."""
    ref.create_topic(topic, 1)
    began = time.monotonic()
    r = sluice("produce", topic, *argv, stdin=b"a\nb\n")
    assert (r.code, r.err) == (0, "")
    assert time.monotonic() - began < 30  # the linger did not hold the end of input
    assert [x.value for x in ref.read(topic)] == [b"a", b"b"]


def test_the_message_timeout_stays_within_librdkafkas_bounds() -> None:
    from sluice.tools.produce import MAX_MESSAGE_TIMEOUT_MS, _message_timeout_ms

    assert _message_timeout_ms(30, 60_000) == 90_000
    assert _message_timeout_ms(1e9, 5) == MAX_MESSAGE_TIMEOUT_MS  # not librdkafka's range error
    assert _message_timeout_ms(0.0001, 0) == 1  # 0 would be librdkafka's "no limit"


def test_a_broker_that_cannot_be_reached_ends_it_before_reading(sluice: Run) -> None:
    """As the other tools say it, at once: the lines used to be read, and then time out after
    --timeout plus --linger-ms plus 5 s as ``_MSG_TIMED_OUT``."""
    started = time.monotonic()
    r = sluice("produce", "t", "-b", "127.0.0.1:1", "--timeout", "1", stdin=b"a\nb\n")
    assert r.code == 1
    assert r.err.startswith("sluice produce: error: cannot reach 127.0.0.1:1: _TRANSPORT")
    assert time.monotonic() - started < 4
