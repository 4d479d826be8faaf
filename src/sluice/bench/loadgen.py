"""Load from client processes: producers and consumers (confluent-kafka) in children of their own.

One Python loop saturates long before a broker does, so every load runs in as many worker
processes as asked (``spawn``, never ``fork``: librdkafka's threads do not survive a fork). Each
worker builds its clients and connects, reports ready, waits for one shared "go", runs, and sends
back what it measured: counts, the first and last instant (``time.monotonic_ns``, the same clock
in every process on a machine), its own CPU seconds (every thread, librdkafka's included), its
peak RSS and an HDR histogram of latencies. Each worker bumps a shared counter as it goes, so the
parent can show live progress and sample throughput over time next to the broker's CPU and RSS.

Latencies: for producers librdkafka's own ``msg.latency()`` (``produce()`` to acknowledgement)
of every 8th message; for ``e2e`` the consumer's receive time minus the send time the producer
*scheduled* (so a stalled producer shows up as latency: no coordinated omission).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import secrets
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from sluice.bench.harness import Histogram, Process, cpu_seconds, peak_rss_bytes, rss_bytes

SAMPLE_EVERY = 8
"""Producers record every 8th delivery latency: the percentiles of a uniform sample, at an
eighth of the callback's cost."""

INTERVAL = 0.5
"""Seconds between timeline samples (and latency intervals in the workers)."""


@dataclass
class Work:
    """What one worker process does."""

    role: str  # "produce", "consume", "e2e-produce", "e2e-consume"
    bootstrap: str
    topic: str
    count: int  # messages this worker sends; for consumers, the total all consumers read
    size: int = 100
    partitions: tuple[int, ...] = ()  # consumers: the partitions this one is assigned
    rate: float = 0.0  # msg/s for this worker; 0 is as fast as it goes
    config: dict[str, Any] = field(default_factory=dict)
    instances: int = 1  # producer instances (connections) this process drives
    deadline: float = 120.0  # seconds after go
    process_us: float = 0.0  # consumers: simulated processing time per message
    group: str = ""
    latency: bool = True  # producers: False leaves out the per-message delivery callback
    toolkit: dict[str, Any] | None = None  # consumers: sluice.client.Consumer's options instead


@dataclass
class Outcome:
    """What one worker measured and sent back."""

    role: str
    pid: int
    count: int
    errors: int
    first_ns: int
    last_ns: int
    cpu: float
    rss_peak: int
    hist: str
    intervals: list[tuple[float, float, float]]  # (seconds after go, p50 ms, p99 ms)
    error: str = ""


@dataclass
class Run:
    """Every worker's outcome plus what the parent sampled meanwhile."""

    outcomes: list[Outcome]
    go_ns: int
    seconds: float
    broker: list[Process]
    clients: list[Process]
    timeline: list[dict[str, float]]
    histogram: Histogram

    @property
    def count(self) -> int:
        return sum(o.count for o in self.outcomes)

    @property
    def errors(self) -> int:
        return sum(o.errors for o in self.outcomes)

    def of(self, role: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.role == role]


# -- inside a worker -----------------------------------------------------------------------------


class _Recorder:
    """A latency histogram plus per-interval p50/p99, kept inside a worker."""

    def __init__(self) -> None:
        self.total = Histogram()
        self.window = Histogram()
        self.intervals: list[tuple[float, float, float]] = []
        self.go = 0
        self.next_cut = 0

    def start(self, go_ns: int) -> None:
        self.go = go_ns
        self.next_cut = go_ns + int(INTERVAL * 1e9)

    def record(self, now_ns: int, micros: float) -> None:
        self.total.record_us(micros)
        self.window.record_us(micros)
        if now_ns >= self.next_cut:
            self.cut(now_ns)

    def cut(self, now_ns: int) -> None:
        lat = self.window.latency()
        if lat is not None:
            self.intervals.append(((now_ns - self.go) / 1e9, lat.p50_ms, lat.p99_ms))
        self.window = Histogram()
        while self.next_cut <= now_ns:
            self.next_cut += int(INTERVAL * 1e9)


