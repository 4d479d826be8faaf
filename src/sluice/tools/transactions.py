"""``sluice transactions list|describe|abort``: what Kafka's ``kafka-transactions`` shows and
does, over the wire protocol (ListTransactions, DescribeTransactions, FindCoordinator,
InitProducerId), for sluice or any Kafka-compatible broker.

librdkafka has none of these APIs, so this tool speaks them itself through sluice's codec
(:mod:`sluice.tools.wire`): plaintext only, without librdkafka's ``-X`` and ``-v``.

``abort --transactional-id`` ends a transactional id's transaction the way a new incarnation of
its producer does (Kafka's ``force-terminate``): InitProducerId with that id, which aborts the
transaction in progress and fences the producer running it (its next request fails with
PRODUCER_FENCED; it must be restarted). Aborting a hanging transaction found by partition
(``--topic``/``--partition``: DescribeProducers and WriteTxnMarkers) is not available here.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.tools.common import (
    INT64_MAX,
    SubParsers,
    ToolError,
    add_output_option,
    int_range,
    leaf,
    print_json,
    print_table,
)
from sluice.tools.wire import Cluster, error_name

STATES = (
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "PrepareEpochFence",
    "Dead",
)
_RETRIABLE = {
    ErrorCode.CONCURRENT_TRANSACTIONS,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_COORDINATOR,
}
_IN_PROGRESS = {"Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence"}


def add_parsers(group: SubParsers) -> None:
    """Add the ``transactions`` actions to ``group`` (the subparsers of ``sluice transactions``)."""
    p = leaf(
        group,
        "list",
        "list transactional ids and their transactions' states",
        list_,
        librdkafka=False,
    )
    p.add_argument(
        "--state",
        action="append",
        choices=STATES,
        metavar="STATE",
        help=f"only ids in this state (repeatable): {', '.join(STATES)}",
    )
    p.add_argument(
        "--producer-id",
        type=int_range(0, INT64_MAX),
        action="append",
        metavar="ID",
        help="only this producer id (repeatable)",
    )
    p.add_argument(
        "--min-duration-ms",
        type=int_range(0, INT64_MAX),
        metavar="MS",
        help="only transactions running for longer than this (ListTransactions v1)",
    )
    add_output_option(p)

    p = leaf(
        group, "describe", "state, producer, timeout and partitions of transactional ids",
        describe,
        librdkafka=False,
    )
    p.add_argument("transactional_ids", nargs="+", metavar="TRANSACTIONAL_ID")
    add_output_option(p)

    p = leaf(
        group,
        "abort",
        "abort a transactional id's transaction by fencing its producer",
        abort,
        librdkafka=False,
    )
    p.add_argument("--transactional-id", required=True, metavar="ID", help="the transactional id")


def _cluster(args: argparse.Namespace) -> Cluster:
    return Cluster(args.bootstrap_server, args.timeout)


def _time(ms: int) -> str:
    if ms < 0:
        return "-"
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


# -- list ---------------------------------------------------------------------------------------------


def list_(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    with _cluster(args) as cluster:
        for node_id in sorted(cluster.nodes):
            conn = cluster.connection(node_id)
            version = conn.version(ApiKey.LIST_TRANSACTIONS, (0, 1))
            if args.min_duration_ms is not None and version < 1:
                raise ToolError(f"{conn.address} does not filter by duration (ListTransactions v1)")
            answer = conn.call(
                ApiKey.LIST_TRANSACTIONS,
                version,
                m.ListTransactionsRequest(
                    state_filters=args.state or [],
                    producer_id_filters=args.producer_id or [],
                    duration_filter=-1 if args.min_duration_ms is None else args.min_duration_ms,
                ),
                m.ListTransactionsResponse,
            )
            if answer.error_code != ErrorCode.NONE:
                raise ToolError(
                    f"cannot list transactions on {conn.address}: {error_name(answer.error_code)}"
                )
            rows.extend(
                {
                    "transactional_id": t.transactional_id,
                    "coordinator": node_id,
                    "producer_id": t.producer_id,
                    "state": t.transaction_state,
                }
                for t in answer.transaction_states
            )
    rows.sort(key=lambda r: r["transactional_id"])
    if args.output == "json":
        print_json(rows)
    else:
        print_table(
            ((r["transactional_id"], r["coordinator"], r["producer_id"], r["state"]) for r in rows),
            ["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"],
        )
    return 0


# -- describe -----------------------------------------------------------------------------------------


def _describe_one(cluster: Cluster, txn_id: str) -> tuple[int, m.DescribedTransactionState]:
    node_id = cluster.transaction_coordinator(txn_id)
    conn = cluster.connection(node_id)
    answer = conn.call(
        ApiKey.DESCRIBE_TRANSACTIONS,
        conn.version(ApiKey.DESCRIBE_TRANSACTIONS, (0, 0)),
        m.DescribeTransactionsRequest(transactional_ids=[txn_id]),
        m.DescribeTransactionsResponse,
    )
    (state,) = answer.transaction_states
    if state.error_code == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND:
        raise ToolError(f"unknown transactional id {txn_id!r}")
    if state.error_code != ErrorCode.NONE:
        raise ToolError(f"cannot describe {txn_id!r}: {error_name(state.error_code)}")
    return node_id, state


def _report(node_id: int, s: m.DescribedTransactionState, now_ms: int) -> dict[str, Any]:
    running = s.transaction_state in _IN_PROGRESS and s.transaction_start_time_ms >= 0
    return {
        "transactional_id": s.transactional_id,
        "coordinator": node_id,
        "producer_id": s.producer_id,
        "producer_epoch": s.producer_epoch,
        "state": s.transaction_state,
        "timeout_ms": s.transaction_timeout_ms,
        "start_time_ms": s.transaction_start_time_ms,
        "duration_ms": now_ms - s.transaction_start_time_ms if running else None,
        "partitions": [{"topic": t.topic, "partition": p} for t in s.topics for p in t.partitions],
    }


def describe(args: argparse.Namespace) -> int:
    now_ms = int(time.time() * 1000)
    with _cluster(args) as cluster:
        reports = [_report(*_describe_one(cluster, t), now_ms) for t in args.transactional_ids]
    if args.output == "json":
        print_json(reports)
        return 0
    print_table(
        (
            (
                r["transactional_id"],
                r["coordinator"],
                r["producer_id"],
                r["producer_epoch"],
                r["state"],
                r["timeout_ms"],
                _time(r["start_time_ms"]),
                "-" if r["duration_ms"] is None else r["duration_ms"],
                ",".join(f"{p['topic']}:{p['partition']}" for p in r["partitions"]) or "-",
            )
            for r in reports
        ),
        [
            "TRANSACTIONAL-ID",
            "COORDINATOR",
            "PRODUCER-ID",
            "EPOCH",
            "STATE",
            "TIMEOUT-MS",
            "STARTED",
            "DURATION-MS",
            "PARTITIONS",
        ],
    )
    return 0


# -- abort --------------------------------------------------------------------------------------------


def abort(args: argparse.Namespace) -> int:
    txn_id: str = args.transactional_id
    with _cluster(args) as cluster:
        node_id, before = _describe_one(cluster, txn_id)
        state = before.transaction_state
        if state == "PrepareCommit":
            raise ToolError(
                f"the transaction of {txn_id!r} is being committed; it can no longer be aborted"
            )
        if state != "Ongoing":
            print(f"Transactional id {txn_id!r} has no transaction to abort (state {state}).")
            return 0
        deadline = time.monotonic() + args.timeout
        while True:
            conn = cluster.connection(node_id)
            answer = conn.call(
                ApiKey.INIT_PRODUCER_ID,
                conn.version(ApiKey.INIT_PRODUCER_ID, (0, 4)),
                m.InitProducerIdRequest(
                    transactional_id=txn_id,
                    transaction_timeout_ms=before.transaction_timeout_ms or 60_000,
                ),
                m.InitProducerIdResponse,
            )
            if answer.error_code == ErrorCode.NONE:
                break
            if answer.error_code not in _RETRIABLE or time.monotonic() > deadline:
                raise ToolError(
                    f"cannot abort the transaction of {txn_id!r}: {error_name(answer.error_code)}"
                )
            time.sleep(0.1)
            if answer.error_code == ErrorCode.NOT_COORDINATOR:
                node_id = cluster.transaction_coordinator(txn_id)
        _, after = _describe_one(cluster, txn_id)
    print(
        f"Aborted the transaction of {txn_id!r} and fenced its producer (producer id "
        f"{before.producer_id}, epoch {before.producer_epoch}): the id is now at epoch "
        f"{answer.producer_epoch}, state {after.transaction_state}."
    )
    return 0
