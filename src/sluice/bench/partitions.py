"""Many partitions on a ``sluice serve`` child: what creating, stopping, starting and reading
them costs, in time and in file descriptors. Prints one line per step.

::

    python -m sluice.bench.partitions                     # 10,000 partitions (docs/storage.md)
    python -m sluice.bench.partitions --partitions 100    # descriptors (docs/broker.md)

Steps, each on the same data directory: start; create a topic of ``--partitions`` while a
producer sends one record at a time to another topic (its slowest round trip shows whether the
create stalled other clients); produce one record to every partition; open
``--idle-connections`` connections that send nothing (what they add to the resident size is
printed too); stop cleanly (SIGTERM); start again (the broker's own log says how long opening
the partitions took); read every partition with one consumer. Descriptors are counted from ``/proc/PID/fd`` (Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sluice.bench.kafka09 import free_port, port_open

TOPIC = "many"
PROBE = "probe"


class Serve:
    """``sluice serve`` on one port and data directory, started and stopped as often as asked."""

    def __init__(
        self, data_dir: Path, log_path: Path, settings: dict[str, str] | None = None
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.settings = settings or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> float:
        """Seconds from spawning the process to its first accepted connection."""
        argv = [sys.executable, "-m", "sluice.cli", "serve", "--listen", self.bootstrap]
        argv += ["--data-dir", str(self.data_dir)]
        # The descriptors docs/broker.md counts are the Kafka side's: no admin HTTP listener.
        argv += ["--admin-listen", "off"]
        for key, value in self.settings.items():
            argv += ["--set", f"{key}={value}"]
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        while not port_open(self.port, timeout=0.2):
            if self.proc.poll() is not None or time.monotonic() - started > timeout:
                raise RuntimeError(
                    f"sluice serve did not start:\n{self.log_path.read_text()[-3000:]}"
                )
            time.sleep(0.01)  # the readiness probe's interval
        return time.monotonic() - started

    def stop(self, timeout: float = 120.0) -> float:
        """SIGTERM; seconds until the process has exited (cleanly, or this raises)."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout)
        if code != 0:
            raise RuntimeError(f"sluice serve exited {code}:\n{self.log_path.read_text()[-3000:]}")
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _fd_targets(self) -> list[str]:
        fd_dir = f"/proc/{self.pid}/fd"
        targets = []
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(FileNotFoundError):  # closed meanwhile
                targets.append(os.readlink(f"{fd_dir}/{fd}"))
        return targets

    def descriptors(self) -> str:
        """The broker's open descriptors, and how many of them are client connections, which
        come and go with the clients."""
        targets = self._fd_targets()
        return (
            f"{len(targets)} descriptors ({self.connections(targets)} of them client connections)"
        )

    def connections(self, targets: list[str] | None = None) -> int:
        """Connections the broker has accepted: sockets on its port (in any state but
        listening) that are among its descriptors (the kernel's backlog is not)."""
        if targets is None:
            targets = self._fd_targets()
        mine = {int(t[8:-1]) for t in targets if t.startswith("socket:[")}
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    on_port = int(fields[1].rsplit(":", 1)[1], 16) == self.port
                    if on_port and fields[3] != "0A" and int(fields[9]) in mine:
                        count += 1
        return count

    def resident(self) -> int:
        """VmRSS, in bytes."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


def _create_while_producing(bootstrap: str, partitions: int) -> tuple[float, float, int]:
    """(seconds the create took, slowest produce round trip meanwhile, round trips meanwhile)."""
    import confluent_kafka as ck
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # no __all__

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    admin.create_topics([NewTopic(PROBE, 1, 1)])[PROBE].result(60)
    producer = ck.Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": 1, "log_level": 0}
    )
    producer.produce(PROBE, b"warm-up")
    producer.flush(60)
    creating = threading.Event()
    done = threading.Event()
    round_trips: list[float] = []

    def probe() -> None:
        while not done.is_set():
            began = time.monotonic()
            producer.produce(PROBE, b"probe")
            producer.flush(60)
            if creating.is_set():
                round_trips.append(time.monotonic() - began)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    creating.set()
    began = time.monotonic()
    admin.create_topics([NewTopic(TOPIC, partitions, 1)], request_timeout=600)[TOPIC].result(600)
    took = time.monotonic() - began
    creating.clear()
    done.set()
    prober.join(60)
    return took, max(round_trips, default=0.0), len(round_trips)


def _produce_to_every_partition(bootstrap: str, partitions: int) -> None:
    import confluent_kafka as ck

    producer = ck.Producer({"bootstrap.servers": bootstrap, "log_level": 0})
    for p in range(partitions):
        producer.produce(TOPIC, b"one", partition=p)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("records were not delivered")


def _consume_every_partition(bootstrap: str, partitions: int, on_done: Callable[[], None]) -> None:
    import confluent_kafka as ck

    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench",
            "log_level": 0,
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([ck.TopicPartition(TOPIC, p, 0) for p in range(partitions)])
        got = 0
        deadline = time.monotonic() + 120
        while got < partitions:
            if time.monotonic() > deadline:
                raise RuntimeError(f"read {got} of {partitions} records")
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got += 1
        on_done()
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice.bench.partitions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--partitions", type=int, default=10_000, help="partitions of the topic")
    parser.add_argument(
        "--idle-connections", type=int, default=50, help="connections that send nothing"
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the data goes (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-partitions-", dir=args.dir))
    serve = Serve(root / "data", root / "serve.log")
    n = args.partitions
    try:
        ready = serve.start()
        print(f"started: first connection accepted after {ready:.2f} s; {serve.descriptors()}")
        took, slowest, trips = _create_while_producing(serve.bootstrap, n)
        print(
            f"created {n} partitions in {took:.2f} s; a producer on another topic meanwhile: "
            f"{trips} round trips, the slowest {slowest * 1000:.0f} ms; {serve.descriptors()}"
        )
        _produce_to_every_partition(serve.bootstrap, n)
        print(f"one record produced to each partition: {serve.descriptors()}")
        before = serve.connections()
        rss_before = serve.resident()
        # From several loopback addresses: max.connections.per.ip leaves one address 900.
        idle = [
            socket.create_connection(
                ("127.0.0.1", serve.port), source_address=(f"127.0.0.{2 + i % 4}", 0)
            )
            for i in range(args.idle_connections)
        ]
        deadline = time.monotonic() + 10
        while serve.connections() < before + len(idle) and time.monotonic() < deadline:
            time.sleep(0.01)  # accepted asynchronously: polling the kernel's table, bounded
        grown = (serve.resident() - rss_before) / (1 << 20)
        print(
            f"{len(idle)} more connections that send nothing: {serve.descriptors()}; "
            f"resident size +{grown:.1f} MiB"
        )
        for s in idle:
            s.close()
        stopped = serve.stop()
        print(f"clean stop (SIGTERM to exit): {stopped:.2f} s")
        ready = serve.start()
        print(f"restarted: first connection accepted after {ready:.2f} s; {serve.descriptors()}")
        _consume_every_partition(
            serve.bootstrap,
            n,
            lambda: print(f"a consumer read every partition: {serve.descriptors()}"),
        )
        serve.stop()
        # Read once it has exited: its output is block-buffered in a file.
        opened = re.findall(r"opened \d+ topics? with .*? in [\d.]+ s", serve.log_path.read_text())
        print(f"the restart's log: {opened[-1] if opened else '?'}")
    finally:
        serve.kill()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
