"""What the metrics cost the produce path: the same produce run against a ``sluice serve`` child
with the admin side on (counters kept, ``/metrics`` scraped by another process at the start
and every ``--scrape-interval`` seconds) and off (``--admin-listen off``: no counters at all),
alternating, several rounds.

::

    python -m sluice.bench.metrics --rounds 5 --records 2000000     # librdkafka's batching
    python -m sluice.bench.metrics --batch 1 --records 200000       # a request per record
    python -m sluice.bench.metrics --scrape-interval 1              # scraped every second
    python -m sluice.bench.metrics --in-process --batch 1 --rounds 40   # Broker.handle alone
    python -m sluice.bench.metrics --scrape-partitions 10000            # a big scrape

Each run starts a fresh broker on an empty data directory, produces ``--records`` records of
``--size`` bytes to a one-partition topic with confluent-kafka (acks=1, at most ``--batch``
records a batch), and reports records per second (first produce to the last delivery report)
and the broker's CPU seconds (utime + stime from /proc) per million records: throughput on a
shared machine is noisy, CPU per record less so. The medians of each side and their difference
are printed last; docs/monitoring.md cites them.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sluice.bench.harness import cpu_seconds
from sluice.bench.kafka09 import free_port, port_open

TOPIC = "bench-metrics"
_SCRAPER = """
import sys, time, urllib.request
url, interval = sys.argv[1], float(sys.argv[2])
while True:
    urllib.request.urlopen(url, timeout=10).read()
    print(1, flush=True)
    time.sleep(interval)
"""


@dataclass(frozen=True, slots=True)
class Run:
    metrics: bool
    records_per_s: float
    cpu_per_million: float
    scrapes: int


def _cpu(pid: int) -> float:
    used = cpu_seconds(pid)
    if used is None:
        raise RuntimeError(f"the broker (pid {pid}) is gone")
    return used


@contextlib.contextmanager
def _serve(work: Path, admin: bool) -> Iterator[tuple[subprocess.Popen[bytes], int, int | None]]:
    """A ``sluice serve`` child on an empty data directory: (process, Kafka port, admin port or
    None), once it accepts (and, with the admin side, once /readyz says it is ready); stopped
    with SIGTERM and its data removed afterwards."""
    data_dir = work / f"data-{time.monotonic_ns()}"
    port = free_port()
    admin_port = free_port() if admin else None
    argv = [sys.executable, "-m", "sluice.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    argv += ["--data-dir", str(data_dir)]
    argv += ["--admin-listen", f"127.0.0.1:{admin_port}" if admin_port else "off"]
    log_path = work / "broker.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        started = time.monotonic()
        while not (port_open(port, timeout=0.2) and (admin_port is None or _ready(admin_port))):
            if proc.poll() is not None or time.monotonic() - started > 120:
                raise RuntimeError(f"sluice serve did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.01)  # the readiness probe's interval
        yield proc, port, admin_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def _ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def run_once(
    metrics: bool, records: int, size: int, batch: int, scrape_interval: float, work: Path
) -> Run:
    with _serve(work, metrics) as (proc, port, admin_port):
        return _produce(proc, port, admin_port, records, size, batch, scrape_interval)


def _produce(
    proc: subprocess.Popen[bytes],
    port: int,
    admin_port: int | None,
    records: int,
    size: int,
    batch: int,
    scrape_interval: float,
) -> Run:
    from confluent_kafka import Producer

    metrics = admin_port is not None
    scraper: subprocess.Popen[str] | None = None
    try:
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

        cpu_before = _cpu(proc.pid)
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
        cpu = _cpu(proc.pid) - cpu_before
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


def in_process(batch: int, size: int, rounds: int, requests: int) -> None:
    """The hot path alone: Produce requests of ``batch`` records through ``Broker.handle`` (decode,
    append to the page cache, encode), counters on and off in alternation, timed by this
    thread's CPU clock (what another process does to the machine is not counted)."""
    import random

    import uvloop

    from sluice.broker.broker import Broker, Client
    from sluice.broker.stats import BrokerStats
    from sluice.config import BrokerConfig, Listener
    from sluice.protocol import ApiKey, encode_request
    from sluice.protocol import messages as m
    from sluice.protocol.records import build_batch

    records = build_batch([(None, b"x" * size)] * batch)
    body = m.ProduceRequest(
        acks=1,
        timeout_ms=10_000,
        topic_data=[
            m.ProduceTopicData(
                name=TOPIC,
                partition_data=[m.ProducePartitionData(index=0, records=bytearray(records))],
            )
        ],
    )
    frame = bytes(encode_request(ApiKey.PRODUCE, 9, 1, "bench", body))[4:]

    async def run(data_dir: Path) -> dict[bool, list[float]]:
        config = BrokerConfig.from_settings({}, listen=Listener("127.0.0.1", 0), data_dir=data_dir)
        broker = Broker.open(config)
        broker.start()
        await broker.logs.create_topic(TOPIC, 1)
        client = Client("127.0.0.1")
        per_request: dict[bool, list[float]] = {True: [], False: []}
        spent = [0.0]

        class Timed(BrokerStats):
            """Counts as usual, and times its own work on this thread's CPU clock."""

            def answered(self, api_key: int, seconds: float, body: object) -> None:
                started = time.thread_time()
                super().answered(api_key, seconds, body)
                spent[0] += time.thread_time() - started

        try:
            for _ in range(rounds):
                order = [True, False]
                random.shuffle(order)
                for metrics in order:
                    broker.stats = BrokerStats() if metrics else None
                    started = time.thread_time()
                    for _ in range(requests):
                        await broker.handle(bytearray(frame), client)
                    per_request[metrics].append((time.thread_time() - started) / requests * 1e6)
            broker.stats = Timed()
            for _ in range(requests * 5):
                await broker.handle(bytearray(frame), client)
            own[0] = spent[0] / (requests * 5) * 1e6
        finally:
            await broker.close()
        return per_request

    own = [0.0]
    with tempfile.TemporaryDirectory(prefix="sluice-bench-metrics-") as tmp:
        per_request = uvloop.run(run(Path(tmp)))
    on = statistics.median(per_request[True])
    off = statistics.median(per_request[False])
    print(
        f"Broker.handle, Produce of {batch} x {size} B records, median of {rounds} rounds of "
        f"{requests} requests: counters on {on:.1f} us, off {off:.1f} us a request "
        f"({(on / off - 1) * 100:+.1f}%); the counters' own work in the request path: "
        f"{own[0]:.1f} us a request (two clock reads included)"
    )


