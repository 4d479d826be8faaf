"""Client-side broker benchmark with confluent-kafka (librdkafka), for any Kafka-compatible broker.

The same client, settings and loops run against sluice and against Apache Kafka, so the numbers
compare brokers rather than clients. Measured, each in a fresh topic:

* produce throughput of 100 B and 1 KiB values into 1 and 8 partitions, with ``acks=1`` and
  ``acks=all`` (``linger.ms=5``, ``batch.size`` 1 MB, no compression, null keys); timed from the
  first ``produce()`` until ``flush()`` has every delivery acknowledged;
* consume throughput of each ``acks=1`` topic from offset 0 by a fresh ``assign()`` consumer (no
  group join), timed from ``assign()`` to the last message;
* end-to-end latency at a fixed rate (default 5,000 msg/s for 10 s, 100 B, 1 partition,
  ``linger.ms=1``; with 0 librdkafka sends one request per message, which Kafka 0.9 cannot keep up
  with at 5,000/s here, so its queue and the latency grow without bound): each value carries its *scheduled* send time, so a stalled producer shows up
  as latency instead of hiding it (no coordinated omission); a consumer thread records receive
  time minus that stamp in an HDR histogram;
* the broker's RSS (per pid given) idle before any load, at its peak (VmHWM) and after the load.

MB/s counts value bytes (1 MB = 10^6 bytes). Python runs the loops, so on a small machine the client
shares the cores with the broker; that cost is the same on both sides. Every loop is bounded by a
message count and a deadline. Run it alone with ``python -m sluice.bench.clients --bootstrap H:P``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from sluice.bench.kafka09 import peak_rss_bytes, rss_bytes

TopicSpec = tuple[str, int]
CreateTopics = Callable[[list[TopicSpec]], None]

MB = 1_000_000
MIB = 1024 * 1024


def rdkafka_logger() -> logging.Logger:
    """A logger for librdkafka that drops its per-client deprecation warnings.

    ``api.version.request``/``broker.version.fallback`` (needed for Kafka 0.9) make every client
    print a paragraph-long CONFWARN; real warnings and errors still get through.
    """
    log = logging.getLogger("sluice.bench.rdkafka")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rdkafka %(message)s"))
        handler.addFilter(lambda rec: "is deprecated" not in rec.getMessage())
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False
    return log


@dataclass
class BenchConfig:
    """What to run; counts, rates and deadlines keep every loop bounded."""

    bootstrap: str
    client_config: dict[str, Any] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    small_count: int = 1_000_000  # 100 B messages per produce case
    large_count: int = 200_000  # 1 KiB messages per produce case
    partitions: tuple[int, ...] = (1, 8)
    acks: tuple[str, ...] = ("1", "all")
    latency_rate: int = 5_000
    latency_seconds: float = 10.0
    latency_acks: str = "1"
    latency_linger_ms: float = 1.0  # 0 makes librdkafka send one request per message
    warmup_count: int = 200_000
    repeat: int = 1  # runs of each throughput case; the median is reported
    case_timeout: float = 120.0
    create_topics: CreateTopics | None = None  # default: the CreateTopics API via AdminClient
    label: str = "broker"

    def sizes(self) -> list[tuple[int, int]]:
        return [(100, self.small_count), (1024, self.large_count)]


@dataclass
class Throughput:
    kind: str  # "produce" or "consume"
    size: int
    partitions: int
    acks: str
    count: int
    seconds: float
    errors: int = 0
    expected: int = 0
    samples: list[float] = field(default_factory=list)  # msgs/s of every repeat

    @property
    def case(self) -> str:
        size = "1 KiB" if self.size == 1024 else f"{self.size} B"
        acks = f", acks={self.acks}" if self.kind == "produce" else ""
        return f"{self.kind} {size} x {self.partitions}p{acks}"

    @property
    def msgs_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_s(self) -> float:
        return self.count * self.size / self.seconds / MB if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.errors == 0 and self.count == self.expected

    @property
    def spread(self) -> str:
        """``min-max`` msgs/s over the repeats, or empty for a single run."""
        if len(self.samples) < 2:
            return ""
        return f"{_short(min(self.samples))}-{_short(max(self.samples))}"


def _short(rate: float) -> str:
    return f"{rate / 1000:,.0f}k" if rate >= 10_000 else f"{rate:,.0f}"


@dataclass
class Latency:
    rate: int
    seconds: float
    sent: int
    received: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: int = 0


@dataclass
class Memory:
    idle: int | None
    peak: int | None
    after: int | None


@dataclass
class BenchResult:
    label: str
    throughput: list[Throughput] = field(default_factory=list)
    latency: Latency | None = None
    memory: dict[str, Memory] = field(default_factory=dict)
    ready_seconds: float | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Keep Python's cyclic GC out of a timed loop (a million Message objects make it expensive)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Bench:
    """One benchmark run against one broker; :meth:`run` returns a :class:`BenchResult`."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.tag = secrets.token_hex(3)
        self.log = rdkafka_logger()

    # -- clients ---------------------------------------------------------------------------

    def _base(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.config.bootstrap, "logger": self.log,
                **self.config.client_config}

    def producer(self, acks: str, linger_ms: float = 5) -> tuple[Producer, list[int]]:
        """A producer and its one-element failed-delivery counter."""
        errors = [0]

        def on_delivery(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                errors[0] += 1

        producer = Producer({
            **self._base(),
            "acks": acks,
            "linger.ms": linger_ms,
            "batch.size": 1_000_000,
            "compression.type": "none",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2 * 1024 * 1024,
            "message.timeout.ms": int(self.config.case_timeout * 1000),
            "delivery.report.only.error": True,  # no per-message Python callback on success
            "on_delivery": on_delivery,
        })
        return producer, errors

    def consumer(self) -> Consumer:
        # The Python client insists on a group.id even for assign(); nothing is committed.
        return Consumer({
            **self._base(),
            "group.id": f"sluice-bench-{self.tag}-{secrets.token_hex(2)}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            # When the Python loop falls behind, librdkafka's prefetch queue fills and it backs
            # off fetching for fetch.queue.backoff.ms (1 s by default): that measures the client's
            # sleep, not the broker. Both brokers get the same setting.
            "fetch.queue.backoff.ms": 10,
        })

    # -- topics ----------------------------------------------------------------------------

    def topic(self, name: str) -> str:
        return f"sluice-bench-{self.tag}-{name}"

    def create_topics(self, specs: list[TopicSpec]) -> None:
        """Create the run's topics up front (outside any timed region) and wait for leaders."""
        if self.config.create_topics is not None:
            self.config.create_topics(specs)
        else:
            admin = AdminClient(self._base())
            futures = admin.create_topics(
                [NewTopic(name, num_partitions=parts, replication_factor=1)
                 for name, parts in specs], operation_timeout=30)
            for fut in futures.values():
                try:
                    fut.result(timeout=60)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        self.wait_for_leaders(specs)

    def wait_for_leaders(self, specs: list[TopicSpec], timeout: float = 60.0) -> None:
        admin = AdminClient(self._base())
        deadline = time.monotonic() + timeout
        wanted = dict(specs)
        while True:
            meta = admin.list_topics(timeout=5)
            ready = {
                name for name, parts in wanted.items()
                if name in meta.topics and meta.topics[name].error is None
                and len(meta.topics[name].partitions) == parts
                and all(p.leader >= 0 and p.error is None
                        for p in meta.topics[name].partitions.values())
            }
            if ready == set(wanted):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics without leaders: {sorted(set(wanted) - ready)}")
            time.sleep(0.1)

    # -- measurements ----------------------------------------------------------------------

    def produce(self, topic: str, size: int, count: int, partitions: int, acks: str) -> Throughput:
        """Produce ``count`` values of ``size`` bytes as fast as the client goes; wait for acks."""
        producer, failed = self.producer(acks)
        value = b"x" * size
        produce, poll = producer.produce, producer.poll
        start = time.perf_counter()
        deadline = start + self.config.case_timeout
        sent = 0
        while sent < count:
            try:
                produce(topic, value)
            except BufferError:  # local queue full: let librdkafka drain it
                poll(0.005)
                if time.perf_counter() > deadline:
                    break
                continue
            sent += 1
            if sent & 0x3FF == 0:
                poll(0)
                if time.perf_counter() > deadline:
                    break
        left = producer.flush(max(0.0, deadline - time.perf_counter()))
        seconds = time.perf_counter() - start
        errors = failed[0] + left
        return Throughput("produce", size, partitions, acks, sent - errors, seconds, errors, count)

    def consume(self, topic: str, size: int, count: int, partitions: int) -> Throughput:
        """Read ``count`` messages from offset 0 of every partition with a fresh consumer."""
        consumer = self.consumer()
        try:
            start = time.perf_counter()
            deadline = start + self.config.case_timeout
            consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
            got = errors = 0
            while got < count and time.perf_counter() < deadline:
                # consume() waits for the whole batch or the timeout: never ask for more than is left
                for msg in consumer.consume(min(10_000, count - got), 0.5):
                    if msg.error() is None:
                        got += 1
                    else:
                        errors += 1
            seconds = time.perf_counter() - start
        finally:
            consumer.close()
        return Throughput("consume", size, partitions, "-", got, seconds, errors, count)

    def latency(self, topic: str) -> Latency:
        """Fixed-rate end-to-end latency: producer in this thread, consumer in another."""
        from hdrh.histogram import HdrHistogram

        cfg = self.config
        hist = HdrHistogram(1, 60_000_000, 3)  # microseconds, up to a minute
        received = [0, 0]  # measured messages, errors
        warm_seen = threading.Event()
        stop = threading.Event()
        consumer = self.consumer()
        consumer.assign([TopicPartition(topic, 0, 0)])
        total = int(cfg.latency_rate * cfg.latency_seconds)

        def consume_loop() -> None:
            clock, record, poll = time.perf_counter_ns, hist.record_value, consumer.poll
            while not stop.is_set() and received[0] < total:
                # poll(), not consume(n, t): consume waits for n messages or t, adding latency
                msg = poll(0.05)
                if msg is None:
                    continue
                now = clock()
                value = msg.value()
                if msg.error() is not None or value is None:
                    received[1] += 1
                elif value[8] == 0:  # warm-up message
                    warm_seen.set()
                else:
                    record(max(1, (now - int.from_bytes(value[:8], "big")) // 1000))
                    received[0] += 1

        producer, failed = self.producer(cfg.latency_acks, linger_ms=cfg.latency_linger_ms)
        pad = b"x" * 91  # 8-byte stamp + 1 phase byte + 91 = 100 B values
        old_switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0002)  # hand the GIL to the consumer thread promptly
        thread = threading.Thread(target=consume_loop, name="latency-consumer", daemon=True)
        thread.start()
        try:
            # Warm-up: until the consumer sees a message (its fetch loop is running), at most 15 s.
            warm_deadline = time.monotonic() + 15
            while not warm_seen.is_set() and time.monotonic() < warm_deadline:
                producer.produce(topic, time.perf_counter_ns().to_bytes(8, "big") + b"\0" + pad)
                producer.poll(0.02)
            producer.flush(5)

            interval = 1_000_000_000 // cfg.latency_rate
            clock = time.perf_counter_ns
            start = clock()
            sent = 0
            while sent < total:
                scheduled = start + sent * interval
                now = clock()
                if scheduled > now:
                    time.sleep((scheduled - now) / 1e9)
                    continue
                producer.produce(topic, scheduled.to_bytes(8, "big") + b"\1" + pad)
                sent += 1
                producer.poll(0)
            left = producer.flush(cfg.case_timeout)
            thread.join(timeout=max(5.0, cfg.latency_seconds))
        finally:
            stop.set()
            thread.join(timeout=5)
            sys.setswitchinterval(old_switch)
            consumer.close()

        def pct(p: float) -> float:
            return float(hist.get_value_at_percentile(p)) / 1000 if hist.get_total_count() else 0.0

        return Latency(
            rate=cfg.latency_rate, seconds=cfg.latency_seconds, sent=sent,
            received=received[0], p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99),
            p999_ms=pct(99.9),
            max_ms=float(hist.get_max_value()) / 1000 if hist.get_total_count() else 0.0,
            errors=received[1] + left + failed[0],
        )

    # -- the whole run ---------------------------------------------------------------------

    def run(self, progress: Callable[[str], None] | None = None) -> BenchResult:
        cfg = self.config
        say = progress or (lambda _msg: None)
        result = BenchResult(cfg.label)
        began = time.perf_counter()
        idle = {name: rss_bytes(pid) for name, pid in cfg.pids.items()}

        specs: list[TopicSpec] = [(self.topic("warmup"), 1), (self.topic("latency"), 1)]
        cases = [(size, count, parts, acks) for size, count in cfg.sizes()
                 for parts in cfg.partitions for acks in cfg.acks]
        specs += [(self.topic(f"{size}b-{parts}p-acks{acks}-r{i}"), parts)
                  for i in range(cfg.repeat) for size, _count, parts, acks in cases]
        say(f"creating {len(specs)} topics")
        t0 = time.perf_counter()
        self.create_topics(specs)
        say(f"topics ready in {time.perf_counter() - t0:.1f} s")

        if cfg.warmup_count:
            say(f"warm-up: {cfg.warmup_count:,} x 100 B produce + consume (not reported)")
            self.produce(self.topic("warmup"), 100, cfg.warmup_count, 1, "1")
            self.consume(self.topic("warmup"), 100, cfg.warmup_count, 1)

        # Latency first, after the warm-up: measured after the throughput cases it reads this
        # client process's state (a heap grown by millions of messages, librdkafka's queues)
        # more than the broker's: the same broker then gave p50 1.5 ms to a fresh process and
        # 4.7 ms to this one.
        if cfg.latency_seconds > 0 and cfg.latency_rate > 0:
            say(f"latency: {cfg.latency_rate:,} msg/s for {cfg.latency_seconds:g} s")
            result.latency = self.latency(self.topic("latency"))

        # Rounds of every case (not each case N times in a row), so a slow spell of the machine
        # or the broker (GC, JIT, page cache) spreads over cases instead of sinking one.
        samples: dict[str, list[Throughput]] = {}
        for i in range(cfg.repeat):
            for size, count, parts, acks in cases:
                topic = self.topic(f"{size}b-{parts}p-acks{acks}-r{i}")
                with no_gc():
                    res = self.produce(topic, size, count, parts, acks)
                say(f"{res.case}: {res.msgs_s:,.0f} msg/s {res.mb_s:,.1f} MB/s")
                samples.setdefault(res.case, []).append(res)
                if acks == cfg.acks[0]:
                    with no_gc():
                        res = self.consume(topic, size, res.count, parts)
                    say(f"{res.case}: {res.msgs_s:,.0f} msg/s {res.mb_s:,.1f} MB/s")
                    samples.setdefault(res.case, []).append(res)
        result.throughput = [median(runs) for runs in samples.values()]

        for name, pid in cfg.pids.items():
            result.memory[name] = Memory(idle[name], peak_rss_bytes(pid), rss_bytes(pid))
        for res in result.throughput:
            if not res.complete:
                result.notes.append(f"{res.case}: {res.count:,}/{res.expected:,} messages, "
                                    f"{res.errors} errors")
        if result.latency and (result.latency.received < result.latency.sent
                               or result.latency.errors):
            lat = result.latency
            result.notes.append(f"latency: received {lat.received:,}/{lat.sent:,}, "
                                f"{lat.errors} errors")
        result.seconds = time.perf_counter() - began
        return result


def median(runs: list[Throughput]) -> Throughput:
    """The median run by msgs/s (the lower middle one for an even count), with every run's rate."""
    ordered = sorted(runs, key=lambda r: r.msgs_s)
    mid = ordered[(len(ordered) - 1) // 2]
    mid.samples = [r.msgs_s for r in runs]
    mid.errors = sum(r.errors for r in runs)
    return mid


# -- output ------------------------------------------------------------------------------


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.0f} MiB"


def format_result(result: BenchResult) -> str:
    """A markdown report of one run."""
    lines = [f"### {result.label}", ""]
    if result.ready_seconds is not None:
        lines += [f"ready to accept connections {result.ready_seconds:.2f} s after start", ""]
    lines += ["| case | messages | seconds | msgs/s | MB/s | msgs/s range |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in result.throughput:
        lines.append(f"| {r.case} | {r.count:,} | {r.seconds:.2f} | {r.msgs_s:,.0f} | "
                     f"{r.mb_s:,.1f} | {r.spread or '-'} |")
    if result.latency:
        lat = result.latency
        lines += ["", f"end-to-end latency at {lat.rate:,} msg/s for {lat.seconds:g} s "
                  f"({lat.received:,}/{lat.sent:,} received), ms:", "",
                  "| p50 | p90 | p99 | p99.9 | max |", "|---:|---:|---:|---:|---:|",
                  f"| {lat.p50_ms:.2f} | {lat.p90_ms:.2f} | {lat.p99_ms:.2f} | "
                  f"{lat.p999_ms:.2f} | {lat.max_ms:.2f} |"]
    if result.memory:
        lines += ["", "| process | RSS idle | RSS peak (VmHWM) | RSS after |", "|---|---:|---:|---:|"]
        for name, mem in result.memory.items():
            lines.append(f"| {name} | {_mib(mem.idle)} | {_mib(mem.peak)} | {_mib(mem.after)} |")
    lines += ["", *(f"- note: {n}" for n in result.notes)] if result.notes else []
    lines += ["", f"benchmark time {result.seconds:.0f} s"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by this module's CLI and ``sluice.bench.compare``."""
    parser.add_argument("--small-count", type=int, default=1_000_000,
                        help="100 B messages per produce case (default 1,000,000)")
    parser.add_argument("--large-count", type=int, default=200_000,
                        help="1 KiB messages per produce case (default 200,000)")
    parser.add_argument("--partitions", default="1,8", help="partition counts (default 1,8)")
    parser.add_argument("--acks", default="1,all", help="acks settings; the first is also "
                        "consumed (default 1,all)")
    parser.add_argument("--latency-rate", type=int, default=5_000, help="msg/s (default 5000)")
    parser.add_argument("--latency-seconds", type=float, default=10.0,
                        help="latency run length; 0 skips it (default 10)")
    parser.add_argument("--latency-linger-ms", type=float, default=1.0,
                        help="producer linger.ms in the latency run (default 1)")
    parser.add_argument("--latency-acks", default="1", help="acks in the latency run (default 1)")
    parser.add_argument("--warmup", type=int, default=200_000,
                        help="warm-up messages, not reported (default 200,000)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each throughput case, median reported (default 1; 3 for "
                        "numbers to act on)")
    parser.add_argument("--case-timeout", type=float, default=120.0,
                        help="deadline per case in seconds (default 120)")
    parser.add_argument("-X", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="extra librdkafka setting for every client (repeatable)")


def config_from_args(args: argparse.Namespace, bootstrap: str, **kw: Any) -> BenchConfig:
    return BenchConfig(
        bootstrap=bootstrap,
        client_config={**kw.pop("client_config", {}), **parse_settings(args.extra)},
        small_count=args.small_count, large_count=args.large_count,
        partitions=tuple(int(p) for p in args.partitions.split(",")),
        acks=tuple(a.strip() for a in args.acks.split(",")),
        latency_rate=args.latency_rate, latency_seconds=args.latency_seconds,
        latency_linger_ms=args.latency_linger_ms, latency_acks=args.latency_acks,
        warmup_count=args.warmup, repeat=max(1, args.repeat), case_timeout=args.case_timeout,
        **kw,
    )


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def check_loopback_bootstrap(bootstrap: str) -> None:
    """Refuse non-loopback addresses: this benchmark is for brokers on this machine."""
    for hostport in bootstrap.split(","):
        host = hostport.rsplit(":", 1)[0].strip("[]")
        if host not in ("localhost", "::1") and not host.startswith("127."):
            raise SystemExit(f"{hostport}: only loopback brokers are benchmarked")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice.bench.clients",
                                     description="Benchmark one Kafka-compatible broker.")
    parser.add_argument("--bootstrap", required=True, help="HOST:PORT of the broker (loopback)")
    parser.add_argument("--pid", type=int, action="append", default=[],
                        help="broker pid to report RSS for (repeatable)")
    parser.add_argument("--kafka09", action="store_true",
                        help="talk to a 0.9 broker (api.version.request=false, fallback 0.9.0.1)")
    parser.add_argument("--label", default="broker")
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_loopback_bootstrap(args.bootstrap)
    from sluice.bench.kafka09 import CLIENT_CONFIG

    config = config_from_args(
        args, args.bootstrap, label=args.label,
        client_config=dict(CLIENT_CONFIG) if args.kafka09 else {},
        pids={f"pid {p}": p for p in args.pid},
    )
    result = Bench(config).run(progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    print(format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
