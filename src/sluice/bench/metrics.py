"""What the metrics cost the produce path: the same produce run against a ``sluice serve`` child
with the admin side on (counters kept, ``/metrics`` scraped every ``--scrape-interval``
seconds) and off (``--admin-listen off``: no counters at all), alternating, several rounds.

::

    python -m sluice.bench.metrics                       # 3 rounds of 300,000 x 100 B records
    python -m sluice.bench.metrics --rounds 5 --records 500000
    python -m sluice.bench.metrics --batch 100            # many small requests: the worst case

Each run starts a fresh broker on an empty data directory, produces ``--records`` records of
``--size`` bytes to a one-partition topic with confluent-kafka (acks=1, at most ``--batch``
records a batch), and reports records per second (first produce to the last delivery report) and the
broker's CPU seconds (utime + stime from /proc) per million records: throughput on a shared
machine is noisy, CPU per record much less so. The medians of each side and their difference
are printed last; docs/monitoring.md cites them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sluice.bench.kafka09 import free_port, port_open

TOPIC = "bench-metrics"
_SCRAPER = """
import sys, time, urllib.request
url, interval = sys.argv[1], float(sys.argv[2])
while True:
    time.sleep(interval)
    urllib.request.urlopen(url, timeout=10).read()
    print(1, flush=True)
"""


@dataclass(frozen=True, slots=True)
class Run:
    metrics: bool
    records_per_s: float
    cpu_per_million: float
    scrapes: int


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def run_once(
    metrics: bool, records: int, size: int, batch: int, scrape_interval: float, work: Path
) -> Run:
    from confluent_kafka import Producer

    data_dir = work / f"data-{time.monotonic_ns()}"
    port = free_port()
    argv = [sys.executable, "-m", "sluice.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    argv += ["--data-dir", str(data_dir)]
    admin_port = free_port() if metrics else None
    argv += ["--admin-listen", f"127.0.0.1:{admin_port}" if admin_port else "off"]
    log_path = work / "broker.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    scraper: subprocess.Popen[str] | None = None
    try:
        started = time.monotonic()
        while not port_open(port, timeout=0.2):
            if proc.poll() is not None or time.monotonic() - started > 60:
                raise RuntimeError(f"sluice serve did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.01)  # the readiness probe's interval
        producer = Producer(
            {"bootstrap.servers": f"127.0.0.1:{port}", "acks": 1, "batch.num.messages": batch}
        )
        producer.produce(TOPIC, b"warm-up")  # creates the topic; not timed
        producer.flush(30)
        if metrics:
            # A process of its own: a scraping thread here would take the GIL from the producer,
            # which then sends smaller batches, and the broker's CPU per record would grow for
            # a reason that has nothing to do with metrics.
            scraper = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _SCRAPER,
                    f"http://127.0.0.1:{admin_port}/metrics",
                    str(scrape_interval),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        value = b"x" * size
        delivered = 0

        def done(err: object, _msg: object) -> None:
            nonlocal delivered
            if err is None:
                delivered += 1

        cpu_before = _cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        for _ in range(records):
            while True:
                try:
                    producer.produce(TOPIC, value, on_delivery=done)
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush(120)
        elapsed = time.perf_counter() - t0
        cpu = _cpu_seconds(proc.pid) - cpu_before
        if delivered != records:
            raise RuntimeError(f"only {delivered} of {records} records were delivered")
        scrapes = 0
        if scraper is not None:
            scraper.terminate()
            scrapes = len((scraper.communicate(timeout=30)[0] or "").split())
        return Run(metrics, records / elapsed, cpu / records * 1e6, scrapes)
    finally:
        if scraper is not None and scraper.poll() is None:
            scraper.kill()
            scraper.wait()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sluice.bench.metrics", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="on/off pairs (default 3)")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--size", type=int, default=100, help="value bytes (default 100)")
    parser.add_argument(
        "--batch",
        type=int,
        default=10_000,
        help="records per batch at most (librdkafka's batch.num.messages; default 10000, its "
        "default): small batches mean many requests, the worst case for per-request counters",
    )
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="seconds (default 1)")
    args = parser.parse_args(argv)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-metrics-") as tmp:
        for i in range(args.rounds):
            # Alternate which side goes first, so a machine getting busier favours neither.
            order = (True, False) if i % 2 == 0 else (False, True)
            for metrics in order:
                run = run_once(
                    metrics, args.records, args.size, args.batch, args.scrape_interval, Path(tmp)
                )
                runs.append(run)
                print(
                    f"round {i + 1} metrics {'on ' if metrics else 'off'}: "
                    f"{run.records_per_s:10,.0f} records/s, "
                    f"{run.cpu_per_million:6.2f} broker CPU s per million records"
                    + (f" ({run.scrapes} scrapes)" if metrics else ""),
                    flush=True,
                )
    on = [r for r in runs if r.metrics]
    off = [r for r in runs if not r.metrics]
    on_rate = statistics.median(r.records_per_s for r in on)
    off_rate = statistics.median(r.records_per_s for r in off)
    on_cpu = statistics.median(r.cpu_per_million for r in on)
    off_cpu = statistics.median(r.cpu_per_million for r in off)
    print(
        f"median: on {on_rate:,.0f} records/s, off {off_rate:,.0f} records/s "
        f"({(on_rate / off_rate - 1) * 100:+.1f}%); broker CPU per million records: "
        f"on {on_cpu:.2f} s, off {off_cpu:.2f} s ({(on_cpu / off_cpu - 1) * 100:+.1f}%)"
    )


if __name__ == "__main__":
    main()
