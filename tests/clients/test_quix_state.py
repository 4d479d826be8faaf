"""A stateful Quix Streams application against sluice: its state store's changelog topic is
created compacted (``cleanup.policy=compact``), the broker's cleaner compacts it, and after its
local state is lost the application rebuilds the state from the changelog and counts on from
where it was. The application runs as a child process in the Quix environment
(:func:`tests.quix.quix_python`: Quix Streams pins an older confluent-kafka)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka as ck
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]  # re-exported without __all__

from sluice.testing import EmbeddedBroker, create_topic, unique_topic_name
from tests.clients.adapters import TIMEOUT
from tests.clients.test_compacted import consume_confluent, wait_until_cleaned
from tests.quix import quix_python

APP = Path(__file__).with_name("quix_counter.py")
KEYS = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """Small segments everywhere (the changelog topic Quix creates gets the broker's default),
    and a cleaner that looks for work every 50 ms."""
    with EmbeddedBroker(
        tmp_path_factory.mktemp("sluice-quix"),
        settings={
            "log.segment.bytes": "2048",
            "log.cleaner.backoff.ms": "50",
            "log.cleaner.min.cleanable.ratio": "0.01",
        },
    ) as b:
        yield b


def produce(bootstrap: str, topic: str, rounds: int, keys: list[str] = KEYS) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap})
    for _ in range(rounds):
        for key in keys:
            producer.produce(topic, json.dumps({"n": 1}).encode(), key.encode())
    assert producer.flush(TIMEOUT) == 0


def run_app(bootstrap: str, source: str, sink: str, state_dir: Path, group: str, count: int) -> dict[str, int]:
    """Run the application until it has produced ``count`` outputs; each key's last count."""
    done = subprocess.run(
        [str(quix_python()), str(APP), bootstrap, source, sink, str(state_dir), group, str(count)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last: dict[str, int] = {}
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == count, done.stdout[-2000:] + done.stderr[-2000:]
    for row in lines:
        last[row["key"]] = row["count"]
    return last


def test_a_quix_streams_app_recovers_its_state_from_a_compacted_changelog(
    broker: EmbeddedBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    bootstrap = broker.bootstrap_servers
    name = unique_topic_name(request.node.name)
    source = create_topic(bootstrap, f"{name}-in", 1)
    sink = create_topic(bootstrap, f"{name}-out", 1)
    group = f"{name}-counter"
    state_dir = tmp_path / "state"

    produce(bootstrap, source, 100)
    assert run_app(bootstrap, source, sink, state_dir, group, 300) == dict.fromkeys(KEYS, 100)
    # Another key's updates push the first keys' latest changelog records out of the active
    # segment: from now on only the cleaner's rewritten segments hold them.
    produce(bootstrap, source, 150, ["dave"])
    assert run_app(bootstrap, source, sink, state_dir, group, 150) == {"dave": 150}

    admin = AdminClient({"bootstrap.servers": bootstrap})
    changelogs = [t for t in admin.list_topics(timeout=TIMEOUT).topics if t.startswith("changelog") and group in t]
    assert len(changelogs) == 1, changelogs
    changelog = changelogs[0]
    resource = ConfigResource(ConfigResource.Type.TOPIC, changelog)
    configs = admin.describe_configs([resource])[resource].result(TIMEOUT)
    assert configs["cleanup.policy"].value == "compact"

    # The broker compacts the changelog: fewer records than the application wrote, one per key
    # below the active segment.
    active = wait_until_cleaned(broker.data_dir, changelog)
    consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "enable.auto.commit": False})
    try:
        written = consumer.get_watermark_offsets(ck.TopicPartition(changelog, 0), timeout=TIMEOUT)[1]
    finally:
        consumer.close()
    stored = consume_confluent(bootstrap, changelog, written)
    assert len(stored) < written / 2, (len(stored), written)
    below = [key for offset, key, _ in stored if offset < active]
    assert len(below) == len(set(below))
    assert {key for offset, key, _ in stored if offset >= active} == {b'"dave"|"count"'}  # Quix's store key

    # The local state is lost: the application rebuilds it from the compacted changelog.
    shutil.rmtree(state_dir)
    produce(bootstrap, source, 5)
    assert run_app(bootstrap, source, sink, state_dir, group, 15) == dict.fromkeys(KEYS, 105)
