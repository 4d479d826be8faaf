"""``sluice bench``: one command for every benchmark.

    sluice bench SCENARIO [--bootstrap HOST:PORT] [-X key=value] [--json] [--plot FILE.png] ...
    sluice bench compare [SCENARIO ...]     # Apache Kafka 0.9.0.1 and sluice, alternating
    sluice bench report [--quick]           # regenerates docs/benchmarks.md and its plots
    sluice bench storage|fetch [...]        # the engine without network; fetch under consumers

Without ``--bootstrap`` a scenario starts a ``sluice serve`` child on a temporary directory, so
the broker's CPU and RSS are measured apart from the load generator's.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from sluice.bench import output
from sluice.bench.args import add_options, options
from sluice.bench.harness import Result, parse_settings
from sluice.bench.scenarios import SCENARIOS, Options
from sluice.bench.targets import Remote, Target, sluice_child
from sluice.tools.common import UsageError, bootstrap_entries

PASSTHROUGH = ("storage", "fetch")
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as the tools exit on Ctrl-C (sluice.tools.common)
COMMANDS = ("compare", "report", *PASSTHROUGH)
"""Subcommands with parsers of their own, dispatched before the scenario parser runs; it lists
them too, so its usage line and its invalid-choice error name every subcommand."""


def scenario_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sluice bench", description=(__doc__ or "").replace("``", ""), formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Each of compare, report, storage and fetch has its own --help.")
    parser.add_argument("scenario", choices=[*sorted(SCENARIOS), *COMMANDS])
    parser.add_argument("--bootstrap", metavar="HOST:PORT",
                        help="a running broker (default: start a sluice serve child)")
    parser.add_argument("--broker-pid", type=int, action="append", default=[],
                        help="with --bootstrap: the local broker's pid, for its CPU and RSS")
    parser.add_argument("--kafka09", action="store_true",
                        help="with --bootstrap: a Kafka 0.9 broker (api.version.request=false, "
                        "broker.version.fallback=0.9.0.1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="broker setting for the sluice child (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per result on stdout instead of the table")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="throughput and latency over time (RSS for slow-consumer)")
    add_options(parser)
    return parser


@contextlib.contextmanager
def target_for(args: argparse.Namespace) -> Iterator[Target]:
    if args.bootstrap:
        from sluice.bench.kafka09 import CLIENT_CONFIG

        check_reachable(args.bootstrap)
        yield Remote(args.bootstrap, dict(CLIENT_CONFIG) if args.kafka09 else {},
                     list(args.broker_pid), "Kafka 0.9.0.1" if args.kafka09 else args.bootstrap,
                     "kafka09" if args.kafka09 else "external")
        return
    try:
        settings = parse_settings(args.set)
    except ValueError as exc:
        raise SystemExit(f"sluice bench: --set {exc}") from None
    with sluice_child(settings) as target:
        yield target


REACH_TIMEOUT_S = 10.0


def check_reachable(bootstrap: str) -> None:
    """Fail at once when no bootstrap address takes a connection: librdkafka only retries, so
    ``--bootstrap 127.0.0.1:1`` waited a minute (each step's timeout), then said nothing but
    ``sluice bench produce:`` (a bare TimeoutError)."""
    reasons = []
    for host, port in bootstrap_entries(bootstrap):
        try:
            socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
            return
        except OSError as exc:
            reasons.append(exc.strerror or str(exc) or type(exc).__name__)
    raise RuntimeError(f"cannot reach {bootstrap}: {'; '.join(dict.fromkeys(reasons))}")


def run_scenario(name: str, target: Target, opts: Options, args: argparse.Namespace,
                 say: output.Say) -> list[Result]:
    from sluice.bench import scenarios

    if name == "strategies":
        only = args.only.split(",") if args.only else None
        return scenarios.strategies(target, opts, say, only=only, round_trips=args.round_trips)
    if name == "slow-consumer":
        return scenarios.slow_consumer(target, opts, say, process_us=args.process_us)
    if name == "writer":
        counts = [int(n) for n in args.producer_counts.split(",")]
        return scenarios.writer(target, opts, say, producers=counts)
    return SCENARIOS[name](target, opts, say)


def main(argv: Sequence[str] | None = None) -> int:
    """``sluice bench``. Ctrl-C or SIGTERM ends any run with one line and exit code 130, as the
    tools do, after the context managers stopped the broker child and the load workers and
    removed the temporary directories (a traceback, and with SIGTERM nothing cleaned up, before).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    head = argv[0] if argv else ""
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _interrupt)}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if ignored (nohup)
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _interrupt)
    try:
        return _main(argv, head)
    except KeyboardInterrupt:
        name = f" {head}" if head and not head.startswith("-") else ""
        print(f"sluice bench{name}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM: unwind, stopping the broker child and the workers on the way. A second
    signal is ignored, so it cannot cut that short and leave them (and their data) behind; each
    step of it is bounded (SIGKILL after a wait)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _main(argv: list[str], head: str) -> int:
    if head in PASSTHROUGH:
        return passthrough(head, argv[1:])
    if head == "compare":
        from sluice.bench import compare

        return compare.main(argv[1:])
    if head == "report":
        from sluice.bench import report

        return report.main(argv[1:])
    parser = scenario_parser()
    args = parser.parse_args(argv)
    if args.scenario in COMMANDS:  # options before it: `sluice bench --json compare`
        parser.error(f"{args.scenario} takes its own options: sluice bench {args.scenario} ...")
    if args.bootstrap is not None:  # given empty (an unset $VAR), it started its own broker
        try:
            bootstrap_entries(args.bootstrap)
        except UsageError as exc:
            parser.error(str(exc).replace("--bootstrap-server", "--bootstrap"))
    opts = options(args)
    say = output.say
    with output.live_progress() as progress:
        opts.progress = progress
        try:
            with target_for(args) as target:
                results = run_scenario(args.scenario, target, opts, args, say)
        except (ValueError, RuntimeError, TimeoutError) as exc:
            print(f"sluice bench {args.scenario}: {exc}", file=sys.stderr)
            return 1
    if args.json:
        output.print_json(results)
    else:
        output.print_table(results)
    if args.plot:
        output.plot(results, args.plot, title=f"sluice bench {args.scenario}")
    return 1 if any(r.errors for r in results) else 0


def passthrough(name: str, argv: list[str]) -> int:
    if name == "fetch":
        from sluice.bench import fetch

        return fetch.main(argv)
    from sluice.bench import storage

    storage.main(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
