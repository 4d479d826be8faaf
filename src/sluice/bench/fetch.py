"""Fetch under concurrent consumers: consume throughput and how long the broker's loop is held.

``sluice bench fetch`` (or ``python -m sluice.bench.fetch``) starts a broker in a child process (the real server, plus a
probe), fills one topic per (value size, partition count), then for each case starts N consumer
processes (confluent-kafka, a fresh ``assign()`` of every partition from offset 0, each reading the
whole topic) and prints, per case:

* consume throughput: records/s and value MB/s (10^6 bytes) of all consumers together, from the
  moment they are told to go until the last one has every record;
* the event loop's lag: a thread in the broker process asks the loop to run a callback every
  millisecond (``call_soon_threadsafe``) and records how late it runs (p50, p99, max). Anything
  that holds the loop (a ``pread`` on it, encoding, a burst of callbacks) shows up here;
* CPU seconds of the broker process, and of its event loop's thread alone (from
  ``/proc/PID/task/TID/schedstat``: unlike the lag, not inflated when other processes take the
  cores).

``cold`` drops the topic's segment files from the page cache before the case (``fsync``, then
``posix_fadvise(DONTNEED)``), so the first reads of each record come from the disk; with several
consumers the others may then find it cached. Numbers are printed, never asserted; on a small
machine the consumers share the cores with the broker, so compare runs made on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

MB = 1_000_000
MIB = 1024 * 1024
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the broker child ------------------------------------------------------------------------------


def serve(data_dir: Path, settings: dict[str, str]) -> None:
    """The broker on a free loopback port, with a lag probe; says ``ready PORT PID LOOP_TID``,
    answers ``reset``/``report`` lines on stdin, stops at EOF."""
    import uvloop

    from sluice.config import BrokerConfig, Listener
    from sluice.server.app import Server

    config = BrokerConfig.from_settings(
        settings, listen=Listener("127.0.0.1", 0), data_dir=data_dir
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = Server(config)
        serving = asyncio.ensure_future(server.serve())
        started = asyncio.ensure_future(server.started.wait())
        await asyncio.wait([serving, started], return_when=asyncio.FIRST_COMPLETED)
        if serving.done():
            serving.result()
        assert server.bound is not None
        lags: list[float] = []
        stop = threading.Event()

        def ran(sent: float) -> None:
            lags.append(time.perf_counter() - sent)

        def probe() -> None:
            while not stop.is_set():
                loop.call_soon_threadsafe(ran, time.perf_counter())
                time.sleep(0.001)

        def command(line: str) -> None:
            if line == "reset":
                lags.clear()
                reply: dict[str, Any] = {}
            else:
                reply = lag_summary(lags)
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()

        def commands() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(command, line.strip())
            loop.call_soon_threadsafe(server.request_exit)

        threading.Thread(target=probe, daemon=True).start()
        threading.Thread(target=commands, daemon=True).start()
        sys.stdout.write(f"ready {server.bound.port} {os.getpid()} {threading.get_native_id()}\n")
        sys.stdout.flush()
        try:
            await serving
        finally:
            stop.set()

    uvloop.run(main())


def lag_summary(lags: list[float]) -> dict[str, Any]:
    if not lags:
        return {"n": 0}
    ordered = sorted(lags)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"n": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": ordered[-1] * 1000}


class BrokerChild:
    """This module's ``serve`` role in a child process."""

    def __init__(self, data_dir: Path, log: IO[bytes], settings: dict[str, str]) -> None:
        args = [sys.executable, "-m", "sluice.bench.fetch", "--role", "serve"]
        args += ["--data-dir", str(data_dir)]
        for key, value in settings.items():
            args += ["--set", f"{key}={value}"]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError("the broker did not start (see its log)")
        self.port, self.pid, self.loop_tid = (int(x) for x in line.split()[1:4])

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def cpu_seconds(self) -> tuple[float, float]:
        """(the whole process, its event loop's thread)."""
        with open(f"/proc/{self.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{self.pid}/task/{self.loop_tid}/schedstat") as fh:
            loop_ns = int(fh.read().split()[0])
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK, loop_ns / 1e9

    def stop(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# -- the consumer child ----------------------------------------------------------------------------


def consume(bootstrap: str, topic: str, partitions: int, count: int, timeout: float) -> None:
    """Say ``ready`` once connected, wait for ``go``, read ``count`` records from offset 0 of
    every partition, print what was read and when (monotonic clock, shared by the processes)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"sluice-bench-fetch-{secrets.token_hex(4)}",  # required; nothing commits
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            # A Python loop that falls behind must not make librdkafka back off for a second.
            "fetch.queue.backoff.ms": 10,
        }
    )
    consumer.list_topics(topic, timeout=30)
    print("ready", flush=True)
    sys.stdin.readline()
    got = nbytes = 0
    start = time.monotonic()
    deadline = start + timeout
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    while got < count and time.monotonic() < deadline:
        for msg in consumer.consume(min(10_000, count - got), 0.5):
            if msg.error() is None:
                got += 1
                nbytes += len(msg.value() or b"")
    end = time.monotonic()
    consumer.close()
    print(json.dumps({"start": start, "end": end, "records": got, "bytes": nbytes}), flush=True)


def run_consumers(
    bootstrap: str, topic: str, partitions: int, count: int, n: int, timeout: float
) -> tuple[int, int, float]:
    """(records, value bytes, seconds) of ``n`` concurrent consumers of the whole topic."""
    args = [sys.executable, "-m", "sluice.bench.fetch", "--role", "consume"]
    args += ["--bootstrap", bootstrap, "--topic", topic, "--partitions", str(partitions)]
    args += ["--count", str(count), "--timeout", str(timeout)]
    procs = [
        subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a consumer did not start")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            assert p.stdout is not None
            results.append(json.loads(p.stdout.readline()))
            p.wait(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    records = sum(r["records"] for r in results)
    nbytes = sum(r["bytes"] for r in results)
    seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    if records < n * count:
        raise RuntimeError(f"consumers read {records} of {n * count} records in {seconds:.0f} s")
    return records, nbytes, seconds


# -- topics ----------------------------------------------------------------------------------------


def fill(bootstrap: str, topic: str, partitions: int, size: int, count: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[
        topic
    ].result(60)
    failed = [0]

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed[0] += 1

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.kbytes": 1024 * 1024,
            "delivery.report.only.error": True,
            "on_delivery": delivered,
        }
    )
    value = b"x" * size
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.01)
    if producer.flush(120) or failed[0]:
        raise RuntimeError(f"filling {topic}: {failed[0]} records not delivered")


def drop_from_page_cache(data_dir: Path, topic: str, partitions: int) -> None:
    from sluice.storage.manager import partition_dir

    for p in range(partitions):
        for path in partition_dir(data_dir, topic, p).glob("*.log"):
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages cannot be dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Case:
    cache: str
    size: int
    partitions: int
    consumers: int

    @property
    def name(self) -> str:
        return f"{self.cache} {self.size} B x {self.partitions}p, {self.consumers} consumers"


@dataclass
class Measured:
    records_s: float
    mb_s: float
    lag: dict[str, Any]
    cpu_s: float
    loop_cpu_s: float


def measure(
    broker: BrokerChild, data_dir: Path, case: Case, topic: str, count: int, timeout: float
) -> Measured:
    if case.cache == "cold":
        drop_from_page_cache(data_dir, topic, case.partitions)
    broker.ask("reset")
    cpu, loop_cpu = broker.cpu_seconds()
    records, nbytes, seconds = run_consumers(
        broker.bootstrap, topic, case.partitions, count, case.consumers, timeout
    )
    cpu_after, loop_cpu_after = broker.cpu_seconds()
    lag = broker.ask("report")
    return Measured(
        records / seconds, nbytes / seconds / MB, lag, cpu_after - cpu, loop_cpu_after - loop_cpu
    )


def median_of(runs: list[Measured]) -> Measured:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    return Measured(
        med([r.records_s for r in runs]),
        med([r.mb_s for r in runs]),
        {k: med([r.lag[k] for r in runs]) for k in ("p50", "p99", "max")},
        med([r.cpu_s for r in runs]),
        med([r.loop_cpu_s for r in runs]),
    )


FETCH_JSON_KEYS = (
    "scenario", "case", "cache", "value_bytes", "partitions", "consumers", "records_s", "mb_s",
    "lag_p50_ms", "lag_p99_ms", "lag_max_ms", "broker_cpu_s", "loop_cpu_s", "runs",
)
"""The keys of ``--json``'s lines, one per case (stable; medians of ``runs``)."""


def _json_line(case: Case, m: Measured, runs: int) -> str:
    values = (
        "fetch", case.name, case.cache, case.size, case.partitions, case.consumers, m.records_s,
        m.mb_s, m.lag["p50"], m.lag["p99"], m.lag["max"], m.cpu_s, m.loop_cpu_s, runs,
    )
    return json.dumps(dict(zip(FETCH_JSON_KEYS, values, strict=True)))


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sluice bench fetch", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--mib", type=int, default=256, help="value MiB per topic (default 256)")
    parser.add_argument("--sizes", default="100,1024", help="value sizes (default 100,1024)")
    parser.add_argument("--partitions", default="1,8", help="partition counts (default 1,8)")
    parser.add_argument("--consumers", default="1,4", help="concurrent consumers (default 1,4)")
    parser.add_argument("--cache", default="warm,cold", help="warm, cold or both (default)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; medians shown")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per consumer")
    parser.add_argument("--data-dir", type=Path, help="the broker's data (default: a temp dir)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a broker setting")  # fmt: skip
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per case on stdout (keys: FETCH_JSON_KEYS); the "
                        "progress lines go to stderr")  # fmt: skip
    parser.add_argument("--role", choices=["bench", "serve", "consume"], default="bench",
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.set)
    if args.role == "serve":
        serve(args.data_dir, settings)
        return 0
    if args.role == "consume":
        consume(args.bootstrap, args.topic, int(args.partitions), args.count, args.timeout)
        return 0
    with contextlib.ExitStack() as stack:
        if args.data_dir is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sluice-bench-")))
            data_dir, log_path = base / "data", base / "broker.log"
        else:
            data_dir = args.data_dir
            log_path = data_dir.parent / f"{data_dir.name}.log"
        with log_path.open("ab") as log:
            try:
                run(args, data_dir, log, settings)
            except Exception:
                log.flush()
                sys.stderr.write(f"the broker's log ({log_path}):\n{log_path.read_text()[-4000:]}")
                raise
    return 0


