"""``sluice consume``: print records of a topic, in the spirit of Kafka's console consumer.

Without ``--group`` the partitions are assigned directly (no group, nothing committed); with
``--group`` the tool joins the group, shares the partitions with its other members and commits
what it printed."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import string
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

from sluice.tools.common import (
    INT64_MAX,
    ClientInUse,
    SubParsers,
    ToolError,
    UsageError,
    client_config,
    decode,
    int_range,
    interrupt,
    kafka_error_text,
    leaf,
    list_topics,
    make_client,
    member_group_id,
    non_negative_int,
    positive_int,
    silence_stdout,
    unescape,
)

CLOSE_TIMEOUT_S = 30.0
"""How long closing (committing, leaving the group) may take before the tool exits without it:
librdkafka's close has no bound, and Kafka's console consumer waits 30 s too."""
FIELDS = ("topic", "partition", "offset", "timestamp", "key", "value", "headers")
# Errors that end the tool; others (a dropped connection, a coordinator moving) are retried
# by librdkafka and only shown with --verbose.
_FATAL = frozenset(
    {
        "UNKNOWN_TOPIC_OR_PART",
        "_UNKNOWN_TOPIC",
        "_UNKNOWN_PARTITION",
        "TOPIC_AUTHORIZATION_FAILED",
        "GROUP_AUTHORIZATION_FAILED",
        "OFFSET_OUT_OF_RANGE",
        "_AUTO_OFFSET_RESET",
        "INVALID_GROUP_ID",
    }
)
OFFSET_TAIL_BASE = -2000  # librdkafka's RD_KAFKA_OFFSET_TAIL(n) is OFFSET_TAIL_BASE - n


def _template(text: str) -> str:
    """argparse type for ``--format``: unescaped, with only known field names."""
    template = unescape(text)
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad template {text!r}: {exc}") from None
    for name in names:
        base = name.split(".")[0].split("[")[0]
        if base not in FIELDS:
            raise argparse.ArgumentTypeError(
                f"unknown field {{{name}}} in template (fields: {', '.join(FIELDS)})"
            )
    # A conversion, format spec or attribute no record can take ({value!z}, {offset:s},
    # {value.real}) is a usage error, not a traceback at the first record. An index
    # ({value[3]}) depends on the record: _Printer.write checks that record by record.
    try:
        template.format(**_SAMPLE)
    except (IndexError, KeyError):
        pass
    except _FORMAT_ERRORS as exc:
        raise argparse.ArgumentTypeError(f"bad template {text!r}: {exc}") from None
    return template


_SAMPLE: dict[str, object] = {
    "topic": "t",
    "partition": 0,
    "offset": 0,
    "timestamp": 0,
    "key": "k",
    "value": "v",
    "headers": "h:v",
}
"""A record's fields as ``--format`` gets them (ints and strs), to try a template on."""
_FORMAT_ERRORS = (ValueError, TypeError, AttributeError, IndexError, KeyError)


def _offset(text: str) -> str | int:
    """argparse type for ``--offset``: earliest/beginning, latest/end, N >= 0 or -N (last N)."""
    lowered = text.lower()
    if lowered in ("earliest", "beginning", "latest", "end"):
        return "earliest" if lowered in ("earliest", "beginning") else "latest"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected earliest, latest, an offset or -N, got {text!r}"
        ) from None
    if abs(value) > INT64_MAX:  # an OverflowError traceback in librdkafka's TopicPartition
        raise argparse.ArgumentTypeError(f"an offset or -N is at most {INT64_MAX} in size: {text!r}")
    return value


