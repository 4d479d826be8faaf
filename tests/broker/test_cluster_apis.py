"""DescribeCluster, DescribeLogDirs, ElectLeaders and the partition reassignment APIs: the
single-node answers, at every served version, over real logs."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from sluice.broker.authorized import CLUSTER_OPERATIONS, TOPIC_OPERATIONS
from sluice.broker.broker import ADVERTISED, HANDLERS
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.storage.manager import partition_dir
from tests.broker.conftest import BrokerHarness, batch

UNSET_OPERATIONS = -(2**31)


def versions(key: ApiKey) -> range:
    lo, hi = ADVERTISED[key]
    return range(lo, hi + 1)


def test_every_new_api_is_advertised_and_handled() -> None:
    for key in (
        ApiKey.DESCRIBE_CLUSTER,
        ApiKey.DESCRIBE_LOG_DIRS,
        ApiKey.ELECT_LEADERS,
        ApiKey.LIST_PARTITION_REASSIGNMENTS,
        ApiKey.ALTER_PARTITION_REASSIGNMENTS,
    ):
        assert key in ADVERTISED and key in HANDLERS
    assert ADVERTISED[ApiKey.DESCRIBE_CLUSTER] == (0, 2)
    assert ADVERTISED[ApiKey.DESCRIBE_LOG_DIRS] == (0, 4)
    assert ADVERTISED[ApiKey.ELECT_LEADERS] == (0, 2)
    assert ADVERTISED[ApiKey.LIST_PARTITION_REASSIGNMENTS] == (0, 0)
    assert ADVERTISED[ApiKey.ALTER_PARTITION_REASSIGNMENTS] == (0, 0)


@pytest.mark.parametrize("version", versions(ApiKey.DESCRIBE_CLUSTER))
def test_describe_cluster(harness: Callable[..., BrokerHarness], version: int) -> None:
    h = harness(node_id="3", cluster_id="my-cluster", advertised_listeners="kafka.example:1234")
    plain = h.call_wire(ApiKey.DESCRIBE_CLUSTER, version, m.DescribeClusterRequest())
    assert plain.error_code == 0 and plain.error_message is None
    assert plain.cluster_id == "my-cluster"
    assert plain.controller_id == 3
    assert [(b.broker_id, b.host, b.port, b.rack, b.is_fenced) for b in plain.brokers] == [
        (3, "kafka.example", 1234, None, False)
    ]
    assert plain.endpoint_type == m.EndpointType.BROKER
    assert plain.cluster_authorized_operations == UNSET_OPERATIONS  # not asked for
    asked = h.call_wire(
        ApiKey.DESCRIBE_CLUSTER,
        version,
        m.DescribeClusterRequest(include_cluster_authorized_operations=True, include_fenced_brokers=True),
    )
    # Kafka without an authorizer: every cluster operation (bits 5, 7-12).
    assert asked.cluster_authorized_operations == CLUSTER_OPERATIONS == 0b1_1111_1010_0000
    assert len(asked.brokers) == 1  # nothing fenced to add


def test_describe_cluster_refuses_other_endpoint_types(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    controller = h.call_wire(ApiKey.DESCRIBE_CLUSTER, 1, m.DescribeClusterRequest(endpoint_type=2))
    assert controller.error_code == ErrorCode.MISMATCHED_ENDPOINT_TYPE
    assert controller.brokers == [] and controller.error_message
    unknown = h.call_wire(ApiKey.DESCRIBE_CLUSTER, 2, m.DescribeClusterRequest(endpoint_type=7))
    assert unknown.error_code == ErrorCode.UNSUPPORTED_ENDPOINT_TYPE


@pytest.mark.parametrize("version", [8, 10, 11, 12])
def test_metadata_authorized_operations(harness: Callable[..., BrokerHarness], version: int) -> None:
    """librdkafka's describe_cluster and describe_topics ask Metadata (v8+) for these; with no
    authorizer Kafka grants every operation, and so does sluice."""
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))

    def ask(flag: bool) -> m.MetadataResponse:
        body = m.MetadataRequest(
            topics=[m.MetadataRequestTopic(name="t")],
            include_cluster_authorized_operations=flag,
            include_topic_authorized_operations=flag,
        )
        response: m.MetadataResponse = h.call_wire(ApiKey.METADATA, version, body)
        return response

    plain, asked = ask(False), ask(True)
    assert plain.cluster_authorized_operations == UNSET_OPERATIONS
    assert [t.topic_authorized_operations for t in plain.topics] == [UNSET_OPERATIONS]
    assert [t.topic_authorized_operations for t in asked.topics] == [TOPIC_OPERATIONS]
    # Topic: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
    assert TOPIC_OPERATIONS == 0b1101_1111_1000
    # The cluster's field exists in v8-10 only (v11+ clients use DescribeCluster).
    expected = CLUSTER_OPERATIONS if version <= 10 else UNSET_OPERATIONS
    assert asked.cluster_authorized_operations == expected


def _sizes(response: m.DescribeLogDirsResponse) -> dict[tuple[str, int], int]:
    (result,) = response.results
    assert result.error_code == 0
    found = {}
    for t in result.topics:
        for p in t.partitions:
            assert (p.offset_lag, p.is_future_key) == (0, False)
            found[(t.name, p.partition_index)] = p.partition_size
    return found


def _on_disk(h: BrokerHarness, topic: str, partition: int) -> int:
    directory = partition_dir(h.broker.logs.data_dir, topic, partition)
    return sum(f.stat().st_size for f in directory.iterdir() if f.suffix == ".log")


@pytest.mark.parametrize("version", versions(ApiKey.DESCRIBE_LOG_DIRS))
def test_describe_log_dirs_real_sizes(harness: Callable[..., BrokerHarness], version: int) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("a", 2))
    h.run(h.broker.logs.create_topic("b", 1))
    everything = m.DescribeLogDirsRequest(topics=None)
    before = _sizes(h.call_wire(ApiKey.DESCRIBE_LOG_DIRS, version, everything))
    assert {k: v for k, v in before.items() if not k[0].startswith("__")} == {
        ("a", 0): 0,
        ("a", 1): 0,
        ("b", 0): 0,
    }
    h.produce("a", 1, batch(20, "x", size=100))
    h.produce("b", 0, batch(3, "y"))
    response = h.call_wire(ApiKey.DESCRIBE_LOG_DIRS, version, everything)
    after = _sizes(response)
    assert after[("a", 0)] == 0
    assert after[("a", 1)] == _on_disk(h, "a", 1) > 2000
    assert after[("b", 0)] == _on_disk(h, "b", 0) > 0
    (result,) = response.results
    assert result.log_dir == os.path.abspath(h.broker.logs.data_dir)
    assert os.path.isabs(result.log_dir)
    if version >= 4:
        fs = os.statvfs(h.broker.logs.data_dir)
        assert result.total_bytes == fs.f_blocks * fs.f_frsize
        assert 0 < result.usable_bytes <= result.total_bytes
    else:
        assert (result.total_bytes, result.usable_bytes) == (-1, -1)  # not on the wire


def test_describe_log_dirs_named_partitions(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("a", 3))
    h.produce("a", 2, batch(5, "x"))
    body = m.DescribeLogDirsRequest(
        topics=[
            m.DescribableLogDirTopic(topic="a", partitions=[2, 0, 9]),
            m.DescribableLogDirTopic(topic="nope", partitions=[0]),
        ]
    )
    response = h.call_wire(ApiKey.DESCRIBE_LOG_DIRS, 4, body)
    # Partitions this broker does not hold are left out, as Kafka does; no error.
    assert response.error_code == 0
    assert _sizes(response) == {("a", 0): 0, ("a", 2): _on_disk(h, "a", 2)}
    empty = h.call_wire(ApiKey.DESCRIBE_LOG_DIRS, 4, m.DescribeLogDirsRequest(topics=[]))
    assert [r.topics for r in empty.results] == [[]]


def _elections(response: m.ElectLeadersResponse) -> dict[tuple[str, int], int]:
    return {
        (r.topic, p.partition_id): p.error_code
        for r in response.replica_election_results
        for p in r.partition_result
    }


@pytest.mark.parametrize("version", versions(ApiKey.ELECT_LEADERS))
@pytest.mark.parametrize("election", [m.ElectionType.PREFERRED, m.ElectionType.UNCLEAN])
def test_elect_leaders_is_never_needed(
    harness: Callable[..., BrokerHarness], version: int, election: int
) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 2))
    body = m.ElectLeadersRequest(
        election_type=election,
        topic_partitions=[
            m.ElectLeadersTopic(topic="t", partitions=[0, 1, 2]),
            m.ElectLeadersTopic(topic="nope", partitions=[0]),
        ],
    )
    response = h.call_wire(ApiKey.ELECT_LEADERS, version, body)
    assert response.error_code == 0
    assert _elections(response) == {
        ("t", 0): ErrorCode.ELECTION_NOT_NEEDED,
        ("t", 1): ErrorCode.ELECTION_NOT_NEEDED,
        ("t", 2): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    # Every partition: Kafka's controller lists each topic but leaves out the partitions that
    # needed no election, which here is every one.
    everything = h.call_wire(ApiKey.ELECT_LEADERS, version, m.ElectLeadersRequest(election_type=election, topic_partitions=None))
    assert everything.error_code == 0
    assert "t" in [r.topic for r in everything.replica_election_results]
    assert _elections(everything) == {}


def test_elect_leaders_unknown_election_type(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    body = m.ElectLeadersRequest(election_type=5, topic_partitions=[m.ElectLeadersTopic(topic="t", partitions=[0])])
    response = h.call_wire(ApiKey.ELECT_LEADERS, 2, body)
    assert response.error_code == ErrorCode.INVALID_REQUEST
    assert _elections(response) == {("t", 0): ErrorCode.INVALID_REQUEST}


def test_list_partition_reassignments_is_always_empty(harness: Callable[..., BrokerHarness]) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 2))
    for topics in (
        None,
        [m.ListPartitionReassignmentsTopics(name="t", partition_indexes=[0, 1])],
        [m.ListPartitionReassignmentsTopics(name="nope", partition_indexes=[0])],
    ):
        response = h.call_wire(ApiKey.LIST_PARTITION_REASSIGNMENTS, 0, m.ListPartitionReassignmentsRequest(topics=topics))
        assert (response.error_code, response.error_message, response.topics) == (0, None, [])


def test_alter_partition_reassignments(harness: Callable[..., BrokerHarness]) -> None:
    h = harness(node_id="2")
    h.run(h.broker.logs.create_topic("t", 2))
    h.produce("t", 0, batch(4, "x"))

    def alter(*moves: tuple[str, int, list[int] | None]) -> dict[tuple[str, int], int]:
        topics: dict[str, list[m.ReassignablePartition]] = {}
        for name, partition, replicas in moves:
            topics.setdefault(name, []).append(m.ReassignablePartition(partition_index=partition, replicas=replicas))
        body = m.AlterPartitionReassignmentsRequest(
            topics=[m.ReassignableTopic(name=n, partitions=ps) for n, ps in topics.items()]
        )
        response = h.call_wire(ApiKey.ALTER_PARTITION_REASSIGNMENTS, 0, body)
        assert (response.error_code, response.error_message) == (0, None)
        result = {}
        for t in response.responses:
            for p in t.partitions:
                assert (p.error_message is None) == (p.error_code == 0)
                result[(t.name, p.partition_index)] = p.error_code
        return result

    assert alter(
        ("t", 0, [2]),  # where it already is: done
        ("t", 1, None),  # cancel: nothing in progress
        ("nope", 0, [2]),
    ) == {
        ("t", 0): 0,
        ("t", 1): ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
        ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert alter(("t", 0, [2, 3]), ("t", 1, [0]), ("t", 5, [2])) == {
        ("t", 0): ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        ("t", 1): ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        ("t", 5): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert alter(("t", 0, []), ("t", 1, [2, 2])) == {
        ("t", 0): ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        ("t", 1): ErrorCode.INVALID_REPLICA_ASSIGNMENT,
    }
    # Nothing moved: the data is where it was.
    assert h.broker.logs.get_log("t", 0).log_end_offset == 4
