"""pytest plugin (auto-loaded when sluice is installed): ``sluice_broker`` and ``sluice_process``.

Each test gets a real broker on a free loopback port with its own temporary data directory,
stopped cleanly when the test ends: in the test's process (``sluice_broker``, fast), or as a
``sluice serve`` child process that the test may SIGKILL and start again (``sluice_process``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.testing.embedded import EmbeddedBroker
from sluice.testing.process import BrokerProcess


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
