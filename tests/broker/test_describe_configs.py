"""DescribeConfigs at each version, through the codec, checked against what Kafka fills at that
version: v0 ``is_default`` and no source; v1+ the source and (when asked) synonyms; v3+ the
type and (when asked) documentation. Each for a topic override, a broker-wide default, a
broker-wide setting equal to the built-in value, a built-in default, and the broker resource."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sluice.broker.config_apis import DEFAULT_CONFIG, DYNAMIC_TOPIC_CONFIG, STATIC_BROKER_CONFIG
from sluice.config import ConfigType
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.messages import ConfigResourceType
from tests.broker.conftest import BrokerHarness

WEEK_MS = "604800000"
Configs = dict[str, m.DescribeConfigsResourceResult]


@pytest.fixture
def h(harness: Callable[..., BrokerHarness]) -> BrokerHarness:
    # log.retention.ms: a broker-wide default; message.max.bytes: given, but equal to the
    # built-in value (Kafka reports what was set, not what differs).
    broker = harness(log_retention_ms="60000", message_max_bytes="1048588")
    broker.run(broker.broker.logs.create_topic("t", 1, {"flush.ms": "100"}))
    return broker


def describe(
    h: BrokerHarness,
    version: int,
    resource_type: int = ConfigResourceType.TOPIC,
    name: str = "t",
    keys: list[str] | None = None,
    synonyms: bool = False,
    docs: bool = False,
) -> Configs:
    body = m.DescribeConfigsRequest(
        resources=[m.DescribeConfigsResource(resource_type=resource_type, resource_name=name, configuration_keys=keys)],
        include_synonyms=synonyms,
        include_documentation=docs,
    )
    response: m.DescribeConfigsResponse = h.call_wire(ApiKey.DESCRIBE_CONFIGS, version, body)
    (result,) = response.results
    assert result.error_code == 0, result.error_message
    return {c.name: c for c in result.configs}


def test_v0_reports_is_default_and_no_source(h: BrokerHarness) -> None:
    configs = describe(h, 0)
    # v0's is_default is "not set on this topic" (Kafka's meaning when v0 was current): a Java
    # client reads false as TOPIC_CONFIG and true as DEFAULT_CONFIG.
    assert (configs["flush.ms"].value, configs["flush.ms"].is_default) == ("100", False)
    assert (configs["retention.ms"].value, configs["retention.ms"].is_default) == ("60000", True)
    assert configs["max.message.bytes"].is_default is True
    assert (configs["segment.ms"].value, configs["segment.ms"].is_default) == (WEEK_MS, True)
    for c in configs.values():
        assert c.config_source == -1  # not on the wire at v0
        assert c.synonyms == [] and c.config_type == 0
        assert c.read_only is False and c.is_sensitive is False


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_v1_up_report_the_source(h: BrokerHarness, version: int) -> None:
    configs = describe(h, version)
    assert (configs["flush.ms"].value, configs["flush.ms"].config_source) == ("100", DYNAMIC_TOPIC_CONFIG)
    assert (configs["retention.ms"].value, configs["retention.ms"].config_source) == ("60000", STATIC_BROKER_CONFIG)
    assert configs["max.message.bytes"].config_source == STATIC_BROKER_CONFIG
    assert (configs["segment.ms"].value, configs["segment.ms"].config_source) == (WEEK_MS, DEFAULT_CONFIG)
    for c in configs.values():
        assert c.is_default is False  # v0 only
        assert c.synonyms == []  # not asked for
        assert c.read_only is False


@pytest.mark.parametrize("version", [1, 3, 4])
def test_synonyms_in_precedence_order(h: BrokerHarness, version: int) -> None:
    configs = describe(h, version, synonyms=True)

    def synonyms(name: str) -> list[tuple[str, str | None, int]]:
        return [(s.name, s.value, s.source) for s in configs[name].synonyms]

    assert synonyms("flush.ms") == [
        ("flush.ms", "100", DYNAMIC_TOPIC_CONFIG),
        ("log.flush.interval.ms", "-1", DEFAULT_CONFIG),
    ]
    assert synonyms("retention.ms") == [
        ("log.retention.ms", "60000", STATIC_BROKER_CONFIG),
        ("log.retention.ms", WEEK_MS, DEFAULT_CONFIG),
    ]
    assert synonyms("segment.ms") == [("log.roll.ms", WEEK_MS, DEFAULT_CONFIG)]
    for c in configs.values():
        assert c.synonyms[0].source == c.config_source


def test_v3_up_report_kafka_types_and_documentation_when_asked(h: BrokerHarness) -> None:
    for version in (1, 2):
        assert {c.config_type for c in describe(h, version).values()} == {0}
    for version in (3, 4):
        configs = describe(h, version)
        assert configs["retention.ms"].config_type == ConfigType.LONG
        assert configs["segment.bytes"].config_type == ConfigType.INT  # an INT in Kafka, not LONG
        assert configs["max.message.bytes"].config_type == ConfigType.INT
        assert configs["cleanup.policy"].config_type == ConfigType.LIST
        assert configs["sluice.append.ack"].config_type == ConfigType.STRING
        assert all(c.documentation is None for c in configs.values())
        documented = describe(h, version, docs=True)
        assert all(c.documentation for c in documented.values())
        assert all(c.config_type != ConfigType.UNKNOWN for c in documented.values())


@pytest.mark.parametrize("version", [0, 1, 3, 4])
def test_broker_resource(h: BrokerHarness, version: int) -> None:
    configs = describe(h, version, ConfigResourceType.BROKER, "0", synonyms=version >= 1)
    given = configs["log.retention.ms"]
    equal_to_default = configs["message.max.bytes"]
    left = configs["num.partitions"]
    assert (given.value, equal_to_default.value, left.value) == ("60000", "1048588", "1")
    assert all(c.read_only for c in configs.values())  # static: nothing changes at runtime
    if version == 0:
        assert (given.is_default, equal_to_default.is_default, left.is_default) == (False, False, True)
        return
    assert given.config_source == equal_to_default.config_source == STATIC_BROKER_CONFIG
    assert left.config_source == DEFAULT_CONFIG
    assert [(s.name, s.value, s.source) for s in given.synonyms] == [
        ("log.retention.ms", "60000", STATIC_BROKER_CONFIG),
        ("log.retention.ms", WEEK_MS, DEFAULT_CONFIG),
    ]
    assert [(s.name, s.value, s.source) for s in left.synonyms] == [("num.partitions", "1", DEFAULT_CONFIG)]
    if version >= 3:
        assert configs["auto.create.topics.enable"].config_type == ConfigType.BOOLEAN
        assert configs["node.id"].config_type == ConfigType.INT
        assert configs["log.retention.ms"].config_type == ConfigType.LONG
        assert all(c.config_type != ConfigType.UNKNOWN for c in configs.values())


def test_configuration_keys(h: BrokerHarness) -> None:
    everything = describe(h, 4)
    # An empty key list means every config, as Kafka answers it.
    assert describe(h, 4, keys=[]).keys() == everything.keys()
    assert describe(h, 4, keys=["retention.ms", "no.such"]).keys() == {"retention.ms"}
    assert describe(h, 0, keys=["flush.ms"]).keys() == {"flush.ms"}


def test_a_resource_named_many_times_is_answered_once(h: BrokerHarness) -> None:
    """Each mention was answered in full: a 156 KiB request naming one topic 20,000 times was
    a 48 MiB answer, 8 s of the event loop. Each distinct resource (with its key list) is
    answered once; admin clients never repeat one."""
    topic = m.DescribeConfigsResource(resource_type=ConfigResourceType.TOPIC, resource_name="t", configuration_keys=None)
    one_key = m.DescribeConfigsResource(
        resource_type=ConfigResourceType.TOPIC, resource_name="t", configuration_keys=["flush.ms"]
    )
    body = m.DescribeConfigsRequest(resources=[topic, one_key] * 20_000, include_synonyms=True, include_documentation=True)
    response: m.DescribeConfigsResponse = h.call_wire(ApiKey.DESCRIBE_CONFIGS, 4, body)
    assert [(r.resource_name, len(r.configs)) for r in response.results] == [
        ("t", len(describe(h, 4))),
        ("t", 1),
    ]
