"""Topic timestamp settings as clients see them: ``message.timestamp.type=LogAppendTime`` (the
broker's clock on every record, in the delivery report, the consumers and lookups by time) and
the bounds on CreateTime timestamps (``message.timestamp.before.max.ms`` / ``after.max.ms``)."""

from __future__ import annotations

import time
from collections.abc import Callable

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.records import TIMESTAMP_TYPE_BIT, build_batch
from sluice.testing import EmbeddedBroker
from tests.clients.adapters import (
    CLIENTS,
    TIMEOUT,
    ByTime,
    Client,
    ConfluentAdmin,
    ConfluentClient,
    Delivery,
    Record,
    confluent_config,
    confluent_max_timestamp,
    kafka_python_max_timestamp,
)
from tests.clients.conftest import stored_batches
from tests.server.wire import WireClient, produce

OLD_TS = 1_600_000_000_000  # 2020: what the producer stamps
clients = pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.name)


def _now() -> int:
    return int(time.time() * 1000)


def _produce_reporting_timestamps(bootstrap: str, topic: str, values: list[bytes], ts: int) -> list[tuple[int, int, int]]:
    """(offset, timestamp type, timestamp) of each delivery report, librdkafka's view."""
    producer = ck.Producer(confluent_config(bootstrap, acks="all", **{"linger.ms": 50}))
    reports: dict[int, tuple[int, int, int]] = {}

    def report(i: int) -> Callable[[ck.KafkaError | None, ck.Message], None]:
        def done(err: ck.KafkaError | None, msg: ck.Message) -> None:
            assert err is None, err
            kind, stamp = msg.timestamp()
            reports[i] = (msg.offset() or 0, kind, stamp)

        return done

    for i, value in enumerate(values):
        producer.produce(topic, value=value, partition=0, timestamp=ts, on_delivery=report(i))
    assert producer.flush(TIMEOUT) == 0
    return [reports[i] for i in range(len(values))]


@clients
def test_a_log_append_time_topic_stamps_records_with_the_brokers_clock(
    broker: EmbeddedBroker, make_topic: Callable[..., str], client: Client
) -> None:
    topic = make_topic(1, message_timestamp_type="LogAppendTime")
    bootstrap = broker.bootstrap_servers
    before = _now()
    reports = _produce_reporting_timestamps(bootstrap, topic, [f"v{i}".encode() for i in range(5)], OLD_TS)
    after = _now()
    # The delivery report carries the broker's time (Produce's log_append_time_ms), typed so.
    assert [r[0] for r in reports] == list(range(5))
    assert {r[1] for r in reports} == {ck.TIMESTAMP_LOG_APPEND_TIME}
    assert all(before <= r[2] <= after for r in reports)
    # Stored: each batch's header stamped (type bit, max timestamp), its CRC valid.
    headers = stored_batches(broker.data_dir, topic, 0)
    assert headers and all(h.attributes & TIMESTAMP_TYPE_BIT for h in headers)
    assert {h.max_timestamp for h in headers} == {r[2] for r in reports}
    # Every client reads the broker's time, not the producer's.
    got = client.consume(bootstrap, topic, 0)
    assert [c.offset for c in got] == list(range(5))
    assert [c.timestamp for c in got] == [r[2] for r in reports]
    # Lookups by time go by it too: the producer's 2020 stamp is before everything.
    first = min(r[2] for r in reports)
    assert client.list_offset(bootstrap, topic, 0, ByTime(OLD_TS)) == 0
    assert client.list_offset(bootstrap, topic, 0, ByTime(first)) == 0
    assert client.list_offset(bootstrap, topic, 0, ByTime(after + 1)) is None


def test_timestamp_type_changed_at_run_time_applies_to_the_next_batch(
    broker: EmbeddedBroker, make_topic: Callable[..., str], admin: ConfluentAdmin
) -> None:
    topic = make_topic(1)
    bootstrap = broker.bootstrap_servers
    assert _produce_reporting_timestamps(bootstrap, topic, [b"a"], OLD_TS) == [(0, ck.TIMESTAMP_CREATE_TIME, OLD_TS)]
    entry = ConfigEntry(
        "message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET
    )
    change = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    for done in admin.admin.incremental_alter_configs([change]).values():
        done.result(TIMEOUT)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    (described,) = admin.admin.describe_configs([resource]).values()
    assert described.result(TIMEOUT)["message.timestamp.type"].value == "LogAppendTime"
    ((offset, kind, stamp),) = _produce_reporting_timestamps(bootstrap, topic, [b"b"], OLD_TS)
    assert (offset, kind) == (1, ck.TIMESTAMP_LOG_APPEND_TIME) and stamp > OLD_TS
    got = ConfluentClient().consume(bootstrap, topic, 0)
    assert [(c.offset, c.timestamp) for c in got] == [(0, OLD_TS), (1, stamp)]


