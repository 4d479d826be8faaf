"""Durable group state: committed offsets, group metadata and pending transactional offsets, in
one private partition log (``DATA/__consumer_offsets/``).

Kafka's design, scaled to one node: every change is a key/value record appended to a log that
:class:`~sluice.broker.state_log.StateLog` owns (compaction by snapshot, writes applied in log
order, all acknowledged after an fsync); the in-memory maps here are the materialised view that
:meth:`GroupStore.open` rebuilds by replaying it. A ``None`` value is a tombstone.

Transactional offsets (TxnOffsetCommit) are kept apart from committed ones, per group and
producer id, until their transaction ends: a :class:`TxnEnd` record for (group, producer id)
makes them committed (commit) or drops them (abort), as Kafka's transaction markers in
``__consumer_offsets`` do. A pending offset becomes committed only if it was written after the
partition's committed offset (Kafka compares record offsets; snapshots move records, so every
offset written here carries ``seq``, a counter in write order that snapshots keep).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import field
from typing import Any

from sluice.broker.state_log import StateLog
from sluice.dataclass import dataclass
from sluice.plural import plural

log = logging.getLogger(__name__)

DIR_NAME = "__consumer_offsets"
"""No ``-<n>`` suffix, so the LogManager never mistakes it for an orphaned partition."""


@dataclass(frozen=True, slots=True)
class OffsetKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupKey:
    group: str


@dataclass(frozen=True, slots=True)
class PendingOffsetKey:
    """A transactional offset of ``producer_id``'s open transaction."""

    group: str
    producer_id: int
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class TxnEndKey:
    """The end of ``producer_id``'s transaction, as far as ``group``'s offsets go."""

    group: str
    producer_id: int


Key = OffsetKey | GroupKey | PendingOffsetKey | TxnEndKey


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = 0
    """Wall-clock ms of the commit: offsets.retention.minutes counts from here (or from when
    the group became empty)."""
    expire_timestamp: int | None = None
    """Only from OffsetCommit v2-4 with an explicit retention_time_ms (Kafka's old semantics)."""
    topic_id: str | None = None
    """The topic's id when committed: an offset never outlives its topic's deletion and
    re-creation under the same name."""
    seq: int = 0
    """Order of writing (set by the store): a pending offset is committed only over an older
    one. 0 for offsets written before transactions existed."""


@dataclass(frozen=True, slots=True)
class TxnEnd:
    commit: bool


@dataclass(slots=True)
class StoredMember:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(slots=True)
class StoredGroup:
    """A group's metadata as of its last completed rebalance (Kafka's GroupMetadataValue)."""

    protocol_type: str | None
    generation: int
    protocol_name: str | None
    leader: str | None
    state_timestamp: int
    members: list[StoredMember] = field(default_factory=list)


Value = CommittedOffset | StoredGroup | TxnEnd | None
Change = tuple[Key, Value]

TopicPartition = tuple[str, int]


# -- record coding (JSON: small, debuggable, versioned by its shape) --------------------------------


def encode_key(key: Key) -> bytes:
    import json  # json on first use: a broker whose groups never commit reads and writes none

    if isinstance(key, OffsetKey):
        return json.dumps(["o", key.group, key.topic, key.partition]).encode()
    if isinstance(key, PendingOffsetKey):
        return json.dumps(["p", key.group, key.producer_id, key.topic, key.partition]).encode()
    if isinstance(key, TxnEndKey):
        return json.dumps(["x", key.group, key.producer_id]).encode()
    return json.dumps(["g", key.group]).encode()


def decode_key(raw: bytes) -> Key:
    import json

    parts = json.loads(raw)
    if parts[0] == "o":
        return OffsetKey(str(parts[1]), str(parts[2]), int(parts[3]))
    if parts[0] == "g":
        return GroupKey(str(parts[1]))
    if parts[0] == "p":
        return PendingOffsetKey(str(parts[1]), int(parts[2]), str(parts[3]), int(parts[4]))
    if parts[0] == "x":
        return TxnEndKey(str(parts[1]), int(parts[2]))
    raise ValueError(f"unknown key kind {parts[0]!r}")


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def encode_value(value: Value) -> bytes | None:
    import json

    if value is None:
        return None
    if isinstance(value, CommittedOffset | TxnEnd):
        return json.dumps(dataclasses.asdict(value)).encode()
    doc: dict[str, Any] = dataclasses.asdict(value)
    for m in doc["members"]:
        m["subscription"] = _b64(m["subscription"])
        m["assignment"] = _b64(m["assignment"])
    return json.dumps(doc).encode()


