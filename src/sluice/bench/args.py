"""The scenario options of ``sluice bench`` (and ``compare``) as argparse arguments, and back
into :class:`~sluice.bench.scenarios.Options`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from sluice.bench.harness import parse_settings
from sluice.bench.scenarios import Options

QUICK = {"messages": 50_000, "seconds": 5.0}


def _at_least(low: float, kind: Callable[[str], float] = int) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` of at least ``low``. A count of 0 or less ran a
    case and reported it (--messages -5: 0 messages, exit 0), --messages 0 ran the default
    200,000, --partitions 0 ended in a traceback."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not value >= low:  # NaN too
            raise argparse.ArgumentTypeError(f"must be >= {low:g}: {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _above_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    """The scenario options (shared by ``sluice bench SCENARIO`` and ``compare``)."""
    d = Options()
    g = parser.add_argument_group("load")
    g.add_argument("--messages", type=_at_least(1), default=None,
                   help=f"messages per case (default {d.messages:,})")
    g.add_argument("--size", type=_at_least(0), default=d.size, help="value bytes (default 100)")
    g.add_argument("--partitions", type=_at_least(1), default=d.partitions)
    g.add_argument("--producers", type=_at_least(1), default=d.producers,
                   help="producer instances (connections), spread over --processes")
    g.add_argument("--processes", type=_at_least(0), default=d.processes,
                   help="load processes (default: one per producer, at most 4)")
    g.add_argument("--consumers", type=_at_least(1), default=d.consumers,
                   help="consumers in one group, the partitions split between them")
    g.add_argument("--acks", default=d.acks, choices=["0", "1", "all", "-1"])
    g.add_argument("--compression", default=d.compression,
                   choices=["none", "gzip", "snappy", "lz4", "zstd"])
    g.add_argument("--linger-ms", type=_at_least(0, float), default=d.linger_ms)
    g.add_argument("--rate", type=_at_least(0, float), default=d.rate,
                   help="target msg/s over all producers (e2e default 1000; 0: flat out)")
    g.add_argument("--seconds", type=_above_zero, default=None,
                   help=f"e2e and slow-consumer length (default {d.seconds:g})")
    g.add_argument("--repeat", type=_at_least(1), default=d.repeat, help="runs per case; the median "
                   "is reported")
    g.add_argument("--deadline", type=_above_zero, default=d.deadline, help="seconds per case")
    g.add_argument("--no-latency", dest="latency", action="store_false",
                   help="producers without a delivery callback per message: higher msg/s from "
                   "one process, no latency percentiles")
    g.add_argument("--quick", action="store_true", help="a short run: 50,000 messages, 5 s")
    g.add_argument("-X", dest="client", action="append", default=[], metavar="KEY=VALUE",
                   help="librdkafka setting for every client (repeatable; wins over ours)")
    s = parser.add_argument_group("scenario-specific")
    s.add_argument("--only", help="strategies: comma-separated strategies to run")
    s.add_argument("--round-trips", type=_at_least(1), default=300,
                   help="strategies: records of `send` and `send_ordered 1` (x10 for 10)")
    s.add_argument("--process-us", type=_at_least(0, float), default=1000.0,
                   help="slow-consumer: processing time per message, microseconds")
    s.add_argument("--producer-counts", default="1,4,16",
                   help="writer: concurrent producers per case (default 1,4,16)")


def options(args: argparse.Namespace) -> Options:
    try:
        client = parse_settings(args.client)
    except ValueError as exc:
        raise SystemExit(f"sluice bench: -X {exc}") from None
    d = Options()
    quick = QUICK if args.quick else {}
    return Options(
        messages=args.messages or int(quick.get("messages", d.messages)),
        size=args.size, partitions=args.partitions, producers=args.producers,
        processes=args.processes, consumers=args.consumers,
        acks="all" if args.acks == "-1" else args.acks, compression=args.compression,
        linger_ms=args.linger_ms, rate=args.rate,
        seconds=args.seconds or float(quick.get("seconds", d.seconds)),
        repeat=max(1, args.repeat), deadline=args.deadline, client=client,
        latency=args.latency,
    )
