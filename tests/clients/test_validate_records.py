"""``sluice.produce.validate.records`` reads every field of every record (as Kafka's
DefaultRecord.readFrom does): every real client's batches still pass, of every codec, with keys,
null values, long values, headers and null header values, transactional or not; a batch whose
record fields lie is refused over the wire and nothing of it is stored."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import crc32c
import pytest
from confluent_kafka import Consumer, Producer

from sluice.errors import ErrorCode
from sluice.protocol.records import build_batch, write_varint
from sluice.testing import EmbeddedBroker, create_topic, unique_topic_name
from tests.clients.adapters import CLIENTS, CODECS, Client, Delivery, Record
from tests.clients.contract import text_filler
from tests.server.wire import WireClient, fetch_all_values, list_offset, produce


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(
        tmp_path_factory.mktemp("sluice-validate"),
        settings={"sluice.produce.validate.records": "true"},
    ) as b:
        yield b


def records_for(client: Client) -> list[Record]:
    """Keys and values null, short and long (length varints of one to three bytes), headers
    with null values, as far as the client can send them."""
    out = []
    for i in range(40):
        key = None if i % 4 == 0 else f"key-{i}".encode() * (1 + i % 3 * 10)
        value: bytes | None = text_filler((0, 1, 70, 300, 9000)[i % 5] or 1, i)
        if (i % 7 == 3 and client.null_key_and_value) or (key is not None and i % 7 == 5):
            value = None
        headers: tuple[tuple[str, bytes | None], ...] = ()
        if i >= 30:  # one stretch with headers: kcat's -H holds for a whole run
            headers = (("trace", b"t" * 80), ("empty", None if client.null_header_values else b"e"))
        out.append(Record(key, value, headers, partition=0))
    return out


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.name)
def test_every_clients_batches_pass(broker: EmbeddedBroker, client: Client, codec: str) -> None:
    topic = create_topic(broker.bootstrap_servers, unique_topic_name(f"v-{client.name}-{codec}"), 1)
    sent = records_for(client)
    deliveries = client.produce(broker.bootstrap_servers, topic, sent, compression=codec)
    if deliveries is not None:
        assert deliveries == [Delivery(0, i) for i in range(len(sent))]
    got = client.consume(broker.bootstrap_servers, topic, 0, count=len(sent))
    assert got == [r.at(0, i) for i, r in enumerate(sent)]


def committed_values(broker: EmbeddedBroker, topic: str) -> list[bytes]:
    """What a read_committed librdkafka consumer reads of partition 0, to its end."""
    c = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    values: list[bytes] = []
    try:
        c.subscribe([topic])
        while True:
            msg = c.poll(30)
            assert msg is not None, values
            error = msg.error()
            if error is not None:
                assert error.code() == -191, error  # _PARTITION_EOF
                return values
            got = msg.value()
            assert got is not None
            values.append(got)
    finally:
        c.close()


def test_transactional_batches_pass(broker: EmbeddedBroker) -> None:
    topic = create_topic(broker.bootstrap_servers, unique_topic_name("v-txn"), 1)
    p = Producer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "transactional.id": topic,
            "compression.type": "zstd",
        }
    )
    p.init_transactions(30)
    for outcome in ("commit", "abort", "commit"):
        p.begin_transaction()
        for i in range(50):
            value = f"{outcome}-{i}".encode()
            key = b"k" if i % 2 else None
            p.produce(topic, value, key=key, partition=0, headers=[("h", None), ("n", b"1")])
        p.flush(30)
        if outcome == "commit":
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    assert committed_values(broker, topic) == [f"commit-{i}".encode() for i in range(50)] * 2


def test_aiokafka_transactional_batches_pass(broker: EmbeddedBroker) -> None:
    from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

    topic = create_topic(broker.bootstrap_servers, unique_topic_name("v-aiotxn"), 1)

    async def run() -> None:
        p = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers,
            transactional_id=topic,
            compression_type="gzip",
        )
        await p.start()
        try:
            for outcome in ("commit", "abort"):
                await p.begin_transaction()
                sent = [
                    await p.send(
                        topic,
                        f"{outcome}-{i}".encode(),
                        key=b"k%d" % i,
                        partition=0,
                        headers=[("h", b"v" * i)],
                    )
                    for i in range(30)
                ]
                await asyncio.gather(*sent)
                if outcome == "commit":
                    await p.commit_transaction()
                else:
                    await p.abort_transaction()
        finally:
            await p.stop()

    asyncio.run(run())
    assert committed_values(broker, topic) == [f"commit-{i}".encode() for i in range(30)]


def with_field_lie(values: list[bytes]) -> bytes:
    """An honest batch whose last record's header key length becomes -1 (the record's length,
    the header and the CRC stay sound). Stored, librdkafka delivers that record without its
    headers."""
    out = bytearray(build_batch([(b"k", v) for v in values], headers=[[("h", b"x")]] * len(values)))
    assert out.endswith(b"\x02\x02h\x02x")  # 1 header, key "h", value "x"
    null = bytearray()
    write_varint(null, -1)
    out[-4:-3] = null
    out[17:21] = struct.pack(">I", crc32c.crc32c(bytes(out[21:])))
    return bytes(out)


def test_a_batch_whose_record_fields_lie_is_refused(broker: EmbeddedBroker) -> None:
    topic = create_topic(broker.bootstrap_servers, unique_topic_name("v-lie"), 1)
    with WireClient.to(broker) as client:
        part = produce(client, topic, 0, with_field_lie([b"a", b"b", b"c"]))
        assert part.error_code == ErrorCode.INVALID_RECORD, part
        assert part.error_message is not None
        assert "record 2 of the batch has header 0 with key length -1" in part.error_message
        assert list_offset(client, topic, 0) == (0, 0)
        assert produce(client, topic, 0, build_batch([(b"k", b"d")])).error_code == ErrorCode.NONE
        assert fetch_all_values(client, topic) == [b"d"]
