"""pytest plugin (auto-loaded when sluice is installed): a ``sluice_broker`` fixture.

Each test gets a real broker on a free loopback port with its own temporary data directory,
stopped cleanly when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.testing.embedded import EmbeddedBroker


@pytest.fixture
def sluice_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(tmp_path / "sluice-data")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
