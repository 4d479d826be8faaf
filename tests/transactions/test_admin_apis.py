"""DescribeTransactions and ListTransactions: what admin tools see of transactional ids (states,
producers, partitions, start times), with ListTransactions' state, producer id and (v1)
duration filters, and the answers for ids the coordinator does not know."""

from __future__ import annotations

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from tests.transactions.conftest import TxnHarness, add_offsets, add_partitions, describe, end, init

E = ErrorCode


def listed(
    h: TxnHarness,
    states: list[str] | None = None,
    pids: list[int] | None = None,
    duration: int = -1,
    version: int = 1,
) -> tuple[int, list[str], dict[str, tuple[int, str]]]:
    body = m.ListTransactionsRequest(
        state_filters=states or [], producer_id_filters=pids or [], duration_filter=duration
    )
    resp: m.ListTransactionsResponse = h.call(ApiKey.LIST_TRANSACTIONS, version, body)
    return (
        resp.error_code,
        resp.unknown_state_filters,
        {t.transactional_id: (t.producer_id, t.transaction_state) for t in resp.transaction_states},
    )


def test_describe_reports_each_transactional_id(h: TxnHarness) -> None:
    pid = init(h, "busy", timeout_ms=45_000).producer_id
    h.clock.ms += 1_000
    add_partitions(h, pid, 0, {"t": [2, 0], "u": [0]}, txn="busy")
    add_offsets(h, pid, 0, "g", txn="busy")
    init(h, "idle")
    busy, idle, missing, empty = describe(h, "busy", "idle", "missing", "")
    assert (busy.error_code, busy.transaction_state, busy.producer_id, busy.producer_epoch) == (
        E.NONE,
        "Ongoing",
        pid,
        0,
    )
    assert (busy.transaction_timeout_ms, busy.transaction_start_time_ms) == (45_000, h.clock.ms)
    # the partitions with data; the group's offsets are not a partition in sluice
    assert [(t.topic, t.partitions) for t in busy.topics] == [("t", [0, 2]), ("u", [0])]
    assert (idle.error_code, idle.transaction_state, idle.topics) == (E.NONE, "Empty", [])
    assert (missing.transactional_id, missing.error_code) == (
        "missing",
        E.TRANSACTIONAL_ID_NOT_FOUND,
    )
    assert empty.error_code == E.INVALID_REQUEST
    assert describe(h) == []


def test_an_id_named_many_times_is_described_once(h: TxnHarness) -> None:
    """Each mention listed every partition of the transaction (as many as AddPartitionsToTxn
    added), so repeats made a small request an answer of any size: each id is answered once,
    in the order first named."""
    pid = init(h, "wide").producer_id
    assert set(add_partitions(h, pid, 0, {"t": [0, 1, 2], "u": [0]}, txn="wide").values()) == {E.NONE}
    states = describe(h, *["wide", "missing"] * 2000, "wide")
    assert [(s.transactional_id, s.error_code) for s in states] == [
        ("wide", E.NONE),
        ("missing", E.TRANSACTIONAL_ID_NOT_FOUND),
    ]
    assert [(t.topic, t.partitions) for t in states[0].topics] == [("t", [0, 1, 2]), ("u", [0])]


def test_list_with_filters(h: TxnHarness) -> None:
    a = init(h, "a").producer_id
    b = init(h, "b").producer_id
    c = init(h, "c").producer_id
    add_partitions(h, a, 0, {"t": [0]}, txn="a")
    h.clock.ms += 10_000
    add_partitions(h, b, 0, {"t": [1]}, txn="b")
    add_partitions(h, c, 0, {"t": [2]}, txn="c")
    assert end(h, c, 0, True, txn="c") == E.NONE
    h.clock.ms += 1_000
    assert listed(h) == (
        E.NONE,
        [],
        {"a": (a, "Ongoing"), "b": (b, "Ongoing"), "c": (c, "CompleteCommit")},
    )
    assert listed(h, states=["Ongoing"])[2] == {"a": (a, "Ongoing"), "b": (b, "Ongoing")}
    # state names are Kafka's, matched exactly; unknown ones are reported back
    assert listed(h, states=["CompleteCommit", "ongoing", "Bogus"]) == (
        E.NONE,
        ["ongoing", "Bogus"],
        {"c": (c, "CompleteCommit")},
    )
    assert listed(h, pids=[b, c, 10**9])[2] == {"b": (b, "Ongoing"), "c": (c, "CompleteCommit")}
    assert listed(h, states=["Ongoing"], pids=[c])[2] == {}
    # v1: running for longer than the duration (a has run 11 s, b and c 1 s)
    assert listed(h, states=["Ongoing"], duration=5_000)[2] == {"a": (a, "Ongoing")}
    assert listed(h, states=["Ongoing"], duration=5_000, version=0)[2].keys() == {"a", "b"}
