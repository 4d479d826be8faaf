"""``sluice transactions``: real confluent-kafka transactional producers make transactions; the
tool lists, describes and aborts them, checked against what the producers then see."""

from __future__ import annotations

import json

import confluent_kafka as ck
import pytest

from sluice.testing import EmbeddedBroker, create_topic
from tests.tools.conftest import Run
from tests.transactions.wire_log import describe as wire_describe
from tests.transactions.wire_log import markers


def producer(broker: EmbeddedBroker, txn_id: str) -> ck.Producer:
    p = ck.Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "transactional.id": txn_id, "log_level": 0}
    )
    p.init_transactions(30)
    return p


@pytest.fixture
def open_txn(broker: EmbeddedBroker, topic: str) -> tuple[ck.Producer, str]:
    """A producer in a transaction that has written to ``topic`` partition 1; the transactional
    id is the topic's name."""
    create_topic(broker.bootstrap_servers, topic, 2)
    p = producer(broker, topic)
    p.begin_transaction()
    p.produce(topic, b"open", partition=1)
    assert p.flush(30) == 0
    return p, topic


def test_list_shows_ids_with_their_states(sluice: Run, broker: EmbeddedBroker, open_txn: tuple[ck.Producer, str]) -> None:
    p, txn = open_txn
    done = producer(broker, txn + "-done")
    done.begin_transaction()
    done.produce(txn, b"x", partition=0)
    done.commit_transaction(30)
    pid = wire_describe(broker.port, txn).producer_id

    r = sluice("transactions", "list")
    assert r.code == 0, r.err
    assert r.lines[0].split() == ["TRANSACTIONAL-ID", "COORDINATOR", "PRODUCER-ID", "STATE"]
    rows = {line.split()[0]: line.split()[1:] for line in r.lines[1:]}
    assert rows[txn] == ["0", str(pid), "Ongoing"]
    assert rows[txn + "-done"][2] == "CompleteCommit"

    r = sluice("transactions", "list", "--state", "Ongoing", "-o", "json")
    listed = json.loads(r.text)
    assert {"transactional_id": txn, "coordinator": 0, "producer_id": pid, "state": "Ongoing"} in listed
    assert all(t["state"] == "Ongoing" for t in listed)

    r = sluice("transactions", "list", "--producer-id", str(pid), "-o", "json")
    assert [t["transactional_id"] for t in json.loads(r.text)] == [txn]
    r = sluice("transactions", "list", "--min-duration-ms", "3600000", "--state", "Ongoing")
    assert txn not in r.text
    p.abort_transaction(30)


def test_describe(sluice: Run, broker: EmbeddedBroker, open_txn: tuple[ck.Producer, str]) -> None:
    p, txn = open_txn
    r = sluice("transactions", "describe", txn, "-o", "json")
    assert r.code == 0, r.err
    (d,) = json.loads(r.text)
    assert (d["state"], d["producer_epoch"], d["timeout_ms"], d["coordinator"]) == ("Ongoing", 0, 60_000, 0)
    assert d["partitions"] == [{"topic": txn, "partition": 1}]
    assert d["start_time_ms"] > 0 and d["duration_ms"] >= 0
    r = sluice("transactions", "describe", txn)
    header, row = r.lines
    assert header.split() == [
        "TRANSACTIONAL-ID",
        "COORDINATOR",
        "PRODUCER-ID",
        "EPOCH",
        "STATE",
        "TIMEOUT-MS",
        "STARTED",
        "DURATION-MS",
        "PARTITIONS",
    ]
    assert row.split()[4] == "Ongoing" and row.split()[-1] == f"{txn}:1"
    p.commit_transaction(30)
    (d,) = json.loads(sluice("transactions", "describe", txn, "-o", "json").text)
    assert (d["state"], d["duration_ms"], d["partitions"]) == ("CompleteCommit", None, [])
    missing = sluice("transactions", "describe", txn, "no-such-id")
    assert missing.code == 1 and "unknown transactional id 'no-such-id'" in missing.err


def test_abort_fences_the_producer_and_aborts_its_transaction(
    sluice: Run, broker: EmbeddedBroker, open_txn: tuple[ck.Producer, str]
) -> None:
    p, txn = open_txn
    r = sluice("transactions", "abort", "--transactional-id", txn)
    assert r.code == 0, r.err
    assert "Aborted the transaction" in r.text and "epoch 2" in r.text
    assert markers(broker.port, txn, 1) == [b"ABORT"]
    d = wire_describe(broker.port, txn)
    assert (d.transaction_state, d.producer_epoch) == ("Empty", 2)
    with pytest.raises(ck.KafkaException) as failed:
        p.commit_transaction(30)
    assert failed.value.args[0].fatal() and "fenced" in str(failed.value).lower()
    # nothing left to abort: nothing is fenced
    again = sluice("transactions", "abort", "--transactional-id", txn)
    assert again.code == 0 and "no transaction to abort (state Empty)" in again.text
    assert wire_describe(broker.port, txn).producer_epoch == 2
    unknown = sluice("transactions", "abort", "--transactional-id", "no-such-id")
    assert unknown.code == 1 and "unknown transactional id" in unknown.err


@pytest.mark.parametrize("where", ["group", "action"])
def test_librdkafka_options_are_not_offered(sluice: Run, where: str) -> None:
    """The tool speaks the protocol itself: its --help listed -X and -v, then refused -X and
    ignored -v. Neither is offered now, on `sluice transactions` or on an action."""
    actions = ("list", "describe", "abort")
    helps = [sluice("transactions", "--help"), *(sluice("transactions", a, "--help") for a in actions)]
    for h in helps:
        assert h.code == 0 and "--bootstrap-server" in h.text
        assert "-X" not in h.text and "--client-config" not in h.text
        assert "-v" not in h.text.split() and "--verbose" not in h.text
    for option in (["-X", "security.protocol=SSL"], ["-v"]):
        argv = ["transactions", *option, "list"] if where == "group" else [
            "transactions", "list", *option]
        r = sluice(*argv)
        # `transactions -X K=V list` reads K=V as the action
        assert r.code == 2 and ("unrecognized arguments" in r.err or "invalid choice" in r.err)


def test_an_unreachable_broker_is_an_error(sluice: Run) -> None:
    r = sluice("transactions", "list", "-b", "127.0.0.1:1")
    assert r.code == 1 and "cannot reach 127.0.0.1:1" in r.err


def test_the_bootstrap_list_is_read_as_the_librdkafka_tools_read_it(
    sluice: Run, broker: EmbeddedBroker
) -> None:
    """The tool speaks the protocol itself; its addresses were its own parse, which took
    ``PLAINTEXT://host`` for a host name and ``h:1:2`` for host ``h:1``, both accepted by the
    usage check the other tools share."""
    r = sluice("transactions", "list", "-b", f"PLAINTEXT://{broker.bootstrap_servers}")
    assert r.code == 0, r.err
    assert r.lines[0].split()[0] == "TRANSACTIONAL-ID"
    r = sluice("transactions", "list", "-b", "h:1:2")
    assert r.code == 2
    assert "an IPv6 address with a port goes in brackets" in r.err
