"""``send_ordered`` through a broker SIGKILL and restart: every record is stored once, in order,
and every result, yielded in submission order, names where its record is.

The producer talks to a ``sluice serve`` child through the fault proxy (tests/proxy.py), which
holds Produce answers back from a quarter of the way in until the kill, so the broker dies with
batches stored that the producer never heard of: the restarted broker must recognise them as
duplicates from its log alone (the idempotent producer, the toolkit's default, sends them
again). While the broker is down the window fills and waits; the broker comes back once it is
waiting.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sluice.client import Producer, Record, RecordMetadata
from sluice.testing import BrokerProcess, create_topic
from tests.clients.conftest import stored_batches
from tests.proxy import FaultProxy
from tests.server.wire import WireClient, fetch_all_values

PARTITIONS = 5
KEYS = 20
MESSAGES = 2_000
BOUND = 100
"""The window's max_in_flight."""
HELD_AT_KILL = 3
"""Produce answers the broker has sent, and the producer not yet seen, when the broker dies."""
DEADLINE = 120.0
"""Seconds for the whole run; reached only when broken."""


def workload(topic: str) -> list[Record]:
    """Keyed records, each key always to the same partition; a value names its key and its
    number within the key, so a duplicate or a reordering shows in the values alone."""
    out = []
    for n in range(MESSAGES):
        key = f"key-{n % KEYS:02d}"
        out.append(Record(topic, f"{key}:{n // KEYS:05d}".encode(), key=key.encode(),
                          partition=n % KEYS % PARTITIONS))
    return out


async def until(condition: str, check: object, deadline: float) -> None:
    """Wait for ``check()`` to hold (a state the test drives towards, polled every 10 ms)."""
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never: {condition}"
        await asyncio.sleep(0.01)


def test_send_ordered_delivers_every_record_once_in_order_through_a_sigkill(
    tmp_path: Path,
) -> None:
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
        topic = create_topic(broker.bootstrap_servers, "crash-ordered", PARTITIONS)
        records = workload(topic)
        held_at_kill: list[int] = []
        deadline = time.monotonic() + DEADLINE

        async def crash(window: object) -> None:
            await until("answers held", lambda: proxy.stats.held >= HELD_AT_KILL, deadline)
            held_at_kill.append(proxy.stats.held)
            await asyncio.to_thread(broker.kill)
            # The held answers die with their connections; then hold no more.
            await until("held answers lost", lambda: proxy.stats.held == 0, deadline)
            proxy.release_answers()
            # The window submits what it may, then waits for its head, whose answer died.
            await until("the window stuck", lambda: window.waiting, deadline)  # type: ignore[attr-defined]
            await asyncio.to_thread(broker.start)

        async def go() -> list[RecordMetadata]:
            async with Producer(
                proxy.address,
                metrics_registry=None,
                config={
                    "linger.ms": 1,
                    "batch.num.messages": 20,  # many Produce requests, for the proxy to hold
                    "message.timeout.ms": int(DEADLINE * 1000),
                    "reconnect.backoff.ms": 10,
                    "reconnect.backoff.max.ms": 200,
                },
            ) as p:
                window = p.send_ordered(records, max_in_flight=BOUND)
                crashing: asyncio.Future[None] | None = None
                results = []
                async for result in window:
                    results.append(result)
                    if len(results) == MESSAGES // 4:
                        proxy.hold_answers()
                        crashing = asyncio.ensure_future(crash(window))
                    assert window.outstanding <= BOUND
                assert crashing is not None
                await crashing
                return results

        results = asyncio.run(asyncio.wait_for(go(), DEADLINE))
        assert held_at_kill and proxy.stats.lost >= held_at_kill[0]
        assert [r.error for r in results] == [None] * MESSAGES

        with WireClient("127.0.0.1", broker.port) as client:
            stored = {p: fetch_all_values(client, topic, p) for p in range(PARTITIONS)}
        for p in range(PARTITIONS):  # each record once, in the order sent
            assert stored[p] == [r.value for r in records if r.partition == p], (
                f"partition {p}: {len(stored[p])} records stored"
            )
        for record, result in zip(records, results, strict=True):  # results in submission order
            assert result.partition == record.partition
            assert stored[result.partition][result.offset] == record.value
        identities = {
            (h.producer_id, h.producer_epoch)
            for p in range(PARTITIONS)
            for h in stored_batches(broker.data_dir, topic, p)
        }
        assert len(identities) == 1 and min(identities)[0] >= 0, identities  # never started over
