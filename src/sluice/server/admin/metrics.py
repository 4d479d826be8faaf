"""``/metrics``: the broker's counters and its state in Prometheus' text format.

A scrape runs in two steps so that it never stalls the Kafka listener:

1. on the event loop, :func:`take_snapshot` copies the counters (requests, errors, latencies,
   traffic: a few hundred integers) and reads every partition's and group's state a slice at a
   time (:mod:`.state`), handing the loop back in between;
2. in a thread of its own, :func:`render` shapes that snapshot into metric families and text
   with prometheus-client (and reads /proc for the process metrics).

Names follow the exporters operators already have dashboards for, under a ``sluice_`` prefix:
kafka_exporter's for topics, partitions and consumer groups (``sluice_consumergroup_lag``,
``sluice_topic_partition_current_offset``...), Redpanda's public metrics for requests, traffic
and storage (``sluice_kafka_request_latency_seconds``, ``sluice_kafka_records_produced_total``,
``sluice_storage_disk_free_bytes``...). docs/monitoring.md lists every one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sluice.broker.stats import CONNECTION_CLOSED, LATENCY_BUCKETS
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.server.admin import state
from sluice.server.admin.context import ServerView
from sluice.storage.latency import FSYNC_BUCKETS

PREFIX = "sluice"


def api_name(api_key: int) -> str:
    """Kafka's request name (``Produce``, ``ApiVersions``), as its RequestMetrics label it."""
    try:
        return "".join(part.title() for part in ApiKey(api_key).name.split("_"))
    except ValueError:
        return str(api_key)


def error_name(code: int) -> str:
    if code == CONNECTION_CLOSED:
        return "CONNECTION_CLOSED"
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


@dataclass(slots=True)
class Snapshot:
    """Everything a scrape shows, as plain values copied on the event loop."""

    version: str
    uptime: float
    apis: list[tuple[int, int, dict[int, int], list[int], float]] = field(default_factory=list)
    """(api key, requests, errors by code, latency bucket counts, latency sum)."""
    fetched: dict[str, tuple[int, int]] = field(default_factory=dict)
    """Topic -> (bytes, records) sent to consumers."""
    topics: list[state.TopicView] = field(default_factory=list)
    groups: list[state.GroupView] = field(default_factory=list)
    kafka_connections: int = 0
    admin_connections: int = 0
    request_memory: int = 0
    fsync: tuple[list[int], float] = ([], 0.0)
    disk_total: int = 0
    disk_free: int = 0
    disk_full: bool = False
    cleaner: CleanerCounters | None = None


@dataclass(frozen=True, slots=True)
class CleanerCounters:
    """The log cleaner's counters (Kafka's LogCleaner and LogCleanerManager metrics)."""

    runs: int
    bytes_read: int
    bytes_written: int
    max_dirty_ratio: float
    uncleanable: int
    last_clean_ms: int


async def take_snapshot(server: ServerView, admin_connections: int, version: str) -> Snapshot:
    """Copy what a scrape needs, on the loop (partitions a slice at a time)."""
    broker = server.broker
    snap = Snapshot(version, time.monotonic() - server.started_at)
    snap.kafka_connections = len(server.connections)
    snap.admin_connections = admin_connections
    snap.request_memory = server.memory.used
    if broker is None:  # starting (recovering logs) or stopping
        return snap
    logs = broker.logs
    stats = broker.stats
    if stats is not None:
        stats.forget_topics_except(logs.topics)
        snap.apis = [
            (api, s.requests, dict(s.errors), list(s.buckets), s.seconds)
            for api, s in sorted(stats.apis.items())
        ]
        snap.fetched = {name: (t.bytes_out, t.records_out) for name, t in stats.topics.items()}
    snap.fsync = logs.fsync_times.snapshot()
    cleaner = logs.cleaner
    snap.cleaner = CleanerCounters(
        cleaner.runs,
        cleaner.bytes_read,
        cleaner.bytes_written,
        max(cleaner.dirty_ratios.values(), default=0.0),
        len(cleaner.uncleanable),
        cleaner.last_clean_ms,
    )
    snap.disk_full = logs.disk.full
    try:
        found = os.statvfs(logs.data_dir)
        snap.disk_total = found.f_blocks * found.f_frsize
        snap.disk_free = found.f_bavail * found.f_frsize
    except OSError:
        pass
    snap.topics = await state.topics(broker)
    snap.groups = await state.groups_with_offsets(broker)
    return snap


