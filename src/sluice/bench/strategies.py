"""The founding write-up's table, ours: each way of sending with the client toolkit against a
raw confluent-kafka loop, on a sluice broker this module starts as a child process.

Strategies (``sluice.client.Producer``, librdkafka underneath, ``acks=all`` and idempotence on
throughout, ``linger.ms`` 5, one partition):

* ``raw loop``: ``produce()`` in a loop with one delivery callback that keeps each record's
  latency (what the latency columns need), ``poll(0)`` every 1024 records, ``flush()``: the
  baseline. ``raw loop + results`` also keeps each record's partition, offset and timestamp in
  arrays, which is what every toolkit strategy hands back: the fair baseline for the toolkit's
  own overhead.
* ``send``: ``await send()`` per record (the synchronous strategy).
* ``submit futures``: ``await submit()`` per record (waiting only for queue space), then
  ``gather`` of every future; ``task per send``: an ``asyncio`` task per ``send()``, all
  created up front (the unbounded concurrent strategy, as naive code writes it).
* ``send_ordered N``: the bounded ordered window with ``max_in_flight`` N.
* ``send_batch``: everything in one call.

Columns: messages a second (from the first send to the last result), the client process's CPU
time per record (every thread, librdkafka's included: steadier than the rate on a busy machine,
and what the rate is bound by when the client, not the broker, is the bottleneck), the median and
99th percentile of delivery latency (librdkafka's own measure, ``produce()`` to acknowledgement, in an
HDR histogram; a window's head-of-line wait is not in it), and the case's peak resident memory
(each case runs in a fresh child process; ``+`` is the growth over the process before sending,
its records already built). The batching knobs (``linger.ms``, ``batch.size``, compression) are
measured on the batch path.

The machine this runs on may be shared: every case runs ``--repeat`` times, in rounds (every
case once, then again) so a slow spell spreads over the cases, and the table shows the median
with the slowest and fastest run. Run it alone::

    python -m sluice.bench.strategies                 # the full table (several minutes)
    python -m sluice.bench.strategies --quick         # fewer records, one size, two rounds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.bench.harness import peak_rss_bytes, rss_bytes
from sluice.testing import unique_topic_name

CONFIG: dict[str, Any] = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}
"""What every case runs with (the toolkit's defaults, stated for the raw loop too)."""

ORDERED = (1, 10, 100, 1000, 10000)
STRATEGIES = [
    "raw loop",
    "raw loop + results",
    "send",
    "submit futures",
    "task per send",
    *(f"send_ordered {n}" for n in ORDERED),
    "send_batch",
]
KNOBS: list[tuple[str, dict[str, Any]]] = [
    ("linger.ms=0", {"linger.ms": 0}),
    ("linger.ms=5", {"linger.ms": 5}),
    ("linger.ms=50", {"linger.ms": 50}),
    ("batch.size=16 KiB", {"batch.size": 16 * 1024}),
    ("batch.size=1 MiB", {"batch.size": 1024 * 1024}),
    ("compression=none", {"compression.type": "none"}),
    ("compression=lz4", {"compression.type": "lz4"}),
    ("compression=zstd", {"compression.type": "zstd"}),
]
ORDERED_LINGER: list[tuple[str, dict[str, Any]]] = [
    (f"send_ordered 1000, linger.ms={ms}", {"linger.ms": ms}) for ms in (0, 1, 5, 20)
]
"""A window is bounded by Little's law, N records per delivery latency. A full window does not
wait for the linger (the toolkit flushes while it waits), so the linger costs only the records
it holds while the window refills."""
SLOW = {"send": 1, "send_ordered 1": 1, "send_ordered 10": 10}
"""Strategies bounded by round trips: records per case = this x ``--round-trips``."""
MIB = 1024 * 1024


# -- one case, in a child process ----------------------------------------------------------


@dataclass
class Measured:
    count: int
    seconds: float
    cpu: float
    """CPU seconds of the whole client process (every thread, librdkafka's too)."""
    errors: int
    latencies: array[float]
    rss_start: int
    rss_peak: int


def _raw(
    bootstrap: str, topic: str, values: list[bytes], config: dict[str, Any], keep: bool
) -> tuple[float, float, int, array[float]]:
    import confluent_kafka as ck

    producer = ck.Producer({"bootstrap.servers": bootstrap, **config})
    producer.produce(topic, b"warm-up")
    producer.flush(30)
    latencies, partitions, offsets, timestamps = array("d"), array("i"), array("q"), array("q")
    errors = [0]
    keep_latency = latencies.append
    keep_partition, keep_offset, keep_timestamp = (
        partitions.append,
        offsets.append,
        timestamps.append,
    )

    # One callback for every record, as a plain loop would have it: reports come in produce
    # order on one partition, so appending keeps them in record order.
    def latency_only(err: Any, msg: Any) -> None:
        if err is None:
            keep_latency(msg.latency())
        else:
            errors[0] += 1

    def results(err: Any, msg: Any) -> None:
        if err is None:
            keep_partition(msg.partition())
            keep_offset(msg.offset())
            keep_timestamp(msg.timestamp()[1])
            keep_latency(msg.latency())
        else:
            errors[0] += 1

    cb = results if keep else latency_only
    produce, poll = producer.produce, producer.poll
    cpu = time.process_time()
    start = time.perf_counter()
    for i, value in enumerate(values):
        while True:
            try:
                produce(topic, value, on_delivery=cb)
                break
            except BufferError:
                poll(0.001)
        if not i & 1023:
            poll(0)
    left = producer.flush(120)
    seconds = time.perf_counter() - start
    return seconds, time.process_time() - cpu, errors[0] + left, latencies


async def _toolkit(
    bootstrap: str, topic: str, values: list[bytes], config: dict[str, Any], strategy: str
) -> tuple[float, float, int, array[float]]:
    from sluice.client import Producer, Record

    records = [Record(topic, v) for v in values]
    latencies = array("d")
    async with Producer(bootstrap, metrics_registry=None, config=config) as p:
        await p.send(topic, b"warm-up")
        cpu = time.process_time()
        start = time.perf_counter()
        if strategy == "send":
            for r in records:
                latencies.append((await p.send(r.topic, r.value)).latency or 0.0)
        elif strategy == "submit futures":
            futures = [await p.submit(r.topic, r.value) for r in records]
            latencies.extend((m.latency or 0.0) for m in await asyncio.gather(*futures))
        elif strategy == "task per send":
            tasks = [asyncio.ensure_future(p.send(r.topic, r.value)) for r in records]
            latencies.extend((m.latency or 0.0) for m in await asyncio.gather(*tasks))
        elif strategy.startswith("send_ordered "):
            window = p.send_ordered(records, max_in_flight=int(strategy.split()[1]))
            append = latencies.append
            async for result in window:
                append(result.latency or 0.0)
        else:
            assert strategy == "send_batch", strategy
            latencies = (await p.send_batch(records)).latencies
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        errors = p.metrics()["failed"]
    return seconds, cpu, errors, latencies


def run_case(
    bootstrap: str, topic: str, strategy: str, size: int, count: int, config: dict[str, Any]
) -> Measured:
    values = [os.urandom(8) + b"x" * (size - 8) for _ in range(count)]
    rss_start = rss_bytes(os.getpid()) or 0
    if strategy.startswith("raw loop"):
        seconds, cpu, errors, latencies = _raw(
            bootstrap, topic, values, config, keep=strategy.endswith("results")
        )
    else:
        import uvloop

        seconds, cpu, errors, latencies = uvloop.run(
            _toolkit(bootstrap, topic, values, config, strategy)
        )
    return Measured(count, seconds, cpu, errors, latencies, rss_start, peak_rss_bytes(os.getpid()) or 0)


def summary(m: Measured) -> dict[str, Any]:
    """What a child prints (one JSON line): counts, CPU, RSS and the latency percentiles (ms)."""
    from sluice.bench.harness import Histogram

    hist = Histogram()
    for seconds in m.latencies:
        if seconds > 0:
            hist.record_us(seconds * 1_000_000)
    lat = hist.latency()
    return {
        "count": m.count,
        "seconds": m.seconds,
        "cpu": m.cpu,
        "errors": m.errors,
        "p50_ms": lat.p50_ms if lat else 0.0,
        "p90_ms": lat.p90_ms if lat else 0.0,
        "p99_ms": lat.p99_ms if lat else 0.0,
        "p999_ms": lat.p999_ms if lat else 0.0,
        "max_ms": lat.max_ms if lat else 0.0,
        "samples": lat.samples if lat else 0,
        "rss_start": m.rss_start,
        "rss_peak": m.rss_peak,
    }


def _child(args: argparse.Namespace) -> int:
    config = {**CONFIG, **json.loads(args.config)}
    m = run_case(args.bootstrap, args.topic, args.strategy, args.size, args.count, config)
    print(json.dumps(summary(m)))
    return 0


def run_child(
    bootstrap: str,
    topic: str,
    strategy: str,
    size: int,
    count: int,
    config: dict[str, Any],
    timeout: float,
) -> dict[str, Any]:
    """One case in a fresh child process (so its peak RSS is its own); its :func:`summary`."""
    cmd = [
        sys.executable, "-m", "sluice.bench.strategies", "--child",
        "--bootstrap", bootstrap, "--topic", topic, "--strategy", strategy,
        "--size", str(size), "--count", str(count), "--config", json.dumps(config),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{strategy} {size} B failed:\n{out.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Result:
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    """Client CPU microseconds per record."""
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    peak: list[int] = field(default_factory=list)
    growth: list[int] = field(default_factory=list)
    errors: int = 0

    def median(self, values: list[float] | list[int]) -> float:
        return statistics.median(values) if values else 0.0


def counts(strategy: str, size: int, records: int, round_trips: int) -> int:
    """Records in one case: round-trip-bound strategies get ``SLOW[s] x round_trips``."""
    if strategy in SLOW:
        return SLOW[strategy] * round_trips
    return records if size <= 100 else records // 2


def measure(
    args: argparse.Namespace,
    bootstrap: str,
    create: Callable[[str], str],
    cases: list[tuple[str, str, int, dict[str, Any]]],
    say: Callable[[str], None],
) -> dict[tuple[str, int], Result]:
    results: dict[tuple[str, int], Result] = {}
    for round_ in range(args.repeat):
        for label, strategy, size, config in cases:
            topic = create(unique_topic_name(f"strategies-{label}-{size}-{round_}"))
            count = counts(strategy, size, args.records, args.round_trips)
            data = run_child(bootstrap, topic, strategy, size, count, config, args.case_timeout)
            r = results.setdefault((label, size), Result())
            r.rates.append(data["count"] / data["seconds"])
            r.cpu_us.append(data["cpu"] / data["count"] * 1e6)
            r.p50.append(data["p50_ms"])
            r.p99.append(data["p99_ms"])
            r.peak.append(data["rss_peak"])
            r.growth.append(data["rss_peak"] - data["rss_start"])
            r.errors += data["errors"]
            say(
                f"round {round_ + 1}/{args.repeat} {label}, {size} B: "
                f"{r.rates[-1]:,.0f} msg/s, p50 {data['p50_ms']:.1f} ms"
            )
    return results


def _rate(r: Result) -> str:
    mid = r.median(r.rates)
    if len(r.rates) < 2:
        return f"{mid:,.0f}"
    return f"{mid:,.0f} ({min(r.rates) / 1000:,.0f}k-{max(r.rates) / 1000:,.0f}k)"


def table(results: dict[tuple[str, int], Result], labels: list[str], size: int) -> str:
    """One size's rows: medians, the rate's slowest-fastest spread."""
    rows = [
        "| strategy | msg/s (slowest-fastest) | client CPU us/msg | p50 ms | p99 ms "
        "| peak RSS MiB (+) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label in labels:
        r = results.get((label, size))
        if r is None:
            rows.append(f"| {label} | - | - | - | - | - |")
            continue
        cells = [
            label,
            _rate(r),
            f"{r.median(r.cpu_us):.2f}",
            f"{r.median(r.p50):.1f}",
            f"{r.median(r.p99):.1f}",
            f"{r.median(r.peak) / MIB:,.0f} (+{r.median(r.growth) / MIB:,.0f})",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _size(size: int) -> str:
    return "1 KiB" if size == 1024 else f"{size} B"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice.bench.strategies",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--records",
        type=int,
        default=200_000,
        help="records per case at 100 B (half at 1 KiB); default 200000",
    )
    parser.add_argument(
        "--round-trips",
        type=int,
        default=300,
        help="records per case of send and send_ordered 1 (x10 for 10)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every case")
    parser.add_argument("--sizes", default="100,1024", help="message sizes in bytes")
    parser.add_argument("--no-knobs", action="store_true", help="skip the batching knobs")
    parser.add_argument("--only", help="comma-separated strategies to run (default: all)")
    parser.add_argument(
        "--quick", action="store_true", help="50000 records, 100 B only, two rounds"
    )
    parser.add_argument("--case-timeout", type=float, default=600.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--config", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    if args.quick:
        args.records, args.repeat, args.sizes, args.round_trips = 50_000, 2, "100", 100
    sizes = [int(s) for s in args.sizes.split(",")]

    from sluice.testing import BrokerProcess, create_topic

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    with (
        tempfile.TemporaryDirectory(prefix="sluice-bench-strategies-") as tmp,
        BrokerProcess(Path(tmp) / "data", Path(tmp) / "sluice-serve.log") as broker,
    ):
        broker.start()
        bootstrap = broker.bootstrap_servers

        def create(name: str) -> str:
            return create_topic(bootstrap, name, 1)

        began = time.perf_counter()
        # A warm-up, not reported: the first case would otherwise meet a broker that has not
        # yet written anything (the raw loop, first, measured at half its usual rate).
        measure(
            argparse.Namespace(**{**vars(args), "repeat": 1}),
            bootstrap,
            create,
            [("warm-up", "send_batch", 100, {})],
            lambda _: None,
        )
        chosen = args.only.split(",") if args.only else STRATEGIES
        cases: list[tuple[str, str, int, dict[str, Any]]] = [
            (s, s, size, {}) for s in chosen for size in sizes
        ]
        results = measure(args, bootstrap, create, cases, say)
        knobs: dict[tuple[str, int], Result] = {}
        if not args.no_knobs:
            knob_cases = [
                (label, "send_batch", size, cfg) for label, cfg in KNOBS for size in sizes
            ]
            knob_cases += [
                (label, "send_ordered 1000", size, cfg)
                for label, cfg in ORDERED_LINGER
                for size in sizes
            ]
            knobs = measure(args, bootstrap, create, knob_cases, say)
        seconds = time.perf_counter() - began

    print(
        f"## Send strategies: {', '.join(f'{k}={v}' for k, v in CONFIG.items())}, 1 partition, "
        f"a sluice serve child; median of {args.repeat} rounds"
    )
    labels = [s for s in STRATEGIES if any((s, size) in results for size in sizes)]
    for size in sizes:
        print(f"\n### {_size(size)}\n")
        print(table(results, labels, size))
        raw, fair = results.get(("raw loop", size)), results.get(("raw loop + results", size))
        for label in ("send_ordered 1000", "send_batch"):
            r = results.get((label, size))
            if r is None or raw is None or fair is None:
                continue
            print(
                f"\n{label}: {r.median(r.rates) / raw.median(raw.rates):.0%} of the raw loop's "
                f"rate ({r.median(r.rates) / fair.median(fair.rates):.0%} of raw + results); "
                f"{raw.median(raw.cpu_us) / r.median(r.cpu_us):.0%} of its efficiency, client "
                f"CPU per record ({fair.median(fair.cpu_us) / r.median(r.cpu_us):.0%})",
                end="",
            )
        print()
    if knobs:
        for size in sizes:
            print(f"\n## Batching knobs on send_batch, {_size(size)} (others as above)\n")
            print(table(knobs, [label for label, _ in KNOBS], size))
        for size in sizes:
            print(f"\n## send_ordered 1000 by linger.ms, {_size(size)}\n")
            print(table(knobs, [label for label, _ in ORDERED_LINGER], size))
    errors = sum(r.errors for r in [*results.values(), *knobs.values()])
    print(f"\n{errors} failed records; {seconds:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
