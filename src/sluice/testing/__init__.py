"""Run a real sluice broker inside a Python process or a pytest fixture, and give each test
topics of its own."""

from sluice.testing.embedded import EmbeddedBroker
from sluice.testing.process import BrokerProcess
from sluice.testing.topics import TopicCreationError, create_topic, unique_topic_name

__all__ = [
    "BrokerProcess",
    "EmbeddedBroker",
    "TopicCreationError",
    "create_topic",
    "unique_topic_name",
]