def _produce(work: Work, counter: Synchronized[int], ready: Any, go: Any,
             go_ns: Synchronized[int]) -> Outcome:
    from confluent_kafka import Producer

    from sluice.bench.harness import rdkafka_logger

    state = {"acked": 0, "errors": 0}
    rec = _Recorder()
    clock = time.monotonic_ns

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            state["errors"] += 1
            return
        n = state["acked"] = state["acked"] + 1
        if n % SAMPLE_EVERY == 0:
            lat = msg.latency()
            if lat is not None:
                rec.record(clock(), lat * 1e6)
        if n & 0x3FF == 0:
            counter.value = n

    config = {
        "bootstrap.servers": work.bootstrap, "logger": rdkafka_logger(),
        "linger.ms": 5, "batch.size": 1_000_000, "acks": "1",
        "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1024 * 1024,
        "message.timeout.ms": int(work.deadline * 1000), "on_delivery": on_delivery,
        # without latencies, librdkafka reports failures only: no Python call per success
        "delivery.report.only.error": not work.latency,
        **work.config,
    }
    producers = [Producer(config) for _ in range(max(1, work.instances))]
    for p in producers:  # connect and learn the topic's leaders before the clock starts
        p.produce(work.topic, b"warm-up" if work.role == "produce" else b"\0" * 9)
        p.flush(30)
    state["acked"] = state["errors"] = 0
    ready.put(os.getpid())
    go.wait()
    start = go_ns.value
    rec.start(start)
    stamped = work.role == "e2e-produce"
    pad = b"x" * max(0, work.size - 9)
    value = b"x" * work.size
    interval = int(1e9 / work.rate) if work.rate > 0 else 0
    deadline = start + int(work.deadline * 1e9)
    cpu0 = time.process_time()
    first = clock()
    sent = 0
    k = len(producers)
    while sent < work.count:
        if interval:
            scheduled = start + sent * interval
            now = clock()
            if scheduled > now:
                for q in producers:
                    q.poll(0)
                time.sleep(min(0.001, (scheduled - now) / 1e9))
                continue
            if stamped:
                value = scheduled.to_bytes(8, "big") + b"\1" + pad
        p = producers[sent % k]
        try:
            p.produce(work.topic, value)
        except BufferError:
            p.poll(0.005)
            if clock() > deadline:
                break
            continue
        sent += 1
        if sent & 0x3FF == 0:
            for q in producers:
                q.poll(0)
            if not work.latency:
                counter.value = sent
            if clock() > deadline:
                break
    left = sum(p.flush(max(0.0, (deadline - clock()) / 1e9)) for p in producers)
    last = clock()
    rec.cut(last)
    errors = state["errors"] + left
    acked = state["acked"] if work.latency else sent - errors
    counter.value = acked
    cpu = time.process_time() - cpu0
    return Outcome(work.role, os.getpid(), acked, errors, first, last,
                   cpu, peak_rss_bytes(os.getpid()) or 0, rec.total.dumps(), rec.intervals)


def _consume(work: Work, counter: Synchronized[int], total: Any, ready: Any, go: Any,
             go_ns: Synchronized[int]) -> Outcome:
    from confluent_kafka import Consumer, TopicPartition

    from sluice.bench.harness import rdkafka_logger

    config = {
        "bootstrap.servers": work.bootstrap, "logger": rdkafka_logger(),
        "group.id": work.group or f"sluice-bench-{secrets.token_hex(3)}",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "enable.partition.eof": False, "auto.offset.reset": "earliest",
        # When the Python loop falls behind, librdkafka's prefetch queue fills and it backs off
        # fetching for fetch.queue.backoff.ms (1 s by default): that would time the client's
        # sleep, not the broker. Every broker gets the same setting.
        "fetch.queue.backoff.ms": 10,
        **work.config,
    }
    consumer = Consumer(config)
    consumer.list_topics(work.topic, timeout=30)  # connected before the clock starts
    rec = _Recorder()
    clock = time.monotonic_ns
    ready.put(os.getpid())
    go.wait()
    start = go_ns.value
    rec.start(start)
    deadline = start + int(work.deadline * 1e9)
    cpu0 = time.process_time()
    first = clock()
    consumer.assign([TopicPartition(work.topic, p, 0) for p in work.partitions])
    got = errors = 0
    e2e = work.role == "e2e-consume"
    delay = work.process_us / 1e6

    def everyone() -> int:
        return sum(c.value for c in total)

    try:
        while clock() < deadline:
            if e2e or delay:
                msgs = [m for m in [consumer.poll(0.05)] if m is not None]
            else:
                # consume() waits for the whole batch or the timeout: ask for what is left
                msgs = consumer.consume(max(1, min(10_000, work.count - everyone())), 0.2)
            for msg in msgs:
                if msg.error() is not None:
                    errors += 1
                    continue
                if e2e:
                    now = clock()
                    value = msg.value() or b""
                    if len(value) < 9 or value[8] == 0:
                        continue  # warm-up message
                    rec.record(now, (now - int.from_bytes(value[:8], "big")) / 1000)
                got += 1
                if delay:
                    time.sleep(delay)
            counter.value = got
            if everyone() >= work.count:
                break
        last = clock()
    finally:
        consumer.close()
    rec.cut(last)
    cpu = time.process_time() - cpu0
    return Outcome(work.role, os.getpid(), got, errors, first, last, cpu,
                   peak_rss_bytes(os.getpid()) or 0, rec.total.dumps(), rec.intervals)