def decode_value(key: Key, raw: bytes | None) -> Value:
    import json

    if raw is None:
        return None
    doc = json.loads(raw)
    if isinstance(key, OffsetKey | PendingOffsetKey):
        return CommittedOffset(**doc)
    if isinstance(key, TxnEndKey):
        return TxnEnd(bool(doc["commit"]))
    members = [
        StoredMember(
            **{
                **m,
                "subscription": base64.b64decode(m["subscription"]),
                "assignment": base64.b64decode(m["assignment"]),
            }
        )
        for m in doc.pop("members")
    ]
    return StoredGroup(**doc, members=members)


# -- the store -----------------------------------------------------------------------------------------


class GroupStore(StateLog[Key, Value]):
    """The materialised view of every group's durable state."""

    kind = "group store"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.offsets: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        self.groups: dict[str, StoredGroup] = {}
        self.pending: dict[str, dict[int, dict[TopicPartition, CommittedOffset]]] = {}
        """group -> producer id -> the offsets its open transaction committed."""
        self._next_seq = 1

    @property
    def live(self) -> int:
        return (
            len(self.groups)
            + sum(len(v) for v in self.offsets.values())
            + sum(len(o) for by_pid in self.pending.values() for o in by_pid.values())
        )

    def has_pending(self, group: str, tp: TopicPartition | None = None) -> bool:
        """Whether an open transaction holds an offset of ``group`` (for ``tp``, if given)."""
        by_pid = self.pending.get(group)
        if not by_pid:
            return False
        return tp is None or any(tp in offsets for offsets in by_pid.values())

    def _replayed(self, records: int) -> str:
        return (
            f"{plural(len(self.groups), 'group')}, "
            f"{plural(sum(len(v) for v in self.offsets.values()), 'committed offset')}, "
            f"{plural(self.live - len(self.groups) - sum(len(v) for v in self.offsets.values()), 'pending transactional offset')}"
        )

    def _encode(self, key: Key, value: Value) -> tuple[bytes, bytes | None]:
        return encode_key(key), encode_value(value)

    def _decode(self, key: bytes, value: bytes | None) -> Change:
        k = decode_key(key)
        return k, decode_value(k, value)

    def _stamp(self, changes: list[Change]) -> list[Change]:
        out: list[Change] = []
        for key, value in changes:
            if isinstance(value, CommittedOffset):
                value = dataclasses.replace(value, seq=self._next_seq)
                self._next_seq += 1
            out.append((key, value))
        return out

    def _apply(self, key: Key, value: Value) -> None:
        if isinstance(value, CommittedOffset):
            self._next_seq = max(self._next_seq, value.seq + 1)
        if isinstance(key, OffsetKey):
            tp = (key.topic, key.partition)
            if isinstance(value, CommittedOffset):
                self.offsets.setdefault(key.group, {})[tp] = value
            else:
                # A tombstone ends the partition's pending transactional offsets too (Kafka).
                _discard(self.offsets, key.group, tp)
                for pid in list(self.pending.get(key.group, {})):
                    self._drop_pending(key.group, pid, tp)
        elif isinstance(key, PendingOffsetKey):
            tp = (key.topic, key.partition)
            if isinstance(value, CommittedOffset):
                self.pending.setdefault(key.group, {}).setdefault(key.producer_id, {})[tp] = value
            else:
                self._drop_pending(key.group, key.producer_id, tp)
        elif isinstance(key, TxnEndKey):
            by_pid = self.pending.get(key.group, {})
            ended = by_pid.pop(key.producer_id, {})
            if not by_pid:
                self.pending.pop(key.group, None)
            if isinstance(value, TxnEnd) and value.commit:
                for tp, offset in ended.items():
                    current = self.offsets.get(key.group, {}).get(tp)
                    if current is None or offset.seq > current.seq:
                        self.offsets.setdefault(key.group, {})[tp] = offset
        elif isinstance(value, StoredGroup):
            self.groups[key.group] = value
        else:
            self.groups.pop(key.group, None)

    def _drop_pending(self, group: str, producer_id: int, tp: TopicPartition) -> None:
        by_pid = self.pending.get(group)
        if by_pid is None:
            return
        _discard(by_pid, producer_id, tp)
        if not by_pid:
            del self.pending[group]

    def _snapshot(self) -> Iterator[Change]:
        for group_id, stored in list(self.groups.items()):
            yield GroupKey(group_id), stored
        for group_id, offsets in list(self.offsets.items()):
            for (topic, partition), committed in list(offsets.items()):
                yield OffsetKey(group_id, topic, partition), committed
        for group_id, by_pid in list(self.pending.items()):
            for pid, pending in list(by_pid.items()):
                for (topic, partition), offset in list(pending.items()):
                    yield PendingOffsetKey(group_id, pid, topic, partition), offset


def _discard(maps: dict[Any, dict[TopicPartition, CommittedOffset]], key: Any, tp: TopicPartition) -> None:
    inner = maps.get(key)
    if inner is not None:
        inner.pop(tp, None)
        if not inner:
            del maps[key]
