"""``/metrics`` after real clients produce, consume and commit: parsed with prometheus-client's
own parser, the counters and gauges hold what the clients did (records in by topic equals what
was produced, lag equals end offset minus committed offset, ...)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from sluice.testing import EmbeddedBroker, create_topic, unique_topic_name
from tests.admin.http import request, scrape, value
from tests.server.wire import WireClient, batch, produce


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("admin-metrics"), admin=True) as b:
        yield b


def _produce(bootstrap: str, topic: str, count: int, *, acks: str = "1") -> int:
    """``count`` keyed records (spread over the partitions); returns their value bytes."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 5})
    delivered: list[object] = []
    for i in range(count):
        producer.produce(
            topic,
            key=f"key-{i % 11}".encode(),
            value=f"value-{i}".encode(),
            on_delivery=lambda err, msg: delivered.append(err),
        )
    assert producer.flush(30) == 0
    assert delivered == [None] * count
    return count


def test_traffic_offsets_and_lag_after_real_clients(
    broker: EmbeddedBroker, request_name: str
) -> None:
    topic = create_topic(broker.bootstrap_servers, unique_topic_name(request_name), partitions=3)
    group = unique_topic_name("group-" + request_name)
    _produce(broker.bootstrap_servers, topic, 300)

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        consumed = 0
        while consumed < 300:
            msg = consumer.poll(10)
            assert msg is not None, f"consumed only {consumed} of 300"
            assert msg.error() is None, msg.error()
            consumed += 1
        consumer.commit(asynchronous=False)
        members_while_consuming = value(
            scrape(broker.admin_url), "sluice_consumergroup_members", consumergroup=group
        )
        committed = {
            tp.partition: tp.offset
            for tp in consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        }
    finally:
        consumer.close()
    # More records after the commit: the group now lags behind by exactly these.
    _produce(broker.bootstrap_servers, topic, 120)

    metrics = scrape(broker.admin_url)
    assert members_while_consuming == 1
    assert value(metrics, "sluice_kafka_records_produced_total", topic=topic) == 420
    # Only produce requests wrote these logs: their bytes are the logs' sizes.
    log_sizes = sum(
        value(metrics, "sluice_log_size_bytes", topic=topic, partition=str(p)) for p in range(3)
    )
    assert (
        value(metrics, "sluice_kafka_request_bytes_total", topic=topic, request="produce")
        == log_sizes
    )
    # The consumer read all 300 (whole batches; a refetch would only count more).
    assert value(metrics, "sluice_kafka_records_fetched_total", topic=topic) >= 300
    assert value(metrics, "sluice_kafka_request_bytes_total", topic=topic, request="consume") > 0
    assert value(metrics, "sluice_topic_partitions", topic=topic) == 3

    ends = {}
    lag_total = 0.0
    for p in range(3):
        end = value(metrics, "sluice_topic_partition_current_offset", topic=topic, partition=str(p))
        assert (
            value(metrics, "sluice_topic_partition_oldest_offset", topic=topic, partition=str(p))
            == 0
        )
        labels = {"consumergroup": group, "topic": topic, "partition": str(p)}
        assert value(metrics, "sluice_consumergroup_current_offset", **labels) == committed[p]
        assert value(metrics, "sluice_consumergroup_lag", **labels) == end - committed[p]
        ends[p] = end
        lag_total += end - committed[p]
    assert sum(ends.values()) == 420
    assert sum(committed.values()) == 300
    assert lag_total == 120
    assert value(metrics, "sluice_consumergroup_lag_sum", consumergroup=group, topic=topic) == 120
    assert value(metrics, "sluice_consumergroup_members", consumergroup=group) == 0
    assert value(metrics, "sluice_consumergroup_rebalances_total", consumergroup=group) >= 1

    # Requests by API, each timed once.
    for api in ("Produce", "Fetch", "OffsetCommit", "JoinGroup", "Metadata"):
        count = value(metrics, "sluice_kafka_requests_total", api=api)
        assert count >= 1, api
        assert value(metrics, "sluice_kafka_request_latency_seconds_count", api=api) == count
        assert (
            value(metrics, "sluice_kafka_request_latency_seconds_bucket", api=api, le="+Inf")
            == count
        )


