"""The pieces every ``sluice bench`` scenario shares: results, percentiles, /proc accounting.

A scenario produces :class:`Result` objects; this module knows how to measure a process from
``/proc`` (CPU seconds, RSS, peak RSS), how to keep latencies (an HDR histogram that crosses
process boundaries as a string), which side was the bottleneck, and what a result looks like as
JSON (:data:`JSON_KEYS`: stable, a test pins them).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MB = 1_000_000
GB = 1_000_000_000
MIB = 1024 * 1024

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

SATURATED = 0.85
"""A process using this share of one core or more is taken as CPU-bound: the broker's request
path runs on one event loop and a Python load generator on one thread, so one core is the cap
that matters for both (a JVM broker can use more; its utilisation is reported as measured)."""


# -- settings --------------------------------------------------------------------------------


def parse_settings(items: Sequence[str]) -> dict[str, str]:
    """``-X key=value`` pairs as a dict; a pair without ``=`` is an error a user can fix."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def rdkafka_logger() -> logging.Logger:
    """A logger for librdkafka that drops its per-client deprecation warnings.

    ``api.version.request``/``broker.version.fallback`` (needed for Kafka 0.9) make every client
    print a paragraph-long CONFWARN; real warnings and errors still get through.
    """
    log = logging.getLogger("sluice.bench.rdkafka")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rdkafka %(message)s"))
        handler.addFilter(lambda rec: "is deprecated" not in rec.getMessage())
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False
    return log


# -- /proc -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of every thread of ``pid`` so far; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15


