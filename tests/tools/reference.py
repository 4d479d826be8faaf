"""Reference confluent-kafka clients, independent of the tools, that set up and check state."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import confluent_kafka as ck
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    ConfigResource,
    OffsetSpec,
    ResourceType,
)

from sluice.testing import create_topic


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int


def _bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


class Reference:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})

    def close(self) -> None:
        pass

    def create_topic(self, name: str, partitions: int = 1, **configs: str) -> str:
        return create_topic(
            self.bootstrap,
            name,
            partitions,
            configs={k.replace("_", "."): v for k, v in configs.items()},
        )

    def partitions(self, topic: str) -> int | None:
        meta = self.admin.list_topics(timeout=30)
        t = meta.topics.get(topic)
        return None if t is None else len(t.partitions)

    def topics(self) -> set[str]:
        return set(self.admin.list_topics(timeout=30).topics)

    def configs(self, topic: str) -> dict[str, tuple[str | None, int]]:
        """Every config of ``topic``: name -> (value, Kafka source number)."""
        futures = self.admin.describe_configs(
            [ConfigResource(ResourceType.TOPIC, topic)], request_timeout=30
        )
        entries = next(iter(futures.values())).result(timeout=30)
        return {n: (e.value, int(getattr(e.source, "value", e.source))) for n, e in entries.items()}

    def produce(self, topic: str, records: list[dict[str, Any]], **conf: Any) -> None:
        """Each record: ``value`` and optional ``key``, ``partition``, ``headers``."""
        p = ck.Producer({"bootstrap.servers": self.bootstrap, "log_level": 0, **conf})
        errors: list[Any] = []
        for r in records:
            p.produce(topic, on_delivery=lambda err, _m: errors.append(err) if err else None, **r)
        assert p.flush(30) == 0
        assert errors == []

    def end_offsets(self, topic: str, spec: str = "latest") -> dict[int, int]:
        n = self.partitions(topic)
        assert n is not None, f"no topic {topic}"
        offset_spec = OffsetSpec.latest() if spec == "latest" else OffsetSpec.earliest()  # type: ignore[no-untyped-call]
        futures = self.admin.list_offsets(
            {ck.TopicPartition(topic, p): offset_spec for p in range(n)}, request_timeout=30
        )
        return {tp.partition: f.result(timeout=30).offset for tp, f in futures.items()}

    def _consumer(self, **conf: Any) -> ck.Consumer:
        return ck.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "sluice-tools-reference",
                "enable.auto.commit": False,
                "log_level": 0,
                **conf,
            }
        )

    def read(self, topic: str, timeout: float = 30.0) -> list[Rec]:
        """Every record stored in ``topic`` (read up to each partition's end offset), sorted by
        partition then offset."""
        ends = self.end_offsets(topic)
        c = self._consumer()
        out: list[Rec] = []
        try:
            c.assign(
                [
                    ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING)
                    for p, end in ends.items()
                    if end > 0
                ]
            )
            seen = {p: 0 for p in ends}
            deadline = time.monotonic() + timeout
            while any(seen[p] < ends[p] for p in ends):
                assert time.monotonic() < deadline, f"read only {seen} of {ends}"
                m = c.poll(0.5)
                if m is None:
                    continue
                assert m.error() is None, m.error()
                p, off = m.partition(), m.offset()
                assert p is not None and off is not None
                seen[p] = off + 1
                headers = m.headers() or []
                assert isinstance(headers, list)  # a consumed message's headers come as pairs
                out.append(
                    Rec(
                        p,
                        off,
                        _bytes(m.key()),
                        _bytes(m.value()),
                        [(k, _bytes(v)) for k, v in headers],
                        m.timestamp()[1],
                    )
                )
        finally:
            c.close()
        return sorted(out, key=lambda r: (r.partition, r.offset))

    def committed(self, group: str) -> dict[tuple[str, int], int]:
        futures = self.admin.list_consumer_group_offsets(
            [ck.ConsumerGroupTopicPartitions(group)], request_timeout=30
        )
        result = futures[group].result(timeout=30)
        return {
            (tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.offset >= 0
        }

    def groups(self) -> set[str]:
        result = self.admin.list_consumer_groups(request_timeout=30).result(timeout=30)
        return {g.group_id for g in result.valid}