def add_parser(sub: SubParsers) -> None:
    p = leaf(sub, "consume", "print the records of a topic", consume)
    p.set_defaults(interrupted_exit_code=0)  # runs until Ctrl-C: that is a clean end
    p.add_argument("topic", metavar="TOPIC")
    start = p.add_argument_group("where to start (default: new records only)")
    start.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    start.add_argument(
        "--offset",
        "-O",
        type=_offset,
        metavar="N|-N|earliest|latest",
        help="start offset: N (with --partition), -N for the last N records of each partition, "
        "earliest or latest",
    )
    start.add_argument(
        "--partition", "-p", type=non_negative_int, metavar="N", help="read only partition N"
    )
    start.add_argument(
        "--group",
        "-g",
        metavar="GROUP",
        type=member_group_id,
        help="consume as a member of GROUP: share partitions and commit offsets (resumes from them)",
    )
    stop = p.add_argument_group("when to stop (default: never, until Ctrl-C)")
    stop.add_argument(
        "--count",
        "-n",
        "--max-messages",  # kafka-console-consumer's name for it
        type=int_range(1, INT64_MAX),
        metavar="N",
        help="exit after N records",
    )
    stop.add_argument(
        "--timeout-ms", type=positive_int, metavar="MS", help="exit after MS with no record"
    )
    stop.add_argument(
        "--exit-at-end",
        "-e",
        action="store_true",
        help="exit once every partition is read to its end",
    )
    out = p.add_argument_group("output (default: the value, one record per line)")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument(
        "--format",
        "-F",
        type=_template,
        metavar="TEMPLATE",
        help="Python format template, fields {key} {value} {offset} {partition} {timestamp} "
        r"{headers} {topic}; \t and \n understood; a newline is added",
    )
    fmt.add_argument(
        "--print-key", action="store_true", help="print the key, the key separator, then the value"
    )
    fmt.add_argument("--json", action="store_true", help="one JSON object per record")
    out.add_argument(
        "--key-separator",
        default="\t",
        metavar="SEP",
        help=r"separator for --print-key (default \t)",
    )
    out.add_argument(
        "--null",
        default="null",
        metavar="TEXT",
        help="how null keys and values print (default null)",
    )


STORE_EVERY_S = 1.0
"""How often, at most, printed records are flushed and their offsets stored (--group): well
within librdkafka's auto-commit interval (5 s)."""


class _Printer:
    """Renders records to stdout as the options ask and, with ``consumer`` (--group), stores
    each record's offset once stdout has taken it.

    A record is printed when the flush of stdout's buffer succeeds, not when it enters the
    buffer: stored at the write, a reader that went away (``| head``) or a full disk left the
    buffered records unwritten, and the close committed them all the same (a rerun skipped
    them)."""

    def __init__(self, args: argparse.Namespace, out: BinaryIO, consumer: Any = None) -> None:
        self.args = args
        self.out = out
        self.consumer = consumer
        self.null = args.null.encode()
        self.separator = unescape(args.key_separator).encode()
        self.flush_each = out.isatty()
        self._unstored: dict[tuple[str, int], Any] = {}  # the last record written per partition
        self._flushed = time.monotonic()
        self.broken = False

    def flush(self) -> None:
        """Flush stdout, then store the offsets of what it took. After a failed write it does
        nothing: what is buffered will never be written, and is not stored."""
        if self.broken:
            return
        try:
            self.out.flush()
        except OSError:
            self.broken = True
            raise
        self._flushed = time.monotonic()
        if self.consumer is not None:
            for msg in self._unstored.values():
                self.consumer.store_offsets(message=msg)
        self._unstored.clear()

    def _text(self, data: bytes | None) -> str:
        return decode(data, self.args.null)

    def _headers(self, msg: Any) -> list[tuple[str, bytes | None]]:
        headers: list[tuple[str, bytes | None]] | None = msg.headers()
        return headers or []

    def write(self, msg: Any) -> None:
        args = self.args
        if args.json:
            _, ts = msg.timestamp()
            record = {
                "topic": msg.topic(),
                "partition": msg.partition(),
                "offset": msg.offset(),
                "timestamp": ts,
                "key": None if msg.key() is None else self._text(msg.key()),
                "value": None if msg.value() is None else self._text(msg.value()),
                "headers": [
                    [k, None if v is None else self._text(v)] for k, v in self._headers(msg)
                ],
            }
            line = json.dumps(record, ensure_ascii=False).encode() + b"\n"
        elif args.format is not None:
            _, ts = msg.timestamp()
            try:
                text = args.format.format(
                    topic=msg.topic(),
                    partition=msg.partition(),
                    offset=msg.offset(),
                    timestamp=ts,
                    key=self._text(msg.key()),
                    value=self._text(msg.value()),
                    headers=",".join(f"{k}:{self._text(v)}" for k, v in self._headers(msg)),
                )
            except _FORMAT_ERRORS as exc:  # {value[3]} of a shorter value, say
                raise ToolError(
                    f"--format cannot print the record at {msg.topic()}[{msg.partition()}] "
                    f"offset {msg.offset()}: {exc}"
                ) from None
            line = text.encode("utf-8", errors="surrogateescape") + b"\n"
        else:
            value = msg.value()
            line = (self.null if value is None else value) + b"\n"
            if args.print_key:
                key = msg.key()
                line = (self.null if key is None else key) + self.separator + line
        try:
            self.out.write(line)
        except OSError:
            self.broken = True
            raise
        self._unstored[(msg.topic(), msg.partition())] = msg
        if self.flush_each or time.monotonic() - self._flushed >= STORE_EVERY_S:
            self.flush()


