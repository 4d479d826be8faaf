"""read_committed consumers of real clients (confluent-kafka's librdkafka, kafka-python,
aiokafka) against transactions written by a raw transactional producer and ended with
WriteTxnMarkers: they get exactly the committed records, in order, across partitions (aborted
ones dropped by the aborted-transactions list each fetch carries, markers skipped), nothing of a
transaction still open, and the rest once its marker lands; read_uncommitted consumers get
every record."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiokafka  # type: ignore[import-untyped]
import confluent_kafka as ck
import kafka  # type: ignore[import-untyped]
import pytest

from sluice.testing import EmbeddedBroker
from tests.clients.adapters import confluent_consumer
from tests.server.txn_producer import UNVERIFIED, RawTxnProducer
from tests.server.wire import WireClient

DEADLINE = 30.0
Got = list[tuple[int, bytes]]


COMMITTED_ONE = {0: [b"p0-a", b"A1", b"A2", b"s1-0"], 1: [b"A3", b"p1-a", b"s1-1"]}
"""What read_committed gets after phase one."""
COMMITTED_TWO = {0: [b"C1", b"p0-b", b"s2-0"], 1: []}
"""... and after phase two."""
UNCOMMITTED = {
    0: [b"p0-a", b"A1", b"B1", b"A2", b"s1-0", b"C1", b"p0-b", b"s2-0"],
    1: [b"A3", b"B2", b"B3", b"p1-a", b"s1-1"],
}


class Scenario:
    """Two partitions. Transaction A (committed) and B (aborted) interleave on both, plain
    records around them; then C opens on partition 0 with a plain record after it (both past
    the LSO until C commits). ``s<n>-<p>`` sentinels are plain records marking how far a
    consumer has read."""

    def __init__(self, broker: EmbeddedBroker, topic: str) -> None:
        self.topic = topic
        self.client = WireClient.to(broker)
        self.a, self.b, self.c = (RawTxnProducer(self.client) for _ in range(3))
        self.plain = RawTxnProducer(self.client)

    def phase_one(self) -> None:
        t, a, b, c, plain = self.topic, self.a, self.b, self.c, self.plain
        plain.send(t, 0, [b"p0-a"], transactional=False)
        a.send(t, 0, [b"A1"])
        b.send(t, 0, [b"B1"])
        a.send(t, 1, [b"A3"])
        a.send(t, 0, [b"A2"])
        b.send(t, 1, [b"B2", b"B3"])
        plain.send(t, 1, [b"p1-a"], transactional=False)
        assert a.end(True, [(t, 0), (t, 1)]) == {(t, 0): 0, (t, 1): 0}
        assert b.end(False, [(t, 0), (t, 1)]) == {(t, 0): 0, (t, 1): 0}
        plain.send(t, 0, [b"s1-0"], transactional=False)
        plain.send(t, 1, [b"s1-1"], transactional=False)
        c.send(t, 0, [b"C1"])
        plain.send(t, 0, [b"p0-b"], transactional=False)

    def phase_two(self) -> None:
        assert self.c.end(True, [(self.topic, 0)]) == {(self.topic, 0): 0}
        self.plain.send(self.topic, 0, [b"s2-0"], transactional=False)

    def close(self) -> None:
        self.client.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """A broker without transaction verification: the raw producer has no coordinator."""
    with EmbeddedBroker(tmp_path_factory.mktemp("sluice-raw-txn"), settings=UNVERIFIED) as b:
        yield b


@pytest.fixture
def scenario(broker: EmbeddedBroker, make_topic: Callable[..., str]) -> Iterator[Scenario]:
    s = Scenario(broker, make_topic(2))
    try:
        yield s
    finally:
        s.close()


def by_partition(got: Got) -> dict[int, list[bytes]]:
    out: dict[int, list[bytes]] = {0: [], 1: []}
    for partition, value in got:
        out[partition].append(value)
    return out


def reached(got: Got, sentinels: set[bytes]) -> bool:
    return sentinels <= {v for _, v in got}


class Consumer:
    """A client's consumer assigned both partitions from the start."""

    def poll(self, got: Got) -> None: ...

    def close(self) -> None: ...

    def read_until(self, got: Got, sentinels: set[bytes]) -> None:
        deadline = time.monotonic() + DEADLINE
        while not reached(got, sentinels):
            assert time.monotonic() < deadline, f"read {got}, still waiting for {sentinels}"
            self.poll(got)

    def read_for(self, got: Got, seconds: float) -> None:
        """Whatever arrives within ``seconds`` (to show that nothing does)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll(got)


class ConfluentConsumer(Consumer):
    def __init__(self, broker: EmbeddedBroker, topic: str, isolation: str) -> None:
        self.consumer = confluent_consumer(broker.bootstrap_servers, **{"isolation.level": isolation})
        self.consumer.assign([ck.TopicPartition(topic, p, 0) for p in (0, 1)])

    def poll(self, got: Got) -> None:
        msg = self.consumer.poll(0.1)
        if msg is not None:
            assert msg.error() is None, msg.error()
            partition, value = msg.partition(), msg.value()
            assert partition is not None and value is not None
            got.append((partition, value))

    def close(self) -> None:
        self.consumer.close()


class KafkaPythonConsumer(Consumer):
    def __init__(self, broker: EmbeddedBroker, topic: str, isolation: str) -> None:
        self.consumer = kafka.KafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            isolation_level=isolation,
        )
        tps = [kafka.TopicPartition(topic, p) for p in (0, 1)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)

    def poll(self, got: Got) -> None:
        for records in self.consumer.poll(timeout_ms=100).values():
            got.extend((r.partition, r.value) for r in records)

    def close(self) -> None:
        self.consumer.close()


class AiokafkaConsumer(Consumer):
    def __init__(self, broker: EmbeddedBroker, topic: str, isolation: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.consumer = self.loop.run_until_complete(self._start(broker, topic, isolation))

    async def _start(self, broker: EmbeddedBroker, topic: str, isolation: str) -> Any:
        consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers,
            enable_auto_commit=False,
            isolation_level=isolation,
        )
        await consumer.start()
        tps = [aiokafka.TopicPartition(topic, p) for p in (0, 1)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return consumer

    def poll(self, got: Got) -> None:
        batches = self.loop.run_until_complete(self.consumer.getmany(timeout_ms=100))
        for records in batches.values():
            got.extend((r.partition, r.value) for r in records)

    def close(self) -> None:
        self.loop.run_until_complete(self.consumer.stop())
        self.loop.close()


CONSUMERS: dict[str, type[Consumer]] = {
    "confluent-kafka": ConfluentConsumer,
    "kafka-python": KafkaPythonConsumer,
    "aiokafka": AiokafkaConsumer,
}


@pytest.mark.parametrize("client", list(CONSUMERS))
def test_read_committed_gets_exactly_the_committed_records(
    broker: EmbeddedBroker, scenario: Scenario, client: str
) -> None:
    scenario.phase_one()
    consumer = CONSUMERS[client](broker, scenario.topic, "read_committed")  # type: ignore[call-arg]
    try:
        got: Got = []
        consumer.read_until(got, {b"s1-0", b"s1-1"})
        consumer.read_for(got, 0.5)  # C is open: nothing past the LSO comes
        assert by_partition(got) == COMMITTED_ONE
        scenario.phase_two()
        more: Got = []
        consumer.read_until(more, {b"s2-0"})
        assert by_partition(more) == COMMITTED_TWO
    finally:
        consumer.close()


@pytest.mark.parametrize("client", list(CONSUMERS))
def test_read_uncommitted_gets_every_record(broker: EmbeddedBroker, scenario: Scenario, client: str) -> None:
    scenario.phase_one()
    scenario.phase_two()
    consumer = CONSUMERS[client](broker, scenario.topic, "read_uncommitted")  # type: ignore[call-arg]
    try:
        got: Got = []
        consumer.read_until(got, {b"s2-0", b"s1-1"})
        assert by_partition(got) == UNCOMMITTED
    finally:
        consumer.close()
