"""Consume-transform-produce with ``send_offsets_to_transaction`` survives its processor being
SIGKILLed again and again: the output read with read_committed holds each input record's result
exactly once, and the group's committed offsets are the input's end offsets.

The processor (``eos_processor.py``, confluent-kafka) is a child process. Each incarnation is
given a kill point drawn by a seeded RNG: in its N-th transaction, after some of its results are
produced, after its offsets are sent, a few milliseconds into ``commit_transaction`` (a timer
thread, somewhere inside the EndTxn round trip), or right after the commit returned. It SIGKILLs
itself there; the next incarnation, with the same transactional.id, fences it (its open
transaction aborted) and starts from the group's committed offsets. A failure replays with the
same seed."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from sluice.testing import EmbeddedBroker, unique_topic_name

PROCESSOR = Path(__file__).with_name("eos_processor.py")
PARTITIONS = 3
PER_PARTITION = 1000
KILLS = 15
SEED = 1717
PHASES = ("produce", "offsets", "commit", "committed")


def read_all(bootstrap: str, topic: str, isolation: str) -> list[tuple[bytes, bytes]]:
    """Every record of ``topic`` as a consumer with ``isolation`` sees it, up to each
    partition's end (the last stable offset for read_committed)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_topic_name("eos-reader"),
            "isolation.level": isolation,
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[bytes, bytes]] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        at_end: set[int] = set()
        deadline = time.monotonic() + 30
        while len(at_end) < PARTITIONS:
            assert time.monotonic() < deadline, f"{isolation}: only {at_end} reached their end"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                assert error.code() == KafkaError._PARTITION_EOF, error
                at_end.add(msg.partition() or 0)
                continue
            out.append((msg.key() or b"", msg.value() or b""))
    finally:
        consumer.close()
    return out


def test_a_processor_killed_again_and_again_produces_each_result_exactly_once(
    sluice_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    bootstrap = sluice_broker.bootstrap_servers
    name = unique_topic_name("eos")
    source = sluice_broker.create_topic(name + "-in", PARTITIONS)
    sink = sluice_broker.create_topic(name + "-out", PARTITIONS)
    group = name + "-group"
    feeder = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            feeder.produce(source, f"in-{p}-{i}".encode(), partition=p)
    assert feeder.flush(30) == 0

    rnd = random.Random(SEED)
    log = tmp_path / "processor.log"
    base = [
        sys.executable,
        str(PROCESSOR),
        "--bootstrap", bootstrap,
        "--input", source,
        "--output", sink,
        "--partitions", str(PARTITIONS),
        "--group", group,
        "--transactional-id", name,
    ]  # fmt: skip
    killed = 0
    plan: list[str] = []
    for run in range(KILLS + 1):
        batch = rnd.randint(5, 80)
        args = [*base, "--batch", str(batch)]
        if run < KILLS:
            phase = rnd.choice(PHASES)
            point = [
                "--kill-txn", str(rnd.randint(0, 3)),
                "--kill-phase", phase,
                "--kill-after", str(rnd.randint(1, batch)),
                "--kill-delay-ms", f"{rnd.uniform(0, 15):.2f}",
            ]  # fmt: skip
            args += point
            plan.append(" ".join(point))
        with log.open("ab") as out:
            out.write(f"--- run {run}: {' '.join(args[len(base):])}\n".encode())
            out.flush()
            started = time.monotonic()
            code = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, timeout=60).returncode
            out.write(f"exit {code} after {time.monotonic() - started:.2f} s\n".encode())
        if run == KILLS:
            assert code == 0, log.read_text()
        else:
            assert code in (0, -9), log.read_text()  # 0: it caught up before its kill point
            killed += code == -9
    assert killed >= KILLS - 3, plan  # the kill points were reached (the input was long enough)

    committed = read_all(bootstrap, sink, "read_committed")
    counts = Counter(key for key, _ in committed)
    expected = {f"{p}:{i}".encode() for p in range(PARTITIONS) for i in range(PER_PARTITION)}
    assert set(counts) == expected
    assert [key for key, n in counts.items() if n > 1] == []
    for key, value in committed:
        partition, offset = key.decode().split(":")
        assert value == f"IN-{partition}-{offset}".encode()
    # The kills did leave aborted results behind, which read_committed skipped.
    assert len(read_all(bootstrap, sink, "read_uncommitted")) > len(committed)

    watcher = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = watcher.committed([TopicPartition(source, p) for p in range(PARTITIONS)], 30)
    finally:
        watcher.close()
    assert [tp.offset for tp in offsets] == [PER_PARTITION] * PARTITIONS