def scrape_cost(partitions: int, work: Path) -> None:
    """A ``sluice serve`` child with a topic of ``partitions``: what one scrape weighs and takes,
    and a producer's slowest round trip while scrapes run back to back (the loop is handed back
    every 200 partitions; the text is built in a thread)."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    with _serve(work, admin=True) as (proc, port, admin_port):
        bootstrap = f"127.0.0.1:{port}"
        created = time.monotonic()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("many", partitions)], request_timeout=300)["many"].result(300)
        print(f"created {partitions} partitions in {time.monotonic() - created:.1f} s", flush=True)
        url = f"http://127.0.0.1:{admin_port}/metrics"
        cpu_before = _cpu(proc.pid)
        started = time.monotonic()
        body = urllib.request.urlopen(url, timeout=120).read()
        took = time.monotonic() - started
        cpu = _cpu(proc.pid) - cpu_before
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        print(
            f"one scrape: {len(body) / 1e6:.1f} MB, {samples:,} samples, {took:.2f} s, "
            f"{cpu:.2f} s of broker CPU",
            flush=True,
        )
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})

        def round_trips(count: int) -> list[float]:
            times = []
            for i in range(count):
                t0 = time.monotonic()
                producer.produce("many", b"x", partition=i % partitions)
                producer.flush(60)
                times.append(time.monotonic() - t0)
            return times

        quiet = round_trips(200)
        stop = False

        def scrape_loop() -> None:
            while not stop:
                urllib.request.urlopen(url, timeout=120).read()

        import threading

        scraper = threading.Thread(target=scrape_loop)
        scraper.start()
        try:
            busy = round_trips(200)
        finally:
            stop = True
            scraper.join()
        print(
            f"produce round trips: alone max {max(quiet) * 1000:.1f} ms (median "
            f"{statistics.median(quiet) * 1000:.1f}); during back-to-back scrapes max "
            f"{max(busy) * 1000:.1f} ms (median {statistics.median(busy) * 1000:.1f})"
        )


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
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=15.0,
        help="seconds between scrapes, the first at the start (default 15, Prometheus' default)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="time Broker.handle itself, counters on and off (--batch records a request)",
    )
    parser.add_argument("--requests", type=int, default=1000, help="per round, with --in-process")
    parser.add_argument(
        "--scrape-partitions",
        type=int,
        metavar="N",
        help="instead: one scrape of a broker with N partitions, and produce round trips while "
        "scrapes run",
    )
    args = parser.parse_args(argv)
    if args.in_process:
        in_process(args.batch, args.size, args.rounds, args.requests)
        return
    if args.scrape_partitions:
        with tempfile.TemporaryDirectory(prefix="sluice-bench-metrics-") as tmp:
            scrape_cost(args.scrape_partitions, Path(tmp))
        return
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
