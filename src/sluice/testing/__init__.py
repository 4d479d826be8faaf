"""Test Kafka code against a real broker: sluice in the test's process (:class:`EmbeddedBroker`)
or as a child process (:class:`BrokerProcess`), topics of its own for each test, helpers to
produce and read back records, and scripted faults. The pytest fixtures (``sluice_broker``,
``sluice_fresh_broker``, ``sluice_topic``, ``sluice_process``) come from
:mod:`sluice.testing.plugin`, which installing sluice registers. See docs/testing.md.

The names are imported on first use: pytest imports the plugin (and so this package) in every
run of every project that has sluice installed, and most of those never start a broker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluice.testing.cluster import Cluster as Cluster
    from sluice.testing.cluster import ConsumeTimeout as ConsumeTimeout
    from sluice.testing.cluster import ExternalCluster as ExternalCluster
    from sluice.testing.cluster import NotSupportedHere as NotSupportedHere
    from sluice.testing.cluster import ProduceError as ProduceError
    from sluice.testing.cluster import Record as Record
    from sluice.testing.embedded import EmbeddedBroker as EmbeddedBroker
    from sluice.testing.faults import Fault as Fault
    from sluice.testing.faults import Faults as Faults
    from sluice.testing.faults import PausedAppends as PausedAppends
    from sluice.testing.process import BrokerProcess as BrokerProcess
    from sluice.testing.topics import TopicCreationError as TopicCreationError
    from sluice.testing.topics import TopicDeletionError as TopicDeletionError
    from sluice.testing.topics import create_topic as create_topic
    from sluice.testing.topics import create_topics as create_topics
    from sluice.testing.topics import delete_topics as delete_topics
    from sluice.testing.topics import unique_topic_name as unique_topic_name

_WHERE = {
    "BrokerProcess": "process",
    "Cluster": "cluster",
    "ConsumeTimeout": "cluster",
    "EmbeddedBroker": "embedded",
    "ExternalCluster": "cluster",
    "Fault": "faults",
    "Faults": "faults",
    "NotSupportedHere": "cluster",
    "PausedAppends": "faults",
    "ProduceError": "cluster",
    "Record": "cluster",
    "TopicCreationError": "topics",
    "TopicDeletionError": "topics",
    "create_topic": "topics",
    "create_topics": "topics",
    "delete_topics": "topics",
    "unique_topic_name": "topics",
}

__all__ = [
    "BrokerProcess",
    "Cluster",
    "ConsumeTimeout",
    "EmbeddedBroker",
    "ExternalCluster",
    "Fault",
    "Faults",
    "NotSupportedHere",
    "PausedAppends",
    "ProduceError",
    "Record",
    "TopicCreationError",
    "TopicDeletionError",
    "create_topic",
    "create_topics",
    "delete_topics",
    "unique_topic_name",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sluice.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sluice.testing.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