def _check_options(args: argparse.Namespace) -> None:
    if args.group is not None and (args.partition is not None or args.offset is not None):
        raise UsageError(
            "--partition and --offset assign partitions directly; they do not go with --group"
        )
    if args.from_beginning and args.offset is not None:
        raise UsageError("give either --from-beginning or --offset")
    if isinstance(args.offset, int) and args.offset >= 0 and args.partition is None:
        raise UsageError(
            "--offset N needs --partition (use -N for the last N records of every partition)"
        )


def _start_offset(args: argparse.Namespace) -> int:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    if args.offset is None:
        return OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    if args.offset == "earliest":
        return OFFSET_BEGINNING
    if args.offset == "latest":
        return OFFSET_END
    offset: int = args.offset
    return offset if offset >= 0 else OFFSET_TAIL_BASE + offset


def consume(args: argparse.Namespace) -> int:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    _check_options(args)
    grouped = args.group is not None
    explicit = isinstance(args.offset, int) and args.offset >= 0
    settings: dict[str, Any] = {
        "enable.partition.eof": args.exit_at_end,
        # An explicit offset outside the log is reported; otherwise a consumer overtaken by
        # retention starts again at the earliest record.
        "auto.offset.reset": "error"
        if explicit
        else ("earliest" if args.from_beginning else "latest"),
    }
    if grouped:
        settings["group.id"] = args.group
        # Offsets are stored by hand once a record is printed: stored as poll() returns it
        # (librdkafka's default), a record the template could not print, or one a closed
        # stdout did not take, was committed all the same, and a rerun skipped it.
        settings["enable.auto.offset.store"] = False
    else:
        # librdkafka insists on a group id; with assign() and no commits the group is never used.
        settings["group.id"] = "sluice-console"
        settings["enable.auto.commit"] = False
        settings["enable.auto.offset.store"] = False
    if sys.stdout is None:  # `sluice consume t >&-`
        raise ToolError("stdout is closed")
    config = client_config(args, **settings)
    # Each record's offset is stored once it is printed (unless -X turned the store back on).
    store = grouped and str(config.get("enable.auto.offset.store", True)).lower() in ("false", "0")
    consumer = make_client(Consumer, config)
    printer = _Printer(args, sys.stdout.buffer, consumer if store else None)
    count = 0
    # SIGTERM (timeout, systemd, docker stop) ends it as Ctrl-C does: the consumer leaves its
    # group at once instead of holding its partitions until the session times out.
    previous = signal.signal(signal.SIGTERM, interrupt)
    in_use = False
    try:
        meta = list_topics(consumer, args, args.topic)
        tmeta = meta.topics.get(args.topic)
        if tmeta is None or (
            tmeta.error is not None and tmeta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            raise ToolError(f"unknown topic {args.topic!r}")
        if tmeta.error is not None:
            raise ToolError(f"topic {args.topic!r}: {kafka_error_text(tmeta.error)}")
        if grouped:
            consumer.subscribe([args.topic])
        else:
            partitions = sorted(tmeta.partitions)
            if args.partition is not None:
                if args.partition not in tmeta.partitions:
                    raise ToolError(
                        f"topic {args.topic!r} has no partition {args.partition} "
                        f"(it has {len(partitions)})"
                    )
                partitions = [args.partition]
            start = _start_offset(args)
            consumer.assign([TopicPartition(args.topic, p, start) for p in partitions])
        count = _loop(consumer, args, printer)
    except KeyboardInterrupt as exc:
        # Interrupted while its metadata call still runs on another thread (an unreachable
        # broker): it has joined nothing yet, and closing it under that call is not safe.
        in_use = isinstance(exc, ClientInUse)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) or not printer.broken:
            raise  # the reader went away (not an error), or not stdout's error
        silence_stdout()  # or the interpreter's own flush fails again at exit (status 120)
        raise ToolError(f"cannot write the records: {exc.strerror or exc}") from None
    finally:
        try:
            printer.flush()  # what was printed before a Ctrl-C is committed by the close
        finally:
            if not in_use:
                _close_within(consumer, CLOSE_TIMEOUT_S)
            signal.signal(signal.SIGTERM, previous)
    if args.verbose:
        print(f"Processed a total of {count} messages", file=sys.stderr)
    return 0


