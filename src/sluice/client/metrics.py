"""A producer's metrics: plain counters, read as a snapshot dict or scraped by prometheus-client
through a collector.

The delivery callbacks count deliveries and append each latency to a list; the loop buckets
that list once per poll (:meth:`ProducerMetrics.bucket_latencies`: a sort and a bisect per
bucket bound), and so does every read. A ``bisect`` per record cost a delivery callback about a
quarter of its time, and prometheus-client's own ``Histogram.observe`` takes a lock per call,
so the collector reads these counters at scrape time instead.

Names follow the OpenTelemetry messaging conventions where they exist, as Prometheus spells
them: ``messaging.client.operation.duration`` (a histogram, seconds) is
``messaging_client_operation_duration_seconds``; ``messaging.client.sent.messages`` is
``messaging_client_sent_messages_total``, a failed record counted with an ``error_type`` label
(OpenTelemetry's ``error.type``) and a delivered one without. The rest have no OpenTelemetry
name and are ``sluice_client_*``.
"""

from __future__ import annotations

import json
import threading
import weakref
from bisect import bisect_right
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sluice.client.errors import ConfigurationError

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
)
"""Upper bounds, seconds: from a loopback round trip to the default ``delivery.timeout.ms``."""


class ProducerMetrics:
    """One producer's counters. The delivery callbacks write the delivery counters (one at a
    time, see :mod:`sluice.client.sinks`), the loop the rest; the librdkafka statistics arrive
    on the poll thread as one whole dict (a single assignment)."""

    def __init__(
        self,
        client_id: str,
        *,
        queue_max_messages: int,
        queue_max_bytes: int,
    ) -> None:
        self.client_id = client_id
        self.queue_max_messages = queue_max_messages
        self.queue_max_bytes = queue_max_bytes
        # Written by the tokens (delivery callbacks), one at a time, read by the loop:
        self.latencies: list[float] = []
        """Delivered records' latencies not yet bucketed, appended by the tokens."""
        self._tallies: dict[int, list[int]] = {}
        """Each sink's [records delivered], written by its tokens (a counter per sink rather
        than one shared: a token's every operation counts)."""
        self._retired = 0
        """The tallies of sinks that are done, added up."""
        # Bucketed from ``latencies`` (under ``_bucketing``: the loop and a scrape may race):
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._bucketing = threading.Lock()
        # Written by the loop:
        self.accepted = 0
        """Records librdkafka took (dead-letter copies included)."""
        self.accepted_bytes = 0
        self.failure_reports = 0
        """Failed delivery reports the loop has handled."""
        self.failed: dict[str, int] = {}
        """Records that finally failed, by error name (dead-lettered ones included)."""
        self.dead_lettered = 0
        self.dead_letter_failed = 0
        self.peak_in_flight = 0
        self.statistics: dict[str, Any] | None = None
        """librdkafka's latest statistics (``statistics.interval.ms``), parsed."""

    def tally(self) -> list[int]:
        """A new sink's delivery counter, [records delivered], counted from now on."""
        tally = [0]
        self._tallies[id(tally)] = tally
        return tally

    def retire(self, tally: list[int]) -> None:
        """A sink is done (or gone): keep its count, forget the counter. Idempotent."""
        if self._tallies.pop(id(tally), None) is not None:
            self._retired += tally[0]

    @property
    def sent(self) -> int:
        """Records delivered (dead-letter copies included)."""
        return self._retired + sum(t[0] for t in list(self._tallies.values()))

    def bucket_latencies(self) -> None:
        """Move the latencies the tokens appended into the histogram: sorted, each bucket's
        count is the difference of two bisections (a poll's latencies arrive nearly sorted,
        which is what ``sorted`` is fastest at)."""
        latencies = self.latencies
        if not latencies:
            return
        with self._bucketing:
            n = len(latencies)  # the tokens may append meanwhile: take these n, leave the rest
            taken = sorted(latencies[:n])
            del latencies[:n]
            counts = self._latency_counts
            below = 0
            for i, bound in enumerate(LATENCY_BUCKETS):
                upto = bisect_right(taken, bound, below)
                counts[i] += upto - below
                below = upto
            counts[-1] += n - below
            self._latency_sum += sum(taken)

    @property
    def latency_counts(self) -> list[int]:
        """Delivered records per latency bucket (:data:`LATENCY_BUCKETS`, then +Inf)."""
        self.bucket_latencies()
        return self._latency_counts

    @property
    def latency_sum(self) -> float:
        self.bucket_latencies()
        return self._latency_sum

    @property
    def in_flight(self) -> int:
        """Records handed to librdkafka and not yet reported (dead-letter copies included)."""
        return self.accepted - self.sent - self.failure_reports

    @property
    def in_flight_bytes(self) -> int:
        """Their value bytes, estimated as in-flight records times the average value size of
        the records accepted so far (counting each record's bytes back would cost every
        delivery a little)."""
        if not self.accepted:
            return 0
        return round(self.accepted_bytes / self.accepted * self.in_flight)

    def count_failure(self, name: str) -> None:
        self.failed[name] = self.failed.get(name, 0) + 1

    def take_statistics(self, raw: str) -> None:
        """librdkafka's ``stats_cb``: the JSON document, parsed once (on the poll thread)."""
        self.statistics = json.loads(raw)

    # -- read ------------------------------------------------------------------------------

    @property
    def retried(self) -> int | None:
        """Produce requests librdkafka retried (its ``txretries`` summed over brokers), from the
        latest statistics; None unless ``statistics.interval.ms`` is set. librdkafka reports
        retries per request, not per record."""
        stats = self.statistics
        if stats is None:
            return None
        return sum(int(b.get("txretries", 0)) for b in stats.get("brokers", {}).values())

    @property
    def latency_count(self) -> int:
        return sum(self.latency_counts)

    def latency_quantile(self, q: float) -> float | None:
        """The ``q`` quantile of delivery latency, interpolated within its bucket as Prometheus'
        ``histogram_quantile`` does; None before the first delivery."""
        total = self.latency_count
        if total == 0:
            return None
        rank = q * total
        seen = 0
        lower = 0.0
        for i, n in enumerate(self.latency_counts):
            upper = LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else LATENCY_BUCKETS[-1]
            if n and seen + n >= rank:
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
            lower = upper
        return LATENCY_BUCKETS[-1]

    def queue_fill(self) -> float:
        """How full librdkafka's queue is, 0..1: the larger of its message and byte fill, by
        the records in flight (each holds its place in the queue until its report is served).
        Not ``len()`` of the producer: that also counts librdkafka's events waiting for a
        poll (a statistics document, an error), so an idle producer read a fill above 0."""
        in_flight = max(0, self.in_flight)
        by_count = in_flight / self.queue_max_messages
        by_bytes = max(0, self.in_flight_bytes) / self.queue_max_bytes
        return min(1.0, max(by_count, by_bytes))

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain data (safe to ``json.dumps``)."""
        return {
            "client_id": self.client_id,
            "sent": self.sent,
            "failed": sum(self.failed.values()),
            "failed_by_error": dict(self.failed),
            "dead_lettered": self.dead_lettered,
            "dead_letter_failed": self.dead_letter_failed,
            "retried": self.retried,
            "in_flight": self.in_flight,
            "in_flight_bytes": self.in_flight_bytes,
            "peak_in_flight": self.peak_in_flight,
            "queue_fill": self.queue_fill(),
            "latency": {
                "count": self.latency_count,
                "sum": self.latency_sum,
                "p50": self.latency_quantile(0.5),
                "p99": self.latency_quantile(0.99),
                "buckets": dict(zip([*LATENCY_BUCKETS, float("inf")], self.latency_counts, strict=True)),
            },
            "librdkafka": self.statistics,
        }


# -- Prometheus ------------------------------------------------------------------------------

SYSTEM = "kafka"
_LABELS = ["messaging_system", "messaging_client_id"]


class ProducerCollector:
    """Yields every registered producer's metrics at scrape time; one per registry, so that two
    producers never register the same metric names twice. Producers sharing a ``client.id`` are
    added together (one series per client id)."""

    def __init__(self) -> None:
        self._producers: weakref.WeakSet[ProducerMetrics] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, metrics: ProducerMetrics) -> None:
        with self._lock:
            self._producers.add(metrics)

    def discard(self, metrics: ProducerMetrics) -> None:
        with self._lock:
            self._producers.discard(metrics)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            producers = list(self._producers)
        by_client: dict[str, list[ProducerMetrics]] = {}
        for p in producers:
            by_client.setdefault(p.client_id, []).append(p)

        duration = HistogramMetricFamily(
            "messaging_client_operation_duration_seconds",
            "Delivery latency of sent records, from handing them to librdkafka to the broker's "
            "acknowledgement (messaging.client.operation.duration, operation send)",
            labels=[*_LABELS, "messaging_operation_name"],
            unit="",
        )
        sent = CounterMetricFamily(
            "messaging_client_sent_messages",
            "Records sent: delivered (no error_type) or finally failed (error_type set) "
            "(messaging.client.sent.messages)",
            labels=[*_LABELS, "error_type"],
        )
        dead = CounterMetricFamily(
            "sluice_client_dead_lettered_messages",
            "Failed records written to the dead-letter topic",
            labels=_LABELS,
        )
        dead_failed = CounterMetricFamily(
            "sluice_client_dead_letter_failed_messages",
            "Failed records whose dead-letter copy failed too",
            labels=_LABELS,
        )
        in_flight = GaugeMetricFamily(
            "sluice_client_in_flight_messages",
            "Records handed to librdkafka, not yet reported delivered or failed",
            labels=_LABELS,
        )
        in_flight_bytes = GaugeMetricFamily(
            "sluice_client_in_flight_bytes",
            "Key and value bytes of the in-flight records",
            labels=_LABELS,
        )
        fill = GaugeMetricFamily(
            "sluice_client_queue_fill_ratio",
            "How full librdkafka's producer queue is (queue.buffering.max.messages/kbytes), 0..1",
            labels=_LABELS,
        )
        retried = CounterMetricFamily(
            "sluice_client_retried_requests",
            "Produce requests librdkafka retried (from its statistics; needs "
            "statistics.interval.ms)",
            labels=_LABELS,
        )
        for client_id, group in sorted(by_client.items()):
            labels = [SYSTEM, client_id]
            each = [p.latency_counts for p in group]
            counts = [sum(c[i] for c in each) for i in range(len(LATENCY_BUCKETS) + 1)]
            cumulative, buckets = 0, []
            for bound, n in zip([*LATENCY_BUCKETS, float("inf")], counts, strict=True):
                cumulative += n
                buckets.append((_bound(bound), cumulative))
            duration.add_metric(
                [*labels, "send"], buckets, sum_value=sum(p.latency_sum for p in group)
            )
            sent.add_metric([*labels, ""], sum(p.sent for p in group))
            failed: dict[str, int] = {}
            for p in group:
                for name, n in p.failed.items():
                    failed[name] = failed.get(name, 0) + n
            for name, n in sorted(failed.items()):
                sent.add_metric([*labels, name], n)
            dead.add_metric(labels, sum(p.dead_lettered for p in group))
            dead_failed.add_metric(labels, sum(p.dead_letter_failed for p in group))
            in_flight.add_metric(labels, sum(p.in_flight for p in group))
            in_flight_bytes.add_metric(labels, sum(p.in_flight_bytes for p in group))
            fill.add_metric(labels, max(p.queue_fill() for p in group))
            retries = [r for p in group if (r := p.retried) is not None]
            if retries:
                retried.add_metric(labels, sum(retries))
        yield from (duration, sent, dead, dead_failed, in_flight, in_flight_bytes, fill, retried)


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, ProducerCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


DEFAULT_REGISTRY: Any = object()
"""The clients' ``metrics_registry`` default: prometheus-client's own registry (an explicit None
means no Prometheus metrics at all)."""


def registry_of(registry: object) -> CollectorRegistry:
    """The registry a collector goes to: prometheus-client's default one for None or
    :data:`DEFAULT_REGISTRY`;
    :class:`ConfigurationError` for anything that is not a registry (a client's
    ``metrics_registry=5`` failed deep in the weak mapping of collectors, as "cannot create
    weak reference to 'int' object")."""
    if registry is None or registry is DEFAULT_REGISTRY:
        return REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise ConfigurationError(
            "metrics_registry must be a prometheus_client CollectorRegistry, or None for no "
            f"Prometheus metrics; got {type(registry).__name__}"
        )
    return registry


def collector_for(registry: CollectorRegistry | None = None) -> ProducerCollector:
    """The producers' collector of ``registry`` (prometheus-client's default one if None),
    registered there on first use."""
    registry = registry_of(registry)
    with _collectors_lock:
        found = _collectors.get(registry)
        if found is None:
            found = _collectors[registry] = ProducerCollector()
            registry.register(found)
        return found
