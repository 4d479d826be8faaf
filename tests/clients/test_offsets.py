"""Where consumption starts (earliest, latest, an offset, a time) and what ListOffsets answers
(earliest, latest, by time, max timestamp, after DeleteRecords), through each client's own API.

Every test reads a partition of ten records with known CreateTime timestamps one second apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sluice.testing import EmbeddedBroker
from tests.clients.adapters import (
    CLIENTS,
    EARLIEST,
    LATEST,
    TIMEOUT,
    ByTime,
    Client,
    ConfluentAdmin,
    ConfluentClient,
    Delivery,
    Position,
    Record,
    Start,
    confluent_max_timestamp,
    expected_positions,
    kafka_python_max_timestamp,
)

BASE_TS = 1_700_000_000_000
TIMED = [Record(f"k{i}".encode(), f"v{i}".encode(), (), 0, BASE_TS + 1000 * i) for i in range(10)]

clients = pytest.mark.parametrize("client", CLIENTS, ids=lambda c: c.name)


@pytest.fixture
def timed_topic(broker: EmbeddedBroker, topic: str) -> str:
    assert ConfluentClient().produce(broker.bootstrap_servers, topic, TIMED) == [
        Delivery(0, i) for i in range(10)
    ]
    return topic


STARTS: dict[str, tuple[Start, int]] = {
    # name: (where to start, the first offset that must come back)
    "earliest": (EARLIEST, 0),
    "offset-7": (7, 7),
    "offset-at-end": (10, 10),
    "time-of-a-record": (ByTime(BASE_TS + 3000), 3),
    "time-between-records": (ByTime(BASE_TS + 3500), 4),
    "time-before-all": (ByTime(0), 0),
    "time-after-all": (ByTime(BASE_TS + 10_000), 10),  # no such record: start at the end
}


@clients
@pytest.mark.parametrize("start", STARTS)
def test_consume_from(broker: EmbeddedBroker, timed_topic: str, client: Client, start: str) -> None:
    position, first = STARTS[start]
    got = client.consume(broker.bootstrap_servers, timed_topic, 0, start=position)
    assert got == expected_positions(TIMED)[first:]
    assert [c.timestamp for c in got] == [r.timestamp for r in TIMED[first:]]


@clients
def test_consume_from_latest_reads_only_later_records(
    broker: EmbeddedBroker, timed_topic: str, client: Client
) -> None:
    bootstrap = broker.bootstrap_servers
    later = [Record(f"new{i}".encode(), f"after{i}".encode(), (), 0) for i in range(3)]

    def produce_later() -> None:
        assert ConfluentClient().produce(bootstrap, timed_topic, later) == [
            Delivery(0, 10 + i) for i in range(3)
        ]

    # The consumer resolves "latest" to 10 before the later records exist; a consumer that
    # started anywhere else would read old records or wait for ones that never come.
    got = client.consume(
        bootstrap, timed_topic, 0, start=LATEST, count=3, when_positioned=produce_later
    )
    assert got == expected_positions(later, {0: 10})


LOOKUPS: dict[str, tuple[Position, int | None]] = {
    "earliest": (EARLIEST, 0),
    "latest": (LATEST, 10),
    "time-of-a-record": (ByTime(BASE_TS + 3000), 3),
    "time-between-records": (ByTime(BASE_TS + 3500), 4),
    "time-before-all": (ByTime(0), 0),
    "time-after-all": (ByTime(BASE_TS + 10_000), None),
}


@clients
@pytest.mark.parametrize("lookup", LOOKUPS)
def test_list_offsets(
    broker: EmbeddedBroker, timed_topic: str, client: Client, lookup: str
) -> None:
    spec, offset = LOOKUPS[lookup]
    assert client.list_offset(broker.bootstrap_servers, timed_topic, 0, spec) == offset


@clients
def test_earliest_after_delete_records(
    broker: EmbeddedBroker, timed_topic: str, client: Client, admin: ConfluentAdmin
) -> None:
    bootstrap = broker.bootstrap_servers
    assert admin.delete_records(timed_topic, 0, 6) == 6
    assert client.list_offset(bootstrap, timed_topic, 0, EARLIEST) == 6
    assert client.list_offset(bootstrap, timed_topic, 0, LATEST) == 10
    # A time before the new log start finds the first record still there, not a deleted one.
    assert client.list_offset(bootstrap, timed_topic, 0, ByTime(BASE_TS)) == 6
    assert (
        client.consume(bootstrap, timed_topic, 0, start=EARLIEST) == expected_positions(TIMED)[6:]
    )


@pytest.mark.parametrize(
    "lookup",
    [confluent_max_timestamp, kafka_python_max_timestamp],
    ids=["confluent-kafka", "kafka-python"],
)
def test_max_timestamp_offset(
    broker: EmbeddedBroker, topic: str, lookup: Callable[[str, str], tuple[int, int]]
) -> None:
    """ListOffsets v7 with -3: the offset of the record with the largest timestamp."""
    records = [
        Record(b"k", f"v{i}".encode(), (), 0, BASE_TS + ms)
        for i, ms in enumerate((5000, 9000, 3000, 7000))
    ]
    ConfluentClient().produce(broker.bootstrap_servers, topic, records)
    assert lookup(broker.bootstrap_servers, topic) == (1, BASE_TS + 9000)


def test_time_retention_empties_an_idle_partition(tmp_path: Path) -> None:
    """retention.ms on a topic whose only segment is the active one: the broker's retention
    check rolls and deletes it (as Kafka does), so earliest == latest and nothing is served."""
    with EmbeddedBroker(
        tmp_path / "data", settings={"log.retention.check.interval.ms": "100"}
    ) as broker:
        bootstrap = broker.bootstrap_servers
        admin = ConfluentAdmin(bootstrap)
        try:
            assert admin.create_topic("short-lived", 1, configs={"retention.ms": "60000"}) == 0
        finally:
            admin.close()
        # TIMED records are from 2023: far past a minute's retention as soon as they land.
        assert ConfluentClient().produce(bootstrap, "short-lived", TIMED) == [
            Delivery(0, i) for i in range(10)
        ]
        client = ConfluentClient()
        deadline = time.monotonic() + TIMEOUT
        while client.list_offset(bootstrap, "short-lived", 0, EARLIEST) != 10:
            assert time.monotonic() < deadline, "retention never removed the expired records"
            time.sleep(0.05)  # the poll interval of a condition, not a wait for readiness
        assert client.list_offset(bootstrap, "short-lived", 0, LATEST) == 10
        assert client.consume(bootstrap, "short-lived", 0, start=EARLIEST) == []
