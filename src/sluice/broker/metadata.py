"""ApiVersions and Metadata: what a client asks before anything else.

One node, so every partition's leader, replica set and ISR is this broker. Metadata creates
missing topics when both the broker (``auto.create.topics.enable``) and the request (v4+) allow it,
with ``num.partitions`` partitions, as Kafka does.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from sluice.broker.authorized import CLUSTER_OPERATIONS, NOT_REQUESTED, TOPIC_OPERATIONS
from sluice.broker.context import ELEMENTS_PER_TURN, BrokerContext
from sluice.errors import ErrorCode, SluiceError
from sluice.plural import plural
from sluice.protocol import Request, api_versions_response
from sluice.protocol import messages as m
from sluice.storage.manager import Topic

log = logging.getLogger(__name__)

INTERNAL_PREFIX = "__"


def is_internal(topic: str) -> bool:
    return topic.startswith(INTERNAL_PREFIX)


async def api_versions(broker: BrokerContext, request: Request) -> m.ApiVersionsResponse:
    return api_versions_response(broker.advertised)


async def metadata(broker: BrokerContext, request: Request) -> m.MetadataResponse:
    body = request.body
    assert isinstance(body, m.MetadataRequest)
    logs = broker.logs
    allow_create = broker.config.auto_create_topics and (
        body.allow_auto_topic_creation or request.api_version < 4
    )
    node_id, host, port = broker.node_endpoint()
    topics: list[m.MetadataResponseTopic] = []
    if body.topics is None:
        for existing in logs.list_topics():
            topics.append(_describe(logs.topics[existing], node_id))
    else:
        # Each topic once, however often it is named (Kafka reads the names into a set): a
        # 43 KiB request naming a 1000-partition topic 2000 times was a 50 MiB answer that
        # kept the event loop busy for 22 s and the broker 730 MiB bigger.
        distinct = {w.topic_id if w.name is None else w.name: w for w in body.topics}
        for i, wanted in enumerate(distinct.values(), 1):
            if not i % ELEMENTS_PER_TURN:
                await asyncio.sleep(0)
            name = wanted.name
            if name is None and request.api_version < 12:
                # v10-11 let the request's name be null but not the answer's: Kafka refuses such
                # a request (INVALID_REQUEST); answering with the null would fail to encode.
                topics.append(_null_name_before_v12(wanted.topic_id))
                continue
            if name is None:  # asked by topic id (v12+)
                topics.append(_by_id(broker, wanted.topic_id, node_id))
                continue
            topic = logs.topics.get(name)
            if topic is None and allow_create and not is_internal(name):
                try:
                    topic = await logs.create_topic(name, broker.config.num_partitions)
                    log.info(
                        "auto-created topic %r with %s",
                        name,
                        plural(broker.config.num_partitions, "partition"),
                    )
                except SluiceError as exc:
                    topics.append(_error_topic(name, exc.code))
                    continue
            if topic is None:
                topics.append(_error_topic(name, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
            else:
                topics.append(_describe(topic, node_id))
    # Asked-for authorized operations (v8+): everything, as Kafka without an authorizer answers.
    if body.include_topic_authorized_operations:
        for t in topics:
            if t.name is not None:
                t.topic_authorized_operations = TOPIC_OPERATIONS
    return m.MetadataResponse(
        throttle_time_ms=0,
        brokers=[m.MetadataResponseBroker(node_id=node_id, host=host, port=port, rack=None)],
        cluster_id=broker.config.cluster_id,
        controller_id=node_id,
        topics=topics,
        cluster_authorized_operations=(
            CLUSTER_OPERATIONS if body.include_cluster_authorized_operations else NOT_REQUESTED
        ),
    )


def _by_id(broker: BrokerContext, topic_id: uuid.UUID, node_id: int) -> m.MetadataResponseTopic:
    for topic in broker.logs.topics.values():
        if topic.topic_id == topic_id:
            return _describe(topic, node_id)
    return m.MetadataResponseTopic(
        error_code=ErrorCode.UNKNOWN_TOPIC_ID, name=None, topic_id=topic_id, partitions=[]
    )


def _null_name_before_v12(topic_id: uuid.UUID) -> m.MetadataResponseTopic:
    return m.MetadataResponseTopic(
        error_code=ErrorCode.INVALID_REQUEST, name="", topic_id=topic_id, partitions=[]
    )


def _error_topic(name: str, code: int) -> m.MetadataResponseTopic:
    return m.MetadataResponseTopic(
        error_code=code, name=name, topic_id=uuid.UUID(int=0), is_internal=False, partitions=[]
    )


def _describe(topic: Topic, node_id: int) -> m.MetadataResponseTopic:
    # Every partition is led by this node; leader_epoch 0 never changes because leadership
    # never moves.
    return m.MetadataResponseTopic(
        error_code=ErrorCode.NONE,
        name=topic.name,
        topic_id=topic.topic_id,
        is_internal=is_internal(topic.name),
        partitions=[
            m.MetadataResponsePartition(
                error_code=ErrorCode.NONE,
                partition_index=i,
                leader_id=node_id,
                leader_epoch=0,
                replica_nodes=[node_id],
                isr_nodes=[node_id],
                offline_replicas=[],
            )
            for i in range(len(topic.partitions))
        ],
    )

