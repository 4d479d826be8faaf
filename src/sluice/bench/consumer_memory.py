"""The slow-consumer experiment (issue 12's founding report): a topic filled far faster than a
handler that takes ``--handler-ms`` per record can drain it, read by a consumer in a child
process whose resident memory (RSS) the parent samples every 100 ms.

Cases: librdkafka's defaults (a plain confluent-kafka ``poll()`` loop: the prefetch queue,
``queued.max.messages.kbytes`` 64 MiB, fills), the same with ``queued.max.messages.kbytes``
lowered by hand, and ``sluice.client.Consumer.run`` with ``max_buffer_bytes`` 8, 32 and 128 MiB.
Each case's *baseline* is the child's RSS once its consumer exists, before it reads anything
(the child prints it); the table shows the peak and the growth over that baseline. The plot
(``--plot``) is RSS growth over time per case::

    python -m sluice.bench.consumer_memory                       # table + docs/client-consumer-memory.png
    python -m sluice.bench.consumer_memory --seconds 5 --mib 96  # shorter

The child (``child`` subcommand) is what the memory test runs too (tests/client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024
SAMPLE_EVERY = 0.1


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child(argv: list[str]) -> int:
    """One consumer: ``kind`` ``toolkit`` (``--max-buffer-bytes``), ``raw`` (defaults) or
    ``raw-kbytes`` (``--kbytes`` as ``queued.max.messages.kbytes``). Prints ``baseline <rss>``
    once the consumer exists, then ``processed <n>`` every second and at the end."""
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["toolkit", "raw", "raw-kbytes"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--handler-ms", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--max-buffer-bytes", type=int, default=32 * MIB)
    p.add_argument("--kbytes", type=int, default=8192)
    a = p.parse_args(argv)
    delay = a.handler_ms / 1000
    common = {
        "bootstrap.servers": a.bootstrap, "group.id": a.group, "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    if a.kind == "toolkit":
        from sluice.client import Consumer, ConsumerRecord

        async def run() -> int:
            processed = 0
            c = Consumer(topics=[a.topic], max_buffer_bytes=a.max_buffer_bytes,
                         metrics_registry=None, config=common)

            async def handler(r: ConsumerRecord) -> None:
                nonlocal processed
                await asyncio.sleep(delay)
                processed += 1

            print(f"baseline {_rss()}", flush=True)
            async with c:
                task = asyncio.create_task(c.run(handler))
                end = time.monotonic() + a.seconds
                while time.monotonic() < end:
                    await asyncio.sleep(1.0)
                    print(f"processed {processed} held {c.held_bytes()}", flush=True)
                print(f"stopping {processed}", flush=True)
                c.stop()
                await task
            return processed

        n = asyncio.run(run())
    else:
        import confluent_kafka as ck

        config = dict(common)
        if a.kind == "raw-kbytes":
            config["queued.max.messages.kbytes"] = a.kbytes
        c = ck.Consumer(config)
        print(f"baseline {_rss()}", flush=True)
        c.subscribe([a.topic])
        n = 0
        end = time.monotonic() + a.seconds
        tick = time.monotonic() + 1
        while time.monotonic() < end:
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                time.sleep(delay)
                n += 1
            if time.monotonic() >= tick:
                tick += 1
                print(f"processed {n}", flush=True)
        print(f"stopping {n}", flush=True)
        c.close()
    print(f"processed {n}", flush=True)
    return 0


@dataclass
class Samples:
    """A child's RSS over time (seconds since start, bytes) and what it said."""

    label: str
    baseline: int = 0
    times: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    processed: int = 0

    @property
    def peak(self) -> int:
        return max(self.rss, default=0)

    @property
    def growth(self) -> list[int]:
        return [r - self.baseline for r in self.rss]


