"""The "consumer" embedded protocol: what consumer-group members put in JoinGroup metadata
(subscriptions) and what the leader hands out in SyncGroup (assignments).

The coordinator never assigns partitions (assignment is client-side in the classic protocol); it
only reads subscriptions to learn which topics a group consumes (offset expiry, OffsetDelete's
GROUP_SUBSCRIBED_TO_TOPIC) and assignments for DescribeGroups-style views. Parsing is lenient in
Kafka's way: a newer version than we know is read with the newest schema we know, and trailing
bytes are ignored, so new clients never break the broker.
"""

from __future__ import annotations

import struct
from dataclasses import field

from sluice.dataclass import dataclass
from sluice.protocol.primitives import Buffer, ProtocolError, Reader

PROTOCOL_TYPE = "consumer"


@dataclass(slots=True)
class Subscription:
    topics: list[str]
    user_data: bytes | None = None
    owned_partitions: dict[str, list[int]] = field(default_factory=dict)
    generation_id: int = -1
    rack_id: str | None = None
    version: int = 0


@dataclass(slots=True)
class Assignment:
    partitions: dict[str, list[int]]
    user_data: bytes | None = None
    version: int = 0


def _topic_partitions(r: Reader) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for _ in range(max(0, r.array_length())):
        topic = r.string()
        count = max(0, r.array_length())
        out.setdefault(topic, []).extend(r.int32() for _ in range(count))
    return out


def parse_subscription(data: Buffer) -> Subscription:
    """Decode ConsumerProtocolSubscription v0-3 (later versions read as v3)."""
    try:
        r = Reader(data)
        version = r.int16()
        if version < 0:
            raise ProtocolError(f"negative subscription version {version}")
        topics = [r.string() for _ in range(max(0, r.array_length()))]
        raw = r.nullable_bytes()
        sub = Subscription(topics, None if raw is None else bytes(raw), version=version)
        if version >= 1 and r.remaining:
            sub.owned_partitions = _topic_partitions(r)
        if version >= 2 and r.remaining:
            sub.generation_id = r.int32()
        if version >= 3 and r.remaining:
            sub.rack_id = r.nullable_string()
        return sub
    except (ProtocolError, ValueError, IndexError, struct.error) as exc:
        raise ProtocolError(f"malformed consumer subscription: {exc}") from exc


def parse_assignment(data: Buffer) -> Assignment:
    """Decode ConsumerProtocolAssignment (v0 layout; v1+ only adds nothing we need)."""
    if len(data) == 0:
        return Assignment({})
    try:
        r = Reader(data)
        version = r.int16()
        partitions = _topic_partitions(r)
        raw = r.nullable_bytes() if r.remaining else None
        return Assignment(partitions, None if raw is None else bytes(raw), version)
    except (ProtocolError, ValueError, IndexError, struct.error) as exc:
        raise ProtocolError(f"malformed consumer assignment: {exc}") from exc


def _put_string(out: bytearray, s: str) -> None:
    b = s.encode()
    out += struct.pack(">h", len(b)) + b


def _put_bytes(out: bytearray, b: bytes | None) -> None:
    if b is None:
        out += struct.pack(">i", -1)
    else:
        out += struct.pack(">i", len(b)) + b


def _put_topic_partitions(out: bytearray, parts: dict[str, list[int]]) -> None:
    out += struct.pack(">i", len(parts))
    for topic, ps in parts.items():
        _put_string(out, topic)
        out += struct.pack(">i", len(ps))
        for p in ps:
            out += struct.pack(">i", p)


def encode_subscription(sub: Subscription) -> bytes:
    """Encode at ``sub.version`` (0-3): for tests and tools that act as group members."""
    out = bytearray(struct.pack(">h", sub.version))
    out += struct.pack(">i", len(sub.topics))
    for t in sub.topics:
        _put_string(out, t)
    _put_bytes(out, sub.user_data)
    if sub.version >= 1:
        _put_topic_partitions(out, sub.owned_partitions)
    if sub.version >= 2:
        out += struct.pack(">i", sub.generation_id)
    if sub.version >= 3:
        if sub.rack_id is None:
            out += struct.pack(">h", -1)
        else:
            _put_string(out, sub.rack_id)
    return bytes(out)


def encode_assignment(assignment: Assignment) -> bytes:
    out = bytearray(struct.pack(">h", assignment.version))
    _put_topic_partitions(out, assignment.partitions)
    _put_bytes(out, assignment.user_data)
    return bytes(out)
