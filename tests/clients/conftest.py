"""Fixtures of the real-client tests: one shared broker, a fresh topic name per test
(:func:`sluice.testing.unique_topic_name`), and a few reference tools (an admin client, the
codecs stored on disk) that tests check against.

The ``sluice_fresh_broker`` fixture (one broker per test, restartable) comes from sluice's pytest
plugin, which installing sluice registers; the durability tests use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient  # type: ignore[import-untyped]

from sluice.protocol.records import BatchHeader, scan_batches
from sluice.storage.manager import partition_dir
from sluice.testing import EmbeddedBroker, create_topic, unique_topic_name
from tests.clients.adapters import ConfluentAdmin

NUM_PARTITIONS = 3
"""The shared broker's ``num.partitions``: what auto-created topics get (Kafka's default is 1,
which would not show that the setting is used)."""


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One broker for every test that does not restart it; tests keep apart by topic name."""
    with EmbeddedBroker(
        tmp_path_factory.mktemp("sluice-clients"),
        settings={
            "num.partitions": str(NUM_PARTITIONS),
            # Some tests write records stamped in 2023, long past the default retention; keep
            # the retention check (default every 5 min) out of a slow CI run.
            "log.retention.check.interval.ms": str(3_600_000),
        },
    ) as b:
        yield b


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses (derived from the test's id, so failures are readable)."""
    return unique_topic_name(request.node.nodeid.removeprefix("tests/clients/"))


@pytest.fixture
def admin(broker: EmbeddedBroker) -> Iterator[ConfluentAdmin]:
    """The reference admin client for tests that are about something else."""
    a = ConfluentAdmin(broker.bootstrap_servers)
    try:
        yield a
    finally:
        a.close()


@pytest.fixture(scope="module")
def kp_admin(broker: EmbeddedBroker) -> Iterator[Any]:
    """kafka-python's admin client on the shared broker, one a module."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        yield admin
    finally:
        admin.close()


@pytest.fixture
def make_topic(broker: EmbeddedBroker, topic: str) -> Callable[..., str]:
    """Create this test's topic with the given partitions and configs (``retention_ms=...``)."""

    def make(partitions: int, **configs: str) -> str:
        return create_topic(
            broker.bootstrap_servers,
            topic,
            partitions,
            configs={k.replace("_", "."): v for k, v in configs.items()},
        )

    return make


def stored_batches(data_dir: Path, topic: str, partition: int) -> list[BatchHeader]:
    """The header of every batch stored for a partition, read from its segment files (sluice
    stores batches byte for byte as produced, so these are what the client sent); each batch's
    CRC is checked on the way."""
    out: list[BatchHeader] = []
    for segment in sorted(partition_dir(data_dir, topic, partition).glob("*.log")):
        out.extend(scan_batches(segment.read_bytes()))
    return out
