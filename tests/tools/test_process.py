"""The tools as real processes (``python -m sluice.tools``): pipes, exit codes, a reader that
goes away, and Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from sluice.testing import EmbeddedBroker
from tests.tools.reference import Reference


def tool(broker: EmbeddedBroker, *argv: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sluice.tools",
        *argv[:2],
        "--bootstrap-server",
        broker.bootstrap_servers,
        *argv[2:],
    ]


def test_produce_then_consume_through_pipes(
    broker: EmbeddedBroker, ref: Reference, topic: str
) -> None:
    ref.create_topic(topic, 1)
    lines = b"".join(f"k{i}|v{i}\n".encode() for i in range(100))
    p = subprocess.run(
        tool(broker, "produce", topic, "--key-separator", "|"),
        input=lines,
        capture_output=True,
        timeout=60,
    )
    assert (p.returncode, p.stdout, p.stderr) == (0, b"", b"")
    c = subprocess.run(
        tool(
            broker,
            "consume",
            topic,
            "--from-beginning",
            "--exit-at-end",
            "--print-key",
            "--key-separator",
            "|",
        ),
        capture_output=True,
        timeout=60,
    )
    assert (c.returncode, c.stderr) == (0, b"")
    assert c.stdout == lines


def test_exit_codes(broker: EmbeddedBroker, topic: str) -> None:
    ok = subprocess.run(tool(broker, "topics", "create", topic), capture_output=True, timeout=60)
    assert ok.returncode == 0
    again = subprocess.run(tool(broker, "topics", "create", topic), capture_output=True, timeout=60)
    assert again.returncode == 1
    assert (
        again.stderr.decode().strip()
        == f"sluice topics create: error: topic {topic!r} already exists"
    )
    usage = subprocess.run(
        tool(broker, "topics", "create", topic, "--partitions", "x"),
        capture_output=True,
        timeout=60,
    )
    assert usage.returncode == 2
    assert (
        usage.stderr.decode().splitlines()[-1]
        == "sluice topics create: error: argument --partitions/-p: not an integer: 'x'"
    )


def test_reader_going_away_is_not_an_error(
    broker: EmbeddedBroker, ref: Reference, topic: str
) -> None:
    ref.create_topic(topic, 1)
    ref.produce(topic, [{"value": b"%06d" % i + b"." * 200} for i in range(20_000)])
    consume = subprocess.Popen(
        tool(broker, "consume", topic, "--from-beginning", "--exit-at-end"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert consume.stdout is not None and consume.stderr is not None
    first = consume.stdout.readline()
    consume.stdout.close()  # like `| head -1`
    err = consume.stderr.read()
    assert consume.wait(timeout=60) == 0
    assert first == b"000000" + b"." * 200 + b"\n"
    assert err == b""


_DEFAULT_SIGINT = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('sluice.tools', run_name='__main__', alter_sys=True)"
)
"""``python -m sluice.tools`` with SIGINT's default handling, whatever this process inherited."""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_consume_cleanly(
    broker: EmbeddedBroker, ref: Reference, topic: str, signum: signal.Signals
) -> None:
    """Ctrl-C, or SIGTERM (timeout, systemd, docker stop): exit 0, and a group member leaves its
    group at once instead of being expired by the session timeout."""
    ref.create_topic(topic, 1)
    ref.produce(topic, [{"value": b"first"}])
    group = f"{topic}-group"
    argv = tool(broker, "consume", topic, "--from-beginning", "--group", group)
    consume = subprocess.Popen(
        # As from a terminal: a process started in the background by a non-interactive shell
        # (`./scripts/test &`) has SIGINT ignored, its children inherit that, and Python then
        # installs no KeyboardInterrupt handler, so a Ctrl-C never reached the tool.
        [argv[0], "-c", _DEFAULT_SIGINT, *argv[3:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert consume.stdout is not None and consume.stderr is not None
    try:
        assert consume.stdout.readline() == b"first\n"  # it is running and has printed
        os.kill(consume.pid, signum)
        code = consume.wait(timeout=60)
    finally:
        if consume.poll() is None:  # never left running, whatever failed
            consume.kill()
            consume.wait()
    assert (code, consume.stderr.read().decode()) == (0, "")
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    (described,) = admin.describe_consumer_groups([group]).values()
    assert described.result(timeout=10).members == []
    assert ref.committed(group) == {(topic, 0): 1}  # what it printed, committed by the close
    consume.stdout.close()
    consume.stderr.close()


_CLOSE_HANGS = """
import sys
import confluent_kafka as ck
from sluice.tools.consume import _close_within

bootstrap, topic, group = sys.argv[1:4]
c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 0,
                 "auto.offset.reset": "earliest", "auto.commit.interval.ms": 600000})
c.subscribe([topic])
while (m := c.poll(1.0)) is None or m.error() is not None:
    pass
print("got", flush=True)
sys.stdin.readline()  # the broker now holds back the commit close makes
_close_within(c, 2.0)
print("closed", flush=True)
"""


def test_a_close_that_hangs_ends_the_tool_after_its_bound(
    broker: EmbeddedBroker, ref: Reference, topic: str
) -> None:
    """librdkafka's close has no bound: its last commit unanswered, a Ctrl-C'd ``consume``
    waited for ever (CI once saw one not exit within 60 s). It now exits with code 1 and says
    why once its bound passes; the bound is the tool's CLOSE_TIMEOUT_S (30 s), 2 s here."""
    ref.create_topic(topic, 1)
    ref.produce(topic, [{"value": b"first"}])
    child = subprocess.Popen(
        [sys.executable, "-c", _CLOSE_HANGS, broker.bootstrap_servers, topic, f"{topic}-group"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    fault = broker.faults.delay("OffsetCommit", 30.0, count=1)
    try:
        assert child.stdout.readline() == b"got\n"
        child.stdin.write(b"go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=20)
    finally:
        child.kill()
        child.wait()
        broker.faults.clear()
    assert fault.hits == 1  # the close's commit was the one held back
    assert (child.returncode, out) == (1, b""), err.decode()
    assert b"did not close within 2 s" in err


def _until_held(child: subprocess.Popen[bytes], fault: Any, what: str) -> None:
    """Wait (polling) until the broker holds the request ``fault`` delays, the child still
    running: from then on the child waits for that answer."""
    deadline = time.monotonic() + 30
    while fault.hits == 0:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _signal_and_wait(child: subprocess.Popen[bytes], signum: int, timeout: float) -> tuple[bytes, bytes, float]:
    """Send ``signum`` and wait for the child's end: its output, and the seconds it took."""
    began = time.monotonic()
    child.send_signal(signum)
    out, err = child.communicate(timeout=timeout)
    return out, err, time.monotonic() - began


def _cleanup(child: subprocess.Popen[bytes], broker: EmbeddedBroker) -> None:
    """Never leave the child running, nor the broker's faults in place, whatever failed."""
    if child.poll() is None:
        child.kill()
        child.wait()
    broker.faults.clear()


def _reading_its_input(pid: int) -> bool:
    """The process's main thread waits in a read of a pipe (its stdin): what it was given is
    read, and it waits for more."""
    with open(f"/proc/{pid}/wchan") as wchan:
        return "pipe_read" in wchan.read()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_ends_produce_after_delivering_what_it_read(
    broker: EmbeddedBroker, ref: Reference, topic: str, signum: signal.Signals
) -> None:
    """Ctrl-C or SIGTERM while stdin is still open (typing, `tail -f log | sluice produce`)
    delivers the records read so far, then exits with 130 and one line. The tool used to die
    with a traceback (Ctrl-C) or silently (SIGTERM), and the records librdkafka still held
    (here all: linger.ms is 20 s) were lost."""
    ref.create_topic(topic, 1)
    argv = tool(broker, "produce", topic, "--linger-ms", "20000")
    produce = subprocess.Popen(
        [argv[0], "-c", _DEFAULT_SIGINT, *argv[3:]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert produce.stdin is not None
    try:
        produce.stdin.write(b"one\ntwo\nthree\n")
        produce.stdin.flush()
        deadline = time.monotonic() + 30
        while not _reading_its_input(produce.pid):
            assert produce.poll() is None, produce.communicate()
            assert time.monotonic() < deadline, "the tool never waited for more input"
            time.sleep(0.01)
        os.kill(produce.pid, signum)
        out, err = produce.communicate(timeout=30)
    finally:
        if produce.poll() is None:
            produce.kill()
            produce.wait()
    assert (produce.returncode, out) == (130, b"")
    assert err.decode() == (
        "sluice produce: interrupted; the 3 records read before it were delivered\n"
    )
    assert [r.value for r in ref.read(topic)] == [b"one", b"two", b"three"]


class _Unanswering:
    """A listener that takes connections and never answers: a broker that hangs."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.accepted: list[socket.socket] = []

    def wait_for_a_client(self) -> None:
        self.server.settimeout(30)
        self.accepted.append(self.server.accept()[0])

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.server.close()


@pytest.mark.parametrize(
    ("argv", "code", "err"),
    [
        (["topics", "list"], 130, "sluice topics list: interrupted\n"),
        (["groups", "describe", "g"], 130, "sluice groups describe: interrupted\n"),
        (["produce", "t"], 130, "sluice produce: interrupted\n"),
        (["consume", "t"], 0, ""),  # it runs until Ctrl-C: always a clean end
    ],
    ids=["topics", "groups", "produce", "consume"],
)
def test_ctrl_c_while_the_broker_does_not_answer_ends_the_tool_at_once(
    argv: list[str], code: int, err: str
) -> None:
    """librdkafka's metadata call waits in C, where Python runs no signal handler: a Ctrl-C
    did nothing until the call's timeout (--timeout, 60 s here) ran out, then printed a
    traceback. Now the tool ends at once, with one line (130) or, for consume, quietly (0)."""
    hung = _Unanswering()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _DEFAULT_SIGINT,
            *argv,
            "--bootstrap-server",
            hung.address,
            "--timeout",
            "60",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        hung.wait_for_a_client()  # librdkafka connected: the tool waits for its answer
        child.send_signal(signal.SIGINT)
        out, got = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        hung.close()
    assert (child.returncode, out, got.decode()) == (code, b"", err)


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_second_signal_while_consume_closes_ends_it_at_once(
    broker: EmbeddedBroker, ref: Reference, topic: str, second: signal.Signals
) -> None:
    """Ctrl-C, then another (or SIGTERM: ``timeout -k``) while the consumer's close waits for its
    last commit: the tool ends at once, killed by that signal as a user pressing it again
    means, without a word; it did nothing until the close's bound (30 s) ran out."""
    ref.create_topic(topic, 1)
    ref.produce(topic, [{"value": b"first"}])
    argv = tool(broker, "consume", topic, "--from-beginning", "--group", f"{topic}-group")
    consume = subprocess.Popen(
        [argv[0], "-c", _DEFAULT_SIGINT, *argv[3:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert consume.stdout is not None
    fault = broker.faults.delay("OffsetCommit", 30.0, count=1)
    try:
        assert consume.stdout.readline() == b"first\n"
        consume.send_signal(signal.SIGINT)
        _until_held(consume, fault, "the close never committed")  # it waits in close()
        out, err, took = _signal_and_wait(consume, second, 25)
    finally:
        _cleanup(consume, broker)
    print(f"ended {took:.2f} s after the second signal: {consume.returncode} {err!r}")
    assert (consume.returncode, out, err) == (-second, b"", b"")
    assert took < 10


_CTRL_C_IN_A_DELIVERY_REPORT = """
import os, runpy, signal

from sluice.tools import produce

signal.signal(signal.SIGINT, signal.default_int_handler)
report = produce._Deliveries.callback


def ctrl_c_first(self, err, msg):
    os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt at the next instruction, before report
    report(self, err, msg)


produce._Deliveries.callback = ctrl_c_first
runpy.run_module("sluice.tools", run_name="__main__", alter_sys=True)
"""


def test_a_ctrl_c_inside_a_delivery_report_is_not_a_delivery(
    broker: EmbeddedBroker, ref: Reference, topic: str
) -> None:
    """A Ctrl-C can land inside the delivery callback, before it counts the record; the tool
    counted what librdkafka still queued instead, so a record the broker refused was reported
    as delivered ("interrupted with 0 of 1 records not yet delivered")."""
    ref.create_topic(topic, 1, max_message_bytes="2000")
    argv = tool(broker, "produce", topic)
    done = subprocess.run(
        [argv[0], "-c", _CTRL_C_IN_A_DELIVERY_REPORT, *argv[3:]],
        input=b"x" * 5000 + b"\n",  # refused: larger than the topic's max.message.bytes
        capture_output=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (1, b"")
    assert done.stderr.decode() == (
        "sluice produce: error: interrupted with 1 of 1 records not confirmed delivered\n"
    )
    assert ref.end_offsets(topic) == {0: 0}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_while_produce_waits_for_the_broker_says_what_is_unconfirmed(
    broker: EmbeddedBroker, ref: Reference, topic: str, signum: signal.Signals
) -> None:
    """All input read, the tool waits for the broker's answer (held back here): a Ctrl-C or
    SIGTERM ends the wait at once with exit code 1, saying the record is not confirmed, and
    the tool does not hang on its way out with the flush still running."""
    ref.create_topic(topic, 1)
    fault = broker.faults.delay("Produce", 30.0, count=1)
    argv = tool(broker, "produce", topic)
    produce = subprocess.Popen(
        [argv[0], "-c", _DEFAULT_SIGINT, *argv[3:]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert produce.stdin is not None
    try:
        produce.stdin.write(b"held\n")
        produce.stdin.close()
        produce.stdin = None  # communicate() below would flush it
        _until_held(produce, fault, "the record never reached the broker")
        out, err, took = _signal_and_wait(produce, signum, 20)
    finally:
        _cleanup(produce, broker)
    assert (produce.returncode, out, err.decode()) == (
        1, b"", "sluice produce: error: interrupted with 1 of 1 records not confirmed delivered\n"
    )
    assert took < 10


def test_ctrl_c_twice_while_the_broker_holds_produce_back(
    broker: EmbeddedBroker, ref: Reference, topic: str
) -> None:
    """Ctrl-C while typing, with the broker not answering (slow, or gone): the tool waits for
    the records read, up to --timeout, and now says so at once (it waited silently, looking
    hung); a second Ctrl-C stops the wait, saying what is unconfirmed."""
    ref.create_topic(topic, 1)
    fault = broker.faults.delay("Produce", 30.0, count=1)
    argv = tool(broker, "produce", topic, "--timeout", "20")
    produce = subprocess.Popen(
        [argv[0], "-c", _DEFAULT_SIGINT, *argv[3:]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert produce.stdin is not None and produce.stderr is not None
    try:
        produce.stdin.write(b"held\n")
        produce.stdin.flush()
        _until_held(produce, fault, "the record never reached the broker")
        produce.send_signal(signal.SIGINT)
        waiting = produce.stderr.readline().decode()
        out, err, took = _signal_and_wait(produce, signal.SIGINT, 20)
    finally:
        _cleanup(produce, broker)
    assert waiting == (
        "sluice produce: interrupted; waiting up to 25 s for 1 of 1 records to be confirmed "
        "(Ctrl-C again to stop waiting)\n"
    )
    assert (produce.returncode, out, err.decode()) == (
        1, b"", "sluice produce: error: interrupted with 1 of 1 records not confirmed delivered\n"
    )
    assert took < 10


def _buffered_env() -> dict[str, str]:
    """The environment a user's shell gives: stdout block-buffered into a pipe or file
    (PYTHONUNBUFFERED, set by some CI runners, would write each record at once)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("count", [5, None], ids=["count", "until-the-pipe-breaks"])
def test_consume_commits_nothing_a_closed_reader_did_not_take(
    broker: EmbeddedBroker, ref: Reference, topic: str, count: int | None
) -> None:
    """`sluice consume t --group g | true`: the reader is gone before the first record. The
    records sat in stdout's buffer, their offsets were stored and the close committed them:
    a rerun skipped records nobody saw."""
    ref.create_topic(topic, 1)
    ref.produce(topic, [{"value": b"%06d" % i} for i in range(5_000)])
    group = f"{topic}-group"
    read, write = os.pipe()
    os.close(read)  # no reader, before the tool writes anything
    try:
        p = subprocess.run(
            tool(broker, "consume", topic, "--from-beginning", "--group", group)
            + ([] if count is None else ["--count", str(count)]),
            stdout=write,
            stderr=subprocess.PIPE,
            env=_buffered_env(),
            timeout=60,
        )
    finally:
        os.close(write)
    assert (p.returncode, p.stderr) == (0, b"")
    assert ref.committed(group) == {}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_consume_to_a_full_disk_is_one_line_and_commits_nothing(
    broker: EmbeddedBroker, ref: Reference, topic: str
) -> None:
    """stdout refusing the records (ENOSPC) was a traceback, exit 120 (the interpreter's own
    flush failing again at exit), and the records were committed unwritten."""
    ref.create_topic(topic, 1)
    ref.produce(topic, [{"value": b"x"}] * 5)
    group = f"{topic}-group"
    with open("/dev/full", "wb") as full:
        p = subprocess.run(
            tool(broker, "consume", topic, "--from-beginning", "--group", group, "--count", "5"),
            stdout=full,
            stderr=subprocess.PIPE,
            env=_buffered_env(),
            timeout=60,
        )
    assert (p.returncode, p.stderr.decode()) == (
        1,
        "sluice consume: error: cannot write the records: No space left on device\n",
    )
    assert ref.committed(group) == {}


@pytest.mark.parametrize("command", ["produce", "consume"])
def test_a_closed_stdin_or_stdout_is_one_line(
    broker: EmbeddedBroker, ref: Reference, topic: str, command: str
) -> None:
    """`sluice produce t <&-` / `sluice consume t >&-`: Python sees no stdin or stdout at all
    (None); that was an AttributeError traceback."""
    ref.create_topic(topic, 1)
    fd = 0 if command == "produce" else 1
    argv = tool(broker, command, topic)
    # Closed in the child before exec, as the shell's <&- and >&- do.
    script = f"import os, sys; os.close({fd}); os.execv(sys.executable, {argv!r})"
    p = subprocess.run(
        [sys.executable, "-c", script], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60
    )
    what = "stdin" if command == "produce" else "stdout"
    assert (p.returncode, p.stderr.decode().splitlines()) == (
        1,
        [f"sluice {command}: error: {what} is closed"],
    )


def test_produce_to_a_missing_partition_ends_though_its_input_does_not(
    broker: EmbeddedBroker, ref: Reference, topic: str
) -> None:
    """`tail -f app.log | sluice produce t -p 7` on a topic of 1 partition: each line failed
    locally (_UNKNOWN_PARTITION) and the tool read on for as long as the input lasted."""
    ref.create_topic(topic, 1)
    produce = subprocess.Popen(
        tool(broker, "produce", topic, "--partition", "7"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert produce.stdin is not None
        produce.stdin.write(b"line\n" * 1000)  # and the pipe stays open, as tail -f keeps it
        produce.stdin.flush()
        code = produce.wait(timeout=30)
    finally:
        if produce.poll() is None:
            produce.kill()
            produce.wait()
        out, err = produce.communicate()
    assert (code, out, err.decode()) == (
        1,
        b"",
        f"sluice produce: error: topic {topic!r} has no partition 7 (it has 1)\n",
    )


@pytest.mark.parametrize("group", ["", " \t"])
def test_a_blank_group_is_a_usage_error_not_an_abort(
    broker: EmbeddedBroker, topic: str, group: str
) -> None:
    """librdkafka reads a group id that is empty or only whitespace as none: the consumer's
    constructor failed an assertion and the process aborted (SIGABRT, a core dump)."""
    done = subprocess.run(
        tool(broker, "consume", topic, "--group", group, "--exit-at-end"),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.decode().splitlines()[-1] == (
        "sluice consume: error: argument --group/-g: a group id of only whitespace (or none) "
        f"cannot be joined with librdkafka: {group!r}"
    )
