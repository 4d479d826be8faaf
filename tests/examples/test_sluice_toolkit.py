"""Testing code that uses sluice's own client toolkit (sluice.client) against a real broker."""

import asyncio

from sluice.client import Producer, Record


async def publish(bootstrap_servers: str, topic: str, values: list[bytes]) -> list[int]:
    """The code under test: send in order with a bounded window; what fails goes to a dead-letter
    topic. Returns the offsets of the records stored in ``topic`` (-1 for a dead-lettered one)."""
    records = [Record(topic, value, key=b"k") for value in values]
    offsets = []
    async with Producer(bootstrap_servers, dead_letter_topic="{topic}.dlq") as producer:
        async for result in producer.send_ordered(records, max_in_flight=100):
            offsets.append(result.offset)
    return offsets


def test_an_oversized_record_goes_to_the_dead_letter_topic(sluice_broker, sluice_topic):
    dlq = sluice_broker.create_topic(f"{sluice_topic}.dlq")
    values = [b"first", b"x" * 2_000_000, b"third"]  # the middle one is over message.max.bytes
    offsets = asyncio.run(publish(sluice_broker.bootstrap_servers, sluice_topic, values))
    assert offsets[1] == -1 and offsets[2] > offsets[0] >= 0  # in order, and the rest went on
    assert [r.value for r in sluice_broker.consume_all(sluice_topic)] == [b"first", b"third"]
    (copy,) = sluice_broker.consume_until(dlq)
    headers = dict(copy.headers)
    assert headers["__connect.errors.topic"] == sluice_topic.encode()
    assert headers["__connect.errors.error.name"] == b"MSG_SIZE_TOO_LARGE"
    assert copy.value is None  # a record too large is copied without its value


def test_a_lost_answer_is_retried_without_a_duplicate(sluice_broker, sluice_topic):
    # the broker stores the next Produce but drops the connection instead of answering: the
    # toolkit's idempotent producer (on by default) retries, and the broker recognises the batch
    dropped = sluice_broker.faults.drop_after("Produce")
    offsets = asyncio.run(publish(sluice_broker.bootstrap_servers, sluice_topic, [b"once"]))
    assert dropped.hits == 1 and offsets == [0]
    assert [r.value for r in sluice_broker.consume_all(sluice_topic)] == [b"once"]
