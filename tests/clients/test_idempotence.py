"""Idempotent producers of every client against sluice, through a proxy that loses answers.

The proxy (tests/proxy.py) drops connections after the broker has stored a Produce request and
before the client sees the answer, so every client retries batches the broker already has.
With idempotence on, each partition must hold exactly its messages, in send order, once each;
with it off, the same run must show duplicates, which proves the proxy bites. The same pair of
runs across a SIGKILL and restart of the broker, and kafka-python's default (idempotent)
producer, complete the set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiokafka  # type: ignore[import-untyped]
import confluent_kafka as ck
import kafka  # type: ignore[import-untyped]
import kafka.errors  # type: ignore[import-untyped]
import pytest

from sluice.testing import BrokerProcess, EmbeddedBroker
from tests.clients.adapters import confluent_config
from tests.clients.conftest import stored_batches
from tests.proxy import FaultProxy
from tests.server.wire import WireClient, create_topic, fetch_all_values

PARTITIONS = 5
KEYS = 20
MESSAGES = 2_000
"""Per client run: ``MESSAGES / KEYS`` messages per key, each key always to the same partition."""

SEED = 1
DROP_PROBABILITY = 0.25
MAX_DROPS = 8
"""Each Produce answer is lost with this probability, at most this many times per run (a drop
costs a reconnect, so more would only make the run slower). With this seed the answers dropped
are the 1st, 9th, 10th, 14th, 17th, 20th, 21st and 25th, and every client sends many more
Produce requests than that (batches are kept small for it), so every run meets all eight."""

DEADLINE = 120.0
"""Seconds for one client to have every message acknowledged; reached only when broken."""

@dataclass(frozen=True)
class Message:
    key: bytes
    value: bytes
    partition: int


def workload() -> list[Message]:
    """``MESSAGES`` keyed messages, the keys interleaved; a value names its key and its sequence
    number within the key, so a duplicate or a reordering is visible in the values alone."""
    out = []
    for n in range(MESSAGES):
        key = f"key-{n % KEYS:02d}"
        out.append(Message(key.encode(), f"{key}:{n // KEYS:05d}".encode(), n % KEYS % PARTITIONS))
    return out


Produce = Callable[[str, str, list[Message], bool], list[str | None]]
"""(bootstrap, topic, messages, idempotent) -> per message: None once acknowledged, else the
error the client reported."""


# -- the three producers -------------------------------------------------------------------------


def produce_confluent(
    bootstrap: str, topic: str, messages: list[Message], idempotent: bool
) -> list[str | None]:
    outcome: list[str | None] = ["not reported"] * len(messages)
    producer = ck.Producer(
        confluent_config(
            bootstrap,
            **{
                "enable.idempotence": idempotent,
                "acks": "all",
                "max.in.flight.requests.per.connection": 5,
                # Small batches, so a run makes many Produce requests for the proxy to hit.
                "batch.num.messages": 10,
                "linger.ms": 0,
                "message.timeout.ms": int(DEADLINE * 1000),
                "retry.backoff.ms": 20,
                "reconnect.backoff.ms": 10,
                "reconnect.backoff.max.ms": 200,
            },
        )
    )

    def reporter(i: int) -> Callable[[ck.KafkaError | None, ck.Message], None]:
        def report(err: ck.KafkaError | None, _msg: ck.Message) -> None:
            outcome[i] = None if err is None else str(err)

        return report

    try:
        for i, m in enumerate(messages):
            producer.produce(
                topic, key=m.key, value=m.value, partition=m.partition, on_delivery=reporter(i)
            )
            producer.poll(0)
        assert producer.flush(DEADLINE) == 0, "confluent producer: deliveries still pending"
        return outcome
    finally:
        close_confluent(producer)


def close_confluent(producer: ck.Producer) -> None:
    """Close at once, also after a failure (left to the garbage collector, which a failed
    test's traceback delays, the producer would go on reconnecting into later tests)."""
    with contextlib.suppress(ck.KafkaException):
        producer.purge()
    producer.close()


def produce_kafka_python(
    bootstrap: str, topic: str, messages: list[Message], idempotent: bool
) -> list[str | None]:
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=idempotent,
        acks="all",
        max_in_flight_requests_per_connection=5,
        batch_size=256,  # bytes: a handful of these records per batch
        linger_ms=0,
        delivery_timeout_ms=int(DEADLINE * 1000),
        retry_backoff_ms=20,
        reconnect_backoff_ms=10,
        reconnect_backoff_max_ms=200,
    )
    try:
        futures = [
            producer.send(topic, key=m.key, value=m.value, partition=m.partition) for m in messages
        ]
        producer.flush(DEADLINE)
        outcome: list[str | None] = []
        for f in futures:
            try:
                f.get(0)
                outcome.append(None)
            except kafka.errors.KafkaError as exc:
                outcome.append(repr(exc))
        return outcome
    finally:
        producer.close(10)


