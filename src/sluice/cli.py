"""The ``sluice`` command line: the broker, admin and console tools, benchmarks."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from sluice.config import BrokerConfig, parse_host_port
    from sluice.errors import SluiceError
    from sluice.server.app import Server, ShutdownError, StartupError

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        flags = []  # the admin flags as settings after --set, so they win as the other flags do
        if args.admin_listen is not None:
            flags.append(f"sluice.admin.listen={args.admin_listen}")
        if args.admin_read_only:
            flags.append("sluice.admin.read.only=true")
        config = BrokerConfig.load(
            args.config,
            [*(args.set or ()), *flags],
            listen=parse_host_port(args.listen) if args.listen else None,
            advertised=parse_host_port(args.advertise) if args.advertise else None,
            data_dir=Path(args.data_dir) if args.data_dir else None,
        )
    except SluiceError as exc:
        print(f"sluice serve: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        from sluice.server.malloc import map_big_buffers_apart

        map_big_buffers_apart()
        uvloop.run(Server(config).serve())
    except StartupError as exc:
        print(f"sluice serve: cannot start: {exc}", file=sys.stderr)
        return 1
    except ShutdownError as exc:
        print(f"sluice serve: shutdown did not complete cleanly: {exc}", file=sys.stderr)
        return 1
    return 0


def _non_empty(text: str) -> str:
    """argparse type of ``serve``'s address and path options: empty is refused. It read as
    not given, so ``--data-dir "$DATA"`` with $DATA unset stored the logs in ./sluice-data, a
    directory nobody looked in, and ``--listen "$ADDR"`` bound the default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty (an unset variable?)")
    return text


def _non_empty_path(text: str) -> Path:
    return Path(_non_empty(text))


class _PrintVersion(argparse.Action):
    """``--version``: prints ``sluice <version>`` and exits. The version is looked up only when
    asked for (see ``sluice.__version__``), so other commands do not pay for it."""

    def __init__(
        self, option_strings: list[str], dest: str = argparse.SUPPRESS, **_: object
    ) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="print the version and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        import sluice

        print(f"sluice {sluice.__version__}")
        parser.exit()


INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as the tools exit on Ctrl-C (sluice.tools.common)


def main(argv: list[str] | None = None) -> int:
    """The ``sluice`` command. A Ctrl-C that lands before a command handles it (``sluice serve``
    imports for ~250 ms before its event loop takes SIGINT over) ends it with one line and 130:
    Python's default is a KeyboardInterrupt traceback from wherever the import was."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv)
    except KeyboardInterrupt:
        command = argv[0] if argv and not argv[0].startswith("-") else ""
        print(f"sluice{' ' + command if command else ''}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE


def _main(argv: list[str]) -> int:
    if argv[:1] == ["bench"]:  # its own parser, --help included (argparse's REMAINDER drops it)
        from sluice.bench import cli

        return cli.main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="sluice", description="A Kafka-compatible streaming platform."
    )
    parser.add_argument("--version", action=_PrintVersion)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the broker until SIGINT/SIGTERM",
        description="Run a Kafka-compatible broker until SIGINT or SIGTERM, then stop cleanly. "
        "Settings use Kafka's broker config names (docs/broker.md); later sources win: "
        "defaults, --config, --set, then the other flags.",
    )
    serve.add_argument("--listen", type=_non_empty, help="HOST:PORT to bind (default 127.0.0.1:9092)")
    serve.add_argument("--data-dir", type=_non_empty, help="data directory (default ./sluice-data)")
    serve.add_argument(
        "--advertise", type=_non_empty, help="HOST:PORT clients are told to use (advertised.listeners)"
    )
    serve.add_argument("--config", type=_non_empty_path, help="TOML file of broker settings (Kafka names)")
    serve.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a setting (repeatable)"
    )
    serve.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        help="serve /metrics, /healthz, /readyz and the web console here "
        "(default 127.0.0.1:9644; off disables; sluice.admin.listen)",
    )
    serve.add_argument(
        "--admin-read-only",
        action="store_true",
        help="the console changes nothing (sluice.admin.read.only)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least severe log lines written to stderr (default info)",
    )
    serve.set_defaults(func=_serve)

    bench = sub.add_parser(
        "bench",
        help="benchmarks: produce, consume, e2e, durable, writer, strategies, slow-consumer, "
        "storage, fetch; compare; report",
        add_help=False,  # `sluice bench --help` and `sluice bench SCENARIO --help` are its own
    )
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="see `sluice bench --help`")

    def _bench(args: argparse.Namespace) -> int:
        from sluice.bench import cli

        return cli.main(args.rest)

    bench.set_defaults(func=_bench)

    import sluice.tools  # argparse only: the tools import confluent-kafka when they run

    sluice.tools.register(sub)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
