"""The cluster-shape admin APIs, answered for a cluster of one node: DescribeCluster,
DescribeLogDirs, ElectLeaders, ListPartitionReassignments and AlterPartitionReassignments.

This node is the only broker and the controller, every partition's only replica and leader, and
the data directory is the only log dir. So elections are never needed, nothing is ever being
reassigned, and the only valid replica set is ``[node]``: each API gets the answer Kafka's KRaft
controller gives in that state, with Kafka's "nothing to do" codes rather than silent success.
"""

from __future__ import annotations

import logging
import os

from sluice.broker.authorized import CLUSTER_OPERATIONS, NOT_REQUESTED
from sluice.broker.context import BrokerContext, turn_after
from sluice.errors import ErrorCode
from sluice.protocol import Request
from sluice.protocol import messages as m
from sluice.protocol.messages import ElectionType, EndpointType

log = logging.getLogger(__name__)


async def describe_cluster(broker: BrokerContext, request: Request) -> m.DescribeClusterResponse:
    body = request.body
    assert isinstance(body, m.DescribeClusterRequest)
    if body.endpoint_type != EndpointType.BROKER:
        # Kafka's codes: a controller endpoint is the other kind of listener, anything else is
        # unknown; v0 has no codes for either (it cannot ask, but answer as Kafka would).
        if request.api_version == 0:
            code = ErrorCode.INVALID_REQUEST
        elif body.endpoint_type == EndpointType.CONTROLLER:
            code = ErrorCode.MISMATCHED_ENDPOINT_TYPE
        else:
            code = ErrorCode.UNSUPPORTED_ENDPOINT_TYPE
        return m.DescribeClusterResponse(
            throttle_time_ms=0,
            error_code=code,
            error_message=f"this is a broker endpoint; endpoint type {body.endpoint_type} is not served here",
        )
    node_id, host, port = broker.node_endpoint()
    return m.DescribeClusterResponse(
        throttle_time_ms=0,
        error_code=ErrorCode.NONE,
        error_message=None,
        endpoint_type=EndpointType.BROKER,
        cluster_id=broker.config.cluster_id,
        controller_id=node_id,
        brokers=[
            m.DescribeClusterBroker(
                broker_id=node_id, host=host, port=port, rack=None, is_fenced=False
            )
        ],
        cluster_authorized_operations=(
            CLUSTER_OPERATIONS if body.include_cluster_authorized_operations else NOT_REQUESTED
        ),
    )


async def describe_log_dirs(broker: BrokerContext, request: Request) -> m.DescribeLogDirsResponse:
    """The data directory with every asked-for partition's size on disk. As in Kafka, partitions
    this broker does not hold are left out rather than answered with an error."""
    body = request.body
    assert isinstance(body, m.DescribeLogDirsRequest)
    logs = broker.logs
    wanted = (
        None if body.topics is None else {(t.topic, p) for t in body.topics for p in t.partitions}
    )
    topics = []
    for name in logs.list_topics():
        partitions = [
            m.DescribeLogDirsPartition(
                partition_index=index,
                partition_size=partition.log.size_bytes,
                offset_lag=0,  # high watermark - log end offset: one replica, always caught up
                is_future_key=False,
            )
            for index, partition in enumerate(logs.topics[name].partitions)
            if wanted is None or (name, index) in wanted
        ]
        if partitions:
            topics.append(m.DescribeLogDirsTopic(name=name, partitions=partitions))
    log_dir = os.path.abspath(logs.data_dir)
    try:
        fs = os.statvfs(logs.data_dir)
    except OSError as exc:
        result = m.DescribeLogDirsResult(
            error_code=ErrorCode.KAFKA_STORAGE_ERROR, log_dir=log_dir, topics=[]
        )
        log.warning("DescribeLogDirs: cannot read the file system of %s: %s", log_dir, exc)
    else:
        result = m.DescribeLogDirsResult(
            error_code=ErrorCode.NONE,
            log_dir=log_dir,
            topics=topics,
            total_bytes=fs.f_blocks * fs.f_frsize,
            usable_bytes=fs.f_bavail * fs.f_frsize,
        )
    return m.DescribeLogDirsResponse(
        throttle_time_ms=0, error_code=ErrorCode.NONE, results=[result]
    )


