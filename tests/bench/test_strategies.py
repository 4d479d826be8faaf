"""sluice.bench.strategies measures what it says: every strategy's case sends every record and
times it, with one latency per record; the table prints the medians."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sluice.bench.strategies import CONFIG, STRATEGIES, Result, run_case, table
from sluice.testing import EmbeddedBroker, create_topic, unique_topic_name


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_case_sends_every_record_once(broker: EmbeddedBroker, strategy: str) -> None:
    topic = create_topic(broker.bootstrap_servers, unique_topic_name(strategy))
    count = 20 if strategy in ("send", "send_ordered 1") else 300
    m = run_case(broker.bootstrap_servers, topic, strategy, 100, count, dict(CONFIG))
    assert (m.count, m.errors) == (count, 0)
    assert len(m.latencies) == count and all(0 < s < 60 for s in m.latencies)
    assert 0 < m.seconds < 60 and m.cpu > 0
    assert m.rss_peak >= m.rss_start > 0


def test_table_shows_medians_and_spread() -> None:
    r = Result(rates=[100.0, 300_000.0, 200_000.0], cpu_us=[3.0, 2.0, 9.0], p50=[1.0, 2.0, 3.0],
               p99=[4.0, 5.0, 6.0], peak=[50 * 2**20] * 3, growth=[10 * 2**20] * 3)
    text = table({("send_batch", 100): r}, ["send_batch", "send"], 100)
    assert "| send_batch | 200,000 (0k-300k) | 3.00 | 2.0 | 5.0 | 50 (+10) |" in text
    assert "| send | - | - | - | - | - |" in text
