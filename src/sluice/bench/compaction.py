"""The log cleaner: its throughput, the disk it gives back, and what it costs producers.

::

    python -m sluice.bench.compaction                    # the numbers in docs/storage.md
    python -m sluice.bench.compaction --keys 100000      # a quicker look

1. **Throughput** (in this process, on a log of its own): ``--keys`` keys written ``--rounds``
   times with ``--value-bytes`` values in batches of ``--batch`` records, all in closed segments,
   then one cleaning run with the default ``log.cleaner.dedupe.buffer.size`` (which maps 1 M
   keys): MB/s of log read (the map pass and the cleaning pass separately, and the whole run),
   disk before and after, and what reading a key costs on the produce path of a compacted topic.
2. **Producers while the cleaner runs** (a ``sluice serve`` child): a compacted topic is filled
   with ``--broker-keys`` keys written twice while its ``min.cleanable.dirty.ratio`` is 1 (never
   cleaned); a producer on another topic sends one record at a time (acks=1, each waiting for its
   answer) for ``--seconds`` with the cleaner idle, then the ratio is lowered so the cleaner
   starts, and the producer goes on until the cleaning is done, then idles again. Round-trip
   percentiles of the phases are printed, and how long the cleaning took. The machine's other
   load moves these from run to run, so then the topic is made dirty again and cleaned once
   more while the worker process is paused (SIGSTOP) and resumed every 0.25 s: round trips with
   the worker running and paused share the same background, and are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path

from sluice.bench.partitions import Serve
from sluice.config import LogConfig
from sluice.protocol.keyed import keyless_records
from sluice.protocol.records import build_batch
from sluice.storage.cleaner import CleanerConfig, LogCleaner
from sluice.storage.log import PartitionLog

TABLE = "table"
PROBE = "probe"


def _mb(n: float) -> float:
    return n / 1e6


async def _start_worker(cleaner: LogCleaner, directory: Path) -> None:
    """Clean a tiny log first, so the worker process's start is not counted."""
    config = LogConfig.from_dict({"cleanup.policy": "compact", "segment.bytes": "1024"})
    log = PartitionLog.open(directory, config)
    for i in range(40):
        log.append(build_batch([(b"k", b"v" * 50)], base_timestamp=i))
    await cleaner.clean(log)
    log.close()


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def throughput(directory: Path, keys: int, rounds: int, value_bytes: int, batch: int, worker: str) -> None:
    config = LogConfig.from_dict(
        {"cleanup.policy": "compact", "retention.ms": "-1", "segment.bytes": str(64 * 1024 * 1024)}
    )
    now = [time.time_ns() // 1_000_000]
    log = PartitionLog.open(directory, config, lambda: now[0])
    value = b"v" * value_bytes
    began = time.monotonic()
    written = 0
    for r in range(rounds):
        for start in range(0, keys, batch):
            pairs = [(f"key-{k:09d}".encode(), value) for k in range(start, min(start + batch, keys))]
            log.append(build_batch(pairs, base_timestamp=r))
            written += len(pairs)
    # one more small batch, a segment.ms later: it rolls, so every record above is in a closed segment
    now[0] += config.segment_ms
    log.append(build_batch([(b"end", b"end")]))
    log.close()
    log = PartitionLog.open(directory, config)
    before = log.size_bytes
    print(
        f"wrote {written:,} records ({keys:,} keys x {rounds}, {value_bytes} B values) in "
        f"{time.monotonic() - began:.1f} s: {_mb(before):,.1f} MB in {len(log.segments)} segments"
    )
    cleaner = LogCleaner(CleanerConfig(worker=worker), lambda: [log])
    asyncio.run(_start_worker(cleaner, directory.parent / "warm-up"))
    who = resource.RUSAGE_CHILDREN if worker == "process" else resource.RUSAGE_SELF
    cpu_before = _cpu(who)
    began = time.monotonic()
    result = asyncio.run(cleaner.clean(log))
    took = time.monotonic() - began
    cleaner.close_sync()  # a worker's CPU time is counted once it has exited
    cpu = _cpu(who) - cpu_before
    assert result is not None
    stats = result.stats
    mapped = stats.map_done - stats.started
    cleaned = stats.ended - stats.map_done
    after = log.size_bytes
    print(
        f"cleaning: {_mb(stats.bytes_read):,.1f} MB of log in {took:.1f} s = "
        f"{_mb(stats.bytes_read) / took:.1f} MB/s "
        f"(map pass {_mb(stats.map_bytes_read) / mapped:.1f} MB/s over {mapped:.1f} s, "
        f"clean pass {_mb(stats.bytes_read) / cleaned:.1f} MB/s over {cleaned:.1f} s); "
        f"{stats.records_read:,} records read, {stats.records_kept:,} kept, {result.swaps} swaps"
    )
    print(
        f"CPU time of the cleaning ({worker}): {cpu:.1f} s, {_mb(stats.bytes_read) / cpu:.1f} MB of log "
        "per CPU second (what a free core would do; the wall-clock rate above depends on what else runs)"
    )
    print(
        f"disk: {_mb(before):,.1f} MB before, {_mb(after):,.1f} MB after "
        f"({100 * (1 - after / before):.0f}% given back); peak resident size of this process "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"
    )
    log.close()
    # the produce path's key check
    sample = build_batch([(f"key-{k}".encode(), value) for k in range(500)])
    began = time.perf_counter()
    for _ in range(200):
        keyless_records(sample)
    per_record = (time.perf_counter() - began) / (200 * 500)
    print(f"produce to a compacted topic: reading the keys costs {per_record * 1e6:.2f} us a record")


def _fill(bootstrap: str, keys: int, value_bytes: int) -> None:
    import confluent_kafka as ck

    producer = ck.Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000, "log_level": 0}
    )
    value = b"v" * value_bytes
    for _ in range(2):
        for k in range(keys):
            while True:
                try:
                    producer.produce(TABLE, value, f"key-{k:09d}".encode())
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush(600)


