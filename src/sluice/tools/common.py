"""Shared pieces of the admin and console tools: connection options, client construction, error
translation and plain-text / JSON output.

confluent-kafka is imported lazily (inside functions), so building the argument parser never
needs it and ``sluice serve`` starts without loading librdkafka.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TextIO, TypeAlias, TypeVar

from sluice.hostport import bootstrap_addresses

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

T = TypeVar("T")

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
BOOTSTRAP_ENV = "SLUICE_BOOTSTRAP_SERVER"
DEFAULT_TIMEOUT_S = 30.0


class ToolError(Exception):
    """An operation failed (broker refusal, unknown topic, unreachable broker): exit code 1."""


class UsageError(Exception):
    """The command line is inconsistent in a way argparse cannot see: exit code 2."""


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a command Ctrl-C ended


class ClientInUse(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) came while a librdkafka call was still running on the worker thread of
    :func:`blocking_call`: the client is in use there, so it must not be closed or flushed (a
    consumer's close under that call hung until killed)."""


def interrupt(signum: int, frame: object) -> None:
    """A SIGTERM handler: ends a tool as Ctrl-C does (``timeout``, systemd, ``docker stop``)."""
    raise KeyboardInterrupt


def blocking_call(call: Callable[[], T]) -> T:
    """``call()`` on a worker thread, waited for on this one.

    librdkafka's synchronous calls (``list_topics``) wait in C for their whole timeout, and
    Python runs signal handlers only between bytecodes: a Ctrl-C while the broker did not
    answer did nothing for up to ``--timeout`` (30 s), then printed a traceback. A wait on an
    event is interrupted at once. On an interrupt the call runs on to its own timeout on the
    daemon thread, which keeps its client: :class:`ClientInUse` says not to close it."""
    done = threading.Event()
    outcome: list[tuple[bool, Any]] = []

    def work() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append((False, exc))
        finally:
            done.set()

    try:
        # start() itself waits for the thread: an interrupt there may come with the call under way.
        threading.Thread(target=work, name="sluice-tools-call", daemon=True).start()
        done.wait()
    except KeyboardInterrupt:
        raise ClientInUse from None
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


INT16_MAX = 2**15 - 1
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_TIMEOUT_S = INT32_MAX // 1000
"""The longest wait librdkafka's millisecond timeouts hold (about 24.8 days): more overflowed
into an immediate timeout (--timeout 1e300 said the broker could not be reached)."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    if value > MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_TIMEOUT_S}: {text!r}")
    return value


def int_range(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in [low, high]. The wire's fields are INT16, INT32 or INT64:
    a number past them ended in an OverflowError or struct.error traceback."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}: {text!r}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}: {text!r}")
        return value

    parse.__name__ = "int"
    return parse


non_negative_int = int_range(0, INT32_MAX)
"""argparse type: an integer >= 0 that fits Kafka's INT32 (a partition, a duration in ms)."""
positive_int = int_range(1, INT32_MAX)
"""argparse type: an integer >= 1 (-1 is told the same bound as 0, not ">= 0") that fits
Kafka's INT32 (a partition count)."""


def config_name(text: str) -> str:
    """argparse type: a config name (librdkafka's admin client raised a ValueError traceback
    on an empty one)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"a config name cannot be empty: {text!r}")
    return text


def group_id(text: str) -> str:
    """argparse type: a consumer group id, which Kafka allows any text but empty (librdkafka's
    admin client raised a ValueError traceback on '')."""
    if not text:
        raise argparse.ArgumentTypeError("a group id cannot be empty")
    return text


def member_group_id(text: str) -> str:
    """argparse type: a group id librdkafka's consumer can join. It reads one that is empty or
    only whitespace as no group at all, and the consumer's constructor then failed an assertion
    that aborted the process (SIGABRT, exit 134, a core dump)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"a group id of only whitespace (or none) cannot be joined with librdkafka: {text!r}"
        )
    return text