def produce_aiokafka(
    bootstrap: str, topic: str, messages: list[Message], idempotent: bool
) -> list[str | None]:
    async def run() -> list[str | None]:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            enable_idempotence=idempotent,
            acks="all",
            max_batch_size=256,
            linger_ms=0,
            request_timeout_ms=int(DEADLINE * 1000),
            retry_backoff_ms=20,
        )
        await producer.start()
        try:
            futures = [
                await producer.send(topic, key=m.key, value=m.value, partition=m.partition)
                for m in messages
            ]
            outcome: list[str | None] = []
            for f in futures:
                try:
                    await f
                    outcome.append(None)
                except aiokafka.errors.KafkaError as exc:
                    outcome.append(repr(exc))
            return outcome
        finally:
            await producer.stop()

    return asyncio.run(asyncio.wait_for(run(), DEADLINE))


PRODUCERS: dict[str, Produce] = {
    "confluent-kafka": produce_confluent,
    "kafka-python": produce_kafka_python,
    "aiokafka": produce_aiokafka,
}


# -- the run -------------------------------------------------------------------------------------


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[FaultProxy, EmbeddedBroker]]:
    """A broker that advertises the proxy's address, so every client connection, not just the
    bootstrap one, goes through the proxy."""
    with (
        FaultProxy() as proxy,
        EmbeddedBroker(
            tmp_path / "data", settings={"advertised.listeners": proxy.address}
        ) as broker,
    ):
        proxy.forward_to("127.0.0.1", broker.port)
        yield proxy, broker


@dataclass(frozen=True)
class Stored:
    partitions: dict[int, list[bytes]]

    def duplicates(self) -> int:
        """Records beyond the first copy of each value."""
        return sum(n - 1 for values in self.partitions.values() for n in Counter(values).values())


def read_back(port: int, topic: str) -> Stored:
    """Every record of every partition, read straight from the broker (not through the proxy)."""
    with WireClient("127.0.0.1", port) as client:
        out = {}
        for p in range(PARTITIONS):
            values = fetch_all_values(client, topic, p)
            assert all(v is not None for v in values)
            out[p] = [v for v in values if v is not None]
        return Stored(out)


def producer_identities(data_dir: Path, topic: str) -> set[tuple[int, int]]:
    """The (producer id, epoch) pairs of every stored batch, read from the segment files. Where
    batches carry a producer id, each partition's base sequences for one producer and epoch
    must run from 0 with neither a gap nor a repeat: the batches themselves say each was stored
    once, in order."""
    identities = set()
    for p in range(PARTITIONS):
        next_sequence: dict[tuple[int, int], int] = {}
        for h in stored_batches(data_dir, topic, p):
            identity = (h.producer_id, h.producer_epoch)
            identities.add(identity)
            if h.producer_id >= 0:
                assert h.base_sequence == next_sequence.get(identity, 0), (p, h)
                next_sequence[identity] = h.base_sequence + h.records_count
    return identities


def run_through_drops(
    proxied: tuple[FaultProxy, EmbeddedBroker], client: str, idempotent: bool
) -> tuple[list[Message], Stored]:
    proxy, broker = proxied
    topic = f"idempotence-{client}-{'on' if idempotent else 'off'}"
    with WireClient.to(broker) as admin:
        create_topic(admin, topic, PARTITIONS)
    messages = workload()
    proxy.drop_randomly(DROP_PROBABILITY, max_drops=MAX_DROPS, seed=SEED)
    started = time.monotonic()
    outcome = PRODUCERS[client](proxy.address, topic, messages, idempotent)
    elapsed = time.monotonic() - started
    proxy.stop_dropping()
    failed = [(m.value, e) for m, e in zip(messages, outcome, strict=True) if e is not None]
    assert not failed, f"{len(failed)} messages not acknowledged, e.g. {failed[:3]}"
    stored = read_back(broker.port, topic)
    stats = proxy.stats
    print(
        f"\n{client}, idempotence {'on' if idempotent else 'off'}: {len(messages)} messages in "
        f"{elapsed:.1f} s, {stats.produce_requests} Produce requests, {stats.drops} answers "
        f"dropped, {stored.duplicates()} duplicate records stored"
    )
    # Every planned drop happened: the run was exposed to the fault it is about.
    assert stats.drops == MAX_DROPS, stats
    identities = producer_identities(broker.data_dir, topic)
    if idempotent:
        assert len(identities) == 1, f"the producer started over: {identities}"
        assert min(identities)[0] >= 0
    else:
        assert identities == {(-1, -1)}  # the control run really was not idempotent
    return messages, stored