def _alter(bootstrap: str, ratio: str) -> None:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    resource_ = ConfigResource(
        ConfigResource.Type.TOPIC,
        TABLE,
        incremental_configs=[
            ConfigEntry("min.cleanable.dirty.ratio", ratio, incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource_])[resource_].result(60)


def _cleaner_workers(broker_pid: int) -> list[int]:
    """The broker's cleaner worker processes (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == broker_pid and b"cleaner_worker" in Path(f"/proc/{entry}/cmdline").read_bytes():
                out.append(int(entry))
    return out


def _percentiles(samples: list[float]) -> str:
    q = statistics.quantiles(samples, n=100)
    return (
        f"p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms, max {max(samples) * 1e3:.2f} ms "
        f"({len(samples):,} round trips, {len(samples) / sum(samples):,.0f}/s)"
    )


def producers(directory: Path, keys: int, value_bytes: int, seconds: float, worker: str) -> None:
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # no __all__

    from sluice.storage.manager import partition_dir

    settings = {"log.cleaner.backoff.ms": "200"}
    if worker == "thread":
        settings["sluice.log.cleaner.worker"] = "thread"
    serve = Serve(directory / "data", directory / "serve.log", settings)
    serve.start()
    try:
        admin = AdminClient({"bootstrap.servers": serve.bootstrap, "log_level": 0})
        table = NewTopic(
            TABLE,
            1,
            1,
            config={
                "cleanup.policy": "compact",
                "segment.bytes": str(16 * 1024 * 1024),
                "min.cleanable.dirty.ratio": "1.0",
            },
        )
        for topic, future in admin.create_topics([table, NewTopic(PROBE, 1, 1)]).items():
            future.result(60)
            del topic
        began = time.monotonic()
        _fill(serve.bootstrap, keys, value_bytes)
        table_dir = partition_dir(serve.data_dir, TABLE, 0)
        size = sum(p.stat().st_size for p in table_dir.glob("*.log"))
        print(f"filled {TABLE}: {2 * keys:,} records, {_mb(size):,.1f} MB in {time.monotonic() - began:.1f} s")

        producer = ck.Producer({"bootstrap.servers": serve.bootstrap, "linger.ms": 0, "acks": 1, "log_level": 0})
        producer.produce(PROBE, b"warm-up")
        producer.flush(60)

        def round_trips(until: threading.Event | float) -> list[float]:
            out = []
            while not (until.is_set() if isinstance(until, threading.Event) else time.monotonic() >= until):
                t0 = time.monotonic()
                producer.produce(PROBE, b"probe")
                producer.flush(60)
                out.append(time.monotonic() - t0)
            return out

        checkpoint = table_dir / "cleaner-offset-checkpoint"

        def first_dirty() -> int:
            try:
                return int(json.loads(checkpoint.read_bytes())["first_dirty"])
            except (OSError, ValueError, KeyError):
                return 0

        def cleaning_done(previous: int) -> threading.Event:
            done = threading.Event()

            def watch() -> None:
                while first_dirty() <= previous:
                    time.sleep(0.01)  # the probe of a file another process writes
                done.set()

            threading.Thread(target=watch, daemon=True).start()
            return done

        # A: the producer with the cleaner idle, running, and idle again.
        idle = round_trips(time.monotonic() + seconds)
        began = time.monotonic()
        done = cleaning_done(first_dirty())
        _alter(serve.bootstrap, "0.5")
        busy = round_trips(done)
        took = time.monotonic() - began
        after = sum(p.stat().st_size for p in table_dir.glob("*.log"))
        idle_after = round_trips(time.monotonic() + seconds)
        print(f"idle cleaner (before): {_percentiles(idle)}")
        print(f"cleaner running:       {_percentiles(busy)}")
        print(f"idle cleaner (after):  {_percentiles(idle_after)}")
        print(f"the cleaning took {took:.1f} s: {_mb(size):,.1f} -> {_mb(after):,.1f} MB on disk")
        q_idle = statistics.quantiles(idle + idle_after, n=100)[98]
        q_busy = statistics.quantiles(busy, n=100)[98]
        print(f"p99 while cleaning / p99 idle (before and after together): {q_busy / q_idle:.2f}")
        if worker != "process":
            return
        # B: the same on a second dirty round, the worker paused (SIGSTOP) and resumed every
        # 0.25 s: both kinds of window share whatever else the machine is doing.
        _alter(serve.bootstrap, "1.0")
        _fill(serve.bootstrap, keys, value_bytes)
        done = cleaning_done(first_dirty())
        _alter(serve.bootstrap, "0.5")
        windows: dict[bool, list[float]] = {True: [], False: []}
        running = True
        while not done.is_set():
            pids = _cleaner_workers(serve.pid)
            running = not running
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT if running else signal.SIGSTOP)
            windows[running].extend(round_trips(time.monotonic() + 0.25))
        for pid in _cleaner_workers(serve.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        print(f"alternating, worker running: {_percentiles(windows[True])}")
        print(f"alternating, worker paused:  {_percentiles(windows[False])}")
        q_run = statistics.quantiles(windows[True], n=100)[98]
        q_paused = statistics.quantiles(windows[False], n=100)[98]
        print(f"p99 running / p99 paused: {q_run / q_paused:.2f}")
    finally:
        serve.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice.bench.compaction", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500, help="records per produced batch")
    parser.add_argument("--broker-keys", type=int, default=300_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="of idle round trips")
    parser.add_argument(
        "--worker",
        choices=["process", "thread"],
        default="process",
        help="where the cleaner's file work runs (thread: only to compare)",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-producers", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sluice-bench-compaction-") as tmp:
        if not args.skip_throughput:
            throughput(Path(tmp) / "log", args.keys, args.rounds, args.value_bytes, args.batch, args.worker)
        if not args.skip_producers:
            producers(Path(tmp), args.broker_keys, args.value_bytes, args.seconds, args.worker)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
