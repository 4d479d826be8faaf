"""What Produce does to batches before the log sees them, at the handler level: compressed
record counts verified (inline or in the executor), recompression to ``compression.type`` with
its refusals (INVALID_RECORD past ``sluice.batch.uncompressed.max.bytes``, MESSAGE_TOO_LARGE past
``max.message.bytes``), control batches refused."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import crc32c

from sluice.broker.config_apis import STATIC_BROKER_CONFIG
from sluice.broker.ingest import INLINE_DECOMPRESSION_BYTES
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.compression import Compression, compress_raw_snappy
from sluice.protocol.messages import ConfigResourceType
from sluice.protocol.records import (
    CONTROL_BIT,
    HEADER_SIZE,
    build_batch,
    iter_stored_batches,
    read_header,
    verification_cost,
)
from tests.broker.conftest import BrokerHarness


def part_of(resp: m.ProduceResponse | None) -> m.ProducePartitionResponse:
    assert resp is not None
    (part,) = resp.responses[0].partition_responses
    return part


def stored(h: BrokerHarness, topic: str) -> list[tuple[int, int]]:
    """(codec, records) of every stored batch."""
    data = h.broker.logs.get_log(topic, 0).read_bytes(0, 1 << 30)
    return [(b.compression, b.records_count) for b in iter_stored_batches(data)]


def with_attributes(batch: bytes, attributes: int) -> bytes:
    """The batch with other attributes (and the CRC that goes with them)."""
    tail = bytearray(batch[21:])
    struct.pack_into(">h", tail, 0, attributes)
    return batch[:17] + struct.pack(">I", crc32c.crc32c(bytes(tail))) + bytes(tail)


def forge(payload: bytes, *, count: int, attributes: int) -> bytes:
    tail = struct.pack(">hiqqqhii", attributes, count - 1, 0, 0, -1, -1, -1, count) + payload
    return struct.pack(">qiibI", 0, len(tail) + 9, 0, 2, crc32c.crc32c(tail)) + tail


def test_big_compressed_batches_are_verified_in_the_executor(
    harness: Callable[..., BrokerHarness],
) -> None:
    """A raw snappy block is decoded whole: past the inline budget its verification leaves the
    loop, and gives the same answers there."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    section = build_batch([(None, os.urandom(200) * 50) for _ in range(100)])[HEADER_SIZE:]
    payload = compress_raw_snappy(section)  # as librdkafka compresses a batch
    honest = forge(payload, count=100, attributes=Compression.SNAPPY)
    assert verification_cost(read_header(honest)) > INLINE_DECOMPRESSION_BYTES
    assert part_of(h.produce("t", 0, honest)).error_code == 0
    # The same records claiming more than they can hold are refused there too.
    forged = forge(payload, count=len(section) // 7 + 1, attributes=Compression.SNAPPY)
    part = part_of(h.produce("t", 0, forged))
    assert part.error_code == ErrorCode.INVALID_RECORD, part.error_message
    assert stored(h, "t") == [(Compression.SNAPPY, 100)]


def test_recompression_past_the_uncompressed_bound_is_refused(
    harness: Callable[..., BrokerHarness],
) -> None:
    h = harness(**{"sluice.batch.uncompressed.max.bytes": str(1 << 20)})
    h.run(h.broker.logs.create_topic("t", 1, {"compression.type": "gzip"}))
    small = build_batch([(b"k", b"v")], compression=Compression.ZSTD)
    bomb = build_batch([(None, bytes(2 << 20))], compression=Compression.ZSTD)
    assert len(bomb) < 1000
    part = part_of(h.produce("t", 0, bomb))
    assert part.error_code == ErrorCode.INVALID_RECORD
    assert part.error_message is not None
    assert "sluice.batch.uncompressed.max.bytes" in part.error_message
    assert part_of(h.produce("t", 0, small)).base_offset == 0
    assert stored(h, "t") == [(Compression.GZIP, 1)]


def test_a_batch_grown_past_max_message_bytes_by_recompression_is_refused(
    harness: Callable[..., BrokerHarness],
) -> None:
    h = harness()
    incompressible = build_batch([(None, os.urandom(50_000))])
    h.run(
        h.broker.logs.create_topic(
            "t", 1, {"compression.type": "gzip", "max.message.bytes": str(len(incompressible))}
        )
    )
    part = part_of(h.produce("t", 0, incompressible))
    assert part.error_code == ErrorCode.MESSAGE_TOO_LARGE, part.error_message
    assert stored(h, "t") == []


def test_a_control_batch_from_a_client_is_refused(harness: Callable[..., BrokerHarness]) -> None:
    """Only a transaction coordinator writes control batches; Kafka refuses them from clients
    (INVALID_RECORD), on any topic, with the good batches of the same request."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1, {"compression.type": "zstd"}))
    h.run(h.broker.logs.create_topic("p", 1))
    control = with_attributes(build_batch([(b"\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00")]), CONTROL_BIT)
    data = build_batch([(b"k", b"v" * 100)]) + control
    for topic in ("t", "p"):
        part = part_of(h.produce(topic, 0, data))
        assert part.error_code == ErrorCode.INVALID_RECORD, part.error_message
        assert stored(h, topic) == []


def test_a_transactional_batch_without_a_producer_is_refused(
    harness: Callable[..., BrokerHarness],
) -> None:
    """The transactional bit on a batch with no producer id (or no sequence): no transaction can
    hold it, and it skipped the coordinator's verification (which runs for idempotent batches),
    standing outside every transaction's markers. INVALID_RECORD; a transactional producer's
    real batches (producer id and sequence set) go on to the verification."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    for pid, seq in ((-1, -1), (-1, 0), (7, -1)):
        lone = build_batch([(b"k", b"v")], transactional=True, producer_id=pid,
                           producer_epoch=0 if pid >= 0 else -1, base_sequence=seq)
        part = part_of(h.produce("t", 0, lone))
        assert part.error_code == ErrorCode.INVALID_RECORD, (pid, seq, part.error_message)
        assert "needs a producer id and a sequence" in (part.error_message or "")
    assert stored(h, "t") == []


def test_a_corrupt_batch_is_not_laundered_by_recompression(
    harness: Callable[..., BrokerHarness],
) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1, {"compression.type": "lz4"}))
    bad = bytearray(build_batch([(b"k", b"value")]))
    bad[-2] ^= 0x55
    part = part_of(h.produce("t", 0, bytes(bad)))
    assert part.error_code == ErrorCode.CORRUPT_MESSAGE
    assert stored(h, "t") == []


