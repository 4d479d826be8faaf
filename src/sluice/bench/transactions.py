"""Transactional produce against idempotent produce, in the same run: records per second for
transactions of 100, 1000 and 10000 records, and how long ``commit_transaction`` takes.

``python -m sluice.bench.transactions [--records 30000] [--partitions 3]`` starts ``sluice serve``
in a child process on a temporary data directory and drives it with confluent-kafka. The
idempotent baseline produces the same records in groups of the same size and waits for each
group's delivery (``flush``), which is what a transaction's commit waits for too; the
difference is the transaction's cost: AddPartitionsToTxn, EndTxn (its decision and completion
logged with an fsync each) and one marker per partition (appended and fsynced).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "sluice.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    args += ["--data-dir", str(data_dir), "--log-level", "warning"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("sluice serve did not start") from None
            time.sleep(0.05)


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # no __all__

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def _run(
    bootstrap: str, topic: str, partitions: int, records: int, size: int, transactional: bool
) -> tuple[float, list[float]]:
    """(records per second, commit or flush latencies in ms)."""
    from confluent_kafka import Producer

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "linger.ms": 5,
        "log_level": 0,
    }
    if transactional:
        conf["transactional.id"] = f"bench-{topic}"
    producer = Producer(conf)
    if transactional:
        producer.init_transactions(30)
    value = b"x" * 100
    # Warm up (connections, metadata, the producer id) outside the measurement.
    if transactional:
        producer.begin_transaction()
    for p in range(partitions):
        producer.produce(topic, value, partition=p)
    if transactional:
        producer.commit_transaction(60)
    else:
        assert producer.flush(60) == 0
    latencies = []
    started = time.perf_counter()
    for first in range(0, records, size):
        if transactional:
            producer.begin_transaction()
        for i in range(first, min(first + size, records)):
            while True:
                try:
                    producer.produce(topic, value, partition=i % partitions)
                    break
                except BufferError:
                    producer.poll(0.01)
        ending = time.perf_counter()
        if transactional:
            producer.commit_transaction(60)
        else:
            assert producer.flush(60) == 0
        latencies.append((time.perf_counter() - ending) * 1000)
    elapsed = time.perf_counter() - started
    return records / elapsed, latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice.bench.transactions")
    parser.add_argument(
        "--records", type=int, default=30_000, help="records per run (default 30000)"
    )
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--sizes", default="100,1000,10000", help="records per transaction")
    args = parser.parse_args(argv)
    port = _free_port()
    bootstrap = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="sluice-bench-txn-") as tmp:
        proc = _serve(Path(tmp), port)
        try:
            print(
                f"{args.records} records of 100 bytes to {args.partitions} partitions, acks=all, linger.ms=5"
            )
            print(
                f"{'records/txn':>11}  {'idempotent rec/s':>16}  {'flush ms p50/p99':>16}  {'transactional rec/s':>19}  {'commit ms p50/p99':>17}"
            )
            for size in (int(s) for s in args.sizes.split(",")):
                row = [f"{size:>11}"]
                for transactional in (False, True):
                    topic = f"bench-{'txn' if transactional else 'idem'}-{size}"
                    _create_topic(bootstrap, topic, args.partitions)
                    rate, lat = _run(
                        bootstrap, topic, args.partitions, args.records, size, transactional
                    )
                    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0]] * 99
                    row.append(f"{rate:>{19 if transactional else 16},.0f}")
                    row.append(f"{q[49]:>7.1f}/{q[98]:<7.1f}".rjust(17 if transactional else 16))
                print("  ".join(row), flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
