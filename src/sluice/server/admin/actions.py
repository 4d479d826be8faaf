"""What the console changes, and how: each action is the Kafka request a client would send
(CreateTopics, DeleteTopics, IncrementalAlterConfigs, Produce, OffsetCommit, DeleteGroups),
built as a typed request and run by the broker's own handler (:meth:`Broker.dispatch`).

So the console obeys every rule a client meets, with the same error codes and messages: topic
names and configs are validated by the log manager, a produced record goes through
``Partition.append`` (and the topic's ``compression.type``), an offset reset is an
OffsetCommit the group coordinator accepts only while the group has no members, as Kafka's
``kafka-consumer-groups --reset-offsets`` requires. These in-process requests are not counted
in the Kafka request metrics (those count what arrives on the wire).

``sluice.admin.read.only`` refuses every action here before anything is built; reads
(DescribeConfigs) are always allowed.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from typing import Any

from sluice.broker.broker import ADVERTISED, Broker, Client
from sluice.errors import ErrorCode, SluiceError
from sluice.protocol import ApiKey, Request
from sluice.protocol import messages as m
from sluice.protocol.records import build_batch
from sluice.server.admin import state

CLIENT_ID = "sluice-console"


class ReadOnly(Exception):
    """The console is read-only (``sluice.admin.read.only``)."""


class ActionError(Exception):
    """The broker refused the action: its Kafka error and message."""

    def __init__(self, code: int, message: str) -> None:
        try:
            self.error = ErrorCode(code).name
        except ValueError:
            self.error = str(code)
        super().__init__(message or self.error)


@dataclass(frozen=True, slots=True)
class ConfigView:
    name: str
    value: str | None
    source: str
    read_only: bool
    sensitive: bool
    documentation: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SOURCES = {
    1: "DYNAMIC_TOPIC_CONFIG",
    2: "DYNAMIC_BROKER_CONFIG",
    3: "DYNAMIC_DEFAULT_BROKER_CONFIG",
    4: "STATIC_BROKER_CONFIG",
    5: "DEFAULT_CONFIG",
    6: "DYNAMIC_BROKER_LOGGER_CONFIG",
}


class Actions:
    def __init__(self, broker: Broker, *, read_only: bool, peer: str = "console") -> None:
        self.broker = broker
        self.read_only = read_only
        self.client = Client(peer)

    async def _run(self, api: ApiKey, body: Any, *, write: bool = True) -> Any:
        if write and self.read_only:
            raise ReadOnly("the console is read-only (sluice.admin.read.only)")
        version = ADVERTISED[api][1]
        request = Request(int(api), version, 0, CLIENT_ID, body)
        return await self.broker.dispatch(request, self.client)

    # -- reads --------------------------------------------------------------------------------------

    async def describe_configs(self, resource_type: int, name: str) -> list[ConfigView]:
        """A topic's or the broker's configs, exactly as DescribeConfigs reports them."""
        body = m.DescribeConfigsRequest(
            resources=[
                m.DescribeConfigsResource(
                    resource_type=resource_type, resource_name=name, configuration_keys=None
                )
            ],
            include_synonyms=True,
            include_documentation=True,
        )
        answer = await self._run(ApiKey.DESCRIBE_CONFIGS, body, write=False)
        _raise_first_error(answer)
        return [
            ConfigView(
                c.name,
                c.value,
                _SOURCES.get(c.config_source, str(c.config_source)),
                c.read_only,
                c.is_sensitive,
                c.documentation,
            )
            for result in answer.results
            for c in result.configs
        ]

    # -- topics -------------------------------------------------------------------------------------

    async def create_topic(self, name: str, partitions: int, configs: dict[str, str]) -> None:
        body = m.CreateTopicsRequest(
            topics=[
                m.CreatableTopic(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=-1,
                    assignments=[],
                    configs=[m.CreatableTopicConfig(name=k, value=v) for k, v in configs.items()],
                )
            ],
            timeout_ms=30_000,
        )
        _raise_first_error(await self._run(ApiKey.CREATE_TOPICS, body))

    async def delete_topic(self, name: str) -> None:
        topic = self.broker.logs.topics.get(name)
        if topic is None:
            raise ActionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {name!r}")
        body = m.DeleteTopicsRequest(
            topics=[m.DeleteTopicState(name=name, topic_id=topic.topic_id)], timeout_ms=30_000
        )
        _raise_first_error(await self._run(ApiKey.DELETE_TOPICS, body))

    async def alter_topic_configs(
        self, name: str, set_configs: dict[str, str], delete: list[str]
    ) -> None:
        """Set some overrides and remove others (back to the broker's default)."""
        changes = [
            m.IncrementalAlterableConfig(name=k, config_operation=m.ConfigOperation.SET, value=v)
            for k, v in set_configs.items()
        ] + [
            m.IncrementalAlterableConfig(
                name=k, config_operation=m.ConfigOperation.DELETE, value=None
            )
            for k in delete
        ]
        body = m.IncrementalAlterConfigsRequest(
            resources=[
                m.IncrementalAlterConfigsResource(
                    resource_type=m.ConfigResourceType.TOPIC, resource_name=name, configs=changes
                )
            ],
            validate_only=False,
        )
        _raise_first_error(await self._run(ApiKey.INCREMENTAL_ALTER_CONFIGS, body))

    async def produce(
        self,
        topic: str,
        partition: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes | None]],
    ) -> tuple[int, int]:
        """Append one record (acks=all); returns (partition, offset). Without a partition, a
        keyed record goes where Kafka's default partitioner puts it (murmur2 of the key) and
        others round-robin."""
        if self.read_only:
            raise ReadOnly("the console is read-only (sluice.admin.read.only)")
        found = self.broker.logs.topics.get(topic)
        if found is None:
            raise ActionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {topic!r}")
        count = len(found.partitions)
        if partition is None:
            partition = (
                (murmur2(key) & 0x7FFFFFFF) % count
                if key is not None
                else next(_ROUND_ROBIN) % count
            )
        now = int(time.time() * 1000)
        batch = build_batch([(key, value)], headers=[headers], base_timestamp=now, timestamps=[now])
        body = m.ProduceRequest(
            acks=-1,
            timeout_ms=30_000,
            topic_data=[
                m.ProduceTopicData(
                    name=topic,
                    partition_data=[
                        m.ProducePartitionData(index=partition, records=bytearray(batch))
                    ],
                )
            ],
        )
        answer = await self._run(ApiKey.PRODUCE, body)
        _raise_first_error(answer)
        return partition, answer.responses[0].partition_responses[0].base_offset

    # -- groups -------------------------------------------------------------------------------------

    async def reset_plan(
        self, group_id: str, topic: str | None, target: str, value: int | None
    ) -> list[dict[str, Any]]:
        """Where ``target`` (earliest, latest, offset, shift, timestamp) moves the group's
        offsets in ``topic`` (every partition of it) or, without a topic, in every partition it
        has committed: the dry run, changing nothing. Kept within [log start, high watermark]."""
        view = state.group(self.broker, group_id)
        committed = (
            {} if view is None else {(o.topic, o.partition): o.committed for o in view.offsets}
        )
        if topic is not None:
            t = self.broker.logs.topics.get(topic)
            if t is None:
                raise ActionError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"unknown topic {topic!r}")
            scope = [(topic, p) for p in range(len(t.partitions))]
        else:
            scope = sorted(committed)
            if not scope:
                raise ActionError(
                    ErrorCode.INVALID_REQUEST,
                    f"group {group_id!r} has no committed offsets: choose a topic",
                )
        if target in ("offset", "shift", "timestamp") and value is None:
            raise ActionError(ErrorCode.INVALID_REQUEST, f"target {target} needs a value")
        if target not in ("earliest", "latest", "offset", "shift", "timestamp"):
            raise ActionError(ErrorCode.INVALID_REQUEST, f"unknown target {target!r}")
        plan = []
        for name, index in scope:
            try:
                plog = self.broker.logs.get_log(name, index)
            except SluiceError as exc:
                raise ActionError(exc.code, str(exc)) from exc
            lo, hi = plog.log_start_offset, plog.high_watermark
            current = committed.get((name, index))
            if target == "earliest":
                new = lo
            elif target == "latest":
                new = hi
            elif target == "offset":
                assert value is not None
                new = value
            elif target == "shift":
                assert value is not None
                new = (hi if current is None else current) + value
            else:
                assert value is not None
                found = await plog.offset_for_timestamp(value)
                new = hi if found is None else found[0]
            plan.append(
                {
                    "topic": name,
                    "partition": index,
                    "current": current,
                    "new": min(max(new, lo), hi),
                }
            )
        return plan

    async def reset_offsets(self, group_id: str, plan: list[dict[str, Any]]) -> None:
        """Commit a plan from :meth:`reset_plan`. The coordinator refuses while the group has
        members (UNKNOWN_MEMBER_ID), as Kafka's does."""
        if self.read_only:
            raise ReadOnly("the console is read-only (sluice.admin.read.only)")
        view = state.group(self.broker, group_id)
        if view is not None and view.members:
            raise ActionError(
                ErrorCode.NON_EMPTY_GROUP,
                f"group {group_id!r} is {view.state} with {len(view.members)} members: offsets "
                "can only be reset while it has no members; stop its consumers first",
            )
        by_topic: dict[str, list[m.OffsetCommitRequestPartition]] = {}
        for item in plan:
            by_topic.setdefault(str(item["topic"]), []).append(
                m.OffsetCommitRequestPartition(
                    partition_index=int(item["partition"]),
                    committed_offset=int(item["new"]),
                    committed_metadata="",
                )
            )
        body = m.OffsetCommitRequest(
            group_id=group_id,
            generation_id_or_member_epoch=-1,
            member_id="",
            topics=[
                m.OffsetCommitRequestTopic(name=t, partitions=ps) for t, ps in by_topic.items()
            ],
        )
        _raise_first_error(await self._run(ApiKey.OFFSET_COMMIT, body))

    async def delete_group(self, group_id: str) -> None:
        body = m.DeleteGroupsRequest(groups_names=[group_id])
        _raise_first_error(await self._run(ApiKey.DELETE_GROUPS, body))


_ROUND_ROBIN = itertools.count()


def murmur2(data: bytes) -> int:
    """Kafka's default partitioner hash (the Java client's ``Utils.murmur2``), as a signed
    32-bit value."""
    length = len(data)
    seed = 0x9747B28C
    mul = 0x5BD1E995
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * mul) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * mul) & 0xFFFFFFFF
        h = (h * mul) & 0xFFFFFFFF
        h ^= k
    rest = length % 4
    tail = length - rest
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * mul) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * mul) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def _raise_first_error(body: Any) -> None:
    found = _first_error(body)
    if found is not None:
        raise ActionError(*found)


def _first_error(body: Any) -> tuple[int, str] | None:
    """The first non-zero error code in an answer, with the message beside it if any."""
    if not dataclasses.is_dataclass(body):
        return None
    for fld in dataclasses.fields(body):
        value = getattr(body, fld.name)
        if fld.name == "error_code" and value:
            message = getattr(body, "error_message", None) or ""
            return int(value), str(message)
        if isinstance(value, list):
            for item in value:
                found = _first_error(item)
                if found is not None:
                    return found
        elif dataclasses.is_dataclass(value):
            found = _first_error(value)
            if found is not None:
                return found
    return None
