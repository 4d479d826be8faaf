"""Testing asyncio code that uses aiokafka against a real broker."""

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from sluice.testing import EmbeddedBroker


async def forward_errors(bootstrap_servers: str, source: str, dlq: str, count: int) -> int:
    """The code under test: pass ``count`` events on, the ones that fail to a dead-letter topic."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap_servers,
        group_id=f"{source}-dlq",
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await consumer.start()
    await producer.start()
    dead = 0
    try:
        for _ in range(count):
            msg = await consumer.getone()
            if not msg.value.isdigit():
                await producer.send_and_wait(dlq, msg.value, headers=[("error", b"not a number")])
                dead += 1
    finally:
        await consumer.stop()
        await producer.stop()
    return dead


def test_bad_events_go_to_the_dead_letter_topic(sluice_broker, sluice_topic):
    dlq = sluice_broker.create_topic()
    sluice_broker.produce(sluice_topic, "1", "two", "3")
    dead = asyncio.run(forward_errors(sluice_broker.bootstrap_servers, sluice_topic, dlq, 3))
    assert dead == 1
    (record,) = sluice_broker.consume_until(dlq)
    assert (record.value, record.headers) == (b"two", (("error", b"not a number"),))


def test_a_broker_of_its_own_inside_the_event_loop():
    async def main() -> int:
        # started and stopped in a worker thread: the event loop is never blocked
        async with EmbeddedBroker(topics={"events": 1, "dead": 1}) as broker:
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
            await producer.start()
            try:
                await producer.send_and_wait("events", b"x")
            finally:
                await producer.stop()
            return await forward_errors(broker.bootstrap_servers, "events", "dead", 1)

    assert asyncio.run(main()) == 1
