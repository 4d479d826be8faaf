"""FastStream: its in-memory TestKafkaBroker, and its real KafkaBroker over the wire."""

import asyncio
import json
from typing import Any

from faststream.kafka import KafkaBroker, TestKafkaBroker
from pydantic import BaseModel


class Order(BaseModel):
    id: str
    amount: int


def build(bootstrap_servers: str, orders: str, totals: str) -> tuple[KafkaBroker, Any]:
    """The application under test: orders in, totals with VAT out."""
    broker = KafkaBroker(bootstrap_servers)

    @broker.subscriber(orders, group_id=f"{orders}-vat", auto_offset_reset="earliest")
    @broker.publisher(totals)
    async def add_vat(order: Order) -> dict[str, object]:
        return {"id": order.id, "total": order.amount * 12 // 10}

    return broker, add_vat


def test_in_memory():
    """No broker and no wire protocol: the handler is called directly (FastStream's own way)."""

    async def main() -> None:
        broker, add_vat = build("localhost:9092", "orders", "totals")
        async with TestKafkaBroker(broker) as test_broker:
            await test_broker.publish({"id": "1", "amount": 100}, "orders")
            add_vat.mock.assert_called_once_with({"id": "1", "amount": 100})

    asyncio.run(main())


def test_over_the_wire(sluice_broker, sluice_topic):
    """The real broker class: consumer group, partitions, serialization and all."""
    totals = sluice_broker.create_topic()

    async def main() -> list[dict[str, object]]:
        broker, _ = build(sluice_broker.bootstrap_servers, sluice_topic, totals)
        async with broker:
            await broker.start()
            for i in range(3):
                await broker.publish({"id": str(i), "amount": 100 * i}, sluice_topic)
            # the helpers block; run them off the event loop
            records = await asyncio.to_thread(sluice_broker.consume_until, totals, 3)
        return sorted((json.loads(r.value) for r in records), key=lambda t: t["id"])

    assert asyncio.run(main()) == [
        {"id": "0", "total": 0},
        {"id": "1", "total": 120},
        {"id": "2", "total": 240},
    ]