def test_error_codes_are_counted_by_api_and_error(
    broker: EmbeddedBroker, request_name: str
) -> None:
    topic = create_topic(broker.bootstrap_servers, unique_topic_name(request_name))
    before = scrape(broker.admin_url).get("sluice_kafka_request_errors_total", {})
    key = (("api", "Produce"), ("error", "UNKNOWN_TOPIC_OR_PARTITION"))
    with WireClient.to(broker) as client:
        for _ in range(3):
            answer = produce(client, topic, 7, batch([b"nowhere"]))  # the topic has 1 partition
            assert answer.error_code == 3
    after = scrape(broker.admin_url)["sluice_kafka_request_errors_total"]
    assert after[key] - before.get(key, 0) == 3


def test_fsync_latency_is_observed_for_fsynced_appends(
    broker: EmbeddedBroker, request_name: str
) -> None:
    topic = create_topic(
        broker.bootstrap_servers,
        unique_topic_name(request_name),
        configs={"sluice.append.ack": "fsynced"},
    )
    before = scrape(broker.admin_url)
    count_before = value(before, "sluice_storage_fsync_latency_seconds_count")
    _produce(broker.bootstrap_servers, topic, 5, acks="all")
    after = scrape(broker.admin_url)
    assert value(after, "sluice_storage_fsync_latency_seconds_count") > count_before
    assert value(after, "sluice_storage_fsync_latency_seconds_sum") > value(
        before, "sluice_storage_fsync_latency_seconds_sum"
    )
    assert value(after, "sluice_storage_fsync_latency_seconds_bucket", le="+Inf") == value(
        after, "sluice_storage_fsync_latency_seconds_count"
    )


def test_broker_wide_gauges(broker: EmbeddedBroker) -> None:
    metrics = scrape(broker.admin_url)
    total = value(metrics, "sluice_storage_disk_total_bytes")
    free = value(metrics, "sluice_storage_disk_free_bytes")
    assert 0 < free <= total
    assert value(metrics, "sluice_storage_disk_full") == 0
    assert value(metrics, "sluice_rpc_active_connections", server="admin") >= 1
    assert value(metrics, "sluice_rpc_active_connections", server="kafka") >= 0
    assert value(metrics, "sluice_process_resident_memory_bytes") > 10 * 1024 * 1024
    assert value(metrics, "sluice_process_cpu_seconds_total") > 0
    assert value(metrics, "sluice_application_uptime_seconds_total") > 0
    assert value(metrics, "sluice_storage_writer_queue_bytes") >= 0
    assert value(metrics, "sluice_cluster_topics") == len(broker.server.broker.logs.topics)  # type: ignore[union-attr]
    (version,) = metrics["sluice_build_info"]
    assert dict(version)["version"]


def test_log_cleaner_counters(tmp_path: Path) -> None:
    """A compacted topic with many small segments of overwritten keys: once the cleaner has run,
    its counters show the bytes it read and the fewer it wrote, and no partition is uncleanable."""
    settings = {"log.cleaner.backoff.ms": "50"}  # Kafka's default looks every 15 s
    with EmbeddedBroker(tmp_path, admin=True, settings=settings) as b:
        before = scrape(b.admin_url)
        assert value(before, "sluice_log_cleaner_runs_total") == 0
        assert value(before, "sluice_log_cleaner_last_run_timestamp_seconds") == 0
        topic = b.create_topic(
            configs={
                "cleanup.policy": "compact",
                "segment.bytes": 2048,
                "min.cleanable.dirty.ratio": 0.01,
            }
        )
        producer = Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 0})
        for round_ in range(20):
            for k in range(10):
                producer.produce(topic, f"value {round_} of key {k}".encode() * 3, f"key-{k}".encode())
            assert producer.flush(30) == 0  # a batch per round: many segments to clean
        deadline = time.monotonic() + 30
        while value(metrics := scrape(b.admin_url), "sluice_log_cleaner_runs_total") == 0:
            assert time.monotonic() < deadline, "the cleaner never ran"
            time.sleep(0.05)
        read = value(metrics, "sluice_log_cleaner_read_bytes_total")
        written = value(metrics, "sluice_log_cleaner_written_bytes_total")
        assert 0 < written < read
        assert value(metrics, "sluice_log_cleaner_uncleanable_partitions") == 0
        assert 0 <= value(metrics, "sluice_log_cleaner_max_dirty_ratio") <= 1
        assert abs(value(metrics, "sluice_log_cleaner_last_run_timestamp_seconds") - time.time()) < 60


def test_health_endpoints(broker: EmbeddedBroker) -> None:
    assert request(broker.admin_url + "/healthz").status == 200
    ready = request(broker.admin_url + "/readyz")
    assert (ready.status, ready.body) == (200, b"ready\n")


@pytest.fixture
def request_name(request: pytest.FixtureRequest) -> str:
    return str(request.node.name)
