"""Throughput of ``Consumer.run`` with a no-op handler at concurrency 1, 16 and 256, against a
raw confluent-kafka ``consume()`` loop in the same run (issue 12's target: at least 70% of the
raw loop at concurrency 1), 100-byte records from a topic written beforehand, on a sluice broker
this module starts as a child process (or ``--bootstrap``).

The baseline, ``raw consume loop``, runs with the librdkafka settings the toolkit's consumer
derives from its default ``max_buffer_bytes`` (:func:`sluice.client.consumer.librdkafka_budget`),
so the ratio is the toolkit's own cost. ``raw loop, librdkafka defaults`` shows why: with
``fetch.queue.backoff.ms`` at its default of 1000, librdkafka now and then postpones a
partition's next fetch by a second once its prefetch thresholds are crossed, and a run of a few
hundred thousand records then takes 0.3 s or 1.3 s by chance (about 1M or 225k records/s on
this machine, the same code).

Every case reads the whole topic with a fresh group in a fresh child process (records a second
from the first record to the last, and the child's CPU time per record); cases run in rounds
(``--repeat``) and the table shows the median, slowest and fastest::

    python -m sluice.bench.consumer_throughput                  # 300000 records, 3 rounds
    python -m sluice.bench.consumer_throughput --records 100000 --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULTS_CASE = "raw loop, librdkafka defaults"
CASES = ["raw consume loop", DEFAULTS_CASE, "run c=1", "run c=16", "run c=256", "async for", "getmany"]


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--case", required=True)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--records", type=int, required=True)
    a = p.parse_args(argv)
    config = {"bootstrap.servers": a.bootstrap, "group.id": a.group,
              "auto.offset.reset": "earliest", "enable.auto.commit": False}
    total = a.records
    first = 0.0
    if a.case in ("raw consume loop", DEFAULTS_CASE):
        import confluent_kafka as ck

        if a.case == "raw consume loop":
            from sluice.client.consumer import DEFAULT_MAX_BUFFER_BYTES, librdkafka_budget

            config.update(librdkafka_budget(DEFAULT_MAX_BUFFER_BYTES))

        def handle(m: Any) -> None:
            pass

        c = ck.Consumer(config)
        c.subscribe([a.topic])
        n = 0
        cpu0 = _cpu()
        while n < total:
            for m in c.consume(1000, 1.0):
                if m.error() is None:
                    if n == 0:
                        first = time.perf_counter()
                    handle(m)
                    n += 1
        elapsed = time.perf_counter() - first
        cpu = _cpu() - cpu0
        c.close()
    else:
        from sluice.client import Consumer, ConsumerRecord

        async def run() -> tuple[float, float]:
            nonlocal first
            n = 0
            c = Consumer(topics=[a.topic], metrics_registry=None, config=config)
            async with c:
                cpu0 = _cpu()
                if a.case.startswith("run"):
                    concurrency = int(a.case.split("=")[1])

                    async def handler(r: ConsumerRecord) -> None:
                        nonlocal n, first
                        if n == 0:
                            first = time.perf_counter()
                        n += 1
                        if n == total:
                            c.stop()

                    await c.run(handler, concurrency=concurrency, ordering="key")
                elif a.case == "async for":
                    async for _ in c:
                        if n == 0:
                            first = time.perf_counter()
                        n += 1
                        if n == total:
                            break
                elif a.case == "getmany":
                    while n < total:
                        batch = await c.getmany(1000, 1.0)
                        if batch and n == 0:
                            first = time.perf_counter()
                        n += len(batch)
                else:
                    raise ValueError(f"no case {a.case!r}")
                return time.perf_counter() - first, _cpu() - cpu0

        elapsed, cpu = asyncio.run(run())
    print(json.dumps({"rate": total / elapsed, "cpu_us": cpu / total * 1e6}), flush=True)
    return 0


def fill(bootstrap: str, topic: str, records: int, size: int = 100) -> None:
    import confluent_kafka as ck

    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000})
    value = os.urandom(size // 2).hex().encode()[:size]
    for i in range(records):
        while True:
            try:
                p.produce(topic, value, key=str(i % 1000).encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 1024 == 0:
            p.poll(0)
    assert p.flush(120) == 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m sluice.bench.consumer_throughput",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--bootstrap", help="an existing broker (default: start sluice)")
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma-separated cases (default: all)")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.only.split(",")] if args.only else CASES
    unknown = [c for c in cases if c not in CASES]
    if unknown:  # they ran the getmany case under their own name
        parser.error(f"no case {', '.join(map(repr, unknown))}; the cases: {', '.join(CASES)}")

    def run(bootstrap: str) -> dict[str, list[dict[str, float]]]:
        from sluice.testing import create_topic, unique_topic_name

        topic = unique_topic_name("consume-throughput")
        create_topic(bootstrap, topic, args.partitions)
        print(f"writing {args.records} records of 100 B to {topic}", file=sys.stderr)
        fill(bootstrap, topic, args.records)
        results: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
        for round_ in range(args.repeat):
            for case in cases:
                cmd = [sys.executable, "-m", "sluice.bench.consumer_throughput", "child",
                       "--case", case, "--bootstrap", bootstrap, "--topic", topic,
                       "--group", unique_topic_name("g"), "--records", str(args.records)]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if out.returncode != 0:
                    raise RuntimeError(f"{case}: {out.stderr[-2000:]}")
                got = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"round {round_ + 1} {case}: {got['rate']:,.0f}/s", file=sys.stderr)
                results[case].append(got)
        return results

    if args.bootstrap:
        results = run(args.bootstrap)
    else:
        from sluice.testing import BrokerProcess

        with (
            tempfile.TemporaryDirectory(prefix="sluice-bench-consume-") as tmp,
            BrokerProcess(Path(tmp) / "data", Path(tmp) / "serve.log") as broker,
        ):
            broker.start()
            results = run(broker.bootstrap_servers)
    raw = statistics.median(r["rate"] for r in results.get("raw consume loop", [])) if (
        "raw consume loop" in results) else None
    print("| case | records/s (median) | slowest | fastest | vs raw | CPU µs/record |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for case, rs in results.items():
        rates = [r["rate"] for r in rs]
        med = statistics.median(rates)
        ratio = f"{med / raw:.0%}" if raw else "-"
        cpu = statistics.median(r["cpu_us"] for r in rs)
        print(f"| {case} | {med:,.0f} | {min(rates):,.0f} | {max(rates):,.0f} | {ratio} | "
              f"{cpu:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