def _has_partition(broker: BrokerContext, topic: str, partition: int) -> bool:
    t = broker.logs.topics.get(topic)
    return t is not None and 0 <= partition < len(t.partitions)


def _unknown(topic: str, partition: int) -> str:
    return f"no partition {topic}-{partition}"


async def elect_leaders(broker: BrokerContext, request: Request) -> m.ElectLeadersResponse:
    """Every partition already has its preferred leader, and a live one: ELECTION_NOT_NEEDED for
    both election types, as Kafka's controller answers. Asked for every partition (null), Kafka
    leaves out the partitions that needed nothing, which here is all of them."""
    body = request.body
    assert isinstance(body, m.ElectLeadersRequest)
    election = body.election_type if request.api_version >= 1 else ElectionType.PREFERRED
    if election not in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        message = f"unknown election type {election}"
        return m.ElectLeadersResponse(
            throttle_time_ms=0,
            error_code=ErrorCode.INVALID_REQUEST,
            replica_election_results=[
                m.ReplicaElectionResult(
                    topic=t.topic,
                    partition_result=[
                        m.ElectLeadersPartitionResult(
                            partition_id=p,
                            error_code=ErrorCode.INVALID_REQUEST,
                            error_message=message,
                        )
                        for p in t.partitions
                    ],
                )
                for t in body.topic_partitions or []
            ],
        )
    if body.topic_partitions is None:
        results = [
            m.ReplicaElectionResult(topic=name, partition_result=[])
            for name in broker.logs.list_topics()
        ]
    else:
        results = []
        done = 0
        for t in body.topic_partitions:
            partitions = []
            for p in t.partitions:
                done += 1
                await turn_after(done)
                if _has_partition(broker, t.topic, p):
                    partitions.append(
                        m.ElectLeadersPartitionResult(
                            partition_id=p,
                            error_code=ErrorCode.ELECTION_NOT_NEEDED,
                            error_message=None,
                        )
                    )
                else:
                    partitions.append(
                        m.ElectLeadersPartitionResult(
                            partition_id=p,
                            error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                            error_message=_unknown(t.topic, p),
                        )
                    )
            results.append(m.ReplicaElectionResult(topic=t.topic, partition_result=partitions))
    return m.ElectLeadersResponse(
        throttle_time_ms=0, error_code=ErrorCode.NONE, replica_election_results=results
    )


async def list_partition_reassignments(
    broker: BrokerContext, request: Request
) -> m.ListPartitionReassignmentsResponse:
    """Nothing is ever being reassigned. Kafka lists only reassigning partitions and skips unknown
    topics without an error, so every request, whatever it names, gets an empty list."""
    assert isinstance(request.body, m.ListPartitionReassignmentsRequest)
    return m.ListPartitionReassignmentsResponse(
        throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None, topics=[]
    )


async def alter_partition_reassignments(
    broker: BrokerContext, request: Request
) -> m.AlterPartitionReassignmentsResponse:
    """A move to ``[node]`` is where the partition already is: done, NONE. Cancelling (null
    replicas) finds nothing in progress: NO_REASSIGNMENT_IN_PROGRESS. Any other replica set names
    a broker that does not exist (or this one twice): INVALID_REPLICA_ASSIGNMENT."""
    body = request.body
    assert isinstance(body, m.AlterPartitionReassignmentsRequest)
    node = broker.config.node_id
    responses = []
    for t in body.topics:
        partitions = []
        for p in t.partitions:
            code, message = ErrorCode.NONE, None
            if not _has_partition(broker, t.name, p.partition_index):
                code, message = (
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    _unknown(t.name, p.partition_index),
                )
            elif p.replicas is None:
                code, message = (
                    ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
                    "no partition reassignment is in progress",
                )
            elif p.replicas != [node]:
                code = ErrorCode.INVALID_REPLICA_ASSIGNMENT
                message = f"replicas {p.replicas}: this cluster has one broker, {node}, and every partition is on it"
            partitions.append(
                m.ReassignablePartitionResponse(
                    partition_index=p.partition_index, error_code=code, error_message=message
                )
            )
        responses.append(m.ReassignableTopicResponse(name=t.name, partitions=partitions))
    return m.AlterPartitionReassignmentsResponse(
        throttle_time_ms=0, error_code=ErrorCode.NONE, error_message=None, responses=responses
    )
