"""KIP-848's consumer group protocol (``group.protocol=consumer``) is refused out loud.

sluice serves the classic protocol only. Without ConsumerGroupHeartbeat in ApiVersions,
librdkafka's consumer loops on "ConsumerGroupHeartbeatRequest not supported by broker" (only
in its debug log): it never joins, never errs, and the application sees nothing. The broker
advertises the API and answers UNSUPPORTED_VERSION, as Kafka does with the protocol off, which
librdkafka raises as a fatal error at once; a classic consumer in the same process is untouched.
"""

from __future__ import annotations

import time
import uuid

import confluent_kafka as ck

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.testing import EmbeddedBroker
from tests.server.wire import WireClient, api_versions


def test_a_consumer_protocol_consumer_gets_a_fatal_error_not_silence(
    broker: EmbeddedBroker, topic: str
) -> None:
    consumer = ck.Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": f"kip848-{topic}",
            "group.protocol": "consumer",
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 20
        error: ck.KafkaError | None = None
        while error is None and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is not None:
                error = msg.error()
        assert error is not None, "the consumer protocol consumer got no error in 20 s"
        assert error.code() == ck.KafkaError._FATAL, error
        assert "ConsumerGroupHeartbeat" in error.str(), error
    finally:
        consumer.close()


def test_consumer_group_heartbeat_answers_unsupported_version(broker: EmbeddedBroker) -> None:
    with WireClient.to(broker) as client:
        advertised = {k.api_key: (k.min_version, k.max_version) for k in api_versions(client).api_keys}
        assert advertised[ApiKey.CONSUMER_GROUP_HEARTBEAT] == (0, 1)
        for version in (0, 1):
            request = m.ConsumerGroupHeartbeatRequest(
                group_id="g",
                member_id=str(uuid.uuid4()),
                member_epoch=0,
                rebalance_timeout_ms=30_000,
                subscribed_topic_names=["t"],
                subscribed_topic_regex="t.*" if version >= 1 else None,
                topic_partitions=[],
            )
            resp = client.call(
                ApiKey.CONSUMER_GROUP_HEARTBEAT, version, request, m.ConsumerGroupHeartbeatResponse
            )
            assert resp.error_code == ErrorCode.UNSUPPORTED_VERSION
            assert resp.error_message is not None and "group.protocol=classic" in resp.error_message
            assert resp.assignment is None and resp.member_id is None
        # The connection stays usable: the refusal is an answer, not a dropped connection.
        assert api_versions(client).error_code == 0
