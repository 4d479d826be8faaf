"""Topic lifecycle races over the wire: a delete overlapping a re-creation of the same name (by
Metadata auto-creation or CreateTopics) must never take the new topic's acknowledged records
with it, and the broker must still stop cleanly afterwards.

This was a real loss: client A sends DeleteTopics("t"), client B, without waiting, Metadata("t")
with auto-creation; records then acknowledged to the re-created "t" were gone after a restart.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    NewTopic,
)

from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.testing import BrokerProcess, EmbeddedBroker
from tests.server.wire import (
    WireClient,
    batch,
    create_topic,
    create_topics_request,
    fetch_all_values,
    list_offset,
    metadata_request,
    produce,
)


def _delete_request(name: str) -> m.DeleteTopicsRequest:
    return m.DeleteTopicsRequest(topic_names=[name], timeout_ms=10_000)


def test_delete_overlapping_auto_create_keeps_the_new_topics_records(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "data", settings={"auto.create.topics.enable": "true"})
    broker.start()
    acknowledged: list[bytes] = []
    try:
        with WireClient.to(broker) as a, WireClient.to(broker) as b:
            create_topic(a, "t")
            for round_no in range(20):
                # The old incarnation has a writer with work behind it: that is what kept the
                # delete busy while the re-creation slipped in.
                for i in range(5):
                    assert produce(b, "t", 0, batch([f"old-{round_no}-{i}".encode()])).error_code == 0
                delete_id = a.send(ApiKey.DELETE_TOPICS, 4, _delete_request("t"))
                meta_id = b.send(ApiKey.METADATA, 9, metadata_request(["t"], auto_create=True))
                deleted = a.recv(ApiKey.DELETE_TOPICS, 4, delete_id, m.DeleteTopicsResponse)
                assert [r.error_code for r in deleted.responses] == [0]
                meta = b.recv(ApiKey.METADATA, 9, meta_id, m.MetadataResponse)
                assert meta.topics[0].error_code == 0
                # Either the metadata came first (then the delete removed that topic) or it
                # re-created the topic after the delete: make sure it exists now.
                resp = b.call(
                    ApiKey.CREATE_TOPICS, 7, create_topics_request(["t"]), m.CreateTopicsResponse
                )
                assert resp.topics[0].error_code in (0, 36)
                acknowledged = [f"new-{round_no}-{i}".encode() for i in range(3)]
                for value in acknowledged:
                    assert produce(b, "t", 0, batch([value])).error_code == 0
        broker.restart()
        with WireClient.to(broker) as client:
            assert list_offset(client, "t", 0) == (0, len(acknowledged))
            assert fetch_all_values(client, "t", 0) == acknowledged
    finally:
        broker.stop()
        broker.cleanup()


def test_real_clients_racing_delete_and_create_lose_nothing_acknowledged(tmp_path: Path) -> None:
    """Two confluent-kafka AdminClients, one deleting "t" and one creating it at the same moment,
    round after round, while the old incarnation's writer is busy with big records. The records
    acknowledged to the last incarnation survive a SIGTERM (exit 0; before the fix the broker
    could not even stop cleanly) and a restart, at their acknowledged offsets."""
    log = tmp_path / "serve.log"
    with BrokerProcess(tmp_path / "data", log) as broker:
        broker.start()
        bootstrap: dict[str, str | int | float | bool] = {"bootstrap.servers": broker.bootstrap_servers}
        deleter, creator = AdminClient(bootstrap), AdminClient(bootstrap)
        producer = Producer({**bootstrap, "linger.ms": 0, "acks": "all", "message.timeout.ms": 20_000})
        creator.create_topics([NewTopic("t", 1)])["t"].result(timeout=20)
        filler = b"x" * 300_000
        landed: dict[int, bytes] = {}

        def on_delivery(err: object, msg: object) -> None:
            assert err is None, err
            landed[msg.offset()] = msg.value()  # type: ignore[attr-defined]

        for round_no in range(15):
            for i in range(4):
                producer.produce("t", value=f"old-{round_no}-{i}".encode() + filler)
            producer.flush(30)
            deleted = deleter.delete_topics(["t"], operation_timeout=10)["t"]
            created = creator.create_topics([NewTopic("t", 1)], operation_timeout=10)["t"]
            with contextlib.suppress(KafkaException):
                deleted.result(timeout=20)
            with contextlib.suppress(KafkaException):
                created.result(timeout=20)  # TOPIC_ALREADY_EXISTS if it came before the delete
            with contextlib.suppress(KafkaException):
                creator.create_topics([NewTopic("t", 1)])["t"].result(timeout=20)
            landed.clear()
            for i in range(3):
                producer.produce("t", value=f"kept-{round_no}-{i}".encode(), on_delivery=on_delivery)
            assert producer.flush(30) == 0
            assert len(landed) == 3
        assert broker.stop() == 0, log.read_text()
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            stored = fetch_all_values(client, "t", 0)
        assert {offset: stored[offset] for offset in landed} == landed
    assert "Traceback" not in log.read_text()
