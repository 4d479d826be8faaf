"""The broker the toolkit's tests run against, and a reader that checks what it stored.

By default that is a sluice broker in this process (one per test module). To show that the
toolkit is nothing sluice-specific, the same tests run against any Kafka-compatible broker::

    SLUICE_TOOLKIT_BOOTSTRAP=127.0.0.1:9092 pytest tests/client

and against Apache Kafka 0.9.0.1 (``python -m sluice.bench.kafka09`` starts one and prints its
address), telling librdkafka the broker's version, which 0.9 cannot say itself::

    SLUICE_TOOLKIT_BOOTSTRAP=127.0.0.1:PORT SLUICE_TOOLKIT_KAFKA_VERSION=0.9.0.1 pytest tests/client

On an external broker idempotence is off (a 0.9 broker has no InitProducerId) and topics are
made with CreateTopics where the broker has it, else auto-created with the broker's default
partition count; tests that need what an old broker lacks (headers need 0.11) are skipped there,
saying so. Against sluice nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka as ck
import confluent_kafka.admin  # ck.admin below
import pytest

from sluice.testing import EmbeddedBroker, TopicCreationError, create_topic, unique_topic_name

BOOTSTRAP_ENV = "SLUICE_TOOLKIT_BOOTSTRAP"
VERSION_ENV = "SLUICE_TOOLKIT_KAFKA_VERSION"
DEADLINE = float(os.environ.get("SLUICE_TOOLKIT_DEADLINE", "60"))
"""Seconds any one wait in these tests may take; reached only when something is broken."""


def script_env() -> dict[str, str]:
    """The environment of a ``python -c`` child that imports this tree (sluice and ``tests``)."""
    root = Path(__file__).resolve().parents[2]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c script args...`` importing this tree, to its end: what a process does at its
    exit (the never-closed warnings) is seen only from outside it."""
    return subprocess.run([sys.executable, "-c", script, *args],
                          env=script_env(), capture_output=True, text=True, timeout=DEADLINE)


def stderr_by_ending(script: str, *args: str) -> dict[str, str]:
    """What ``script`` printed to stderr run to its end once with ``close`` and once with
    ``leave`` as its last argument (the never-closed tests), each run having exited 0."""
    out = {}
    for how in ("close", "leave"):
        done = run_script(script, *args, how)
        assert done.returncode == 0, done.stderr
        out[how] = done.stderr
    return out


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3])


@dataclass
class Target:
    """A broker and what the tests may ask of it."""

    bootstrap: str
    client: dict[str, Any] = field(default_factory=dict)
    """librdkafka settings every client needs for this broker."""
    version: tuple[int, ...] | None = None
    """The broker's version when it was given (an external broker), else None (sluice)."""
    data_dir: Path | None = None
    """Where sluice keeps its log (None for an external broker)."""

    @property
    def sluice(self) -> bool:
        return self.version is None

    @property
    def idempotent(self) -> bool:
        return self.sluice

    @property
    def headers(self) -> bool:
        return self.version is None or self.version >= (0, 11)

    @property
    def timestamps(self) -> bool:
        return self.version is None or self.version >= (0, 10)

    def options(self, **extra: Any) -> dict[str, Any]:
        """Producer options for this broker (librdkafka names), plus ``extra``."""
        base: dict[str, Any] = dict(self.client)
        if not self.idempotent:
            base["enable.idempotence"] = False
        base.update(extra)
        return base

    def require_headers(self) -> None:
        if not self.headers:
            pytest.skip(f"Kafka {self.version} has no record headers (0.11 and later)")

    def topic(self, hint: str, partitions: int = 1) -> tuple[str, int]:
        """A new topic; returns its name and how many partitions it really has (an old
        broker without CreateTopics auto-creates it with its default)."""
        name = unique_topic_name(hint)
        return name, self.make(name, partitions)

    def make(self, name: str, partitions: int = 1) -> int:
        """Topic ``name``, created; returns how many partitions it has."""
        if self.version is not None and self.version < (0, 10, 1):  # before CreateTopics
            return self.wait_for_topic(name)
        try:
            create_topic(self.bootstrap, name, partitions)
        except (TopicCreationError, ConnectionError, OSError):
            if self.sluice:
                raise
        return self.wait_for_topic(name)

    def wait_for_topic(self, name: str) -> int:
        """Until the topic's partitions all have leaders (auto-creating it if need be)."""
        admin = ck.admin.AdminClient({"bootstrap.servers": self.bootstrap, **self.client})
        deadline = time.monotonic() + DEADLINE
        while True:
            meta = admin.list_topics(name, timeout=10)
            t = meta.topics.get(name)
            if t is not None and t.error is None and t.partitions and all(
                p.leader >= 0 for p in t.partitions.values()
            ):
                return len(t.partitions)
            assert time.monotonic() < deadline, f"topic {name} has no leaders: {t}"
            time.sleep(0.05)  # the metadata probe's retry interval


@dataclass(frozen=True)
class Stored:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int


def read_topic(target: Target, topic: str) -> list[Stored]:
    """Every record of every partition of ``topic``, in partition then offset order, read with
    a fresh assign() consumer up to the high watermarks."""
    consumer = ck.Consumer(
        {
            "bootstrap.servers": target.bootstrap,
            "group.id": "sluice-toolkit-tests",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            **target.client,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        partitions = sorted(meta.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(ck.TopicPartition(topic, p), timeout=10)[1]
                for p in partitions}
        consumer.assign([ck.TopicPartition(topic, p, 0) for p in partitions])
        got: list[Stored] = []
        position = dict.fromkeys(partitions, 0)
        deadline = time.monotonic() + DEADLINE
        while any(position[p] < ends[p] for p in partitions):
            assert time.monotonic() < deadline, f"read {position}, want {ends}"
            for m in consumer.consume(1000, 0.2):
                assert m.error() is None, m.error()
                p, offset = m.partition(), m.offset()
                assert p is not None and offset is not None
                if offset >= ends[p]:
                    continue
                got.append(Stored(p, offset, m.key(), m.value(), list(m.headers() or []),  # type: ignore[arg-type]
                                  m.timestamp()[1]))
                position[p] = offset + 1
        return sorted(got, key=lambda s: (s.partition, s.offset))
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    external = os.environ.get(BOOTSTRAP_ENV)
    if external:
        version = os.environ.get(VERSION_ENV)
        client: dict[str, Any] = {}
        if version and _version(version) < (0, 10):
            client = {"api.version.request": False, "broker.version.fallback": version}
        yield Target(external, client, _version(version) if version else (99,))
        return
    with EmbeddedBroker(Path(tmp_path_factory.mktemp("sluice-toolkit"))) as broker:
        yield Target(broker.bootstrap_servers, data_dir=broker.data_dir)
