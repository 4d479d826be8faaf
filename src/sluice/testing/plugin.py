"""pytest plugin (auto-loaded when sluice is installed): ``sluice_broker``, ``sluice_process``
and ``sluice_topic``.

Each test gets a real broker on a free loopback port with its own temporary data directory,
stopped cleanly when the test ends: in the test's process (``sluice_broker``, fast), or as a
``sluice serve`` child process that the test may SIGKILL and start again (``sluice_process``).
``sluice_topic`` is a one-partition topic on ``sluice_broker``, named after the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.testing.embedded import EmbeddedBroker
from sluice.testing.process import BrokerProcess
from sluice.testing.topics import create_topic, unique_topic_name


@pytest.fixture
def sluice_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(tmp_path / "sluice-data")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def sluice_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A started ``sluice serve`` child; its output is in ``tmp_path / "sluice-serve.log"``."""
    with BrokerProcess(tmp_path / "sluice-data", tmp_path / "sluice-serve.log") as broker:
        broker.start()
        yield broker


@pytest.fixture
def sluice_topic(sluice_broker: EmbeddedBroker, request: pytest.FixtureRequest) -> str:
    """A new one-partition topic on ``sluice_broker``, named after the test (made unique). For
    more partitions or topic configs, call :func:`sluice.testing.create_topic` instead."""
    name = unique_topic_name(request.node.name)
    return create_topic(sluice_broker.bootstrap_servers, name)