def _close_within(consumer: Any, seconds: float) -> None:
    """``consumer.close()``, or, if it has not returned after ``seconds``, exit code 1 with a
    line saying so: a Ctrl-C must end the tool even when leaving the group does not.

    The close waits in C, where Python runs no signal handler: a second Ctrl-C (or a SIGTERM)
    while it waited for an answer did nothing until ``seconds`` ran out. During it both signals
    take their default action and end the process at once, as a user pressing Ctrl-C again
    means (the shell reports 130 or 143; the group is left to expire the member)."""
    with _signals_end_the_process():
        _close_or_exit(consumer, seconds)


@contextlib.contextmanager
def _signals_end_the_process() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():  # signal.signal would fail
        yield
        return
    previous = {
        sig: signal.signal(sig, signal.SIG_DFL)
        for sig in (signal.SIGINT, signal.SIGTERM)
        if signal.getsignal(sig) is not signal.SIG_IGN  # nohup, or started in the background
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _close_or_exit(consumer: Any, seconds: float) -> None:
    closed = threading.Event()

    def watchdog() -> None:
        if not closed.wait(seconds):
            sys.stderr.write(
                f"sluice consume: the consumer did not close within {seconds:g} s (its last "
                "commit or its leaving the group got no answer); exiting without it\n"
            )
            sys.stderr.flush()
            os._exit(1)

    threading.Thread(target=watchdog, name="close-watchdog", daemon=True).start()
    try:
        consumer.close()
    finally:
        closed.set()


def _out_of_range(consumer: Any, args: argparse.Namespace, partition: int) -> str:
    """The line for an ``--offset N`` outside the log, naming the offsets it holds: librdkafka
    says only ``_AUTO_OFFSET_RESET: fetch failed due to requested offset not available on the
    broker: Broker: Offset out of range (broker 0)``, which leaves the user to find the range."""
    from confluent_kafka import KafkaException, TopicPartition

    said = f"consuming {args.topic!r} (partition {partition}): offset {args.offset} is outside"
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(args.topic, partition), timeout=args.timeout
        )
    except KafkaException:
        return f"{said} its log (OFFSET_OUT_OF_RANGE)"
    if low == high:
        held = f"it is empty, next offset {high}"
    else:
        held = f"it holds offsets {low} to {high - 1}"
    return f"{said} the log ({held}; OFFSET_OUT_OF_RANGE)"


def _loop(consumer: Any, args: argparse.Namespace, printer: _Printer) -> int:
    from confluent_kafka import KafkaError

    count = 0
    at_end: set[tuple[str, int]] = set()
    idle_s = args.timeout_ms / 1000 if args.timeout_ms else None
    last = time.monotonic()
    while args.count is None or count < args.count:
        if args.exit_at_end:
            assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
            if assigned and assigned <= at_end:
                break
        wait_s = 1.0 if idle_s is None else max(0.0, min(1.0, last + idle_s - time.monotonic()))
        msg = consumer.poll(wait_s)
        if msg is None:
            printer.flush()
            if idle_s is not None and time.monotonic() - last >= idle_s:
                break
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                at_end.add((msg.topic(), msg.partition()))
                continue
            if err.fatal() or err.name() in _FATAL:
                where = (
                    f" (partition {msg.partition()})"
                    if msg.partition() is not None and msg.partition() >= 0
                    else ""
                )
                if err.name() in ("OFFSET_OUT_OF_RANGE", "_AUTO_OFFSET_RESET"):
                    raise ToolError(_out_of_range(consumer, args, msg.partition()))
                raise ToolError(f"consuming {args.topic!r}{where}: {kafka_error_text(err)}")
            if args.verbose:
                print(f"warning: {kafka_error_text(err)}", file=sys.stderr)
            continue
        at_end.discard((msg.topic(), msg.partition()))
        printer.write(msg)
        count += 1
        last = time.monotonic()
    printer.flush()
    return count