@pytest.mark.parametrize("client", list(PRODUCERS))
def test_idempotent_producer_writes_each_message_once_in_order(
    proxied: tuple[FaultProxy, EmbeddedBroker], client: str
) -> None:
    messages, stored = run_through_drops(proxied, client, idempotent=True)
    for p in range(PARTITIONS):
        sent = [m.value for m in messages if m.partition == p]
        assert stored.partitions[p] == sent, (
            f"partition {p}: {len(stored.partitions[p])} records stored, {len(sent)} sent, "
            f"{stored.duplicates()} duplicates in the topic"
        )


@pytest.mark.parametrize("client", list(PRODUCERS))
def test_without_idempotence_the_drops_make_duplicates(
    proxied: tuple[FaultProxy, EmbeddedBroker], client: str
) -> None:
    """The control run: the same drops without idempotence store some batches twice (and lose
    nothing: every client retried until each message was acknowledged)."""
    messages, stored = run_through_drops(proxied, client, idempotent=False)
    for p in range(PARTITIONS):
        sent = {m.value for m in messages if m.partition == p}
        assert set(stored.partitions[p]) == sent, f"partition {p}"
    assert stored.duplicates() > 0, "the drops made no duplicates: the proxy did not bite"


# -- a crash in the middle of an idempotent run ---------------------------------------------------


HELD_AT_KILL = 3
"""Produce answers the broker has sent, and the producer not yet seen, when the broker dies."""
KILLED_FOR = 200
"""Messages produced while the broker is down."""


@dataclass(frozen=True)
class CrashRun:
    messages: list[Message]
    stored: Stored
    offsets: dict[int, int]
    """Message index -> the offset its acknowledgement named (-1: none)."""
    identities: set[tuple[int, int]]


def stream_through_a_sigkill(tmp_path: Path, idempotent: bool) -> CrashRun:
    """A confluent-kafka producer streams ``workload()`` into a ``sluice serve`` child; halfway,
    the broker is SIGKILLed, and restarted on the same port while the producer carries on.
    The producer must never be fenced or fail, and must have every message acknowledged.

    So that the kill finds batches the broker stored but the producer never heard of (the
    case a restarted broker must recognise as duplicates, from its log alone), the proxy holds
    Produce answers back from the second quarter of the run until the kill."""
    with (
        FaultProxy() as proxy,
        BrokerProcess(
            tmp_path / "data",
            tmp_path / "sluice-serve.log",
            settings={"advertised.listeners": proxy.address},
        ) as broker,
    ):
        proxy.forward_to("127.0.0.1", broker.port)
        broker.start()
        topic = f"crash-idempotence-{'on' if idempotent else 'off'}"
        with WireClient("127.0.0.1", broker.port) as admin:
            create_topic(admin, topic, PARTITIONS)
        messages = workload()
        errors: list[ck.KafkaError] = []
        outcome: list[str | None] = ["not reported"] * len(messages)
        offsets: dict[int, int] = {}

        def reporter(i: int) -> Callable[[ck.KafkaError | None, ck.Message], None]:
            def report(err: ck.KafkaError | None, msg: ck.Message) -> None:
                outcome[i] = None if err is None else str(err)
                if err is None:
                    offset = msg.offset()
                    offsets[i] = -1 if offset is None else offset

            return report

        producer = ck.Producer(
            confluent_config(
                proxy.address,
                **{
                    "enable.idempotence": idempotent,
                    "acks": "all",
                    "max.in.flight.requests.per.connection": 5,
                    "batch.num.messages": 20,
                    "linger.ms": 1,
                    "message.timeout.ms": int(DEADLINE * 1000),
                    "reconnect.backoff.ms": 10,
                    "reconnect.backoff.max.ms": 200,
                    "error_cb": errors.append,
                },
            )
        )
        quarter = len(messages) // 4
        kill_at, restart_at = 2 * quarter, 2 * quarter + KILLED_FOR
        held_at_kill = acknowledged_at_kill = 0
        try:
            for i, m in enumerate(messages):
                if i == quarter:  # the first quarter acknowledged, answers are held back
                    assert producer.flush(DEADLINE) == 0, "deliveries still pending"
                    proxy.hold_answers()
                elif i == kill_at:
                    deadline = time.monotonic() + DEADLINE
                    while proxy.stats.held < HELD_AT_KILL:
                        assert time.monotonic() < deadline, proxy.stats
                        producer.poll(0.01)
                    held_at_kill, acknowledged_at_kill = proxy.stats.held, len(offsets)
                    broker.kill()
                    # The held answers die with their connections; then hold no more.
                    while proxy.stats.held > 0:
                        assert time.monotonic() < deadline, proxy.stats
                        producer.poll(0.01)
                    proxy.release_answers()
                elif i == restart_at:  # the messages since the kill waited in the producer
                    broker.start()
                producer.produce(
                    topic, key=m.key, value=m.value, partition=m.partition, on_delivery=reporter(i)
                )
                producer.poll(0)
            assert producer.flush(DEADLINE) == 0, "deliveries still pending"
        finally:
            close_confluent(producer)

        fatal = [e for e in errors if e.fatal()]
        assert not fatal, f"the producer was fenced or failed: {fatal}"
        failed = [(m.value, e) for m, e in zip(messages, outcome, strict=True) if e is not None]
        assert not failed, f"{len(failed)} messages not acknowledged, e.g. {failed[:3]}"
        assert proxy.stats.lost >= held_at_kill
        stored = read_back(broker.port, topic)
        print(
            f"\nidempotence {'on' if idempotent else 'off'}: SIGKILL after {acknowledged_at_kill}"
            f" of {kill_at} messages were acknowledged, {held_at_kill} Produce answers held "
            f"back; errors reported: {dict(Counter(e.name() for e in errors))}; "
            f"{stored.duplicates()} duplicate records stored"
        )
        return CrashRun(messages, stored, offsets, producer_identities(broker.data_dir, topic))


