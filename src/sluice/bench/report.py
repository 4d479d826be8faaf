"""``sluice bench report``: run every benchmark and rewrite docs/benchmarks.md with its plots.

One command regenerates the whole page: the machine, the commands, the tables and small PNGs
(``docs/benchmarks/*.png``) for the broker comparison (sluice, Apache Kafka 0.9.0.1, Redis
Streams) and the three founding claims. ``--quick`` runs every section with small counts, one
round: it proves the page can be regenerated, its numbers are not for decisions.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sluice.bench import compare, output, scenarios
from sluice.bench.harness import Result
from sluice.bench.scenarios import Options
from sluice.bench.targets import sluice_child

DEFAULT_OUT = Path("docs/benchmarks.md")


def machine() -> list[str]:
    """What the numbers were measured on."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    import confluent_kafka

    load = os.getloadavg()
    return [
        f"- CPU: {model}, {os.cpu_count()} cores; RAM {mem / 2**30:.1f} GiB; "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; confluent-kafka {confluent_kafka.version()[0]}, "
        f"librdkafka {confluent_kafka.libversion()[0]}",
        f"- load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        "(other work on the machine shows up as noise in every figure)",
    ]


def _cols(*names: str) -> tuple[str, ...]:
    return ("case", "target", *names)


def _fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def writer_verdict(results: Sequence[Result]) -> list[str]:
    """Founding claim 2 from our numbers: writer/inline per ack level and producer count."""
    by = {(r.params.get("mode"), r.params.get("ack"), r.params.get("producers")): r
          for r in results}
    lines = ["| ack level | producers | writer msg/s | inline msg/s | writer / inline | "
             "writer broker CPU s/M msg | inline broker CPU s/M msg |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    ratios = []
    for ack in ("written", "fsynced"):
        for n in sorted({int(r.params["producers"]) for r in results}):
            w, i = by.get(("writer", ack, n)), by.get(("inline", ack, n))
            if w is None or i is None:
                continue
            ratios.append(w.msgs_s / i.msgs_s if i.msgs_s else 0.0)
            lines.append(f"| {ack} | {n} | {w.msgs_s:,.0f} | {i.msgs_s:,.0f} | "
                         f"{_fmt_ratio(w.msgs_s, i.msgs_s)} | "
                         f"{_num(w.broker_cpu_per_million)} | {_num(i.broker_cpu_per_million)} |")
    if not ratios:
        return lines
    best, worst = max(ratios), min(ratios)
    if best >= 3:
        verdict = f"**confirmed** in part: up to {best:.1f}x"
    elif best >= 1.2:
        verdict = (f"**not reproduced at 3-5x**: the writer task gains at most {best:.2f}x "
                   f"(and {worst:.2f}x at worst)")
    else:
        verdict = (f"**refuted** here: writer / inline between {worst:.2f}x and {best:.2f}x, "
                   "within what a shared machine's noise moves")
    return [*lines, "", f"Verdict on the reported 3-5x: {verdict}."]


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sluice bench report", description=__doc__.split("\n\n")[0]
                                if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="small counts, one round (minutes)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the page (default "
                   "docs/benchmarks.md; PNGs go to a directory named after it)")
    p.add_argument("--no-kafka", action="store_true", help="skip Apache Kafka 0.9.0.1")
    p.add_argument("--no-redis", action="store_true", help="skip Redis Streams")
    p.add_argument("--repeat", type=int, default=None, help="rounds (default 3; --quick 1)")
    args = p.parse_args(argv)
    quick = args.quick
    repeat = args.repeat or (1 if quick else 3)
    began = time.monotonic()
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    png_dir = args.out.with_suffix("")
    png_dir.mkdir(parents=True, exist_ok=True)
    say = output.say

    with output.live_progress() as progress:
        base = Options(messages=50_000 if quick else 1_000_000, producers=2, repeat=repeat,
                       seconds=5.0 if quick else 20.0, progress=progress)
        # 1. the broker: sluice vs Kafka 0.9.0.1 (+ Redis)
        matrix = compare.Matrix(base=base)
        broker = compare.run(matrix, repeat=repeat, kafka=not args.no_kafka, sluice=True,
                             redis=not args.no_redis)
        compare.plot_rates([r for r in broker if r.scenario in ("produce", "consume")],
                           png_dir / "broker-throughput.png")
        _cpu_bars([r for r in broker if r.scenario in ("produce", "consume")
                   and r.broker_cpu_per_million is not None], png_dir / "broker-cpu.png")
        e2e = [r for r in broker if r.scenario == "e2e"]
        output.plot(e2e, png_dir / "e2e-latency.png", "e2e: msg/s and p99 latency over time")

        with sluice_child() as target:
            # 2. founding claim 1: send strategies
            st_opts = replace(base, messages=20_000 if quick else 200_000, repeat=repeat)
            strategies = scenarios.strategies(target, st_opts, say,
                                              round_trips=50 if quick else 300)
            output.bars([r.case for r in strategies], {"msg/s": [r.msgs_s for r in strategies]},
                        "msg/s", png_dir / "strategies.png", "send strategies, 100 B")
            # 3. founding claim 2: the writer task
            wr_opts = replace(base, messages=50_000 if quick else 500_000, repeat=repeat)
            counts = (1, 4) if quick else scenarios.WRITER_PRODUCERS
            writer = scenarios.writer(target, wr_opts, say, producers=counts)
            small = scenarios.writer(target, replace(wr_opts, client={"linger.ms": 0}), say,
                                     producers=counts[-1:])
            for r in small:
                r.case += ", linger.ms=0"
            output.bars([r.case for r in writer], {"msg/s": [r.msgs_s for r in writer]},
                        "msg/s", png_dir / "writer.png", "writer task vs inline")
            # 4. founding claim 3: consumer memory under slow processing
            sc_opts = replace(base, messages=40_000 if quick else 200_000, size=1024,
                              seconds=8.0 if quick else 30.0, repeat=1)
            slow = scenarios.slow_consumer(target, sc_opts, say)
            output.plot(slow, png_dir / "slow-consumer.png", "consumer RSS, 1 ms per message")

    seconds = time.monotonic() - began
    rel = png_dir.name
    cmd = "sluice bench report" + (" --quick" if quick else "")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{cmd}` ({started}, {seconds / 60:.0f} min); every table and plot below "
        "is its output. " + ("**Quick mode**: small counts and one round, to prove the page "
                             "regenerates: not numbers to act on. " if quick else "")
        + "Numbers are never asserted in tests; rerun on a quiet machine before quoting them.",
        "",
        "## The machine",
        "",
        *machine(),
        "",
        "## How to run",
        "",
        "```",
        "sluice bench report                 # this page (--quick: minutes, small counts)",
        "sluice bench compare                # sluice vs Apache Kafka 0.9.0.1 (+ Redis Streams)",
        "sluice bench produce --messages 1000000 --producers 2 --json",
        "sluice bench e2e --rate 10000 --seconds 20 --plot e2e.png",
        "sluice bench strategies | writer | slow-consumer | durable | consume",
        "sluice bench produce --bootstrap HOST:PORT -X key=value   # any Kafka-compatible broker",
        "```",
        "",
        "See [bench-clients.md](bench-clients.md) for the tool's options and what each column "
        "means.",
        "",
        "## 1. The broker: sluice against Apache Kafka 0.9.0.1",
        "",
        f"Median of {repeat} round(s), the brokers alternating (never running together); "
        f"{base.messages:,} messages of 100 B and {base.messages // 5:,} of 1 KiB per case, "
        f"from {base.producers} producer processes.",
        "",
        "Client settings, the same for every broker, and why:",
        "",
        "- producers: `linger.ms=5`, `batch.size=1000000`, no compression, null keys; a "
        "delivery callback per message, which records every 8th `msg.latency()` (produce to "
        "acknowledgement) in an HDR histogram; two processes, because one Python loop is "
        "slower than either broker;",
        "- consumers: `assign()` from offset 0 (no group join timed), "
        "`fetch.queue.backoff.ms=10`: librdkafka stops fetching when its queue holds "
        "`queued.min.messages` (100k) and then waits `fetch.queue.backoff.ms` (1 s by "
        "default), so with the default a fast broker ends up timing the client's sleep;",
        f"- e2e: the same {base.producers} producer processes at a fixed total rate with "
        "`linger.ms=1`, each value stamped with its *scheduled* send time (no coordinated "
        "omission), one consumer polling one message at a time;",
        "- Kafka 0.9.0.1 also gets `api.version.request=false broker.version.fallback=0.9.0.1` "
        "(it has no ApiVersions); its broker JVM is measured, ZooKeeper is not.",
        "- Redis Streams: `redis-benchmark` (50 connections, 16 commands pipelined) doing XADD "
        "of one field, AOF `appendfsync everysec`; its rate is redis-benchmark's own.",
        "",
        "Broker CPU per million messages is the figure that does not depend on how fast the "
        "client is.",
        "",
        compare.comparison(broker),
        "",
        output.markdown(broker, _cols("msg/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                                      "broker CPU s/M msg", "broker RSS MiB", "bottleneck")),
        "",
        *_notes(broker),
        f"![msg/s per case]({rel}/broker-throughput.png)",
        "",
        f"![broker CPU seconds per million messages]({rel}/broker-cpu.png)",
        "",
        f"![e2e throughput and p99 latency over time]({rel}/e2e-latency.png)",
        "",
        "## 2. Founding claim 1: send strategies",
        "",
        "The producer toolkit's strategies (`sluice.client.Producer`: `send` awaited one by one, "
        "`submit` futures, a task per send, `send_ordered` with N in flight, `send_batch`) "
        "against raw confluent-kafka loops, each case in a fresh child process, `acks=all`, "
        "idempotence on, `linger.ms=5`, 100 B; latency is librdkafka's produce-to-acknowledgement "
        "per record. Client RSS is the case process's peak. Details: "
        "[client.md](client.md).",
        "",
        output.markdown(strategies, _cols("msg/s", "p50 ms", "p99 ms", "p99.9 ms",
                                          "client RSS MiB", "bottleneck")),
        "",
        f"![send strategies]({rel}/strategies.png)",
        "",
        "## 3. Founding claim 2: the asynchronous segment writer",
        "",
        "`sluice.append.mode` writer (a task per partition fed by a queue; one `pwritev` per "
        "drain; group commit) against inline (the request writes, and fsyncs if asked, itself), "
        "over the network into one partition from 1, 4 and 16 concurrent producers "
        "(`acks=all`, so the topic's `sluice.append.ack` decides when the broker answers: "
        "`queued` = fire-and-forget, `written` = confirmed, `fsynced` = confirmed after an fsync). "
        "The `linger.ms=0` rows send many small requests, where a per-request cost shows.",
        "",
        output.markdown([*writer, *small], _cols("msg/s", "p50 ms", "p99 ms",
                                                 "broker CPU s/M msg", "bottleneck")),
        "",
        *writer_verdict(writer),
        "",
        "Why: the original server wrote *inside the request*, blocking every other request on "
        "its thread for each periodic flush. sluice's inline append is one `write` of an "
        "already-validated batch into the page cache; what the writer task can add is "
        "coalescing (one `pwritev` for every append queued meanwhile; one fsync for every "
        "append waiting on it), at the price of a queue hop per append. Which of the two "
        "dominates is what the table shows; where the bottleneck column says `client` or "
        "`machine`, the broker was not the limit and the modes cannot differ much.",
        "",
        f"![writer vs inline]({rel}/writer.png)",
        "",
        "## 4. Founding claim 3: consumer memory under slow processing",
        "",
        f"A topic filled with {sc_opts.messages:,} x 1 KiB, then one consumer that takes 1 ms "
        f"per message for {sc_opts.seconds:g} s: its RSS over time. librdkafka prefetches up to "
        "`queued.max.messages.kbytes` (64 MiB by default) ahead of the application; lowering it "
        "bounds the memory by hand. The consumer toolkit's one knob, `max_buffer_bytes` "
        "(8/32/128 MiB rows), bounds all of it: librdkafka's queues and the toolkit's own "
        "buffer (docs/client.md, \"Memory: one knob\"). Client RSS includes the interpreter "
        "and, for the toolkit rows, the toolkit's import.",
        "",
        output.markdown(slow, _cols("msg/s", "client RSS MiB")),
        "",
        f"![consumer RSS over time]({rel}/slow-consumer.png)",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out} and {png_dir}/*.png in {seconds:.0f} s", file=sys.stderr)
    return 0


def _notes(results: Sequence[Result]) -> list[str]:
    out = [f"- {r.case} [{r.target}]: {n}" for r in results for n in r.notes]
    return [*out, ""] if out else []


def _cpu_bars(results: Sequence[Result], path: Path) -> None:
    cases = list(dict.fromkeys(r.case for r in results))
    targets = list(dict.fromkeys(r.target for r in results))
    by = {(r.target, r.case): r.broker_cpu_per_million or 0.0 for r in results}
    output.bars(cases, {t: [by.get((t, c), 0.0) for c in cases] for t in targets},
                "broker CPU s / M msg", path)