def key_value(text: str) -> tuple[str, str]:
    """argparse type: ``KEY=VALUE`` (the value may contain ``=``; the key may not be empty)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_connection_options(parser: argparse.ArgumentParser, librdkafka: bool = True) -> None:
    """Options every tool takes. Defaults are suppressed so that the options may be given on the
    group parser (``sluice topics --bootstrap-server X list``) or on the leaf parser; call
    :func:`apply_connection_defaults` after parsing. ``librdkafka=False`` (a tool speaking the
    protocol itself) leaves out ``-X`` and ``-v``, which would have nothing to act on."""
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--bootstrap-server",
        "-b",
        metavar="HOST:PORT[,HOST:PORT]",
        default=argparse.SUPPRESS,
        help=f"broker(s) to connect to (default ${BOOTSTRAP_ENV} or {DEFAULT_BOOTSTRAP})",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help=f"how long to wait for the broker per operation (default {DEFAULT_TIMEOUT_S:g})",
    )
    if not librdkafka:
        return
    group.add_argument(
        "--client-config",
        "-X",
        type=key_value,
        action="append",
        metavar="KEY=VALUE",
        default=argparse.SUPPRESS,
        help="extra librdkafka client setting, e.g. -X security.protocol=SSL (repeatable)",
    )
    group.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the client library's log lines on stderr",
    )


def apply_connection_defaults(args: argparse.Namespace) -> None:
    """Fill in the connection options that were given nowhere."""
    if not hasattr(args, "bootstrap_server"):
        args.bootstrap_server = os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP
    if not hasattr(args, "timeout"):
        args.timeout = DEFAULT_TIMEOUT_S
    if not hasattr(args, "client_config"):
        args.client_config = []
    if not hasattr(args, "verbose"):
        args.verbose = False


def bootstrap_entries(servers: str) -> list[tuple[str, int]]:
    """``--bootstrap-server`` as (host, port) pairs, read as librdkafka reads it
    (:func:`sluice.hostport.bootstrap_addresses`), so the tools that speak the protocol
    themselves (``sluice transactions``) connect where the librdkafka ones do; a usage error for
    what librdkafka would only time out on (after ``--timeout``, as "cannot reach")."""
    try:
        return bootstrap_addresses(servers)
    except ValueError as exc:
        raise UsageError(f"--bootstrap-server: {exc}") from None


def check_bootstrap(servers: str) -> None:
    """:func:`bootstrap_entries`' usage errors, before a tool starts."""
    bootstrap_entries(servers)


