"""The ``sluice bench`` scenarios over the network: each a function from a target and options to
:class:`~sluice.bench.harness.Result` rows.

* ``produce``, ``consume``, ``e2e``: the broker's throughput and latency (:mod:`loadgen` workers);
* ``durable``: one topic per ack/fsync mode, side by side;
* ``writer``: founding claim 2, the storage writer task against inline appends;
* ``strategies``: founding claim 1, the send strategies (:mod:`sluice.bench.strategies`);
* ``slow-consumer``: founding claim 3, a consumer's RSS while its processing is slow.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sluice.bench import loadgen
from sluice.bench.harness import (
    MIB,
    Latency,
    Process,
    Result,
    cpu_seconds,
    median_result,
    peak_rss_bytes,
)
from sluice.bench.loadgen import Work
from sluice.bench.targets import Target

Say = Callable[[str], None]


@dataclass
class Options:
    """Every scenario option; each scenario reads the ones it names (defaults: a short run)."""

    messages: int = 200_000
    size: int = 100
    partitions: int = 1
    producers: int = 1
    processes: int = 0  # producer processes; 0: one per producer up to 4
    consumers: int = 1
    acks: str = "1"
    compression: str = "none"
    linger_ms: float = 5.0
    rate: float = 0.0  # msg/s over all producers; 0 is as fast as they go
    seconds: float = 10.0  # e2e and slow-consumer length
    repeat: int = 1
    deadline: float = 300.0
    latency: bool = True  # produce: False drops the delivery callback (and the percentiles)
    client: dict[str, Any] = field(default_factory=dict)  # -X settings, last word
    progress: Callable[[str, int, int, float], None] | None = None  # case, done, of, s


def _tag(name: str) -> str:
    return f"sluice-bench-{name}-{secrets.token_hex(4)}"


def producer_config(opts: Options, target: Target, **over: Any) -> dict[str, Any]:
    return {"acks": opts.acks, "compression.type": opts.compression,
            "linger.ms": opts.linger_ms, **over, **target.client_config, **opts.client}


def consumer_config(target: Target, opts: Options, **over: Any) -> dict[str, Any]:
    return {**over, **target.client_config, **opts.client}


def produce_works(target: Target, topic: str, opts: Options, count: int, role: str = "produce",
                  config: Mapping[str, Any] | None = None) -> list[Work]:
    """``opts.producers`` producer instances over ``opts.processes`` processes, the messages
    (and the rate) split evenly."""
    producers = max(1, opts.producers)
    procs = opts.processes or min(producers, 4)
    procs = max(1, min(procs, producers))
    works = []
    for i in range(procs):
        share = count // procs + (1 if i < count % procs else 0)
        instances = producers // procs + (1 if i < producers % procs else 0)
        works.append(Work(role, target.bootstrap, topic, share, opts.size,
                          rate=opts.rate / procs if opts.rate else 0.0,
                          config=dict(config if config is not None
                                      else producer_config(opts, target)),
                          instances=instances, deadline=opts.deadline,
                          latency=opts.latency or role == "e2e-produce"))
    return works


def consume_works(target: Target, topic: str, opts: Options, total: int, role: str = "consume",
                  config: Mapping[str, Any] | None = None) -> list[Work]:
    """``opts.consumers`` consumers, the partitions split between them (a static assignment in
    one group: a group join's seconds would otherwise be timed as throughput)."""
    n = max(1, min(opts.consumers, opts.partitions))
    group = _tag("group")
    return [Work(role, target.bootstrap, topic, total, opts.size,
                 partitions=tuple(range(i, opts.partitions, n)),
                 config=dict(config if config is not None else consumer_config(target, opts)),
                 deadline=opts.deadline, group=group) for i in range(n)]


def measure(scenario: str, case: str, target: Target, opts: Options, works: Sequence[Work],
            params: Mapping[str, Any], *, expected: int | None = None,
            count_role: str = "produce") -> Result:
    """Run ``works`` once and turn the run into a result counting ``count_role``'s messages."""

    def progress(done: int, total: int, seconds: float) -> None:
        if opts.progress is not None:
            opts.progress(case, done, total, seconds)

    run = loadgen.run(works, target.pids, progress=progress, expected=expected,
                      timeout=opts.deadline + 120, latency_role=count_role)
    counted = [o for o in run.outcomes if o.role.endswith(count_role)]
    first = min(o.first_ns for o in counted)
    last = max(o.last_ns for o in counted)
    result = Result(scenario, case, target.label, sum(o.count for o in counted), opts.size,
                    max(1e-9, (last - first) / 1e9), dict(params), run.errors,
                    run.histogram.latency(), run.broker, run.clients, run.timeline)
    wanted = expected if expected is not None else sum(w.count for w in works
                                                       if w.role.endswith(count_role))
    if result.messages < wanted:
        result.notes.append(f"{result.messages:,} of {wanted:,} messages in the deadline")
    if result.errors:
        result.notes.append(f"{result.errors:,} failed deliveries or consumer errors")
    return result


def repeated(opts: Options, one: Callable[[], Result]) -> Result:
    return median_result([one() for _ in range(max(1, opts.repeat))])


def _size(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


# -- produce / consume / e2e ---------------------------------------------------------------------


def produce(target: Target, opts: Options, say: Say) -> list[Result]:
    case = (f"produce {_size(opts.size)} x {opts.partitions}p, acks={opts.acks}, "
            f"{opts.producers} producer{'s' if opts.producers > 1 else ''}"
            + (f", {opts.compression}" if opts.compression != "none" else "")
            + (f", {opts.rate:,.0f} msg/s" if opts.rate else ""))
    params = {"partitions": opts.partitions, "acks": opts.acks, "producers": opts.producers,
              "compression": opts.compression, "linger_ms": opts.linger_ms, "rate": opts.rate,
              "client": producer_config(opts, target)}

    def one() -> Result:
        topic = target.create_topic(_tag("produce"), opts.partitions)
        return measure("produce", case, target, opts,
                       produce_works(target, topic, opts, opts.messages), params)

    return [repeated(opts, one)]


def fill(target: Target, topic: str, opts: Options, count: int) -> None:
    """Produce ``count`` messages of ``opts.size`` (acks=1, not reported) for a read scenario."""
    works = produce_works(target, topic, replace(opts, rate=0.0, progress=None), count,
                          config=producer_config(replace(opts, acks="1"), target))
    run = loadgen.run(works, ())
    if run.count < count:
        raise RuntimeError(f"filling {topic}: {run.count:,} of {count:,} messages acknowledged")


def consume(target: Target, opts: Options, say: Say) -> list[Result]:
    case = (f"consume {_size(opts.size)} x {opts.partitions}p, {opts.consumers} "
            f"consumer{'s' if opts.consumers > 1 else ''}")
    params = {"partitions": opts.partitions, "consumers": opts.consumers,
              "client": consumer_config(target, opts, **{"fetch.queue.backoff.ms": 10})}
    topic = target.create_topic(_tag("consume"), opts.partitions)
    say(f"filling {topic} with {opts.messages:,} x {_size(opts.size)}")
    fill(target, topic, opts, opts.messages)

    def one() -> Result:
        return measure("consume", case, target, opts,
                       consume_works(target, topic, opts, opts.messages), params,
                       expected=opts.messages, count_role="consume")

    return [repeated(opts, one)]


def e2e(target: Target, opts: Options, say: Say) -> list[Result]:
    """Produce at a fixed rate for ``opts.seconds``; latency from the scheduled send time to
    the consumer's receipt (``linger.ms`` 1 unless ``-X`` says otherwise)."""
    rate = opts.rate or 1000.0
    count = int(rate * opts.seconds)
    local = replace(opts, rate=rate, linger_ms=opts.linger_ms if opts.linger_ms != 5.0 else 1.0,
                    deadline=opts.seconds + 30)
    case = f"e2e {_size(opts.size)} at {rate:,.0f} msg/s, acks={opts.acks}"
    params = {"partitions": opts.partitions, "rate": rate, "seconds": opts.seconds,
              "acks": opts.acks, "client": producer_config(local, target)}

    def one() -> Result:
        topic = target.create_topic(_tag("e2e"), opts.partitions)
        works = (consume_works(target, topic, local, count, role="e2e-consume")
                 + produce_works(target, topic, local, count, role="e2e-produce"))
        # the consumers' latency (send to receipt), not the producers' (send to ack)
        return measure("e2e", case, target, local, works, params, expected=count,
                       count_role="consume")

    return [repeated(opts, one)]


# -- durable and writer: topic configs side by side ----------------------------------------------


@dataclass
class Mode:
    label: str
    topic_configs: dict[str, str]
    acks: str


def durable_modes(target: Target) -> list[Mode]:
    """The ack/fsync modes of a topic: sluice's ``sluice.append.ack`` where the broker is sluice,
    Kafka's ``flush.messages=1`` (an fsync per append) everywhere."""
    modes = [Mode("acks=0 (no answer)", {}, "0"), Mode("acks=1", {}, "1"),
             Mode("acks=all", {}, "all")]
    if target.kind == "sluice":
        modes += [Mode("acks=all, sluice.append.ack=written",
                       {"sluice.append.ack": "written"}, "all"),
                  Mode("acks=all, sluice.append.ack=fsynced",
                       {"sluice.append.ack": "fsynced"}, "all")]
    modes.append(Mode("acks=all, flush.messages=1", {"flush.messages": "1"}, "all"))
    return modes


def _topic_produce(scenario: str, case: str, target: Target, opts: Options,
                   configs: Mapping[str, str], acks: str, params: Mapping[str, Any]) -> Result:
    def one() -> Result:
        topic = target.create_topic(_tag(scenario), opts.partitions, configs)
        local = replace(opts, acks=acks)
        return measure(scenario, case, target, local,
                       produce_works(target, topic, local, opts.messages),
                       {**params, "topic_configs": dict(configs), "acks": acks,
                        "client": producer_config(local, target)})

    return repeated(opts, one)


def durable(target: Target, opts: Options, say: Say) -> list[Result]:
    out = []
    for mode in durable_modes(target):
        res = _topic_produce("durable", f"{_size(opts.size)}, {mode.label}", target, opts,
                             mode.topic_configs, mode.acks,
                             {"producers": opts.producers, "partitions": opts.partitions})
        say(f"{res.case}: {res.msgs_s:,.0f} msg/s")
        out.append(res)
    return out


WRITER_PRODUCERS = (1, 4, 16)


WRITER_CASES = (
    ("writer", "queued", "fire-and-forget"),
    ("writer", "written", "confirmed"),
    ("inline", "written", "confirmed"),
    ("writer", "fsynced", "confirmed + fsync"),
    ("inline", "fsynced", "confirmed + fsync"),
)
"""(``sluice.append.mode``, ``sluice.append.ack``, what the producer waits for). Every producer
sends ``acks=all``, so the topic's ack level decides when the broker answers: ``queued`` at
once after validation (fire-and-forget), ``written`` once in the file, ``fsynced`` after an
fsync (the writer's group commit; inline, the request's own). ``queued`` needs the writer task:
inline, the caller writes before it returns anyway."""


def writer(target: Target, opts: Options, say: Say,
           producers: Sequence[int] = WRITER_PRODUCERS) -> list[Result]:
    """Founding claim 2 over the network: ``sluice.append.mode`` writer against inline, with
    1/4/16 concurrent producers into one partition (:data:`WRITER_CASES`)."""
    if target.kind != "sluice":
        raise ValueError("the writer scenario compares sluice's append modes: it needs a "
                         "sluice broker (no --bootstrap)")
    out = []
    for mode, ack, confirm in WRITER_CASES:
        for n in producers:
            configs = {"sluice.append.mode": mode, "sluice.append.ack": ack}
            case = f"{mode}, ack={ack}, {n} producer{'s' if n > 1 else ''}"
            local = replace(opts, producers=n)
            res = _topic_produce("writer", case, target, local, configs, "all",
                                 {"mode": mode, "ack": ack, "confirm": confirm,
                                  "fsync": ack == "fsynced", "producers": n,
                                  "partitions": opts.partitions})
            say(f"{case}: {res.msgs_s:,.0f} msg/s, bottleneck {res.bottleneck}")
            out.append(res)
    return out


# -- strategies ----------------------------------------------------------------------------------


def strategies(target: Target, opts: Options, say: Say, *,
               only: Sequence[str] | None = None, round_trips: int = 300) -> list[Result]:
    """Founding claim 1: the toolkit's send strategies, each case in a fresh child process
    (:func:`sluice.bench.strategies.run_child`), ``opts.repeat`` rounds, medians."""
    from sluice.bench import strategies as st

    chosen = list(only) if only else st.STRATEGIES
    runs: dict[str, list[Result]] = {}
    for round_ in range(max(1, opts.repeat)):
        for strategy in chosen:
            count = st.counts(strategy, opts.size, opts.messages, round_trips)
            topic = target.create_topic(_tag("strategies"), 1)
            cpu0 = [cpu_seconds(p) for p in target.pids]
            data = st.run_child(target.bootstrap, topic, strategy, opts.size, count,
                                {**target.client_config, **opts.client}, opts.deadline)
            cpu1 = [cpu_seconds(p) for p in target.pids]
            broker = [Process(f"broker {p}", b - a if a is not None and b is not None else None,
                              peak_rss_bytes(p))
                      for p, a, b in zip(target.pids, cpu0, cpu1, strict=True)]
            res = Result("strategies", strategy, target.label, data["count"], opts.size,
                         data["seconds"], {"strategy": strategy, "client": {**st.CONFIG}},
                         data["errors"],
                         Latency(data["p50_ms"], data["p90_ms"], data["p99_ms"],
                                 data["p999_ms"], data["max_ms"], data["samples"]),
                         broker, [Process("client", data["cpu"], data["rss_peak"])])
            res.notes.append(f"client RSS growth {(data['rss_peak'] - data['rss_start']) / MIB:,.0f}"
                             " MiB; broker CPU over the child's whole run")
            say(f"round {round_ + 1} {strategy}: {res.msgs_s:,.0f} msg/s")
            runs.setdefault(strategy, []).append(res)
    return [median_result(r) for r in runs.values()]


# -- slow consumer -------------------------------------------------------------------------------


@dataclass
class ConsumerVariant:
    label: str
    config: dict[str, Any]
    toolkit: dict[str, Any] | None = None  # sluice.client.Consumer keyword arguments


def toolkit_variants() -> list[ConsumerVariant]:
    """The consumer toolkit's one memory knob (``sluice.client.Consumer(max_buffer_bytes=)``)."""
    return [ConsumerVariant(f"toolkit max_buffer_bytes={m} MiB", {},
                            toolkit={"max_buffer_bytes": m * MIB}) for m in (8, 32, 128)]


SLOW_CONSUMER_VARIANTS = [
    ConsumerVariant("librdkafka defaults", {}),
    ConsumerVariant("queued.max.messages.kbytes=8192",
                    {"queued.max.messages.kbytes": 8192, "queued.min.messages": 1000}),
    *toolkit_variants(),
]
"""What founding claim 3 compares: librdkafka's defaults, its prefetch bound lowered by hand,
and the consumer toolkit's ``max_buffer_bytes`` at 8/32/128 MiB."""


def slow_consumer(target: Target, opts: Options, say: Say,
                  variants: Sequence[ConsumerVariant] | None = None,
                  process_us: float = 1000.0) -> list[Result]:
    """A topic filled well past librdkafka's default prefetch bound, then one consumer that
    takes ``process_us`` per message for ``opts.seconds``: its RSS over time, per variant."""
    topic = target.create_topic(_tag("slow"), opts.partitions)
    say(f"filling {topic} with {opts.messages:,} x {_size(opts.size)}")
    fill(target, topic, opts, opts.messages)
    out = []
    for variant in variants or SLOW_CONSUMER_VARIANTS:
        local = replace(opts, consumers=1, deadline=opts.seconds)
        works = consume_works(target, topic, local, opts.messages,
                              config=consumer_config(target, opts, **variant.config))
        for w in works:
            w.process_us = process_us
            w.toolkit = variant.toolkit
        res = measure("slow-consumer", variant.label, target, local, works,
                      {"variant": variant.label, "process_us": process_us,
                       "seconds": opts.seconds, "client": works[0].config},
                      expected=opts.messages, count_role="consume")
        res.notes = [n for n in res.notes if "in the deadline" not in n]
        say(f"{variant.label}: peak RSS {(res.client_rss_peak or 0) / MIB:,.0f} MiB")
        out.append(res)
    return out


SCENARIOS: dict[str, Callable[[Target, Options, Say], list[Result]]] = {
    "produce": produce,
    "consume": consume,
    "e2e": e2e,
    "durable": durable,
    "writer": writer,
    "strategies": strategies,
    "slow-consumer": slow_consumer,
}
"""The scenarios that talk to a broker; ``storage`` and ``fetch`` have CLIs of their own."""
