"""sluice's asyncio client toolkit: the production strategies (synchronous, concurrent, bounded
and ordered, batch), dead-letter topics and metrics, on librdkafka, for any Kafka-compatible
broker (docs/client.md)."""

from sluice.client.errors import (
    ConfigurationError,
    DeliveryError,
    NotSentError,
    ProducerClosedError,
    ProducerError,
    QueueFullError,
    RecordError,
    SerializationError,
    UndeliveredError,
)
from sluice.client.ordered import OrderedSends
from sluice.client.producer import Producer
from sluice.client.records import Record
from sluice.client.results import BatchResults, RecordMetadata

__all__ = [
    "BatchResults",
    "ConfigurationError",
    "DeliveryError",
    "NotSentError",
    "OrderedSends",
    "Producer",
    "ProducerClosedError",
    "ProducerError",
    "QueueFullError",
    "Record",
    "RecordError",
    "RecordMetadata",
    "SerializationError",
    "UndeliveredError",
]
