"""sluice's asyncio client toolkit: the production strategies (synchronous, concurrent, bounded
and ordered, batch), a consumer whose memory one knob bounds, with concurrent processing,
watermark commits, retries and dead-letter topics, and metrics, on librdkafka, for any
Kafka-compatible broker (docs/client.md)."""

from sluice.client.consumer import Consumer
from sluice.client.errors import (
    ConfigurationError,
    ConsumerClosedError,
    ConsumerError,
    DeliveryError,
    DeserializationError,
    InvalidArgumentError,
    NotSentError,
    PartitionRevokedError,
    ProcessingError,
    ProducerClosedError,
    ProducerError,
    QueueFullError,
    RebalanceCallbackError,
    RecordError,
    SerializationError,
    UndeliveredError,
    WrongEventLoopError,
)
from sluice.client.ordered import OrderedSends
from sluice.client.producer import Producer
from sluice.client.records import ConsumerRecord, Record
from sluice.client.results import BatchResults, RecordMetadata
from sluice.client.runner import Shed

__all__ = [
    "BatchResults",
    "ConfigurationError",
    "Consumer",
    "ConsumerClosedError",
    "ConsumerError",
    "ConsumerRecord",
    "DeliveryError",
    "DeserializationError",
    "InvalidArgumentError",
    "NotSentError",
    "OrderedSends",
    "PartitionRevokedError",
    "ProcessingError",
    "Producer",
    "ProducerClosedError",
    "ProducerError",
    "QueueFullError",
    "RebalanceCallbackError",
    "Record",
    "RecordError",
    "RecordMetadata",
    "SerializationError",
    "Shed",
    "UndeliveredError",
    "WrongEventLoopError",
]