def test_the_broker_default_compression_type_applies_and_is_described(
    harness: Callable[..., BrokerHarness],
) -> None:
    h = harness(**{"compression.type": "lz4", "sluice.batch.uncompressed.max.bytes": "2097152"})
    h.run(h.broker.logs.create_topic("t", 1))
    assert part_of(h.produce("t", 0, build_batch([(b"k", b"v" * 300)]))).error_code == 0
    assert stored(h, "t") == [(Compression.LZ4, 1)]

    def describe(kind: int, name: str) -> dict[str, tuple[str | None, int]]:
        body = m.DescribeConfigsRequest(
            resources=[
                m.DescribeConfigsResource(resource_type=kind, resource_name=name, configuration_keys=None)
            ],
            include_synonyms=True,
        )
        result = h.call(ApiKey.DESCRIBE_CONFIGS, 4, body).results[0]
        assert result.error_code == 0
        return {c.name: (c.value, c.config_source) for c in result.configs}

    assert describe(ConfigResourceType.TOPIC, "t")["compression.type"] == ("lz4", STATIC_BROKER_CONFIG)
    broker = describe(ConfigResourceType.BROKER, "0")
    assert broker["compression.type"] == ("lz4", STATIC_BROKER_CONFIG)
    assert broker["sluice.batch.uncompressed.max.bytes"] == ("2097152", STATIC_BROKER_CONFIG)


def _one_fewer(batch: bytes) -> bytes:
    """The batch claiming one record fewer than it holds (count and lastOffsetDelta agree)."""
    out = bytearray(batch)
    count = struct.unpack_from(">i", out, 57)[0]
    struct.pack_into(">i", out, 23, count - 2)
    struct.pack_into(">i", out, 57, count - 1)
    return with_attributes(bytes(out), struct.unpack_from(">h", out, 21)[0])


def test_validate_records_walks_big_requests_in_the_executor_and_every_topic_kind(
    harness: Callable[..., BrokerHarness],
) -> None:
    """``sluice.produce.validate.records``: past the inline budget the walk leaves the loop and
    answers the same; a compacted topic (whose own walk reads keys only) and a recompressing
    topic (whose record chain check would call the lie CORRUPT_MESSAGE) refuse it as
    INVALID_RECORD too, storing nothing."""
    from sluice.broker.ingest import WALK_INLINE_BYTES

    h = harness(**{"sluice.produce.validate.records": "true"})
    h.run(h.broker.logs.create_topic("big", 1))
    h.run(h.broker.logs.create_topic("compact", 1, {"cleanup.policy": "compact"}))
    h.run(h.broker.logs.create_topic("gzip", 1, {"compression.type": "gzip"}))
    big = build_batch([(b"k", os.urandom(100)) for _ in range(1000)])
    assert len(big) > WALK_INLINE_BYTES
    for topic, honest in (("big", big), ("compact", big[:]), ("gzip", build_batch([(b"k", b"v")] * 3))):
        part = part_of(h.produce(topic, 0, _one_fewer(honest)))
        assert part.error_code == ErrorCode.INVALID_RECORD, (topic, part)
        assert "records still remaining" in (part.error_message or ""), (topic, part)
        assert stored(h, topic) == [], topic
        assert part_of(h.produce(topic, 0, honest)).error_code == 0, topic
    assert stored(h, "big") == [(Compression.NONE, 1000)]
    assert stored(h, "gzip") == [(Compression.GZIP, 3)]
