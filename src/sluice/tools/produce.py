"""``sluice produce``: one record per input line (stdin or ``--file``), in the spirit of Kafka's
console producer, through librdkafka's producer."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from sluice.errors import ErrorCode
from sluice.tools.common import (
    INTERRUPTED_EXIT_CODE,
    SubParsers,
    ToolError,
    UsageError,
    client_config,
    describe_error,
    interrupt,
    is_error,
    kafka_error_text,
    key_value,
    leaf,
    list_topics,
    make_client,
    non_negative_int,
    unescape,
)

COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")


def add_parser(sub: SubParsers) -> None:
    p = leaf(sub, "produce", "send one record per input line to a topic", produce)
    p.add_argument("topic", metavar="TOPIC")
    p.add_argument(
        "--file", "-f", metavar="PATH", help="read lines from PATH instead of stdin ('-' is stdin)"
    )
    p.add_argument(
        "--key-separator",
        "-K",
        metavar="SEP",
        help=r"split each line into key and value at the first SEP (\t understood); "
        "a line without SEP is an error",
    )
    p.add_argument(
        "--header",
        "-H",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="header added to every record (repeatable; the same key may repeat)",
    )
    p.add_argument(
        "--partition",
        "-p",
        type=non_negative_int,
        metavar="N",
        help="send every record to partition N",
    )
    p.add_argument(
        "--compression",
        "-z",
        choices=COMPRESSIONS,
        default="none",
        help="compression codec (default none)",
    )
    p.add_argument(
        "--acks",
        "-a",
        choices=["0", "1", "all"],
        default="all",
        help="acknowledgement level (default all)",
    )
    p.add_argument(
        "--null-marker",
        metavar="TEXT",
        help="a key or value equal to TEXT is sent as null (e.g. tombstones for compacted topics)",
    )
    p.add_argument(
        "--linger-ms",
        type=non_negative_int,
        default=5,
        metavar="MS",
        help="batching delay (default 5); a record may take --linger-ms plus --timeout",
    )


@dataclass
class _Deliveries:
    """Delivery reports, counted as they arrive."""

    sent: int = 0
    delivered: int = 0
    failures: list[str] = field(default_factory=list)
    failed: int = 0
    batch_too_large: bool = False
    """The broker refused a batch for its size (the topic's max.message.bytes): its records
    may have been small ones batched with a big one."""

    def fail(self, text: str) -> None:
        self.failed += 1
        if len(self.failures) < 5:
            self.failures.append(text)

    def callback(self, err: Any, msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            if err.code() == ErrorCode.MESSAGE_TOO_LARGE:  # a batch over max.message.bytes
                self.batch_too_large = True
            self.fail(kafka_error_text(err))

    @property
    def unconfirmed(self) -> int:
        """Records neither delivered nor failed: queued still, or whose report a Ctrl-C cut
        short (it can land inside this callback; librdkafka does not report a record twice)."""
        return max(0, self.sent - self.delivered - self.failed)


@contextmanager
def _open_input(path: str | None) -> Iterator[IO[bytes]]:
    if path is None or path == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ToolError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with f:
        yield f


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        yield line


def produce(args: argparse.Namespace) -> int:
    from confluent_kafka import Producer

    separator = unescape(args.key_separator).encode() if args.key_separator is not None else None
    if separator == b"":
        raise UsageError("--key-separator must not be empty")
    if args.file in (None, "-") and sys.stdin is None:  # `sluice produce t <&-`
        raise ToolError("stdin is closed")
    null = args.null_marker.encode() if args.null_marker is not None else None
    headers = [(k, v.encode()) for k, v in args.header] or None
    conf = client_config(
        args,
        **{
            "acks": args.acks,
            "compression.type": args.compression,
            "linger.ms": args.linger_ms,
            # Java clients' key hashing, so keyed records land where Kafka's tools would put them.
            "partitioner": "murmur2_random",
            # --timeout is for the broker, once a batch is sent: librdkafka's message timeout
            # also covers the lingering before it, and refuses one shorter than linger.ms
            # (an error naming a setting the user never gave).
            "message.timeout.ms": _message_timeout_ms(args.timeout, args.linger_ms),
        },
    )
    producer = make_client(Producer, conf)
    # Ctrl-C and SIGTERM stop the reading; what was read is delivered before the tool exits.
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return _produce(args, producer, separator, null, headers)
    finally:
        signal.signal(signal.SIGTERM, previous)


MAX_MESSAGE_TIMEOUT_MS = 2**31 - 1  # librdkafka's bound for message.timeout.ms
BATCH_HINT = (
    "the broker refuses a whole batch over the topic's max.message.bytes, so small records "
    "batched with a big one fail with it: with -X batch.size=N -X message.max.bytes=N, N at "
    "most the topic's max.message.bytes, only the records too big themselves fail"
)


def _message_timeout_ms(timeout_s: float, linger_ms: int) -> int:
    """How long a record may take: --linger-ms of batching, then --timeout for the broker
    (``--linger-ms 60000`` with the default --timeout of 30 s was librdkafka's "message.timeout.ms
    must be greater than linger.ms"). At least 1 ms: 0 would be librdkafka's "no limit"."""
    return max(1, min(MAX_MESSAGE_TIMEOUT_MS, int(timeout_s * 1000) + linger_ms))


def _produce(
    args: argparse.Namespace,
    producer: Any,
    separator: bytes | None,
    null: bytes | None,
    headers: list[tuple[str, bytes]] | None,
) -> int:
    from confluent_kafka import KafkaException

    # The topic's metadata first (auto-creating it where the broker allows): records produced
    # before librdkafka knows the partitions are spread over them one by one, not stuck to one.
    # Interrupted here (ClientInUse), nothing was read: the tool just exits.
    meta = None
    try:
        meta = list_topics(producer, args, args.topic)
    except ToolError as exc:
        # A broker that cannot be reached (or does not answer within --timeout) ends the tool
        # here, before a line is read, saying so as the other tools do: the records used to
        # be read and then time out after --timeout plus --linger-ms plus 5 s, as
        # _MSG_TIMED_OUT. The deliveries say what else is wrong (an authorization failure).
        # Near the deadline librdkafka says _TIMED_OUT for a refused connection too.
        cause = exc.__cause__
        if isinstance(cause, KafkaException) and is_error(cause, "_TRANSPORT", "_TIMED_OUT"):
            raise
    _check_topic(args.topic, meta, args.partition)
    report = _Deliveries()
    extra: dict[str, Any] = {}
    if args.partition is not None:
        extra["partition"] = args.partition
    if headers:
        extra["headers"] = headers
    bad_line: str | None = None
    interrupted = False
    reports = _Reports(producer, args.timeout + 5)
    try:
        _send_lines(args, producer, report, separator, null, extra)
    except _BadLine as exc:
        bad_line = str(exc)
    except KeyboardInterrupt:
        interrupted = True  # the records read are delivered below, then exit code 130
    except BaseException:
        reports.stop()
        raise
    try:
        if not reports.flush(1.0) and interrupted:
            # A broker that is slow or gone: say why the Ctrl-C did not end the tool yet.
            print(
                f"sluice produce: interrupted; waiting up to {args.timeout + 5:g} s for "
                f"{report.unconfirmed} of {report.sent} records to be confirmed "
                "(Ctrl-C again to stop waiting)",
                file=sys.stderr,
                flush=True,
            )
        reports.flush()
    except KeyboardInterrupt:
        # A second Ctrl-C: stop waiting for the broker and say what was not confirmed. Counted
        # from the reports, not from librdkafka's queue: a record whose report the Ctrl-C cut
        # short has left the queue, and one that failed has too.
        raise ToolError(
            f"interrupted with {report.sent - report.delivered} of {report.sent} records "
            "not confirmed delivered"
        ) from None
    unconfirmed = report.unconfirmed
    if unconfirmed:
        queued = len(producer)
        report.fail(
            f"{queued} records still queued after {args.timeout:g}s"
            if queued == unconfirmed
            else f"{unconfirmed} records without a delivery report ({queued} still queued)"
        )
        report.failed += unconfirmed - 1
    if args.verbose:
        print(
            f"Produced {report.delivered} of {report.sent} records to {args.topic}.",
            file=sys.stderr,
        )
    problems = []
    if report.failed:
        reasons = "; ".join(dict.fromkeys(report.failures))
        problems.append(f"{report.failed} of {report.sent} records not delivered: {reasons}")
        if report.batch_too_large:
            problems.append(BATCH_HINT)
    if bad_line is not None:
        problems.append(f"{bad_line}; stopped there after {report.delivered} records")
    if problems:
        raise ToolError("; ".join(problems))
    if interrupted:
        delivered = f"; the {report.sent} records read before it were delivered"
        print(f"sluice produce: interrupted{delivered if report.sent else ''}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    return 0


def _check_topic(topic: str, meta: Any, partition: int | None) -> None:
    """Fail before reading anything when the broker says the topic cannot be written: an
    unknown topic on a broker that creates none on first use got no delivery error until
    --timeout (30 s) ran out, and then only librdkafka's _MSG_TIMED_OUT; a --partition it does
    not have failed each line in turn, reading on for as long as the input lasted (tail -f)."""
    from confluent_kafka import KafkaError

    found = None if meta is None else meta.topics.get(topic)
    error = None if found is None else found.error
    if error is None:
        if found is not None and partition is not None and partition not in found.partitions:
            raise ToolError(
                f"topic {topic!r} has no partition {partition} (it has {len(found.partitions)})"
            )
        return
    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
        raise ToolError(
            f"unknown topic {topic!r} (the broker creates no topic on first use: "
            f"sluice topics create {topic})"
        )
    if error.code() == KafkaError.TOPIC_EXCEPTION:
        raise ToolError(f"topic {topic!r}: {kafka_error_text(error)}")


class _Reports:
    """Serves the producer's delivery reports on a thread of their own, then flushes there.

    Python runs signal handlers on the main thread, so a Ctrl-C that came while a delivery
    callback ran there raised inside it: librdkafka's flush then failed with "SystemError:
    <method 'flush'> returned NULL without setting an exception" (a traceback), or the report was
    lost. Here the main thread only reads, produces and waits on an event, which a Ctrl-C
    interrupts at once."""

    def __init__(self, producer: Any, flush_timeout: float) -> None:
        self._producer = producer
        self._flush_timeout = flush_timeout
        self._flushing = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sluice-produce", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._flushing.is_set():
                self._producer.poll(0.1)
            self._producer.flush(self._flush_timeout)
        finally:
            self._done.set()

    def stop(self) -> None:
        """Flush on the thread without waiting for it (the tool is failing anyway)."""
        self._flushing.set()

    def flush(self, wait: float | None = None) -> bool:
        """Send what lingers and wait for its reports (up to the flush timeout, or ``wait``
        seconds); whether the flush is over. A Ctrl-C ends the wait; the flush runs on to its
        timeout on the daemon thread."""
        self._flushing.set()
        return self._done.wait(wait)


class _BadLine(Exception):
    """A line without the key separator: the input stops there."""


def _send_lines(
    args: argparse.Namespace,
    producer: Any,
    report: _Deliveries,
    separator: bytes | None,
    null: bytes | None,
    extra: dict[str, Any],
) -> None:
    from confluent_kafka import KafkaException

    with _open_input(args.file) as stream:
        for lineno, line in enumerate(_lines(stream), 1):
            key: bytes | None = None
            value: bytes | None = line
            if separator is not None:
                k, sep, v = line.partition(separator)
                if not sep:
                    raise _BadLine(f"line {lineno} has no key separator {args.key_separator!r}")
                key, value = k, v
                if null is not None and key == null:
                    key = None
            if null is not None and value == null:
                value = None
            while True:
                # Counted before it is queued: a Ctrl-C landing between the two leaves it counted
                # and unconfirmed, never queued and uncounted (then delivered but not reported).
                report.sent += 1
                try:
                    producer.produce(args.topic, value, key, on_delivery=report.callback, **extra)
                    break
                except BufferError:
                    report.sent -= 1
                    time.sleep(0.05)  # the local queue is full: deliveries drain it (_Reports)
                except KafkaException as exc:
                    report.fail(f"line {lineno}: {describe_error(exc)}")
                    break
