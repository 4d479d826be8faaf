"""Admin and console tools: ``sluice topics``, ``sluice produce``, ``sluice consume``,
``sluice groups`` and ``sluice transactions``, speaking the Kafka wire protocol (through
confluent-kafka, or sluice's own codec where librdkafka lacks the API) to sluice or any
Kafka-compatible broker.

``sluice.cli`` adds them with :func:`register`; each command parser sets ``func`` to :func:`run`,
so ``args.func(args)`` runs it. :func:`main` is a stand-alone entry point (tests use it).
Exit codes: 0 success, 1 the operation failed (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys

from sluice.tools import consume, groups, produce, topics, transactions
from sluice.tools.common import SubParsers, add_connection_options, run

__all__ = ["main", "register", "run"]


def register(sub: SubParsers) -> None:
    """Add the ``topics``, ``produce``, ``consume``, ``groups`` and ``transactions`` subcommands
    to ``sub``."""
    p = sub.add_parser("topics", help="create, list, describe, delete and alter topics")
    add_connection_options(p)
    topics.add_parsers(p.add_subparsers(dest="action", required=True, metavar="ACTION"))

    produce.add_parser(sub)
    consume.add_parser(sub)

    p = sub.add_parser(
        "groups", help="list, describe, delete consumer groups and reset their offsets"
    )
    add_connection_options(p)
    groups.add_parsers(p.add_subparsers(dest="action", required=True, metavar="ACTION"))

    p = sub.add_parser("transactions", help="list, describe and abort transactions")
    add_connection_options(p, librdkafka=False)
    transactions.add_parsers(p.add_subparsers(dest="action", required=True, metavar="ACTION"))


def build_parser(prog: str = "sluice") -> argparse.ArgumentParser:
    """A parser holding only the tools' subcommands."""
    parser = argparse.ArgumentParser(prog=prog, description="Kafka admin and console tools.")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns the exit code
    instead of exiting (usage errors give 2)."""
    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        code: int = args.func(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    return code
