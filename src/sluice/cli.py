"""The ``sluice`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="sluice", description="A Kafka-compatible streaming platform.")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="benchmarks that print numbers")
    bench.add_argument("which", choices=["storage"], help="which benchmark")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options for that benchmark (--help)")
    args = parser.parse_args(argv)
    if args.command == "bench":
        from sluice.bench import storage

        storage.main(args.rest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