def run(args: argparse.Namespace, data_dir: Path, log: IO[bytes], settings: dict[str, str]) -> None:
    table = sys.stderr if args.json else sys.stdout
    broker = BrokerChild(data_dir, log, settings)
    try:
        topics: dict[tuple[int, int], tuple[str, int]] = {}
        for size in _ints(args.sizes):
            for partitions in _ints(args.partitions):
                count = args.mib * MIB // size
                topic = f"fetch-{size}b-{partitions}p-{secrets.token_hex(2)}"
                began = time.monotonic()
                fill(broker.bootstrap, topic, partitions, size, count)
                print(
                    f"# filled {topic}: {count:,} records of {size} B "
                    f"in {time.monotonic() - began:.1f} s",
                    file=table,
                    flush=True,
                )
                topics[size, partitions] = (topic, count)
        cases = [
            Case(cache, size, partitions, consumers)
            for cache in args.cache.split(",")
            for size in _ints(args.sizes)
            for partitions in _ints(args.partitions)
            for consumers in _ints(args.consumers)
        ]
        print(
            f"{'case':<36} {'records/s':>11} {'MB/s':>7} {'lag p50':>8} {'p99':>7} {'max':>7}"
            f" {'cpu s':>6} {'loop':>6}   (lag in ms; cpu: broker, its loop thread; medians of"
            f" {args.repeat})",
            file=table,
            flush=True,
        )
        for case in cases:
            topic, count = topics[case.size, case.partitions]
            runs = [
                measure(broker, data_dir, case, topic, count, args.timeout)
                for _ in range(args.repeat)
            ]
            m = median_of(runs)
            print(
                f"{case.name:<36} {m.records_s:>11,.0f} {m.mb_s:>7.1f} {m.lag['p50']:>8.2f} "
                f"{m.lag['p99']:>7.2f} {m.lag['max']:>7.1f} {m.cpu_s:>6.2f} {m.loop_cpu_s:>6.2f}",
                file=table,
                flush=True,
            )
            if args.json:
                print(_json_line(case, m, len(runs)), flush=True)
    finally:
        broker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
