"""Helpers for the real-client group tests: child-process members, a `sluice serve` child, a
raw wire client, and waiting for conditions (polled with a deadline, never a fixed sleep)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import confluent_kafka as ck

from sluice.protocol import ApiKey, RequestBody, encode_request
from sluice.roundtrip import round_trip

ROOT = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT_MS = 6000


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; return how long that took, or fail after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def produce(bootstrap: str, topic: str, values: list[tuple[int, str]]) -> None:
    """Produce (partition, value) pairs with acks=all and wait for every acknowledgement."""
    producer = ck.Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    failures: list[Any] = []

    def on_delivery(err: ck.KafkaError | None, _msg: ck.Message) -> None:
        if err is not None:
            failures.append(err)

    for partition, value in values:
        producer.produce(topic, value.encode(), partition=partition, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert failures == []


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        found = consumer.committed(
            [ck.TopicPartition(topic, p) for p in range(partitions)], timeout=30
        )
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


class ChildMember:
    """A confluent-kafka consumer in its own process (tests/groups/member_child.py)."""

    def __init__(self, bootstrap: str, topic: str, group: str, strategy: str = "range") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.groups.member_child", bootstrap, topic, group, strategy],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.events.append(json.loads(line))

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events)

    @property
    def assignment(self) -> list[int]:
        assigned = [e["partitions"] for e in self.snapshot() if e["event"] == "assigned"]
        return assigned[-1] if assigned else []

    @property
    def processed(self) -> list[tuple[int, int, str]]:
        return [
            (e["partition"], e["offset"], e["value"])
            for e in self.snapshot()
            if e["event"] == "processed"
        ]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._release()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("stop\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self._release()

    def _release(self) -> None:
        """The child has exited: its output read to the end, both pipes closed (left open,
        each is a ResourceWarning when the Popen is collected)."""
        self._reader.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # stdin: a flush to a child that is gone
                    pipe.close()


class WireClient:
    """A bare Kafka connection speaking sluice's own codec: for requests no client library lets
    a test send on purpose (stale generations, unknown members)."""

    def __init__(self, bootstrap: str) -> None:
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.correlation = 0

    def call(self, api: ApiKey, version: int, body: RequestBody) -> Any:
        self.correlation += 1
        frame = encode_request(api, version, self.correlation, "wire-test", body)
        return round_trip(self.sock, frame, api, version, self.correlation, time.monotonic() + 30)

    def close(self) -> None:
        self.sock.close()