def test_idempotent_producer_continues_through_a_sigkill(tmp_path: Path) -> None:
    """Each partition holds exactly its messages in send order, each at the offset its
    acknowledgement named, all from one producer id and epoch: the batches in flight at the
    kill were neither lost nor written twice, and the producer never had to start over."""
    run = stream_through_a_sigkill(tmp_path, idempotent=True)
    for p in range(PARTITIONS):
        sent = [m.value for m in run.messages if m.partition == p]
        assert run.stored.partitions[p] == sent, (
            f"partition {p}: {len(run.stored.partitions[p])} records stored, {len(sent)} sent, "
            f"{run.stored.duplicates()} duplicates in the topic"
        )
    for i, offset in run.offsets.items():  # a retried batch is acknowledged where it was stored
        m = run.messages[i]
        assert offset >= 0, f"{m.value!r} acknowledged without its offset"
        assert run.stored.partitions[m.partition][offset] == m.value
    assert len(run.identities) == 1, f"the producer started over: {run.identities}"


def test_without_idempotence_a_sigkill_makes_duplicates(tmp_path: Path) -> None:
    """The control run: the batches whose answers died with the broker are written again."""
    run = stream_through_a_sigkill(tmp_path, idempotent=False)
    for p in range(PARTITIONS):
        assert set(run.stored.partitions[p]) == {m.value for m in run.messages if m.partition == p}
    assert run.stored.duplicates() > 0, "no duplicates: the kill found nothing in flight"
    assert run.identities == {(-1, -1)}


# -- kafka-python's default producer ---------------------------------------------------------------


def test_default_kafka_python_producer_round_trips(broker: EmbeddedBroker) -> None:
    """``kafka.KafkaProducer()`` with nothing but the address: kafka-python 3 turns idempotence
    on by default, so this is what most of its users run."""
    topic = "default-kafka-python-producer"
    with WireClient.to(broker) as admin:
        create_topic(admin, topic, PARTITIONS)
    messages = workload()[:100]
    producer = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    try:
        futures = [
            producer.send(topic, key=m.key, value=m.value, partition=m.partition) for m in messages
        ]
        producer.flush(DEADLINE)
        offsets = [f.get(0).offset for f in futures]
    finally:
        producer.close(10)
    stored = read_back(broker.port, topic)
    for p in range(PARTITIONS):
        assert stored.partitions[p] == [m.value for m in messages if m.partition == p]
    for m, offset in zip(messages, offsets, strict=True):
        assert stored.partitions[m.partition][offset] == m.value
    identities = producer_identities(broker.data_dir, topic)
    assert all(pid >= 0 for pid, _ in identities), "the default producer was not idempotent"
