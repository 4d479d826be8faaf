"""``sluice.produce.validate.records`` over the wire: batches whose header and CRC are sound but
whose records lie, against a real broker, and what real consumers then see.

Off (the default), such a batch is stored as it came (the hot path reads headers only): a batch
claiming one record that holds two takes one offset, so the next producer's record shares an
offset with its second record. On, it is refused with INVALID_RECORD, as Kafka refuses it,
nothing of it is stored, and the connection and other producers go on.
"""

from __future__ import annotations

import struct
import time

import confluent_kafka
import crc32c
import kafka  # type: ignore[import-untyped]

from sluice.errors import ErrorCode
from sluice.protocol.compression import Compression
from sluice.protocol.records import build_batch
from sluice.testing import EmbeddedBroker
from tests.server.conftest import MakeBroker, WitnessFor
from tests.server.wire import (
    WireClient,
    batch,
    create_topic,
    fetch_all_values,
    list_offset,
    produce,
)

ON = {"sluice.produce.validate.records": "true"}


def with_crc(data: bytes | bytearray) -> bytes:
    out = bytearray(data)
    out[17:21] = struct.pack(">I", crc32c.crc32c(bytes(out[21:])))
    return bytes(out)


def claims_one_holds_two(first: bytes, second: bytes, codec: int = Compression.NONE) -> bytes:
    """A batch of two records whose header says one (recordCount 1, lastOffsetDelta 0), CRC
    valid: no client writes it, a forger (or a broken client) can."""
    out = bytearray(build_batch([(None, first), (None, second)], compression=codec))
    struct.pack_into(">i", out, 23, 0)  # lastOffsetDelta
    struct.pack_into(">i", out, 57, 1)  # recordCount
    return with_crc(out)


def garbage_records() -> bytes:
    """A batch whose header and CRC are valid over a records section of garbage."""
    out = bytearray(build_batch([(None, b"abcdefgh")] * 3))
    out[61:] = bytes((i * 37 + 11) % 256 for i in range(len(out) - 61))
    return with_crc(out)


def consume_confluent(broker: EmbeddedBroker, topic: str, want: int) -> list[tuple[int, bytes]]:
    """(offset, value) of what librdkafka delivers from the start, until ``want`` records or
    an idle second past them."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    got: list[tuple[int, bytes]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if len(got) >= want:
                    break
                continue
            assert msg.error() is None, msg.error()
            offset, value = msg.offset(), msg.value()
            assert offset is not None and value is not None
            got.append((offset, value))
    finally:
        consumer.close()
    return got


def consume_kafka_python(broker: EmbeddedBroker, topic: str) -> list[tuple[int, bytes]]:
    consumer = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    try:
        return [(r.offset, r.value) for r in consumer]
    finally:
        consumer.close()


def test_lying_batches_are_refused_and_nothing_of_them_is_stored(
    make_broker: MakeBroker, witness_for: WitnessFor
) -> None:
    broker = make_broker(**ON)
    witness = witness_for(broker)
    with WireClient.to(broker) as client, WireClient.to(broker) as other:
        create_topic(client, "t")
        lies = {
            "claims 1, holds 2": (claims_one_holds_two(b"a", b"b"), "records still remaining"),
            "gzip, claims 1, holds 2": (
                claims_one_holds_two(b"a", b"b", Compression.GZIP),
                "records still remaining",
            ),
            "garbage records": (garbage_records(), "of the batch"),
        }
        for name, (lie, says) in lies.items():
            part = produce(client, "t", 0, lie)
            assert part.error_code == ErrorCode.INVALID_RECORD, (name, part)
            assert part.error_message is not None and says in part.error_message, (name, part)
            assert part.base_offset == -1
            assert list_offset(client, "t", 0) == (0, 0), name
        # The same connection and another producer go on, from offset 0.
        assert produce(client, "t", 0, batch([b"c"])).base_offset == 0
        assert produce(other, "t", 0, batch([b"d"])).base_offset == 1
        assert fetch_all_values(other, "t") == [b"c", b"d"]
    witness.check()
    # Real consumers see the honest records, each at its own offset.
    assert consume_confluent(broker, "t", 2) == [(0, b"c"), (1, b"d")]
    assert consume_kafka_python(broker, "t") == [(0, b"c"), (1, b"d")]


def test_honest_clients_are_unaffected_with_the_setting_on(make_broker: MakeBroker) -> None:
    broker = make_broker(**ON)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5, "compression.type": "lz4"}
    )
    values = [f"v{i}".encode() * (i % 50 + 1) for i in range(3000)]
    for value in values:
        producer.produce("honest", value)
    assert producer.flush(30) == 0
    sent = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=5)
    for i in range(500):
        sent.send("honest", f"kp{i}".encode())
    sent.flush(30)
    sent.close()
    got = consume_confluent(broker, "honest", 3500)
    assert [offset for offset, _ in got] == list(range(3500))
    assert [value for _, value in got[:3000]] == values


def test_with_the_setting_off_a_lying_batch_is_stored_as_documented(make_broker: MakeBroker) -> None:
    """The documented hazard of the default: the lie takes one offset for two records, and the
    next producer's record is given the offset its second record also claims."""
    broker = make_broker()
    with WireClient.to(broker) as client:
        create_topic(client, "t")
        assert produce(client, "t", 0, claims_one_holds_two(b"a", b"b")).base_offset == 0
        assert produce(client, "t", 0, batch([b"c"])).base_offset == 1
        assert list_offset(client, "t", 0) == (0, 2)
        assert produce(client, "t", 0, garbage_records()).error_code == ErrorCode.NONE
    got = consume_confluent(broker, "t", 3)
    assert (1, b"b") in got and (1, b"c") in got, got  # two records at offset 1
