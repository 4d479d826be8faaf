"""The broker a benchmark runs against: a child ``sluice serve``, Kafka 0.9.0.1, or any address.

A :class:`Target` gives the scenarios what they need and nothing else: a bootstrap address, the
client settings that broker needs (Kafka 0.9 has no ApiVersions), the pids to read CPU and RSS
from (only when the broker runs on this machine), and topic creation with topic configs.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sluice.bench.harness import rdkafka_logger


class Target(Protocol):
    @property
    def label(self) -> str: ...
    @property
    def bootstrap(self) -> str: ...
    @property
    def client_config(self) -> dict[str, Any]: ...
    @property
    def pids(self) -> list[int]: ...
    @property
    def kind(self) -> str:
        """``sluice``, ``kafka09`` or ``external``."""
        ...

    def create_topic(self, name: str, partitions: int,
                     configs: Mapping[str, str] | None = None) -> str: ...


@dataclass
class Remote:
    """A broker at an address: ``--bootstrap``. ``pids`` may name a local broker's processes."""

    bootstrap: str
    client_config: dict[str, Any] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)
    label: str = "broker"
    kind: str = "external"
    ready_seconds: float | None = None

    def create_topic(self, name: str, partitions: int,
                     configs: Mapping[str, str] | None = None) -> str:
        if self.kind == "kafka09":
            return auto_create(self.bootstrap, self.client_config, name, partitions, configs)
        admin_create(self.bootstrap, self.client_config, name, partitions, configs)
        return name


def auto_create(bootstrap: str, client_config: Mapping[str, Any], name: str, partitions: int,
                configs: Mapping[str, str] | None = None) -> str:
    """A Kafka 0.9 broker has no CreateTopics: a Metadata request for ``name`` makes it create
    the topic with its defaults (``num.partitions``), which must match what was asked."""
    from confluent_kafka.admin import AdminClient

    if configs:
        raise ValueError(f"topic configs {dict(configs)} need CreateTopics, which Kafka 0.9 lacks: "
                         "use `sluice bench compare`, which creates topics with kafka-topics.sh")
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": rdkafka_logger(),
                            **client_config}
    admin = AdminClient(conf)
    deadline = time.monotonic() + 30
    while True:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if topic is not None and topic.error is None and topic.partitions:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} was not auto-created in 30 s")
        time.sleep(0.1)  # metadata poll interval while the broker creates the topic
    if len(topic.partitions) != partitions:
        raise ValueError(f"Kafka 0.9 auto-created {name} with {len(topic.partitions)} "
                         f"partition(s), not {partitions}: set the broker's num.partitions, or "
                         "use `sluice bench compare`")
    wait_for_leaders(admin, name, partitions, 60)
    return name


def admin_create(bootstrap: str, client_config: Mapping[str, Any], name: str, partitions: int,
                 configs: Mapping[str, str] | None = None, timeout: float = 60.0) -> None:
    """CreateTopics through librdkafka's AdminClient, then wait until every partition has a
    leader (so nothing timed waits for metadata)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": rdkafka_logger(),
                            **client_config}
    admin = AdminClient(conf)
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=1, config=dict(configs or {}))],
                                  operation_timeout=30)
    for fut in futures.values():
        try:
            fut.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    wait_for_leaders(admin, name, partitions, timeout)


def wait_for_leaders(admin: Any, name: str, partitions: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(name, timeout=5)
        topic = meta.topics.get(name)
        if (topic is not None and topic.error is None and len(topic.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in topic.partitions.values())):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name}: partitions without a leader after {timeout:g} s")
        time.sleep(0.05)  # metadata poll interval while the broker elects leaders


@contextlib.contextmanager
def sluice_child(settings: Mapping[str, str] | None = None,
                 label: str = "sluice") -> Iterator[Remote]:
    """A ``sluice serve`` child on a free loopback port and a temporary data directory, stopped
    (SIGTERM, then SIGKILL) and removed afterwards. Its pid is measured apart from the load."""
    from sluice.testing import BrokerProcess

    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        began = time.monotonic()
        broker = BrokerProcess(Path(tmp) / "data", Path(tmp) / "serve.log",
                               settings=dict(settings or {}), timeout=60)
        with broker:
            broker.start()
            assert broker.proc is not None
            yield Remote(broker.bootstrap_servers, {}, [broker.proc.pid], label, "sluice",
                         time.monotonic() - began)


@dataclass
class Kafka09Target:
    """Apache Kafka 0.9.0.1 from npm (:mod:`sluice.bench.kafka09`); its broker JVM is measured
    (ZooKeeper is not: it idles during a run)."""

    kafka: Any
    label: str = "Kafka 0.9.0.1"
    kind: str = "kafka09"

    @property
    def bootstrap(self) -> str:
        return str(self.kafka.bootstrap)

    @property
    def client_config(self) -> dict[str, Any]:
        return dict(self.kafka.client_config)

    @property
    def pids(self) -> list[int]:
        return [int(self.kafka.pid)]

    @property
    def ready_seconds(self) -> float:
        return float(self.kafka.ready_seconds)

    def create_topic(self, name: str, partitions: int,
                     configs: Mapping[str, str] | None = None) -> str:
        from confluent_kafka.admin import AdminClient

        self.kafka.create_topics([(name, partitions)], configs=configs)
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap,
                                "logger": rdkafka_logger(), **self.client_config}
        admin = AdminClient(conf)
        wait_for_leaders(admin, name, partitions, 60)
        return name


@contextlib.contextmanager
def kafka09_child(cache: str | None = None, heap: str | None = None) -> Iterator[Kafka09Target]:
    from sluice.bench import kafka09

    with kafka09.running_kafka09(cache=cache, broker_heap=heap) as kafka:
        yield Kafka09Target(kafka)