_PROCESS = ProcessCollector(namespace=PREFIX, registry=None)


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(snap: Snapshot) -> bytes:
    """The text exposition of ``snap`` and of this process (any thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*families(snap), *_PROCESS.collect()]))
    return generate_latest(registry)


def families(snap: Snapshot) -> Iterator[Metric]:
    p = PREFIX
    info = GaugeMetricFamily(f"{p}_build_info", "sluice's version (always 1).", labels=["version"])
    info.add_metric([snap.version], 1)
    yield info
    yield CounterMetricFamily(
        f"{p}_application_uptime_seconds", "Seconds since the broker started.", value=snap.uptime
    )

    # -- requests ------------------------------------------------------------------------------
    requests = CounterMetricFamily(
        f"{p}_kafka_requests", "Kafka requests answered, by API.", labels=["api"]
    )
    errors = CounterMetricFamily(
        f"{p}_kafka_request_errors",
        "Error codes in Kafka answers, by API and error (one per failed partition or resource; "
        "CONNECTION_CLOSED: answered by closing the connection).",
        labels=["api", "error"],
    )
    latency = HistogramMetricFamily(
        f"{p}_kafka_request_latency_seconds",
        "Kafka request latency, decoding to encoded answer (long polls include their wait).",
        labels=["api"],
    )
    for api, count, by_code, buckets, seconds in snap.apis:
        name = api_name(api)
        requests.add_metric([name], count)
        for code, n in sorted(by_code.items()):
            errors.add_metric([name, error_name(code)], n)
        latency.add_metric([name], _cumulative(LATENCY_BUCKETS, buckets), seconds)
    yield requests
    yield errors
    yield latency

    # -- traffic ---------------------------------------------------------------------------------
    request_bytes = CounterMetricFamily(
        f"{p}_kafka_request_bytes",
        "Record batch bytes produced to and fetched from each topic.",
        labels=["topic", "request"],
    )
    produced = CounterMetricFamily(
        f"{p}_kafka_records_produced",
        "Records producers appended to each topic since the broker started (batch headers' counts).",
        labels=["topic"],
    )
    fetched = CounterMetricFamily(
        f"{p}_kafka_records_fetched",
        "Records sent to consumers of each topic (whole batches sent).",
        labels=["topic"],
    )
    for topic in snap.topics:
        bytes_out, records_out = snap.fetched.get(topic.name, (0, 0))
        request_bytes.add_metric([topic.name, "produce"], topic.appended_bytes)
        request_bytes.add_metric([topic.name, "consume"], bytes_out)
        produced.add_metric([topic.name], topic.appended_records)
        fetched.add_metric([topic.name], records_out)
    yield request_bytes
    yield produced
    yield fetched

    # -- topics and partitions ---------------------------------------------------------------------
    yield GaugeMetricFamily(f"{p}_cluster_topics", "Topics.", value=len(snap.topics))
    yield GaugeMetricFamily(
        f"{p}_cluster_partitions",
        "Partitions of all topics.",
        value=sum(len(t.partitions) for t in snap.topics),
    )
    partitions = GaugeMetricFamily(
        f"{p}_topic_partitions", "Partitions of each topic.", labels=["topic"]
    )
    current = GaugeMetricFamily(
        f"{p}_topic_partition_current_offset",
        "High watermark of each partition: the offset of the next record consumers will see.",
        labels=["topic", "partition"],
    )
    oldest = GaugeMetricFamily(
        f"{p}_topic_partition_oldest_offset",
        "Log start offset of each partition.",
        labels=["topic", "partition"],
    )
    size = GaugeMetricFamily(
        f"{p}_log_size_bytes", "Bytes of each partition's segments.", labels=["topic", "partition"]
    )
    segments = GaugeMetricFamily(
        f"{p}_log_segments", "Segments of each partition.", labels=["topic", "partition"]
    )
    queued = 0
    for topic in snap.topics:
        partitions.add_metric([topic.name], len(topic.partitions))
        for part in topic.partitions:
            labels = [topic.name, str(part.partition)]
            current.add_metric(labels, part.end)
            oldest.add_metric(labels, part.start)
            size.add_metric(labels, part.size)
            segments.add_metric(labels, part.segments)
            queued += part.writer_queue
    yield partitions
    yield current
    yield oldest
    yield size
    yield segments

    # -- consumer groups ---------------------------------------------------------------------------
    by_state = GaugeMetricFamily(
        f"{p}_consumergroups", "Consumer groups, by state.", labels=["state"]
    )
    counts: dict[str, int] = dict.fromkeys(
        ("Empty", "PreparingRebalance", "CompletingRebalance", "Stable"), 0
    )
    members = GaugeMetricFamily(
        f"{p}_consumergroup_members", "Members of each group.", labels=["consumergroup"]
    )
    rebalances = CounterMetricFamily(
        f"{p}_consumergroup_rebalances",
        "Rebalances each group started since the broker loaded it.",
        labels=["consumergroup"],
    )
    committed = GaugeMetricFamily(
        f"{p}_consumergroup_current_offset",
        "Committed offset of each group in each partition.",
        labels=["consumergroup", "topic", "partition"],
    )
    lag = GaugeMetricFamily(
        f"{p}_consumergroup_lag",
        "Records a group has not consumed: high watermark minus committed offset (0 if past it).",
        labels=["consumergroup", "topic", "partition"],
    )
    lag_sum = GaugeMetricFamily(
        f"{p}_consumergroup_lag_sum",
        "A group's lag over all partitions of a topic.",
        labels=["consumergroup", "topic"],
    )
    for group in snap.groups:
        counts[group.state] = counts.get(group.state, 0) + 1
        members.add_metric([group.group_id], len(group.members))
        rebalances.add_metric([group.group_id], group.rebalances)
        sums: dict[str, int] = {}
        for offset in group.offsets:
            labels = [group.group_id, offset.topic, str(offset.partition)]
            committed.add_metric(labels, offset.committed)
            lag.add_metric(labels, offset.lag)
            sums[offset.topic] = sums.get(offset.topic, 0) + offset.lag
        for topic_name, total in sorted(sums.items()):
            lag_sum.add_metric([group.group_id, topic_name], total)
    for state_name, n in counts.items():
        by_state.add_metric([state_name], n)
    yield by_state
    yield members
    yield rebalances
    yield committed
    yield lag
    yield lag_sum

    # -- server and storage -----------------------------------------------------------------------
    connections = GaugeMetricFamily(
        f"{p}_rpc_active_connections", "Open connections, by server.", labels=["server"]
    )
    connections.add_metric(["kafka"], snap.kafka_connections)
    connections.add_metric(["admin"], snap.admin_connections)
    yield connections
    yield GaugeMetricFamily(
        f"{p}_kafka_request_memory_bytes",
        "Bytes of requests being received or queued (bounded by queued.max.request.bytes).",
        value=snap.request_memory,
    )
    yield GaugeMetricFamily(
        f"{p}_storage_writer_queue_bytes",
        "Bytes accepted and queued for the partitions' writer tasks, not yet written.",
        value=queued,
    )
    fsync_counts, fsync_seconds = snap.fsync
    fsync = HistogramMetricFamily(
        f"{p}_storage_fsync_latency_seconds",
        "Duration of the fsyncs of group commits (acks=all on fsynced topics) and flushes.",
    )
    if fsync_counts:
        fsync.add_metric([], _cumulative(FSYNC_BUCKETS, fsync_counts), fsync_seconds)
    yield fsync
    yield GaugeMetricFamily(
        f"{p}_storage_disk_total_bytes",
        "Size of the data directory's filesystem.",
        value=snap.disk_total,
    )
    yield GaugeMetricFamily(
        f"{p}_storage_disk_free_bytes",
        "Bytes of the data directory's filesystem available to the broker.",
        value=snap.disk_free,
    )
    yield GaugeMetricFamily(
        f"{p}_storage_disk_full",
        "1 while writes are refused for lack of space (KAFKA_STORAGE_ERROR), else 0.",
        value=1 if snap.disk_full else 0,
    )
    yield from _cleaner_families(snap.cleaner)


def _cleaner_families(c: CleanerCounters | None) -> Iterator[Metric]:
    """Kafka's cleaner metrics (runs, bytes, max-dirty-percent, uncleanable-partitions-count)."""
    if c is None:  # starting or stopping: no logs to speak of
        return
    p = PREFIX
    yield CounterMetricFamily(
        f"{p}_log_cleaner_runs", "Logs the cleaner has compacted since the broker started.", value=c.runs
    )
    yield CounterMetricFamily(
        f"{p}_log_cleaner_read_bytes", "Bytes of segments the cleaner has read.", value=c.bytes_read
    )
    yield CounterMetricFamily(
        f"{p}_log_cleaner_written_bytes",
        "Bytes of cleaned segments the cleaner has written.",
        value=c.bytes_written,
    )
    yield GaugeMetricFamily(
        f"{p}_log_cleaner_max_dirty_ratio",
        "Highest dirty ratio (uncleaned bytes over cleanable bytes) of any compacted log, as of the cleaner's last look.",
        value=c.max_dirty_ratio,
    )
    yield GaugeMetricFamily(
        f"{p}_log_cleaner_uncleanable_partitions",
        "Compacted partitions the cleaner gave up on after an error, until a restart.",
        value=c.uncleanable,
    )
    yield GaugeMetricFamily(
        f"{p}_log_cleaner_last_run_timestamp_seconds",
        "When the cleaner last finished a log (0: never since the broker started).",
        value=max(c.last_clean_ms, 0) / 1000,
    )


def _cumulative(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        total += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return out