def _consume_toolkit(work: Work, counter: Synchronized[int], total: Any, ready: Any, go: Any,
                     go_ns: Synchronized[int]) -> Outcome:
    """A consumer on the client toolkit (``sluice.client.Consumer``, ``work.toolkit`` its
    options, ``work.config`` librdkafka's): ``run`` with a handler that takes ``process_us``."""
    import asyncio

    from sluice.client import Consumer, ConsumerRecord

    clock = time.monotonic_ns
    delay = work.process_us / 1e6
    got = 0

    def everyone() -> int:
        return sum(c.value for c in total)

    async def main() -> tuple[int, int, float]:
        nonlocal got
        consumer = Consumer(
            work.bootstrap, group_id=work.group or f"sluice-bench-{secrets.token_hex(3)}",
            assign=[(work.topic, p, 0) for p in work.partitions], **work.toolkit or {},
            config={"auto.offset.reset": "earliest", **work.config},
        )
        async with consumer:
            ready.put(os.getpid())
            await asyncio.to_thread(go.wait)
            start = go_ns.value
            deadline = start + int(work.deadline * 1e9)
            cpu0 = time.process_time()
            first = clock()

            async def handle(record: ConsumerRecord) -> None:
                nonlocal got
                if delay:
                    time.sleep(delay)  # processing that holds the loop, as the raw consumer's
                got += 1
                if got & 0xFF == 0:
                    counter.value = got
                if clock() > deadline or everyone() >= work.count:
                    consumer.stop()

            runner = asyncio.create_task(consumer.run(handle))
            while not runner.done():
                await asyncio.wait([runner], timeout=0.2)
                counter.value = got
                if clock() > deadline or everyone() >= work.count:
                    consumer.stop()
            await runner
            return first, clock(), time.process_time() - cpu0

    first, last, cpu = asyncio.run(main())
    counter.value = got
    return Outcome(work.role, os.getpid(), got, 0, first, last, cpu,
                   peak_rss_bytes(os.getpid()) or 0, "", [])


