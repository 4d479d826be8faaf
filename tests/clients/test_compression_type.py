"""The ``compression.type`` topic config with real clients: batches produced with one codec are
stored with the topic's (recompressed by the broker), and consumers read back exactly what was
produced: keys, values, headers and timestamps."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sluice.errors import ErrorCode
from sluice.protocol.records import CONTROL_BIT
from sluice.testing import EmbeddedBroker
from tests.clients.adapters import (
    CODEC_IDS,
    Client,
    ConfluentAdmin,
    ConfluentClient,
    KafkaPythonClient,
    Record,
)
from tests.clients.conftest import stored_batches

TOPIC_CODECS = {"uncompressed": "none", "gzip": "gzip", "snappy": "snappy", "lz4": "lz4", "zstd": "zstd"}
BASE_TS = 1_800_000_000_000


def records() -> list[Record]:
    return [
        Record(
            None if i % 5 == 0 else f"key-{i % 7}".encode(),
            None if i % 11 == 10 and i % 5 else f"record {i}, compressible and compressible; ".encode() * (1 + i % 9),
            (("i", str(i).encode()), ("empty", b"")),
            0,
            BASE_TS + i * 3 - (i % 4),  # out of order within a batch, as clocks allow
        )
        for i in range(300)
    ]


@pytest.mark.parametrize("topic_codec", sorted(TOPIC_CODECS))
@pytest.mark.parametrize(
    ("client", "producer_codec"),
    [(ConfluentClient(), "lz4"), (ConfluentClient(), "none"), (KafkaPythonClient(), "gzip")],
    ids=["confluent-lz4", "confluent-none", "kafka-python-gzip"],
)
def test_batches_are_stored_with_the_topics_codec(
    broker: EmbeddedBroker,
    make_topic: Callable[..., str],
    topic_codec: str,
    client: Client,
    producer_codec: str,
) -> None:
    topic = make_topic(1, compression_type=topic_codec)
    sent = records()
    deliveries = client.produce(broker.bootstrap_servers, topic, sent, compression=producer_codec)
    if deliveries is not None:
        assert [d.offset for d in deliveries] == list(range(len(sent)))
    stored = stored_batches(broker.data_dir, topic, 0)  # CRCs checked on the way
    assert {h.compression for h in stored} == {CODEC_IDS[TOPIC_CODECS[topic_codec]]}
    assert not any(h.attributes & CONTROL_BIT for h in stored)
    consumed = client.consume(broker.bootstrap_servers, topic, 0)
    assert consumed == [r.at(0, i) for i, r in enumerate(sent)]
    assert [c.timestamp for c in consumed] == [r.timestamp for r in sent]


def test_producer_keeps_each_batch_as_sent(broker: EmbeddedBroker, make_topic: Callable[..., str]) -> None:
    topic = make_topic(1)  # compression.type defaults to producer
    client = ConfluentClient()
    client.produce(broker.bootstrap_servers, topic, records()[:50], compression="zstd")
    assert {h.compression for h in stored_batches(broker.data_dir, topic, 0)} == {
        client.stored_codec("zstd")
    }


def test_compression_type_is_described_and_validated(
    admin: ConfluentAdmin, make_topic: Callable[..., str]
) -> None:
    topic = make_topic(1, compression_type="zstd")
    assert admin.describe_config(topic)["compression.type"] == "zstd"
    assert admin.set_config(topic, "compression.type", "lz4") == ErrorCode.NONE
    assert admin.describe_config(topic)["compression.type"] == "lz4"
    assert admin.set_config(topic, "compression.type", "brotli") == ErrorCode.INVALID_CONFIG
    assert admin.create_topic(topic + "-bad", 1, configs={"compression.type": "none"}) == (
        ErrorCode.INVALID_CONFIG
    )
    assert admin.describe_config(topic)["compression.type"] == "lz4"
