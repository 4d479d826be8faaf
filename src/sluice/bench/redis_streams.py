"""Redis Streams as a reference row: XADD through ``redis-benchmark``, AOF fsynced every second.

Debian's ``redis-server`` and ``redis-tools`` are installed with apt the first time (only here,
in the benchmark's own set-up, and only as root); if that is not possible the row is skipped
with the reason. The server runs on a free loopback port and a temporary directory, measured
from ``/proc`` like the brokers; ``redis-benchmark`` (C, 50 connections, 16 commands
pipelined) is the load, so the client is not the bottleneck.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from sluice.bench.harness import Process, Result, cpu_seconds, peak_rss_bytes
from sluice.bench.kafka09 import free_port

LABEL = "Redis Streams (XADD, AOF everysec)"


class RedisUnavailable(RuntimeError):
    """redis-server or redis-benchmark is missing and could not be installed."""


def ensure_installed() -> tuple[str, str]:
    """Paths of ``redis-server`` and ``redis-benchmark``, installing Debian's packages once."""
    server, bench = shutil.which("redis-server"), shutil.which("redis-benchmark")
    if server and bench:
        return server, bench
    if not shutil.which("apt-get"):
        raise RedisUnavailable("redis-server/redis-benchmark not found and no apt-get")
    if os.geteuid() != 0:
        raise RedisUnavailable("redis-server/redis-benchmark not found; install them with "
                               "`apt-get install redis-server redis-tools` (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                           "redis-server", "redis-tools"], env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    server, bench = shutil.which("redis-server"), shutil.which("redis-benchmark")
    if not (server and bench):
        raise RedisUnavailable(f"apt-get install redis-server redis-tools failed:\n"
                               f"{(done.stderr or done.stdout)[-1500:]}")
    return server, bench


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def running_redis(server: str) -> Iterator[tuple[int, int]]:
    """``(port, pid)`` of a redis-server with AOF ``appendfsync everysec``, no RDB snapshots."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sluice-bench-redis-") as tmp:
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
             "--daemonize", "no", "--protected-mode", "yes"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while not _pong(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RedisUnavailable(f"redis-server did not start (status {proc.poll()})")
                time.sleep(0.02)  # readiness probe interval
            yield port, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def xadd(size: int, count: int, clients: int = 50, pipeline: int = 16) -> Result:
    """``count`` XADDs of one ``size``-byte field value into one stream."""
    server, bench = ensure_installed()
    with running_redis(server) as (port, pid):
        cpu0 = cpu_seconds(pid)
        child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(
            [bench, "-h", "127.0.0.1", "-p", str(port), "-n", str(count), "-c", str(clients),
             "-P", str(pipeline), "--csv", "XADD", "sluice-bench", "*", "v", "x" * size],
            capture_output=True, text=True, timeout=600, check=False)
        seconds = time.perf_counter() - start
        child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu1 = cpu_seconds(pid)
        peak = peak_rss_bytes(pid)
    if done.returncode != 0:
        raise RedisUnavailable(f"redis-benchmark failed: {done.stderr[-1000:]}")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    if not rows or "rps" not in rows[-1]:
        raise RedisUnavailable(f"unexpected redis-benchmark output: {done.stdout[-500:]}")
    row = rows[-1]
    rps = float(row["rps"])
    client_cpu = (child1.ru_utime - child0.ru_utime) + (child1.ru_stime - child0.ru_stime)
    used = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    res = Result("produce", f"produce {size if size < 1024 else size // 1024} "
                 f"{'B' if size < 1024 else 'KiB'}, XADD", LABEL, count, size, count / rps,
                 {"clients": clients, "pipeline": pipeline, "appendfsync": "everysec"}, 0,
                 None, [Process(f"redis-server {pid}", used, peak)],
                 [Process("redis-benchmark", client_cpu, None)])
    p50, p99 = row.get("p50_latency_ms"), row.get("p99_latency_ms")
    res.notes.append(f"redis-benchmark's own rate ({rps:,.0f} req/s, {seconds:.1f} s with "
                     f"start-up); latency per pipelined command p50 {p50} ms, p99 {p99} ms")
    return res
