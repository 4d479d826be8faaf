"""Fixtures of the server tests: brokers with chosen settings, a bystander client, and a guard
that fails any test during which the broker logged an error (an exception in a connection
handler is a bug even when the connection is closed politely afterwards).

The plain ``sluice_fresh_broker`` fixture comes from sluice's pytest plugin (the ``pytest11`` entry
point in pyproject.toml), which these tests also use, so they check that it is registered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sluice.testing import EmbeddedBroker
from tests.server.wire import Witness

MakeBroker = Callable[..., EmbeddedBroker]
WitnessFor = Callable[[EmbeddedBroker], Witness]


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_broker_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test if any in-process broker logged at ERROR or above (set up first, so it is
    torn down last, after every broker the test started has stopped). Tests marked xfail (known
    bugs) are exempt: their failure is the expected one."""
    collector = _ErrorCollector()
    logger = logging.getLogger("sluice")
    logger.addHandler(collector)
    try:
        yield
    finally:
        logger.removeHandler(collector)
    if collector.records and request.node.get_closest_marker("xfail") is None:
        formatter = logging.Formatter("%(name)s: %(message)s")
        lines = [formatter.format(r) for r in collector.records]
        pytest.fail("the broker logged errors:\n" + "\n".join(lines))


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[MakeBroker]:
    """Start a broker with Kafka-named settings, e.g. ``make_broker(**{"max.connections": "3"})``;
    every broker started is stopped at the end of the test."""
    started: list[EmbeddedBroker] = []

    def make(**settings: str) -> EmbeddedBroker:
        broker = EmbeddedBroker(tmp_path / f"data-{len(started)}", settings=settings)
        broker.start()
        started.append(broker)
        return broker

    yield make
    for broker in reversed(started):
        broker.stop()


@pytest.fixture
def witness(sluice_fresh_broker: EmbeddedBroker) -> Iterator[Witness]:
    w = Witness(sluice_fresh_broker)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture
def witness_for() -> Iterator[WitnessFor]:
    """A witness on a broker of the test's own making (``make_broker``), closed at the end."""
    made: list[Witness] = []

    def make(broker: EmbeddedBroker) -> Witness:
        made.append(Witness(broker))
        return made[-1]

    yield make
    for w in made:
        w.close()
