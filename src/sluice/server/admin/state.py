"""The broker's state as the admin side shows it: partitions with their offsets and sizes,
consumer groups with their members, committed offsets and lag.

Plain values read on the event loop from the broker's own objects (the log manager, the group
coordinator); nothing is copied from disk and nothing is cached. Walks over every partition hand
the loop back every :data:`SLICE` partitions, so a broker with tens of thousands of them never
stalls its Kafka connections while a page or a scrape is built.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sluice.broker.broker import Broker
from sluice.broker.groups.consumer_protocol import parse_assignment
from sluice.broker.groups.group import Group
from sluice.errors import SluiceError
from sluice.protocol.primitives import ProtocolError

SLICE = 200
"""Partitions read per event-loop turn (about 3 ms of work on the development machine)."""


@dataclass(frozen=True, slots=True)
class PartitionView:
    topic: str
    partition: int
    start: int
    """The log start offset (kafka_exporter's oldest offset)."""
    end: int
    """The high watermark: the offset the next visible record gets (kafka_exporter's current
    offset; consumers read up to here)."""
    size: int
    segments: int
    writer_queue: int
    """Bytes queued for the partition's writer task, not yet written."""
    appended_records: int
    appended_bytes: int
    """Records and batch bytes producers appended since the broker opened the log."""

    @property
    def records(self) -> int:
        """Offsets between start and end: the record count of a log without gaps."""
        return max(0, self.end - self.start)


@dataclass(frozen=True, slots=True)
class TopicView:
    name: str
    topic_id: str
    partitions: list[PartitionView]
    overrides: dict[str, str]

    @property
    def size(self) -> int:
        return sum(p.size for p in self.partitions)

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)

    @property
    def appended_records(self) -> int:
        return sum(p.appended_records for p in self.partitions)

    @property
    def appended_bytes(self) -> int:
        return sum(p.appended_bytes for p in self.partitions)


async def topics(broker: Broker, names: list[str] | None = None) -> list[TopicView]:
    """Every topic (or those named that exist), sorted by name, with their partitions."""
    out: list[TopicView] = []
    read = 0
    wanted = sorted(broker.logs.topics) if names is None else names
    for name in wanted:
        topic = broker.logs.topics.get(name)
        if topic is None:
            continue
        parts = []
        for index, partition in enumerate(list(topic.partitions)):
            plog = partition.log
            if plog.closed:
                continue
            writer = partition.writer
            parts.append(
                PartitionView(
                    name,
                    index,
                    plog.log_start_offset,
                    plog.high_watermark,
                    plog.size_bytes,
                    len(plog.segments),
                    0 if writer is None else writer.queued_bytes,
                    plog.appended_records,
                    plog.appended_bytes,
                )
            )
            read += 1
            if read % SLICE == 0:
                await asyncio.sleep(0)
        out.append(TopicView(name, str(topic.topic_id), parts, dict(topic.config_overrides)))
    return out


@dataclass(frozen=True, slots=True)
class MemberView:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    assignment: dict[str, list[int]]
    """Topic -> partitions, from the consumer protocol's assignment (empty for other
    protocols, or before the first SyncGroup)."""


@dataclass(frozen=True, slots=True)
class OffsetView:
    topic: str
    partition: int
    committed: int
    end: int
    """The partition's high watermark."""

    @property
    def lag(self) -> int:
        """Records the group has not consumed: end minus committed (0 if committed is past
        the end)."""
        return max(0, self.end - self.committed)


@dataclass(slots=True)
class GroupView:
    group_id: str
    state: str
    protocol_type: str
    protocol: str
    generation: int
    leader: str
    rebalances: int
    members: list[MemberView] = field(default_factory=list)
    offsets: list[OffsetView] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return sum(o.lag for o in self.offsets)


def group_count(broker: Broker) -> int:
    """Live groups (a count, not views of them: the overview asks every 2 seconds)."""
    return sum(1 for g in broker.groups.groups.values() if g.state.value != "Dead")


async def groups_with_offsets(broker: Broker) -> list[GroupView]:
    """Every live group, sorted by id, with its members and committed offsets (and their lag).
    Built :data:`SLICE` groups or offsets at a time: a broker with tens of thousands of groups
    must not stall its Kafka connections for a scrape."""
    out = []
    read = 0
    for group_id in sorted(broker.groups.groups):
        filled = group(broker, group_id)  # None if it died or went while the loop was away
        if filled is not None:
            out.append(filled)
            read += len(filled.offsets) + len(filled.members)
        read += 1
        if read >= SLICE:
            read = 0
            await asyncio.sleep(0)
    return out


def group(broker: Broker, group_id: str) -> GroupView | None:
    """One group with its members, assignments and committed offsets; None if unknown."""
    found = broker.groups.groups.get(group_id)
    if found is None or found.state.value == "Dead":
        return None
    state = _group(found)
    for member in found.members.values():
        assignment: dict[str, list[int]] = {}
        if found.is_consumer_group and member.assignment:
            try:
                assignment = parse_assignment(member.assignment).partitions
            except ProtocolError:
                assignment = {}
        state.members.append(
            MemberView(
                member.member_id,
                member.group_instance_id,
                member.client_id,
                member.client_host,
                {t: sorted(ps) for t, ps in sorted(assignment.items())},
            )
        )
    fetched = broker.groups.offsets.fetch(group_id, None)
    for topic, partitions in fetched.topics:
        for index, committed in partitions:
            if committed is None:
                continue
            try:
                end = broker.logs.get_log(topic, index).high_watermark
            except SluiceError:  # deleted since: fetch only returned live partitions
                continue
            state.offsets.append(OffsetView(topic, index, committed.offset, end))
    return state


def _group(g: Group) -> GroupView:
    return GroupView(
        g.group_id,
        g.state.value,
        g.protocol_type or "",
        g.protocol_name or "",
        g.generation_id,
        g.leader_id or "",
        g.rebalances,
    )