def test_create_time_bounds_refuse_batches_stamped_too_far_off(
    broker: EmbeddedBroker, make_topic: Callable[..., str]
) -> None:
    """``message.timestamp.before.max.ms`` (here one day) and ``after.max.ms`` (here one hour,
    Kafka 4's default): a batch outside is INVALID_TIMESTAMP and nothing of it is stored."""
    topic = make_topic(
        1, message_timestamp_before_max_ms=str(86_400_000), message_timestamp_after_max_ms="3600000"
    )
    bootstrap = broker.bootstrap_servers
    now = _now()
    cases = [
        (now - 2 * 86_400_000, ErrorCode.INVALID_TIMESTAMP),  # two days old
        (now + 2 * 3_600_000, ErrorCode.INVALID_TIMESTAMP),  # two hours ahead
        (now - 3_600_000, ErrorCode.NONE),
        (now + 60_000, ErrorCode.NONE),
    ]
    stored = 0
    for ts, code in cases:
        expected = Delivery(0, stored) if code == ErrorCode.NONE else Delivery.failed(code)
        record = Record(b"k", str(ts).encode(), (), 0, ts)
        assert ConfluentClient().produce(bootstrap, topic, [record]) == [expected]
        stored += code == ErrorCode.NONE
    got = ConfluentClient().consume(bootstrap, topic, 0)
    assert [c.timestamp for c in got] == [now - 3_600_000, now + 60_000]


def test_a_corrupt_batch_is_refused_not_restamped(
    broker: EmbeddedBroker, make_topic: Callable[..., str]
) -> None:
    """A LogAppendTime topic recomputes each batch's CRC after stamping it: a batch whose bytes
    were damaged on the way must be CORRUPT_MESSAGE first, never stored with a fresh CRC."""
    topic = make_topic(1, message_timestamp_type="LogAppendTime")
    good = build_batch([(b"k", b"value-0")], base_timestamp=OLD_TS)
    damaged = bytearray(good)
    damaged[-3] ^= 0x01  # inside the value: only the CRC can tell
    with WireClient.to(broker) as client:
        refused = produce(client, topic, 0, bytes(damaged))
        assert refused.error_code == ErrorCode.CORRUPT_MESSAGE
        stored = produce(client, topic, 0, good)
        assert (stored.error_code, stored.base_offset) == (ErrorCode.NONE, 0)
        assert stored.log_append_time_ms > OLD_TS
    (header,) = stored_batches(broker.data_dir, topic, 0)  # scan_batches checks each CRC
    assert header.max_timestamp == stored.log_append_time_ms


@pytest.mark.parametrize(
    "lookup",
    [confluent_max_timestamp, kafka_python_max_timestamp],
    ids=["confluent-kafka", "kafka-python"],
)
def test_max_timestamp_after_delete_records_is_a_record_still_there(
    broker: EmbeddedBroker,
    make_topic: Callable[..., str],
    admin: ConfluentAdmin,
    lookup: Callable[[str, str], tuple[int, int]],
) -> None:
    """ListOffsets -3 once DeleteRecords removed the record with the largest timestamp: the
    largest of those left (not the deleted offset, not -1 while records remain)."""
    topic = make_topic(1, segment_bytes="1000")
    bootstrap = broker.bootstrap_servers
    stamps = [5000, 9000, 3000, 7000, 6000, 7000]
    records = [Record(b"k", f"v{i}".encode() * 60, (), 0, OLD_TS + ms) for i, ms in enumerate(stamps)]
    for record in records:  # a batch each, a few to a segment
        assert ConfluentClient().produce(bootstrap, topic, [record]) is not None
    assert lookup(bootstrap, topic) == (1, OLD_TS + 9000)
    assert admin.delete_records(topic, 0, 2) == 2
    assert lookup(bootstrap, topic) == (3, OLD_TS + 7000)
    assert admin.delete_records(topic, 0, 6) == 6
    assert lookup(bootstrap, topic) == (-1, -1)


def test_an_idempotent_retry_is_answered_with_the_original_stamp(
    broker: EmbeddedBroker, make_topic: Callable[..., str]
) -> None:
    """A LogAppendTime topic answers an idempotent producer's retry of a batch it already has
    with that batch's stamp, as Kafka answers a duplicate (the stored batch's time): it was
    answered with the broker's clock at the retry, a time no consumer of the record sees
    (librdkafka's delivery report carries it)."""
    topic = make_topic(1, message_timestamp_type="LogAppendTime")
    with WireClient.to(broker) as client:
        ids = client.call(
            ApiKey.INIT_PRODUCER_ID,
            1,
            m.InitProducerIdRequest(
                transactional_id=None, transaction_timeout_ms=60_000, producer_id=-1, producer_epoch=-1
            ),
            m.InitProducerIdResponse,
        )
        batch = build_batch(
            [(b"k", b"v")],
            base_timestamp=OLD_TS,
            producer_id=ids.producer_id,
            producer_epoch=ids.producer_epoch,
            base_sequence=0,
        )
        first = produce(client, topic, 0, batch, acks=-1)
        assert (first.error_code, first.base_offset) == (ErrorCode.NONE, 0)
        stamped = first.log_append_time_ms
        while _now() <= stamped:  # the broker's clock moves on before the retry
            time.sleep(0.001)
        retry = produce(client, topic, 0, batch, acks=-1)
    assert (retry.error_code, retry.base_offset, retry.log_append_time_ms) == (ErrorCode.NONE, 0, stamped)
    (header,) = stored_batches(broker.data_dir, topic, 0)  # stored once
    assert header.max_timestamp == stamped
