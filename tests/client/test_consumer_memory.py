"""The founding report, reproduced and answered: a topic filled far faster than a 10 ms
handler drains it. A plain confluent-kafka consumer with librdkafka's defaults grows its
resident memory by its prefetch queue (``queued.max.messages.kbytes``, 64 MiB); the toolkit's
consumer stays within ``max_buffer_bytes`` plus a fixed overhead. Each consumer runs in a child
process (:mod:`sluice.bench.consumer_memory`, the benchmark's own child) whose RSS this process
samples every 100 ms; the assertions are on those samples."""

from __future__ import annotations

import threading

from sluice.bench.consumer_memory import MIB, Samples, fill, measure
from sluice.testing import unique_topic_name
from tests.client.conftest import Target

BUFFER = 8 * MIB
OVERHEAD = 16 * MIB
"""Allowed growth beyond max_buffer_bytes: measured 3-8 MiB with 10 KiB records (the
allocator's slack, librdkafka's per-broker buffers, Python objects); docs/client.md."""
SECONDS = 5.0


def test_rss_stays_within_max_buffer_bytes_where_librdkafka_defaults_grow(target: Target) -> None:
    topic, _ = target.topic("slow-consumer", 2)
    fill(target.bootstrap, topic, 64)
    common = ["--bootstrap", target.bootstrap, "--topic", topic, "--seconds", str(SECONDS),
              "--handler-ms", "10"]
    results: dict[str, Samples] = {}

    def case(label: str, args: list[str]) -> None:
        results[label] = measure(label, [*args, "--group", unique_topic_name("g"), *common])

    threads = [
        threading.Thread(target=case, args=("toolkit", ["toolkit", "--max-buffer-bytes", str(BUFFER)])),
        threading.Thread(target=case, args=("raw", ["raw"])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    toolkit, raw = results["toolkit"], results["raw"]
    for s in (toolkit, raw):
        print(f"{s.label}: baseline {s.baseline / MIB:.1f} MiB, peak growth "
              f"{(s.peak - s.baseline) / MIB:.1f} MiB over {len(s.rss)} samples, "
              f"{s.processed} processed")
    assert len(toolkit.rss) >= 20 and len(raw.rss) >= 20
    assert toolkit.processed > 50 and raw.processed > 50  # both were consuming all along
    assert max(toolkit.growth) <= BUFFER + OVERHEAD, toolkit.growth
    assert max(raw.growth) > BUFFER + OVERHEAD, raw.growth  # the founding report's growth