def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident set size now (VmRSS)."""
    return _status_kib(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int | None:
    """The highest resident set size so far (VmHWM)."""
    return _status_kib(pid, "VmHWM")


# -- latency ---------------------------------------------------------------------------------


PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


class Histogram:
    """Latencies in microseconds, 1 us to 10 min at 3 significant digits (HdrHistogram).

    :meth:`dumps`/:meth:`loads` carry one across a process boundary; :meth:`add` merges.
    """

    def __init__(self) -> None:
        from hdrh.histogram import HdrHistogram

        self.hist = HdrHistogram(1, 600_000_000, 3)

    def record_us(self, value: float) -> None:
        self.hist.record_value(min(600_000_000, max(1, int(value))))

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count())

    def add(self, other: Histogram) -> None:
        self.hist.add(other.hist)

    def dumps(self) -> str:
        encoded: bytes = self.hist.encode()
        return encoded.decode("ascii")

    @classmethod
    def loads(cls, text: str) -> Histogram:
        from hdrh.histogram import HdrHistogram

        out = cls()
        if text:
            out.hist = HdrHistogram.decode(text.encode("ascii"))
        return out

    def latency(self) -> Latency | None:
        """The percentiles in milliseconds, or None if nothing was recorded."""
        if not self.count:
            return None
        pct = {name: self.hist.get_value_at_percentile(p) / 1000 for name, p in PERCENTILES}
        return Latency(pct["p50"], pct["p90"], pct["p99"], pct["p99.9"],
                       self.hist.get_max_value() / 1000, self.count)


@dataclass
class Latency:
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    samples: int

    def as_json(self) -> dict[str, float | int]:
        return {"p50": self.p50_ms, "p90": self.p90_ms, "p99": self.p99_ms,
                "p99.9": self.p999_ms, "max": self.max_ms, "samples": self.samples}


# -- results ---------------------------------------------------------------------------------


@dataclass
class Process:
    """CPU and memory of one measured process over a run."""

    name: str
    cpu_seconds: float | None
    rss_peak: int | None


def bottleneck(seconds: float, broker: Sequence[Process], clients: Sequence[Process]) -> str:
    """Which side ran out of CPU: ``broker``, ``client``, ``machine`` (every core busy, neither
    process alone saturated) or ``neither`` (the load was rate- or latency-bound).

    Without the broker's numbers (a remote broker) it can only be ``client`` or ``unknown``.
    """
    if seconds <= 0:
        return "unknown"
    b = [p.cpu_seconds / seconds for p in broker if p.cpu_seconds is not None]
    c = [p.cpu_seconds / seconds for p in clients if p.cpu_seconds is not None]
    top_b, top_c = max(b, default=0.0), max(c, default=0.0)
    if b and top_b >= SATURATED and top_b >= top_c:
        return "broker"
    if top_c >= SATURATED:
        return "client"
    if not b:
        return "unknown"
    cores = os.cpu_count() or 1
    if sum(b) + sum(c) >= SATURATED * cores:
        return "machine"
    return "neither"


JSON_KEYS = (
    "scenario", "case", "target", "params", "messages", "bytes", "errors", "seconds",
    "msgs_per_s", "mb_per_s", "latency_ms", "broker_cpu_s", "broker_cpu_s_per_million",
    "broker_cpu_s_per_gb", "broker_rss_peak_bytes", "client_cpu_s", "client_rss_peak_bytes",
    "client_processes", "bottleneck", "timeline", "notes",
)
"""The keys of :meth:`Result.as_json`, in order; a test holds them stable."""


@dataclass
class Result:
    """One measured case of one scenario against one broker (the ``target``)."""

    scenario: str
    case: str
    target: str
    messages: int
    size: int
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    errors: int = 0
    latency: Latency | None = None
    broker: list[Process] = field(default_factory=list)
    clients: list[Process] = field(default_factory=list)
    timeline: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return self.messages * self.size

    @property
    def msgs_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_s(self) -> float:
        return self.bytes / self.seconds / MB if self.seconds > 0 else 0.0

    @property
    def broker_cpu(self) -> float | None:
        known = [p.cpu_seconds for p in self.broker if p.cpu_seconds is not None]
        return sum(known) if known else None

    @property
    def broker_cpu_per_million(self) -> float | None:
        cpu = self.broker_cpu
        return cpu / self.messages * 1e6 if cpu is not None and self.messages else None

    @property
    def broker_cpu_per_gb(self) -> float | None:
        cpu = self.broker_cpu
        return cpu / self.bytes * GB if cpu is not None and self.bytes else None

    @property
    def broker_rss_peak(self) -> int | None:
        known = [p.rss_peak for p in self.broker if p.rss_peak is not None]
        return sum(known) if known else None

    @property
    def client_cpu(self) -> float:
        return sum(p.cpu_seconds or 0.0 for p in self.clients)

    @property
    def client_rss_peak(self) -> int | None:
        known = [p.rss_peak for p in self.clients if p.rss_peak is not None]
        return max(known) if known else None

    @property
    def bottleneck(self) -> str:
        return bottleneck(self.seconds, self.broker, self.clients)

    def as_json(self) -> dict[str, Any]:
        out = {
            "scenario": self.scenario,
            "case": self.case,
            "target": self.target,
            "params": {"size": self.size, **self.params},
            "messages": self.messages,
            "bytes": self.bytes,
            "errors": self.errors,
            "seconds": round(self.seconds, 6),
            "msgs_per_s": round(self.msgs_s, 1),
            "mb_per_s": round(self.mb_s, 3),
            "latency_ms": self.latency.as_json() if self.latency else None,
            "broker_cpu_s": self.broker_cpu,
            "broker_cpu_s_per_million": self.broker_cpu_per_million,
            "broker_cpu_s_per_gb": self.broker_cpu_per_gb,
            "broker_rss_peak_bytes": self.broker_rss_peak,
            "client_cpu_s": round(self.client_cpu, 3),
            "client_rss_peak_bytes": self.client_rss_peak,
            "client_processes": len(self.clients),
            "bottleneck": self.bottleneck,
            "timeline": self.timeline,
            "notes": self.notes,
        }
        assert tuple(out) == JSON_KEYS
        return out


def median_result(runs: Sequence[Result]) -> Result:
    """The run with the median msgs/s (the lower middle one of an even count); its notes say
    the spread, and it carries every run's errors."""
    ordered = sorted(runs, key=lambda r: r.msgs_s)
    mid = ordered[(len(ordered) - 1) // 2]
    if len(runs) > 1:
        rates = [r.msgs_s for r in runs]
        mid.notes = [*mid.notes, f"median of {len(runs)} runs; msg/s {min(rates):,.0f}-"
                     f"{max(rates):,.0f}"]
        mid.errors = sum(r.errors for r in runs)
    return mid

