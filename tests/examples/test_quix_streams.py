"""Quix Streams against sluice. Quix Streams 3.x pins confluent-kafka below the version the
rest of this suite uses, so its applications run in an environment of their own (in a project
of yours, call ``run`` directly)."""

import json
import subprocess
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from sluice.testing import Cluster
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
    admin = AdminClient({"bootstrap.servers": sluice_broker.bootstrap_servers})
    # Quix names them after the application's consumer group (f"{source}-quix"), and the
    # fixtures do not know them: deleted here, so a real cluster is left clean.
    changelogs = [
        t
        for t in admin.list_topics(timeout=10).topics
        if t.startswith("changelog__") and sluice_topic in t
    ]
    try:
        assert code == 0, err
        assert [t["total"] for t in json.loads(out)] == [100, 300, 600]
        assert changelogs, "Quix created no changelog topic"
        described = admin.describe_configs([ConfigResource("topic", t) for t in changelogs])
        for future in described.values():
            assert future.result(timeout=10)["cleanup.policy"].value == "compact"
    finally:
        sluice_broker.delete_topics(changelogs)


def test_exactly_once(sluice_broker, sluice_topic, tmp_path):
    """processing_guarantee="exactly-once": Quix's transactional producer commits each checkpoint's
    output and consumer offsets in one transaction; a read_committed reader sees exactly them."""
    totals = sluice_broker.create_topic()
    orders(sluice_broker, sluice_topic)
    code, out, err = run_app(sluice_broker, sluice_topic, totals, "eos", tmp_path)
    assert code == 0, err
    assert [t["total"] for t in json.loads(out)] == [120, 240, 360]
    consumer = Consumer(
        {
            "bootstrap.servers": sluice_broker.bootstrap_servers,
            "group.id": f"{totals}-reader",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(totals, 0, OFFSET_BEGINNING)])
        seen: list[dict[str, int]] = []
        while len(seen) < 3:
            message = consumer.poll(10)
            assert message is not None, f"only {len(seen)} committed outputs"
            assert message.error() is None, message.error()
            seen.append(json.loads(message.value() or b"null"))
        assert [t["total"] for t in seen] == [120, 240, 360]
        _, high = consumer.get_watermark_offsets(TopicPartition(totals, 0), timeout=10)
        assert high > 3, "no transaction marker follows the outputs"
    finally:
        consumer.close()
