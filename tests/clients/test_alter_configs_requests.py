"""AlterConfigs and IncrementalAlterConfigs requests Kafka refuses as a whole before applying
anything (its ConfigAdminManager.preprocess): a resource named twice, a key named twice, a null
value where the API cannot mean one.

A resource named twice used to be applied twice, one after the other, both answered success:
with AlterConfigs (which replaces a topic's whole override set) the second silently undid the
first, so a change the client was told had been made was gone.
"""

from __future__ import annotations

from typing import Any

import pytest
from kafka.admin import ConfigResource, ConfigResourceType  # type: ignore[import-untyped]

from sluice.broker.config_apis import DYNAMIC_TOPIC_CONFIG
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.messages import ConfigOperation
from sluice.testing import EmbeddedBroker, create_topic
from tests.server.wire import WireClient

TOPIC = ConfigResourceType.TOPIC


def overrides(broker: EmbeddedBroker, topic: str) -> dict[str, str]:
    """The topic's overrides, as DescribeConfigs reports them (source DYNAMIC_TOPIC_CONFIG)."""
    body = m.DescribeConfigsRequest(
        resources=[m.DescribeConfigsResource(resource_type=TOPIC, resource_name=topic, configuration_keys=None)]
    )
    with WireClient.to(broker) as client:
        (result,) = client.call(ApiKey.DESCRIBE_CONFIGS, 4, body, m.DescribeConfigsResponse).results
    assert result.error_code == 0
    return {c.name: c.value for c in result.configs if c.config_source == DYNAMIC_TOPIC_CONFIG and c.value is not None}


@pytest.mark.parametrize("incremental", [False, True], ids=["AlterConfigs", "IncrementalAlterConfigs"])
def test_naming_a_topic_twice_is_refused_not_half_applied(
    broker: EmbeddedBroker, kp_admin: Any, topic: str, incremental: bool
) -> None:
    """kafka-python's alter_configs sends what it is given, a topic twice included."""
    create_topic(broker.bootstrap_servers, topic, configs={"segment.ms": "3600000"})
    answer = kp_admin.alter_configs(
        [
            ConfigResource(TOPIC, topic, {"retention.ms": "1000"}),
            ConfigResource(TOPIC, topic, {"retention.bytes": "2000"}),
        ],
        incremental=incremental,
    )
    assert answer == {"topic": {topic: "[Error 42] InvalidRequestError: Each resource must appear at most once."}}
    assert overrides(broker, topic) == {"segment.ms": "3600000"}  # neither applied
    # Named once each, two topics in one request still work.
    other = f"{topic}-2"
    create_topic(broker.bootstrap_servers, other)
    answer = kp_admin.alter_configs(
        [ConfigResource(TOPIC, topic, {"retention.ms": "1000"}), ConfigResource(TOPIC, other, {"retention.bytes": "2000"})],
        incremental=incremental,
    )
    assert answer == {"topic": {topic: "OK", other: "OK"}}
    # (for AlterConfigs, kafka-python sends the topic's current overrides along)
    assert overrides(broker, topic) == {"segment.ms": "3600000", "retention.ms": "1000"}
    assert overrides(broker, other) == {"retention.bytes": "2000"}


def _legacy(client: WireClient, topic: str, *configs: tuple[str, str | None]) -> tuple[int, str | None]:
    body = m.AlterConfigsRequest(
        resources=[
            m.AlterConfigsResource(
                resource_type=TOPIC, resource_name=topic, configs=[m.AlterableConfig(name=n, value=v) for n, v in configs]
            )
        ],
        validate_only=False,
    )
    (res,) = client.call(ApiKey.ALTER_CONFIGS, 2, body, m.AlterConfigsResponse).responses
    return res.error_code, res.error_message


