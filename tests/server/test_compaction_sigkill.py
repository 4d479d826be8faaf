"""A real ``sluice serve`` SIGKILLed while its cleaner compacts a busy topic, again and again:
an idempotent confluent-kafka producer (lz4, tombstones among its records) writes throughout,
and after the last restart a read_committed consumer reading from the start finds every key's
latest acknowledged record at its offset (a deleted key: nothing, or its tombstone), offsets
strictly increasing, and ListOffsets by timestamp answers. (tests/storage/test_compaction_crash.py
kills a log of its own; this one goes through the wire, the manager and the worker process.)"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

from sluice.testing import BrokerProcess

KILLS = 4
KEYS = 40
TOPIC = "table"
CONFIG = {
    "cleanup.policy": "compact",
    "segment.bytes": "2000",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "200",
    "index.interval.bytes": "200",
}


class Writer(threading.Thread):
    """Produces until stopped; keeps each key's latest acknowledged (offset, value)."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.latest: dict[bytes, tuple[int, bytes | None]] = {}
        self.acked = 0
        self.failed: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed.append(str(err))
            return
        key, offset = msg.key(), msg.offset()
        assert key is not None and offset is not None
        with self.lock:
            self.acked += 1
            if key not in self.latest or self.latest[key][0] < offset:
                self.latest[key] = (offset, msg.value())

    def run(self) -> None:
        rng = random.Random(14)
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "compression.type": "lz4",
                "linger.ms": 2,
                "message.timeout.ms": 60_000,
            }
        )
        seq = 0
        while not self.stop.is_set():
            for _ in range(rng.randint(1, 30)):
                seq += 1
                value = None if rng.random() < 0.1 else f"v{seq}-".encode() * rng.randint(1, 6)
                producer.produce(TOPIC, key=f"k{rng.randrange(KEYS)}".encode(), value=value, on_delivery=self._delivered)
            producer.poll(0)
            producer.flush(60)
        assert producer.flush(60) == 0


def _cleanings(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count(f"cleaned {TOPIC}-0")


def _read_all(bootstrap: str) -> list[tuple[int, bytes | None, bytes | None]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "checker",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, 0), timeout=10)
        consumer.assign([TopicPartition(TOPIC, 0, 0)])
        got: list[tuple[int, bytes | None, bytes | None]] = []
        deadline = time.monotonic() + 30
        while consumer.position([TopicPartition(TOPIC, 0)])[0].offset < high:
            assert time.monotonic() < deadline, f"read up to {got[-1][0] if got else None} of {high}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            offset = msg.offset()
            assert offset is not None
            got.append((offset, msg.key(), msg.value()))
        stamp = 0
        found = consumer.offsets_for_times([TopicPartition(TOPIC, 0, stamp)], timeout=10)
        assert found[0].error is None and found[0].offset == (got[0][0] if got else -1)
        return got
    finally:
        consumer.close()


def test_sigkill_while_cleaning_keeps_every_latest_value(tmp_path: Path) -> None:
    rng = random.Random(2026)
    log_path = tmp_path / "broker.log"
    data = tmp_path / "data"
    with BrokerProcess(data, log_path, settings={"log.cleaner.backoff.ms": "10"}) as broker:
        broker.start()
        admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
        for future in admin.create_topics([NewTopic(TOPIC, 1, 1, config=CONFIG)]).values():
            future.result(10)
        writer = Writer(broker.bootstrap_servers)
        writer.start()
        try:
            for _ in range(KILLS):
                seen = _cleanings(log_path)
                deadline = time.monotonic() + 30
                while _cleanings(log_path) < seen + 2:  # the cleaner is at work
                    assert time.monotonic() < deadline, "no cleaning"
                    time.sleep(0.02)
                time.sleep(rng.uniform(0, 0.3))  # the moment of the crash
                broker.kill()
                broker.start()
        finally:
            writer.stop.set()
            writer.join(120)
        assert not writer.is_alive() and not writer.failed and writer.acked > 1000
    # Read back from a broker whose cleaner is off, so the log holds still while it is read
    # (and a clean stop and start after the crashes, too).
    with BrokerProcess(data, log_path, settings={"log.cleaner.enable": "false"}) as broker:
        broker.start()
        got = _read_all(broker.bootstrap_servers)
        offsets = [o for o, _, _ in got]
        assert offsets == sorted(set(offsets))
        read = {k: (o, v) for o, k, v in got}
        for key, (offset, value) in writer.latest.items():
            if value is None:
                assert key not in read or read[key] == (offset, None), key
            else:
                assert read.get(key) == (offset, value), key
        assert len(read) <= KEYS
    said = log_path.read_text(errors="replace")
    assert " ERROR " not in said and "Traceback" not in said
