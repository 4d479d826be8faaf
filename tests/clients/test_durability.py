"""After a restart, clean or SIGKILL, every acknowledged (acks=all) message is still there, at
the same offset, byte for byte; and the log takes new records at the next offset.

SIGKILL tests run ``python -m sluice.cli serve`` as a child process with the default topic
config (``sluice.append.ack=written``: a process crash loses nothing the broker acknowledged).
"""

from __future__ import annotations

import time
from pathlib import Path

import confluent_kafka as ck
import pytest

from sluice.errors import ErrorCode
from sluice.testing import BrokerProcess, EmbeddedBroker
from tests.clients.adapters import (
    CLIENTS,
    TIMEOUT,
    Client,
    ConfluentAdmin,
    ConfluentClient,
    Consumed,
    Delivery,
    KafkaPythonClient,
    Record,
    confluent_config,
    expected_positions,
    with_deliveries,
)
from tests.clients.contract import in_log_order

ROOT = Path(__file__).resolve().parents[2]


def test_clean_restart_keeps_every_acknowledged_message(sluice_fresh_broker: EmbeddedBroker) -> None:
    b, topic = sluice_fresh_broker, "durable"
    admin = ConfluentAdmin(b.bootstrap_servers)
    try:
        assert admin.create_topic(topic, 3, configs={"retention.ms": "86400000"}) == ErrorCode.NONE
        keyed = [
            Record(f"key-{i % 40}".encode(), f"value-{i}".encode(), (("n", str(i).encode()),))
            for i in range(300)
        ]
        stored = list(
            with_deliveries(
                keyed,
                ConfluentClient().produce(b.bootstrap_servers, topic, keyed, compression="lz4"),
            )
        )
        # A second client and codec into one partition, after the first.
        more = [Record(None, f"more-{i}".encode(), (), 2) for i in range(50)]
        stored += with_deliveries(
            more, KafkaPythonClient().produce(b.bootstrap_servers, topic, more, compression="gzip")
        )
        before = in_log_order(ConfluentClient().consume(b.bootstrap_servers, topic, None))
        assert before == in_log_order(stored)

        b.restart()

        after = in_log_order(ConfluentClient().consume(b.bootstrap_servers, topic, None))
        assert after == before
        assert [c.timestamp for c in after] == [c.timestamp for c in before]
        assert admin.describe_config(topic)["retention.ms"] == "86400000"
        next_offset = sum(1 for c in stored if c.partition == 2)
        assert ConfluentClient().produce(
            b.bootstrap_servers, topic, [Record(b"k", b"after", (), 2)]
        ) == [Delivery(2, next_offset)]
    finally:
        admin.close()


@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.name)
def test_sigkill_after_acks_loses_nothing(sluice_process: BrokerProcess, client: Client) -> None:
    """Two rounds: produce, SIGKILL, restart (recovery), check every record and offset."""
    topic = "crashy"
    expected: list[Consumed] = []
    for round_no in range(2):
        records = [
            Record(f"k{round_no}-{i}".encode(), f"value {round_no}-{i}".encode(), (), 0)
            for i in range(200)
        ]
        wanted = expected_positions(records, {0: len(expected)})
        deliveries = client.produce(sluice_process.bootstrap_servers, topic, records)
        if deliveries is not None:
            assert deliveries == [Delivery(c.partition, c.offset) for c in wanted]
        expected += wanted
        sluice_process.kill()
        sluice_process.start()
        assert ConfluentClient().consume(sluice_process.bootstrap_servers, topic, 0) == expected
    assert sluice_process.stop() == 0


def test_sigkill_under_load_keeps_every_acknowledged_message(sluice_process: BrokerProcess) -> None:
    """Kill the broker while a producer streams into it: every record it acknowledged is there
    at the offset the acknowledgement named, and what is stored is a prefix of what was sent."""
    topic, enough = "streaming", 3000
    producer = ck.Producer(
        confluent_config(
            sluice_process.bootstrap_servers,
            **{"acks": "all", "linger.ms": 1, "batch.num.messages": 200},
        )
    )
    acked: dict[int, bytes] = {}

    def on_delivery(err: ck.KafkaError | None, msg: ck.Message) -> None:
        if err is None:
            acked[msg.offset() or 0] = msg.value() or b""

    sent: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    while len(acked) < enough:
        assert time.monotonic() < deadline, f"only {len(acked)} acknowledged"
        value = f"record-{len(sent):06d}".encode()
        try:
            producer.produce(
                topic, value=value, key=value[-3:], partition=0, on_delivery=on_delivery
            )
            sent.append(value)
        except BufferError:
            producer.poll(0.01)
        producer.poll(0)
    sluice_process.kill()
    producer.purge()  # whatever was in flight is now unacknowledged, never resent
    producer.flush(TIMEOUT)
    del producer
    sluice_process.start()

    stored = ConfluentClient().consume(sluice_process.bootstrap_servers, topic, 0)
    assert [c.offset for c in stored] == list(range(len(stored)))
    assert [c.value for c in stored] == sent[: len(stored)]
    assert all(stored[offset].value == value for offset, value in acked.items())
    assert len(stored) >= len(acked) == max(acked) + 1
    after = Record(b"k", b"after the crash", (), 0)
    assert ConfluentClient().produce(sluice_process.bootstrap_servers, topic, [after]) == [
        Delivery(0, len(stored))
    ]
    assert sluice_process.stop() == 0


def test_consumed_values_are_what_was_acknowledged(sluice_process: BrokerProcess) -> None:
    """The restarted broker serves the acknowledged records to every client alike."""
    records = [Record(f"k{i}".encode(), f"v{i}".encode(), (("h", b"1"),), 0) for i in range(20)]
    expected = expected_positions(records)
    assert ConfluentClient().produce(sluice_process.bootstrap_servers, "shared", records) == [
        Delivery(0, i) for i in range(20)
    ]
    sluice_process.kill()
    sluice_process.start()
    for client in CLIENTS:
        assert client.consume(sluice_process.bootstrap_servers, "shared", 0) == expected, (
            client.name
        )
    assert sluice_process.stop() == 0


def test_a_lowered_max_message_bytes_keeps_the_bigger_records_through_a_crash(
    sluice_process: BrokerProcess,
) -> None:
    """max.message.bytes bounds what is accepted from now on; records accepted under a bigger
    limit stay acknowledged. Recovery used to cut the log at the first batch over the new limit:
    lower it, SIGKILL, and that record and every later one were gone."""
    topic, bootstrap = "shrunk", sluice_process.bootstrap_servers
    records = [Record(b"k", value, (), 0) for value in (b"small", b"x" * 50_000, b"after")]
    expected = expected_positions(records)
    admin = ConfluentAdmin(bootstrap)
    try:
        assert admin.create_topic(topic, 1) == ErrorCode.NONE
        assert ConfluentClient().produce(bootstrap, topic, records) == [
            Delivery(0, i) for i in range(3)
        ]
        assert admin.set_config(topic, "max.message.bytes", "10000") == ErrorCode.NONE
    finally:
        admin.close()
    sluice_process.kill()
    sluice_process.start()
    assert ConfluentClient().consume(bootstrap, topic, 0) == expected
    assert "recovered shrunk-0" not in sluice_process.log_path.read_text()
    assert sluice_process.stop() == 0