def measure(label: str, args: list[str], *, timeout: float = 120.0) -> Samples:
    """Run ``python -m sluice.bench.consumer_memory child ARGS`` and sample its RSS until it
    says it is stopping (its shutdown is not the steady state)."""
    import psutil  # type: ignore[import-untyped]

    out = Samples(label)
    cmd = [sys.executable, "-m", "sluice.bench.consumer_memory", "child", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline().split()
        if first[:1] != ["baseline"]:
            raise RuntimeError(f"{label}: the child said {first!r}")
        out.baseline = int(first[1])
        ps = psutil.Process(proc.pid)
        start = time.monotonic()
        os.set_blocking(proc.stdout.fileno(), False)
        stopping = False
        while proc.poll() is None and not stopping:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{label}: the child ran over {timeout} s")
            try:
                rss = ps.memory_info().rss
            except psutil.NoSuchProcess:
                break
            out.times.append(time.monotonic() - start)
            out.rss.append(rss)
            for line in proc.stdout.readlines():
                words = line.split()
                if words[:1] in (["processed"], ["stopping"]):
                    out.processed = int(words[1])
                stopping = stopping or words[:1] == ["stopping"]
            time.sleep(SAMPLE_EVERY)
        os.set_blocking(proc.stdout.fileno(), True)
        proc.stdout.read()
        if proc.wait(timeout) != 0:
            raise RuntimeError(f"{label}: the child exited with {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()  # the pipe is ours to close (a ResourceWarning otherwise)
    return out


def fill(bootstrap: str, topic: str, mib: int, size: int = 10 * 1024) -> int:
    """Write ``mib`` MiB of ``size``-byte records as fast as librdkafka will; returns how many."""
    import confluent_kafka as ck

    p = ck.Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                     "compression.type": "none"})
    value = os.urandom(size)  # incompressible, as most payloads on the wire are not
    n = mib * MIB // size
    for i in range(n):
        while True:
            try:
                p.produce(topic, value, key=str(i).encode())
                break
            except BufferError:
                p.poll(0.05)
        if i % 256 == 0:
            p.poll(0)
    assert p.flush(120) == 0, "records left undelivered"
    return n


CASES: list[tuple[str, str, list[str]]] = [
    ("librdkafka defaults", "raw", []),
    ("queued.max.messages.kbytes=8192", "raw-kbytes", ["--kbytes", "8192"]),
    ("max_buffer_bytes=8 MiB", "toolkit", ["--max-buffer-bytes", str(8 * MIB)]),
    ("max_buffer_bytes=32 MiB", "toolkit", ["--max-buffer-bytes", str(32 * MIB)]),
    ("max_buffer_bytes=128 MiB", "toolkit", ["--max-buffer-bytes", str(128 * MIB)]),
]


def table(results: list[Samples]) -> str:
    rows = [
        "| case | baseline RSS MiB | peak RSS MiB | peak growth MiB | growth at end MiB | processed |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in results:
        end = s.growth[-1] if s.rss else 0
        rows.append(
            f"| {s.label} | {s.baseline / MIB:.0f} | {s.peak / MIB:.0f} | "
            f"{(s.peak - s.baseline) / MIB:.0f} | {end / MIB:.0f} | {s.processed} |"
        )
    return "\n".join(rows)


def plot(results: list[Samples], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for s in results:
        ax.plot(s.times, [g / MIB for g in s.growth], label=s.label)
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS growth over the consumer's baseline, MiB")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m sluice.bench.consumer_memory",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--bootstrap", help="an existing broker (default: start sluice)")
    parser.add_argument("--mib", type=int, default=256, help="MiB written to the topic first")
    parser.add_argument("--seconds", type=float, default=12.0, help="each case's run")
    parser.add_argument("--handler-ms", type=float, default=10.0)
    parser.add_argument("--plot", default="docs/client-consumer-memory.png",
                        help="where the plot goes ('' for none)")
    parser.add_argument("--json", help="also write the samples here")
    args = parser.parse_args(argv)

    def run(bootstrap: str) -> list[Samples]:
        from sluice.testing import create_topic, unique_topic_name

        topic = unique_topic_name("slow-consumer")
        create_topic(bootstrap, topic, 4)
        print(f"writing {args.mib} MiB of 10 KiB records to {topic}", file=sys.stderr)
        fill(bootstrap, topic, args.mib)
        results = []
        for label, kind, extra in CASES:
            print(f"case: {label}", file=sys.stderr)
            results.append(measure(label, [
                kind, "--bootstrap", bootstrap, "--topic", topic,
                "--group", unique_topic_name("g"), "--seconds", str(args.seconds),
                "--handler-ms", str(args.handler_ms), *extra,
            ]))
        return results

    if args.bootstrap:
        results = run(args.bootstrap)
    else:
        from sluice.testing import BrokerProcess

        with (
            tempfile.TemporaryDirectory(prefix="sluice-bench-consumer-memory-") as tmp,
            BrokerProcess(Path(tmp) / "data", Path(tmp) / "serve.log") as broker,
        ):
            broker.start()
            results = run(broker.bootstrap_servers)
    print(table(results))
    if args.plot:
        plot(results, Path(args.plot),
             f"Slow consumer: {args.handler_ms:g} ms per 10 KiB record, topic prefilled")
        print(f"plot: {args.plot}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps([s.__dict__ for s in results]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
