"""Quix Streams against sluice. Quix Streams 3.x pins confluent-kafka below the version the
rest of this suite uses, so its applications run in an environment of their own (in a project
of yours, call ``run`` directly)."""

import json
import subprocess
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from sluice.testing import Cluster, EmbeddedBroker
from tests.quix import quix_python

APP = Path(__file__).with_name("quix_app.py")


def run_app(
    broker: Cluster, source: str, sink: str, mode: str, tmp_path: Path
) -> tuple[int, str, str]:
    done = subprocess.run(
        [quix_python(), APP, broker.bootstrap_servers, source, sink, mode, tmp_path / "state"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


def orders(broker: Cluster, topic: str) -> None:
    broker.produce(
        topic,
        *(json.dumps({"id": str(i), "customer": "ada", "amount": 100 * i}) for i in (1, 2, 3)),
        key="ada",
    )


def test_a_stateless_pipeline(sluice_broker, sluice_topic, tmp_path):
    totals = sluice_broker.create_topic()
    orders(sluice_broker, sluice_topic)
    code, out, err = run_app(sluice_broker, sluice_topic, totals, "stateless", tmp_path)
    assert code == 0, err
    assert [t["total"] for t in json.loads(out)] == [120, 240, 360]
    assert len(sluice_broker.consume_all(totals)) == 3


def test_state_kept_locally(sluice_broker, sluice_topic, tmp_path):
    """Stateful processing runs without changelog topics (the state is then only on local disk)."""
    totals = sluice_broker.create_topic()
    orders(sluice_broker, sluice_topic)
    code, out, err = run_app(sluice_broker, sluice_topic, totals, "stateful-local", tmp_path)
    assert code == 0, err
    assert [t["total"] for t in json.loads(out)] == [100, 300, 600]


def test_state_in_compacted_changelog_topics(sluice_broker, sluice_topic, tmp_path):
    """Quix's default stateful mode: the state is backed by a compacted changelog topic it creates."""
    totals = sluice_broker.create_topic()
    orders(sluice_broker, sluice_topic)
    code, out, err = run_app(sluice_broker, sluice_topic, totals, "stateful", tmp_path)
    assert code == 0, err
    assert [t["total"] for t in json.loads(out)] == [100, 300, 600]
    admin = AdminClient({"bootstrap.servers": sluice_broker.bootstrap_servers})
    changelogs = [t for t in admin.list_topics(timeout=10).topics if t.startswith("changelog__")]
    assert changelogs, "Quix created no changelog topic"
    described = admin.describe_configs([ConfigResource("topic", t) for t in changelogs])
    for future in described.values():
        assert future.result(timeout=10)["cleanup.policy"].value == "compact"


def test_what_does_not_run_on_sluice_yet(sluice_broker, sluice_topic, tmp_path):
    if not isinstance(sluice_broker, EmbeddedBroker):
        pytest.skip("documents sluice's own refusals")
    orders(sluice_broker, sluice_topic)
    # exactly-once needs transactions, which sluice does not serve yet...
    code, _, err = run_app(sluice_broker, sluice_topic, "unused", "eos", tmp_path)
    assert code != 0
    # ...as a transactional producer, what Quix's exactly-once starts with, is told
    producer = Producer(
        {"bootstrap.servers": sluice_broker.bootstrap_servers, "transactional.id": "t"}
    )
    with pytest.raises(KafkaException, match="transactions are not supported by this broker"):
        producer.init_transactions(10)
