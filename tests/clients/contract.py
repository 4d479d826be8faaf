"""The behaviours every client must show against sluice, written once.

Each ``test_<client>.py`` subclasses ``RoundTripContract`` (and ``AdminContract`` for the clients
that have an admin API) and names its adapter; pytest collects the inherited tests per client.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

import pytest

from sluice.errors import ErrorCode
from sluice.testing import EmbeddedBroker
from tests.clients.adapters import (
    ADMINS,
    CODECS,
    Admin,
    Client,
    ConfluentAdmin,
    ConfluentClient,
    Consumed,
    Delivery,
    Record,
    expected_positions,
    with_deliveries,
)
from tests.clients.conftest import NUM_PARTITIONS, stored_batches

MAX_MESSAGE_BYTES = 1_048_588
"""The default ``max.message.bytes``: the largest record batch a topic takes."""
NEAR_LIMIT = 1_048_000
"""A value this size fits in one batch with its header and record framing (< 600 bytes)."""
OVER_LIMIT = 1_049_000
"""A value this size alone is over the limit."""


def text_filler(size: int, seed: int) -> bytes:
    """``size`` bytes of incompressible-looking text (hex), the same on every run."""
    return random.Random(seed).randbytes((size + 1) // 2).hex().encode()[:size]


def in_log_order(consumed: Sequence[Consumed]) -> list[Consumed]:
    return sorted(consumed, key=lambda c: (c.partition, c.offset))


def check_keyed_spread(
    records: Sequence[Record],
    deliveries: list[Delivery] | None,
    consumed: Sequence[Consumed],
    partitions: int,
) -> None:
    """Records left to the client's partitioner: all of them come back exactly once, every
    partition's offsets run 0, 1, 2, ... in produce order, one key never spans partitions, every
    partition got some, and each delivery report names where the record really is."""
    got = in_log_order(consumed)
    assert Counter((c.key, c.value, c.headers) for c in got) == Counter(
        (r.key, r.value, r.headers) for r in records
    )
    by_partition: dict[int, list[Consumed]] = {}
    for c in got:
        by_partition.setdefault(c.partition, []).append(c)
    assert sorted(by_partition) == list(range(partitions))
    for p, items in by_partition.items():
        assert [c.offset for c in items] == list(range(len(items))), p
        produced = [
            (r.key, r.value)
            for r in records
            if (r.key, r.value) in {(c.key, c.value) for c in items}
        ]
        assert [(c.key, c.value) for c in items] == produced, f"partition {p} out of produce order"
    partition_of_key: dict[bytes | None, set[int]] = {}
    for c in got:
        partition_of_key.setdefault(c.key, set()).add(c.partition)
    assert all(len(ps) == 1 for ps in partition_of_key.values())
    if deliveries is not None:
        assert in_log_order(list(with_deliveries(records, deliveries))) == got


class RoundTripContract:
    client: ClassVar[Client]

    def round_trip(
        self,
        broker: EmbeddedBroker,
        topic: str,
        records: Sequence[Record],
        compression: str = "none",
    ) -> None:
        """Produce records with explicit partitions; every report and every consumed record must
        be exactly where the partitions' order puts it."""
        expected = expected_positions(records)
        deliveries = self.client.produce(
            broker.bootstrap_servers, topic, records, compression=compression
        )
        if deliveries is not None:
            assert deliveries == [Delivery(c.partition, c.offset) for c in expected]
        partitions = {r.partition for r in records}
        one = partitions.pop() if len(partitions) == 1 else None
        consumed = self.client.consume(broker.bootstrap_servers, topic, one)
        assert in_log_order(consumed) == in_log_order(expected)

    def test_keys_headers_and_null_values(self, broker: EmbeddedBroker, topic: str) -> None:
        records = [
            Record(b"order-1", b"created", (("trace-id", b"abc123"),), 0),
            Record(None, b"a value without a key", (), 0),
            Record(b"order-1", None, (), 0),  # a tombstone: key, null value
            Record(b"order-2", b"paid", (("dup", b"first"), ("dup", b"second"), ("empty", b"")), 0),
        ]
        if self.client.null_key_and_value:
            records.append(Record(None, None, (), 0))
        if self.client.null_header_values:
            records.append(Record(b"order-3", b"shipped", (("nothing", None), ("x", b"y")), 0))
        self.round_trip(broker, topic, records)

    @pytest.mark.parametrize("codec", CODECS)
    def test_compression(self, broker: EmbeddedBroker, topic: str, codec: str) -> None:
        headers = (("codec", codec.encode()),)
        records = [
            Record(
                f"key-{i % 7}".encode(),
                None if i % 10 == 9 else f"{codec} record {i}, compressible; ".encode() * 20,
                headers,
                0,
            )
            for i in range(200)
        ]
        self.round_trip(broker, topic, records, codec)
        # Batches are stored as produced: this is the codec the client really used.
        assert {h.compression for h in stored_batches(broker.data_dir, topic, 0)} == {
            self.client.stored_codec(codec)
        }

    def test_message_near_the_size_limit_and_one_over_it(
        self, broker: EmbeddedBroker, topic: str
    ) -> None:
        bootstrap = broker.bootstrap_servers
        over = Record(b"over", text_filler(OVER_LIMIT, 1), (), 0)
        near = Record(b"near", text_filler(NEAR_LIMIT, 2), (), 0)
        assert self.client.produce(bootstrap, topic, [over]) == [
            Delivery.failed(ErrorCode.MESSAGE_TOO_LARGE)
        ]
        # Nothing of the refused batch was stored: the next record takes offset 0.
        assert self.client.produce(bootstrap, topic, [near]) == [Delivery(0, 0)]
        assert self.client.consume(bootstrap, topic, 0) == [near.at(0, 0)]
        (stored,) = stored_batches(broker.data_dir, topic, 0)
        assert NEAR_LIMIT < stored.size <= MAX_MESSAGE_BYTES

    def test_keyed_records_over_16_partitions(
        self, broker: EmbeddedBroker, make_topic: Callable[..., str]
    ) -> None:
        topic = make_topic(16)
        records = [Record(f"key-{i % 48}".encode(), f"value-{i}".encode()) for i in range(192)]
        deliveries = self.client.produce(broker.bootstrap_servers, topic, records)
        consumed = self.client.consume(broker.bootstrap_servers, topic, None)
        check_keyed_spread(records, deliveries, consumed, 16)

    def test_auto_created_topic(
        self, broker: EmbeddedBroker, topic: str, admin: ConfluentAdmin
    ) -> None:
        assert admin.partition_count(topic) is None
        records = [Record(f"k{i % 12}".encode(), f"v{i}".encode()) for i in range(36)]
        deliveries = self.client.produce(broker.bootstrap_servers, topic, records)
        # Created by the producer's metadata request, with the broker's num.partitions.
        assert admin.partition_count(topic) == NUM_PARTITIONS
        consumed = self.client.consume(broker.bootstrap_servers, topic, None)
        check_keyed_spread(records, deliveries, consumed, NUM_PARTITIONS)

    @pytest.mark.parametrize("creator", ADMINS, ids=lambda a: a.name)
    def test_topic_created_by_admin_api(
        self, broker: EmbeddedBroker, topic: str, creator: type[Admin]
    ) -> None:
        made = creator(broker.bootstrap_servers)
        try:
            assert (
                made.create_topic(topic, 2, configs={"retention.ms": "86400000"}) == ErrorCode.NONE
            )
        finally:
            made.close()
        records = [Record(f"k{i}".encode(), f"v{i}".encode(), (), i // 5) for i in range(10)]
        self.round_trip(broker, topic, records)


# ---------------------------------------------------------------------------------------------

Refusal = Callable[[Admin, str], int]

REFUSALS: dict[str, tuple[Refusal, ErrorCode, int | None]] = {
    # name: (operation on a fresh topic name, error code, the topic's partitions afterwards)
    "topic-already-exists": (
        lambda a, t: a.create_topic(t, 2) or a.create_topic(t, 1),
        ErrorCode.TOPIC_ALREADY_EXISTS,
        2,
    ),
    "replication-factor-3": (
        lambda a, t: a.create_topic(t, 1, replication=3),
        ErrorCode.INVALID_REPLICATION_FACTOR,
        None,
    ),
    "bad-config-value": (
        lambda a, t: a.create_topic(t, 1, configs={"retention.ms": "soon"}),
        ErrorCode.INVALID_CONFIG,
        None,
    ),
    "unknown-config": (
        lambda a, t: a.create_topic(t, 1, configs={"no.such.config": "1"}),
        ErrorCode.INVALID_CONFIG,
        None,
    ),
    "fewer-partitions": (
        lambda a, t: a.create_topic(t, 3) or a.create_partitions(t, 2),
        ErrorCode.INVALID_PARTITIONS,
        3,
    ),
    "alter-to-bad-value": (
        lambda a, t: a.create_topic(t, 1) or a.set_config(t, "retention.ms", "soon"),
        ErrorCode.INVALID_CONFIG,
        1,
    ),
    "invalid-topic-name": (
        lambda a, t: a.create_topic(t + "/slash", 1),
        ErrorCode.INVALID_TOPIC_EXCEPTION,
        None,
    ),
    "delete-unknown-topic": (
        lambda a, t: a.delete_topic(t),
        ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        None,
    ),
}


class BinaryRoundTripContract(RoundTripContract):
    """For clients that carry arbitrary bytes. kcat reads lines of text and sends an empty key or
    value as null, so its test module subclasses only ``RoundTripContract``."""

    def test_binary_and_empty_keys_and_values(self, broker: EmbeddedBroker, topic: str) -> None:
        every_byte = bytes(range(256))
        records = [
            Record(
                every_byte,
                every_byte[::-1] * 4,
                (("bin", every_byte), ("ünïcode-名前", b"\xff\x00")),
                0,
            ),
            Record(b"", b"", (), 0),  # empty, not null
            Record(b"\x00", b"\n\r\t", (("", b""),), 0),
        ]
        self.round_trip(broker, topic, records)


class AdminContract:
    admin_class: ClassVar[type[Admin]]

    @pytest.fixture
    def client_admin(self, broker: EmbeddedBroker) -> Iterator[Admin]:
        a = self.admin_class(broker.bootstrap_servers)
        try:
            yield a
        finally:
            a.close()

    def test_topic_lifecycle(self, broker: EmbeddedBroker, client_admin: Admin, topic: str) -> None:
        a = client_admin
        assert a.create_topic(topic, 2, configs={"retention.ms": "3600000"}) == ErrorCode.NONE
        assert a.partition_count(topic) == 2
        configs = a.describe_config(topic)
        assert configs["retention.ms"] == "3600000"
        assert configs["max.message.bytes"] == str(MAX_MESSAGE_BYTES)  # a default, reported too
        assert a.set_config(topic, "retention.ms", "7200000") == ErrorCode.NONE
        assert a.describe_config(topic)["retention.ms"] == "7200000"
        assert a.create_partitions(topic, 5) == ErrorCode.NONE
        assert a.partition_count(topic) == 5
        new_partition = [Record(b"k", b"in a new partition", (), 4)]
        assert ConfluentClient().produce(broker.bootstrap_servers, topic, new_partition) == [
            Delivery(4, 0)
        ]
        assert a.delete_topic(topic) == ErrorCode.NONE
        assert a.partition_count(topic) is None
        # The name is free again, and the new topic starts empty.
        assert a.create_topic(topic, 1) == ErrorCode.NONE
        assert ConfluentClient().produce(
            broker.bootstrap_servers, topic, [Record(b"k", b"again", (), 0)]
        ) == [Delivery(0, 0)]

    @pytest.mark.parametrize("case", REFUSALS)
    def test_refusal(self, client_admin: Admin, topic: str, case: str) -> None:
        operation, code, partitions_after = REFUSALS[case]
        assert operation(client_admin, topic) == code
        assert client_admin.partition_count(topic) == partitions_after

    def test_delete_records(self, broker: EmbeddedBroker, client_admin: Admin, topic: str) -> None:
        bootstrap = broker.bootstrap_servers
        records = [Record(f"k{i}".encode(), f"v{i}".encode(), (), 0) for i in range(10)]
        ConfluentClient().produce(bootstrap, topic, records)
        assert client_admin.delete_records(topic, 0, 4) == 4
        assert ConfluentClient().consume(bootstrap, topic, 0) == expected_positions(records)[4:]
        assert client_admin.delete_records(topic, 0, -1) == 10  # -1: up to the high watermark
        assert ConfluentClient().consume(bootstrap, topic, 0) == []