def client_config(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """The librdkafka configuration for a tool: bootstrap servers, quiet logs unless ``-v``,
    the tool's own settings, then the user's ``-X`` overrides (which win)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap_server,
        "client.id": "sluice-tools",
        # librdkafka logs connection failures at level 3 and disconnects at level 6; the tools
        # report what matters themselves.
        "log_level": 7 if args.verbose else 0,
    }
    conf.update(extra)
    conf.update(dict(args.client_config))
    return conf


def admin_client(args: argparse.Namespace) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    client = make_client(AdminClient, client_config(args))
    # Fail early, with one clear message, when no broker answers.
    list_topics(client, args, None)
    return client


def make_client(factory: Callable[[dict[str, Any]], T], conf: dict[str, Any]) -> T:
    """``factory(conf)``, with a configuration librdkafka refuses reported as a :class:`ToolError`."""
    from confluent_kafka import KafkaException

    try:
        return factory(conf)
    except (KafkaException, ValueError, TypeError) as exc:
        raise ToolError(f"bad client configuration: {describe_error(exc)}") from exc


def list_topics(client: Any, args: argparse.Namespace, topic: str | None) -> Any:
    """Metadata (``ClusterMetadata``) for all topics or one, as a :class:`ToolError` on failure."""
    deadline = time.monotonic() + args.timeout
    while True:
        left = max(0.1, deadline - time.monotonic())
        try:
            if topic is None:
                return blocking_call(functools.partial(client.list_topics, timeout=left))
            return blocking_call(functools.partial(client.list_topics, topic, timeout=left))
        except Exception as exc:
            # A connection dropped mid-request (a broker restarting, an idle timeout): try again
            # on a new one while time is left.
            if is_error(exc, "_TRANSPORT") and time.monotonic() + 0.1 < deadline:
                time.sleep(0.1)
                continue
            raise ToolError(f"cannot reach {args.bootstrap_server}: {describe_error(exc)}") from exc


def describe_error(exc: BaseException) -> str:
    """One line for an exception, using the Kafka error name and message when there is one."""
    from confluent_kafka import KafkaError, KafkaException

    err: object = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    if isinstance(err, KafkaError):
        return kafka_error_text(err)
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError":
        return "timed out waiting for the broker"
    return str(exc) or type(exc).__name__


def kafka_error_text(err: Any) -> str:
    """``NAME: message`` for a ``KafkaError`` (the name alone when the message just repeats it)."""
    name: str = err.name()
    text: str = err.str()
    if not text or text.replace(" ", "_").upper() == name.lstrip("_"):
        return name
    return f"{name}: {text}"


def is_error(exc: BaseException, *names: str) -> bool:
    """Whether ``exc`` is a ``KafkaException`` carrying one of the named error codes."""
    from confluent_kafka import KafkaError, KafkaException

    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].name() in names
    return False


def wait(future: Any, args: argparse.Namespace) -> Any:
    """The result of an admin future; exceptions are left to the caller (see :func:`describe_error`)."""
    return future.result(timeout=args.timeout + 5)


def decode(data: bytes | None, null: str = "null") -> str:
    """Bytes for display: UTF-8 with undecodable bytes escaped; ``None`` shown as ``null``."""
    if data is None:
        return null
    return data.decode("utf-8", errors="backslashreplace")


def print_table(
    rows: Iterable[Sequence[object]], headers: Sequence[str], out: TextIO | None = None
) -> None:
    """Left-aligned columns separated by two spaces, with a header row; no trailing spaces."""
    out = out or sys.stdout
    text_rows = [[str(c) for c in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in text_rows) for i in range(len(headers))]
    for r in text_rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def print_json(obj: object, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    json.dump(obj, out, indent=2, sort_keys=False)
    out.write("\n")


def add_output_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        "-o",
        choices=["text", "json"],
        default="text",
        help="text (aligned columns, default) or json",
    )


def list_offsets(
    admin: AdminClient,
    args: argparse.Namespace,
    partitions: Iterable[tuple[str, int]],
    spec: str | int,
) -> dict[tuple[str, int], int]:
    """Offsets of ``partitions`` by ListOffsets: ``spec`` is ``"earliest"``, ``"latest"`` or a
    timestamp in ms (the first offset whose timestamp is at or after it; the log end offset when
    there is none). A partition whose lookup fails raises :class:`ToolError`."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # no __all__

    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    if spec == "earliest":
        offset_spec = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
    elif spec == "latest":
        offset_spec = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    else:
        offset_spec = OffsetSpec.for_timestamp(int(spec))
    futures = admin.list_offsets(
        {TopicPartition(t, p): offset_spec for t, p in wanted}, request_timeout=args.timeout
    )
    result: dict[tuple[str, int], int] = {}
    for tp, future in futures.items():
        try:
            info = wait(future, args)
        except Exception as exc:
            raise ToolError(
                f"cannot list offsets of {tp.topic}[{tp.partition}]: {describe_error(exc)}"
            ) from exc
        result[(tp.topic, tp.partition)] = int(info.offset)
    if spec not in ("earliest", "latest"):
        # No record at or after the timestamp: Kafka answers -1; the position is the log end.
        missing = [tp for tp, off in result.items() if off < 0]
        if missing:
            result.update(list_offsets(admin, args, missing, "latest"))
    return result


Handler = Callable[[argparse.Namespace], int]
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def leaf(
    group: SubParsers, name: str, help_text: str, handler: Handler, librdkafka: bool = True
) -> argparse.ArgumentParser:
    """A runnable (sub)command parser: connection options (see :func:`add_connection_options`
    for ``librdkafka``), and ``func`` set to :func:`run` with ``handler`` doing the work, which
    is how ``sluice.cli`` dispatches (``args.func(args)``)."""
    parser = group.add_parser(
        name, help=help_text, description=help_text[:1].upper() + help_text[1:] + "."
    )
    add_connection_options(parser, librdkafka)
    parser.set_defaults(
        func=run, handler=handler, parser=parser, interrupted_exit_code=INTERRUPTED_EXIT_CODE
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the parsed command: 0 on success, 1 with one line on stderr when the operation fails,
    2 (through argparse) for usage errors found after parsing."""
    apply_connection_defaults(args)
    parser: argparse.ArgumentParser = args.parser
    prog = parser.prog
    try:
        check_bootstrap(args.bootstrap_server)
        code: int = args.handler(args)
        return code
    except UsageError as exc:
        parser.error(str(exc))  # exits 2
    except ToolError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C while waiting for the broker: one line, not a traceback (``consume``, which
        # runs until Ctrl-C, ends cleanly with 0 and says nothing).
        interrupted: int = getattr(args, "interrupted_exit_code", INTERRUPTED_EXIT_CODE)
        if interrupted:
            print(f"{prog}: interrupted", file=sys.stderr)
        return interrupted
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("confluent_kafka"):
            print(
                f"{prog}: error: the tools need confluent-kafka (pip install confluent-kafka)",
                file=sys.stderr,
            )
            return 1
        raise
    except BrokenPipeError:
        # The reader went away (``sluice consume ... | head``): not an error of ours.
        silence_stdout()
        return 0


def silence_stdout() -> None:
    """After EPIPE (or ENOSPC), point stdout at /dev/null so the interpreter's final flush
    stays quiet: it would print "Exception ignored" and make the exit status 120."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "0": "\0", "\\": "\\"}


def unescape(text: str) -> str:
    r"""Turn ``\t``, ``\n``, ``\r``, ``\0`` and ``\\`` into the characters they name (so separators
    and templates can be typed without the shell's ``$'...'``); other backslashes stay."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)
