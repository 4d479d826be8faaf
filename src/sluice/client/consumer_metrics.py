"""A consumer's metrics: plain counters on the loop, read as a snapshot dict or scraped by
prometheus-client through a collector, named as the producer's are (:mod:`sluice.client.metrics`):
OpenTelemetry's ``messaging.process.duration`` (``messaging_process_duration_seconds``) and
``messaging.client.consumed.messages`` (``messaging_client_consumed_messages_total``), the rest
``sluice_client_consumer_*``."""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sluice.client.metrics import _LABELS, LATENCY_BUCKETS, SYSTEM, _bound, registry_of

TP = tuple[str, int]


class ConsumerMetrics:
    """One consumer's counters, written on the event loop. ``lag``, ``buffered_*`` and
    ``in_processing`` are read from the consumer when asked."""

    def __init__(
        self,
        client_id: str,
        group_id: str | None,
        *,
        lag: Callable[[], dict[TP, int]],
        buffered: Callable[[], tuple[int, int]],
        held_bytes: Callable[[], int],
        max_buffer_bytes: int,
    ) -> None:
        self.client_id = client_id
        self.group_id = group_id
        self._lag = lag
        self._buffered = buffered
        self._held_bytes = held_bytes
        self.max_buffer_bytes = max_buffer_bytes
        self.consumed = 0
        """Records handed to the application (``async for``, ``getmany``) or to ``run``."""
        self.consumed_bytes = 0
        self.processed = 0
        """Records ``run``'s handler finished without an error."""
        self.failed = 0
        """Records ``run`` gave up on (after their retries), dead-lettered or not."""
        self.retries = 0
        self.dead_lettered = 0
        self.shed: dict[str, int] = {}
        """Records the overload policy skipped, by reason (``max_age``, ``predicate``)."""
        self.deserialization_errors = 0
        self.commits = 0
        self.commit_failures = 0
        self.revocations = 0
        """Rebalances that took partitions from this consumer (revoked or lost), counted as
        they begin, before the records in processing drain."""
        self.in_processing = 0
        self.peak_held_bytes = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.statistics: dict[str, Any] | None = None

    def observe(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def latency_quantile(self, q: float) -> float | None:
        total = sum(self.latency_counts)
        if total == 0:
            return None
        rank, seen, lower = q * total, 0, 0.0
        for i, n in enumerate(self.latency_counts):
            upper = LATENCY_BUCKETS[min(i, len(LATENCY_BUCKETS) - 1)]
            if n and seen + n >= rank:
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
            lower = upper
        return LATENCY_BUCKETS[-1]

    def lag(self) -> dict[TP, int]:
        return self._lag()

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain data (safe to ``json.dumps``)."""
        records, nbytes = self._buffered()
        return {
            "client_id": self.client_id,
            "group_id": self.group_id,
            "consumed": self.consumed,
            "consumed_bytes": self.consumed_bytes,
            "processed": self.processed,
            "failed": self.failed,
            "retries": self.retries,
            "dead_lettered": self.dead_lettered,
            "shed": sum(self.shed.values()),
            "shed_by_reason": dict(self.shed),
            "deserialization_errors": self.deserialization_errors,
            "commits": self.commits,
            "commit_failures": self.commit_failures,
            "revocations": self.revocations,
            "buffered_records": records,
            "buffered_bytes": nbytes,
            "held_bytes": self._held_bytes(),
            "peak_held_bytes": self.peak_held_bytes,
            "max_buffer_bytes": self.max_buffer_bytes,
            "in_processing": self.in_processing,
            "lag": {f"{t}/{p}": n for (t, p), n in sorted(self.lag().items())},
            "process_duration": {
                "count": sum(self.latency_counts),
                "sum": self.latency_sum,
                "p50": self.latency_quantile(0.5),
                "p99": self.latency_quantile(0.99),
            },
            "librdkafka": self.statistics,
        }


_CONSUMER_LABELS = [*_LABELS, "messaging_consumer_group_name"]


class ConsumerCollector:
    """Every registered consumer's metrics at scrape time, one series per consumer (client id
    and group)."""

    def __init__(self) -> None:
        self._consumers: weakref.WeakSet[ConsumerMetrics] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, metrics: ConsumerMetrics) -> None:
        with self._lock:
            self._consumers.add(metrics)

    def discard(self, metrics: ConsumerMetrics) -> None:
        with self._lock:
            self._consumers.discard(metrics)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            consumers = list(self._consumers)
        labels = _CONSUMER_LABELS
        duration = HistogramMetricFamily(
            "messaging_process_duration_seconds",
            "Time run's handler took per record, retries and backoff included "
            "(messaging.process.duration)",
            labels=labels,
        )
        consumed = CounterMetricFamily(
            "messaging_client_consumed_messages",
            "Records handed to the application (messaging.client.consumed.messages)",
            labels=labels,
        )
        lag = GaugeMetricFamily(
            "sluice_client_consumer_lag_messages",
            "Records between the consumer's position and the partition's high watermark",
            labels=[*labels, "messaging_destination_name", "messaging_destination_partition_id"],
        )
        buffered = GaugeMetricFamily(
            "sluice_client_consumer_buffered_messages",
            "Fetched records waiting in the toolkit's buffer",
            labels=labels,
        )
        buffered_bytes = GaugeMetricFamily(
            "sluice_client_consumer_buffered_bytes",
            "Bytes the toolkit holds (buffer and records in processing), bounded by "
            "max_buffer_bytes with librdkafka's queue",
            labels=labels,
        )
        in_processing = GaugeMetricFamily(
            "sluice_client_consumer_in_processing_messages",
            "Records run's handlers are working on",
            labels=labels,
        )
        counters = {
            name: CounterMetricFamily(f"sluice_client_consumer_{name}", text, labels=labels)
            for name, text in (
                ("commits", "Offset commits that succeeded"),
                ("commit_failures", "Offset commits that failed"),
                ("revocations", "Rebalances that took partitions from this consumer"),
                ("retries", "Handler calls retried after a failure"),
                ("dead_lettered_messages", "Records run wrote to the dead-letter topic"),
                ("failed_messages", "Records run gave up on after their retries"),
                ("deserialization_errors", "Records the deserializer could not read"),
            )
        }
        shed = CounterMetricFamily(
            "sluice_client_consumer_shed_messages",
            "Records the overload policy skipped, by reason",
            labels=[*labels, "reason"],
        )
        for c in consumers:
            lv = [SYSTEM, c.client_id, c.group_id or ""]
            cumulative, buckets = 0, []
            for bound, n in zip([*LATENCY_BUCKETS, float("inf")], c.latency_counts, strict=True):
                cumulative += n
                buckets.append((_bound(bound), cumulative))
            duration.add_metric(lv, buckets, sum_value=c.latency_sum)
            consumed.add_metric(lv, c.consumed)
            for (topic, partition), n in sorted(c.lag().items()):
                lag.add_metric([*lv, topic, str(partition)], n)
            records, _ = c._buffered()
            buffered.add_metric(lv, records)
            buffered_bytes.add_metric(lv, c._held_bytes())
            in_processing.add_metric(lv, c.in_processing)
            counters["commits"].add_metric(lv, c.commits)
            counters["commit_failures"].add_metric(lv, c.commit_failures)
            counters["revocations"].add_metric(lv, c.revocations)
            counters["retries"].add_metric(lv, c.retries)
            counters["dead_lettered_messages"].add_metric(lv, c.dead_lettered)
            counters["failed_messages"].add_metric(lv, c.failed)
            counters["deserialization_errors"].add_metric(lv, c.deserialization_errors)
            for reason, n in sorted(c.shed.items()):
                shed.add_metric([*lv, reason], n)
        yield from (duration, consumed, lag, buffered, buffered_bytes, in_processing, shed)
        yield from counters.values()


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, ConsumerCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


def consumer_collector_for(registry: CollectorRegistry | None = None) -> ConsumerCollector:
    """The consumers' collector of ``registry`` (the default one if None), registered there on
    first use."""
    registry = registry_of(registry)
    with _collectors_lock:
        found = _collectors.get(registry)
        if found is None:
            found = _collectors[registry] = ConsumerCollector()
            registry.register(found)
        return found