def _worker(work: Work, counter: Synchronized[int], total: Any, ready: Any, go: Any,
            go_ns: Synchronized[int], results: Any) -> None:
    try:
        if work.role.endswith("produce"):
            out = _produce(work, counter, ready, go, go_ns)
        elif work.toolkit is not None:
            out = _consume_toolkit(work, counter, total, ready, go, go_ns)
        else:
            out = _consume(work, counter, total, ready, go, go_ns)
    except BaseException as exc:  # reported to the parent, which raises it with context
        import traceback

        ready.put(os.getpid())
        results.put(Outcome(work.role, os.getpid(), 0, 1, 0, 0, 0.0, 0, "", [],
                            error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        return
    results.put(out)


# -- in the parent -------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A load worker failed; the message has its traceback."""


def _start_all(procs: Sequence[Any]) -> None:
    """Start every worker, uninterrupted and without losing a signal.

    A terminal's Ctrl-C goes to the whole process group: each worker printed its own
    KeyboardInterrupt traceback. They start with SIGINT blocked (the mask survives the spawn's
    exec; the parent, which got the Ctrl-C too, kills them). A KeyboardInterrupt raised inside
    ``start()`` left a worker running that its parent no longer knew of, so SIGINT and SIGTERM
    are held until every worker has started, then raised."""
    held: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        held.append(signum)

    handlers = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            for p in procs:
                p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending Ctrl-C lands in hold
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if held:
        signal.raise_signal(held[0])  # now, to the handler it was meant for


def run(works: Sequence[Work], broker_pids: Sequence[int] = (), *,
        progress: Callable[[int, int, float], None] | None = None,
        expected: int | None = None, sample: Callable[[], dict[str, float]] | None = None,
        timeout: float | None = None, latency_role: str = "") -> Run:
    """Start one process per :class:`Work`, release them together, wait for every outcome.

    ``expected`` is the count the progress counts toward (default: the producers' sum);
    latencies come from the workers whose role ends with ``latency_role`` (default: all);
    ``progress(done, expected, seconds)`` is called at each timeline sample; ``sample()`` adds columns
    to each timeline row. Broker CPU and peak RSS come from ``/proc`` of ``broker_pids``.
    """
    ctx = mp.get_context("spawn")
    counters = [ctx.Value("q", 0, lock=False) for _ in works]
    go, ready, results = ctx.Event(), ctx.Queue(), ctx.Queue()
    go_ns = ctx.Value("q", 0, lock=False)
    consumer_counters = [c for c, w in zip(counters, works, strict=True)
                         if w.role.endswith("consume")]
    procs = [ctx.Process(target=_worker, args=(w, c, consumer_counters, ready, go, go_ns,
                                               results), daemon=True)
             for w, c in zip(works, counters, strict=True)]
    limit = timeout if timeout is not None else max(w.deadline for w in works) + 60
    if expected is None:
        expected = sum(w.count for w in works if w.role.endswith("produce")) or max(
            w.count for w in works)
    try:
        _start_all(procs)
        for _ in procs:
            try:
                ready.get(timeout=60)
            except queue.Empty:
                raise WorkerError("a load worker did not get ready in 60 s") from None
        cpu0 = {pid: cpu_seconds(pid) for pid in broker_pids}
        sampler = _Sampler(broker_pids, [p.pid for p in procs if p.pid], counters, sample)
        go_ns.value = time.monotonic_ns()
        go.set()
        sampler.start(go_ns.value)
        outcomes: list[Outcome] = []
        end = time.monotonic() + limit
        while len(outcomes) < len(procs):
            with contextlib.suppress(queue.Empty):
                outcomes.append(results.get(timeout=INTERVAL))
            if progress is not None:
                progress(min(expected, sum(c.value for c in counters)), expected,
                         (time.monotonic_ns() - go_ns.value) / 1e9)
            if time.monotonic() > end:
                raise WorkerError(f"load workers still running after {limit:.0f} s")
            if len(outcomes) < len(procs) and not any(p.is_alive() for p in procs):
                with contextlib.suppress(queue.Empty):
                    while True:
                        outcomes.append(results.get(timeout=1))
                if len(outcomes) < len(procs):
                    raise WorkerError("a load worker died without a result")
        sampler.stop()
        failed = [o.error for o in outcomes if o.error]
        if failed:
            raise WorkerError(failed[0])
    except BaseException:
        # Interrupted or failed: nothing of the workers' is worth waiting for (a join waited
        # 10 s for each one still sending).
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.kill()
        raise
    finally:
        for p in procs:
            if p.pid is None:  # never started
                continue
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    measured = [o for o in outcomes if o.role.endswith(latency_role)]
    hist = Histogram()
    for o in measured:
        if o.hist:
            hist.add(Histogram.loads(o.hist))
    first = min(o.first_ns for o in outcomes)
    last = max(o.last_ns for o in outcomes)
    broker = []
    for pid in broker_pids:
        now = cpu_seconds(pid)
        before = cpu0.get(pid)
        used = now - before if now is not None and before is not None else None
        broker.append(Process(f"broker {pid}", used, peak_rss_bytes(pid)))
    clients = [Process(f"{o.role} {o.pid}", o.cpu, o.rss_peak) for o in outcomes]
    timeline = sampler.rows
    _add_latency_intervals(timeline, measured)
    return Run(outcomes, go_ns.value, max(1e-9, (last - first) / 1e9), broker, clients,
               timeline, hist)


def _add_latency_intervals(rows: list[dict[str, float]], outcomes: Sequence[Outcome]) -> None:
    """Put the workers' per-interval p99 (the worst of them) into the nearest timeline row."""
    if not rows:
        return
    for o in outcomes:
        for t, _p50, p99 in o.intervals:
            row = min(rows, key=lambda r: abs(r["t"] - t))
            row["p99_ms"] = max(row.get("p99_ms", 0.0), p99)


class _Sampler:
    """Every :data:`INTERVAL`: messages done so far (all workers), broker CPU and RSS, and the
    workers' RSS, as timeline rows (``t`` in seconds after go)."""

    def __init__(self, broker_pids: Sequence[int], client_pids: Sequence[int],
                 counters: Sequence[Synchronized[int]],
                 extra: Callable[[], dict[str, float]] | None) -> None:
        self.broker_pids, self.client_pids = list(broker_pids), list(client_pids)
        self.counters, self.extra = counters, extra
        self.rows: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._go = 0

    def start(self, go_ns: int) -> None:
        self._go = go_ns
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        last_done, last_t = 0, 0.0
        last_cpu = sum(cpu_seconds(p) or 0.0 for p in self.broker_pids)
        while not self._stop.wait(INTERVAL):
            t = (time.monotonic_ns() - self._go) / 1e9
            done = sum(c.value for c in self.counters)
            cpu = sum(cpu_seconds(p) or 0.0 for p in self.broker_pids)
            row: dict[str, float] = {
                "t": round(t, 3),
                "msgs_per_s": (done - last_done) / (t - last_t) if t > last_t else 0.0,
                "client_rss_bytes": float(max((rss_bytes(p) or 0 for p in self.client_pids),
                                              default=0)),
            }
            if self.broker_pids:
                row["broker_cpu_util"] = (cpu - last_cpu) / (t - last_t) if t > last_t else 0.0
                row["broker_rss_bytes"] = float(sum(rss_bytes(p) or 0 for p in self.broker_pids))
            if self.extra is not None:
                row.update(self.extra())
            self.rows.append(row)
            last_done, last_t, last_cpu = done, t, cpu