def _incremental(client: WireClient, resources: list[tuple[str, list[tuple[str, int, str | None]]]]) -> list[tuple[int, str | None]]:
    body = m.IncrementalAlterConfigsRequest(
        resources=[
            m.IncrementalAlterConfigsResource(
                resource_type=TOPIC,
                resource_name=name,
                configs=[m.IncrementalAlterableConfig(name=n, config_operation=o, value=v) for n, o, v in ops],
            )
            for name, ops in resources
        ],
        validate_only=False,
    )
    answer = client.call(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, body, m.IncrementalAlterConfigsResponse)
    return [(r.error_code, r.error_message) for r in answer.responses]


def test_alter_configs_refuses_a_key_given_twice_and_a_null_value(broker: EmbeddedBroker, topic: str) -> None:
    create_topic(broker.bootstrap_servers, topic, configs={"retention.ms": "5000"})
    with WireClient.to(broker) as client:
        # The lost write as a raw client sends it: the second mention replaced the first's set.
        twice = m.AlterConfigsRequest(
            resources=[
                m.AlterConfigsResource(
                    resource_type=TOPIC, resource_name=topic, configs=[m.AlterableConfig(name=n, value=v)]
                )
                for n, v in (("retention.ms", "1000"), ("retention.bytes", "2000"))
            ],
            validate_only=False,
        )
        answers = client.call(ApiKey.ALTER_CONFIGS, 2, twice, m.AlterConfigsResponse).responses
        assert [(r.error_code, r.error_message) for r in answers] == 2 * [
            (ErrorCode.INVALID_REQUEST, "Each resource must appear at most once.")
        ]
        assert overrides(broker, topic) == {"retention.ms": "5000"}
        assert _legacy(client, topic, ("retention.ms", "1"), ("retention.ms", "2")) == (
            ErrorCode.INVALID_REQUEST,
            "Error due to duplicate config keys: retention.ms",
        )
        # A null value used to drop the key from the override set, answered as a success.
        assert _legacy(client, topic, ("retention.ms", None), ("flush.ms", "100")) == (
            ErrorCode.INVALID_REQUEST,
            "Null value not supported for : retention.ms",
        )
        assert overrides(broker, topic) == {"retention.ms": "5000"}
        assert _legacy(client, topic, ("flush.ms", "100")) == (0, None)
        assert overrides(broker, topic) == {"flush.ms": "100"}


def test_incremental_alter_configs_refuses_a_topic_named_twice_and_null_values(
    broker: EmbeddedBroker, topic: str
) -> None:
    create_topic(broker.bootstrap_servers, topic)
    other = f"{topic}-2"
    create_topic(broker.bootstrap_servers, other)
    with WireClient.to(broker) as client:
        answers = _incremental(
            client,
            [
                (topic, [("retention.ms", ConfigOperation.SET, "1000")]),
                (other, [("retention.ms", ConfigOperation.SET, "3000")]),
                (topic, [("retention.bytes", ConfigOperation.SET, "2000")]),
            ],
        )
        twice = (ErrorCode.INVALID_REQUEST, "Each resource must appear at most once.")
        assert answers == [twice, (0, None), twice]
        assert overrides(broker, topic) == {}
        assert overrides(broker, other) == {"retention.ms": "3000"}
        # Null is DELETE's alone: SET, APPEND and SUBTRACT of nothing are Kafka's INVALID_REQUEST
        # (an APPEND of nothing used to succeed, doing nothing).
        for op in (ConfigOperation.SET, ConfigOperation.APPEND, ConfigOperation.SUBTRACT):
            assert _incremental(client, [(topic, [("cleanup.policy", op, None)])]) == [
                (ErrorCode.INVALID_REQUEST, "Null value not supported for : cleanup.policy")
            ]
        # A key given twice, in Kafka's words as AlterConfigs answers it, naming the key.
        set_twice: list[tuple[str, int, str | None]] = [
            ("retention.ms", ConfigOperation.SET, "1"),
            ("retention.ms", ConfigOperation.DELETE, None),
        ]
        assert _incremental(client, [(other, set_twice)]) == [
            (ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys: retention.ms")
        ]
        assert overrides(broker, other) == {"retention.ms": "3000"}
        assert _incremental(client, [(other, [("retention.ms", ConfigOperation.DELETE, None)])]) == [(0, None)]
        assert overrides(broker, other) == {}
