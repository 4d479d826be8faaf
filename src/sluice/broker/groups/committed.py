"""``CommittedOffsets``: the committed-offset lifecycle (commit, fetch, delete, expire).

Kafka's OffsetMetadataManager. Offsets outlive membership (a group can be empty, or never have
had members, and still own offsets), so this manager consults
:class:`~sluice.broker.groups.membership.GroupMembership` for a group's state (who may commit,
what it subscribes to, whether it is empty) and never the other way round. Whether an offset
expires depends on its group's state (KIP-211), and the end of a group is the end of its
offsets, which is why both the expiry and :meth:`CommittedOffsets.delete_group` live here.

Every change is acknowledged only after the :class:`~sluice.broker.groups.store.GroupStore`
has fsynced it; what OffsetFetch reads is the store's view, never a write still in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable

from sluice.broker.groups.config import GroupConfig
from sluice.broker.groups.group import Group, GroupState
from sluice.broker.groups.membership import GroupMembership, group_id_error
from sluice.broker.groups.responses import FetchedGroup, TopicPartition
from sluice.broker.groups.store import (
    Change,
    CommittedOffset,
    GroupStore,
    OffsetKey,
    PendingOffsetKey,
    TxnEnd,
    TxnEndKey,
)
from sluice.errors import ErrorCode, SluiceError
from sluice.plural import plural
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.storage.manager import LogManager

log = logging.getLogger(__name__)

_EXPIRY_CHUNK_OFFSETS = 5000
"""About how many offsets an expiry run examines between two yields of the event loop (whole
groups at a time)."""


class CommittedOffsets:
    """Every group's committed offsets, read from and written through the store. Runs on the
    broker's event loop."""

    def __init__(
        self,
        store: GroupStore,
        logs: LogManager,
        membership: GroupMembership,
        config: GroupConfig,
        wall_clock: Callable[[], int],
    ) -> None:
        self.store = store
        self.logs = logs
        self.membership = membership
        self.config = config
        self.wall_clock = wall_clock
        self._pending_commits: Counter[OffsetKey] = Counter()
        """Offsets whose commit (simple or transactional) is still waiting for its write:
        expiry leaves them alone and deleting their group tombstones them too."""

    # -- OffsetCommit -----------------------------------------------------------------------------

    def _topic_id(self, topic: str) -> str | None:
        t = self.logs.topics.get(topic)
        return None if t is None else str(t.topic_id)

    def _partition_exists(self, topic: str, partition: int) -> bool:
        t = self.logs.topics.get(topic)
        return t is not None and 0 <= partition < len(t.partitions)

    def _validate_commit(
        self,
        group: Group,
        generation: int,
        member_id: str,
        instance_id: str | None,
        *,
        transactional: bool = False,
    ) -> ErrorCode | None:
        if group.is_(GroupState.DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        if generation >= 0 or member_id != "" or instance_id is not None:
            error = group.validate_member(member_id, instance_id)
            if error is not None:
                return error
            if generation != group.generation_id:
                return ErrorCode.ILLEGAL_GENERATION
            return None
        if not transactional and not group.is_(GroupState.EMPTY):
            # Only members may commit for a group that has members (simple, generation -1
            # commits are for groups that use Kafka for offset storage only). Transactional
            # commits are exempt: before KIP-447 (TxnOffsetCommit v3) they carry no member.
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    def _metadata_too_long(self, metadata: str) -> bool:
        """Kafka's isMetadataInvalid: ``offset.metadata.max.bytes`` counts the characters of a
        Java string (UTF-16 code units), not bytes: 4096 accented letters are accepted by
        Kafka, and were refused here as 8192 bytes."""
        limit = self.config.offset_metadata_max_bytes
        if len(metadata) > limit:
            return True
        if 2 * len(metadata) <= limit:
            return False
        return len(metadata.encode("utf-16-le", "surrogatepass")) // 2 > limit

    def _partition_errors(self, tps: list[TopicPartition]) -> list[ErrorCode]:
        """Each entry's first verdict, in request order: UNKNOWN_TOPIC_OR_PARTITION, or NONE for
        an entry the later checks judge. Kafka's request handler answers unknown partitions
        before its coordinator sees the rest, so they keep this answer whatever follows."""
        unknown = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        return [ErrorCode.NONE if self._partition_exists(*tp) else unknown for tp in tps]

    def _last_valid(
        self, entries: list[tuple[TopicPartition, str | None]], results: list[ErrorCode]
    ) -> dict[TopicPartition, int]:
        """The last valid entry of each partition (its index), refusing in ``results`` each
        entry still NONE whose metadata is too long: as Kafka's coordinator, every entry is
        answered for itself and the partition keeps its last valid offset. Answering every
        mention with the last mention's verdict said NONE for an entry that was refused, or
        refused one that was stored."""
        last: dict[TopicPartition, int] = {}
        for i, (tp, metadata) in enumerate(entries):
            if results[i] is not ErrorCode.NONE:
                continue
            if self._metadata_too_long(metadata or ""):
                results[i] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                last[tp] = i
        return last

    async def commit(self, version: int, req: m.OffsetCommitRequest) -> list[ErrorCode]:
        """Each partition entry's result, in request order (the whole commit is one atomic
        write)."""
        parts = [((t.name, p.partition_index), p) for t in req.topics for p in t.partitions]
        results = self._partition_errors([tp for tp, _ in parts])

        def fail_all(error: ErrorCode) -> list[ErrorCode]:
            return _refuse_valid(results, error)

        error = group_id_error(req.group_id, ApiKey.OFFSET_COMMIT)
        if error is not None:
            return fail_all(error)
        instance_id = req.group_instance_id if version >= 7 else None
        generation = req.generation_id_or_member_epoch
        group = self.membership.groups.get(req.group_id)
        if group is None and generation >= 0:
            # Not a group we know: a member of a generation that no longer exists.
            return fail_all(ErrorCode.ILLEGAL_GENERATION)
        # A new group is checked as the empty group it would be, and made only once there is
        # an offset to write (below), as Kafka's coordinator is never called for a commit whose
        # partitions all fail validation.
        checked = Group(req.group_id) if group is None else group
        error = self._validate_commit(checked, generation, req.member_id, instance_id)
        if error is None and checked.is_(GroupState.COMPLETING_REBALANCE):
            # A valid member that has its JoinGroup answer but no assignment yet.
            error = ErrorCode.REBALANCE_IN_PROGRESS
        if error is not None:
            return fail_all(error)
        member = checked.members.get(req.member_id)
        if member is not None:
            self.membership.renew_session(member)
        now = self.wall_clock()
        expire = None
        if version <= 4 and req.retention_time_ms >= 0:
            expire = now + req.retention_time_ms
        # A partition named more than once is written once, with its last valid mention (what
        # Kafka's log keeps): a request naming 4 partitions 100,000 times wrote 100,000
        # records, the event loop busy for seconds while every other client waited.
        last = self._last_valid([(tp, p.committed_metadata) for tp, p in parts], results)
        topic_ids = {t.name: self._topic_id(t.name) for t in req.topics}
        changes: list[Change] = []
        for tp, i in last.items():
            p = parts[i][1]
            committed = CommittedOffset(
                p.committed_offset,
                p.committed_leader_epoch if version >= 6 else -1,
                p.committed_metadata or "",
                now,
                expire,
                topic_ids[tp[0]],
            )
            changes.append((OffsetKey(req.group_id, *tp), committed))
        if changes:
            created = self.membership.new_group(req.group_id) if group is None else None
            keys = [k for k, _ in changes if isinstance(k, OffsetKey)]
            self._pending_commits.update(keys)
            try:
                await self.store.write(changes)
            except SluiceError as exc:
                log.warning("group %s: offset commit failed in storage: %s", req.group_id, exc)
                results = _refuse_valid(results, ErrorCode.COORDINATOR_NOT_AVAILABLE)
            finally:
                self._pending_commits.subtract(keys)
                self._pending_commits += Counter()
            if created is not None:
                self._forget_if_unstored(created)
        return results

    def _forget_if_unstored(self, group: Group) -> None:
        """A group a refused commit created, if nothing has used it since: forgotten, so
        ListGroups shows what a restart would (the store holds nothing of it)."""
        gid = group.group_id
        if (
            self.membership.groups.get(gid) is group
            and group.is_(GroupState.EMPTY)
            and not group.members
            and not group.pending_members
            and gid not in self.store.offsets
            and gid not in self.store.pending
            and gid not in self.store.groups
            and not self._pending_of(gid)
        ):
            del self.membership.groups[gid]

    # -- TxnOffsetCommit and the end of transactions ------------------------------------------------

    async def commit_transactional(
        self, version: int, req: m.TxnOffsetCommitRequest, txn_error: ErrorCode | None
    ) -> list[ErrorCode]:
        """Each partition entry's result, in request order. Accepted offsets are pending,
        under the request's producer id, until :meth:`end_transaction`; ``txn_error`` is the
        transaction coordinator's verdict on the producer (Kafka's transaction verification),
        refusing every partition. Checks run in Kafka's order: unknown partitions, the group
        id, the transaction, the member (KIP-447, v3+: member id, instance id and generation
        when given)."""
        parts = [((t.name, p.partition_index), p) for t in req.topics for p in t.partitions]
        results = self._partition_errors([tp for tp, _ in parts])
        if ErrorCode.NONE not in results:
            return results
        error = group_id_error(req.group_id, ApiKey.TXN_OFFSET_COMMIT) or txn_error
        generation = req.generation_id if version >= 3 else -1
        member_id = req.member_id if version >= 3 else ""
        instance_id = req.group_instance_id if version >= 3 else None
        group = self.membership.groups.get(req.group_id) if error is None else None
        if error is None and group is None and generation >= 0:
            error = ErrorCode.ILLEGAL_GENERATION
        if error is None:
            # A new group is checked as the empty group it would be, and made only once there
            # is an offset to write (below).
            error = self._validate_commit(
                Group(req.group_id) if group is None else group,
                generation,
                member_id,
                instance_id,
                transactional=True,
            )
        if error is not None:
            return _refuse_valid(results, error)
        now = self.wall_clock()
        # Each entry judged for itself; a partition named more than once keeps its last valid
        # mention (as OffsetCommit).
        last = self._last_valid([(tp, p.committed_metadata) for tp, p in parts], results)
        changes: list[Change] = []
        for tp, i in last.items():
            p = parts[i][1]
            pending = CommittedOffset(
                p.committed_offset,
                p.committed_leader_epoch if version >= 2 else -1,
                p.committed_metadata or "",
                now,
                None,
                self._topic_id(tp[0]),
            )
            changes.append((PendingOffsetKey(req.group_id, req.producer_id, *tp), pending))
        if changes:
            created = self.membership.new_group(req.group_id) if group is None else None
            # Counted with the simple commits in flight: deleting the group meanwhile
            # tombstones these partitions too (after this write, which drops the pending
            # offsets), so the transaction's commit cannot bring back offsets of a group that
            # was deleted, which nobody could list or delete again until a restart.
            keys = [OffsetKey(req.group_id, *tp) for tp in last]
            self._pending_commits.update(keys)
            try:
                await self.store.write(changes)
            except SluiceError as exc:
                log.warning("group %s: transactional offset commit failed in storage: %s", req.group_id, exc)
                results = _refuse_valid(results, ErrorCode.COORDINATOR_NOT_AVAILABLE)
            finally:
                self._pending_commits.subtract(keys)
                self._pending_commits += Counter()
            if created is not None:
                self._forget_if_unstored(created)
        return results

    async def end_transaction(self, producer_id: int, groups: Iterable[str], commit: bool) -> None:
        """The groups' offsets pending in ``producer_id``'s transaction become committed (or
        are dropped), in one durable write; what Kafka's transaction markers on
        ``__consumer_offsets`` do. Idempotent (a repeat finds nothing pending). Raises the
        store's SluiceError; the transaction coordinator retries then."""
        await self.store.write(
            [(TxnEndKey(group, producer_id), TxnEnd(commit)) for group in dict.fromkeys(groups)]
        )

    # -- OffsetFetch ------------------------------------------------------------------------------

    def _visible_offsets(self, group_id: str) -> dict[TopicPartition, CommittedOffset]:
        """Committed offsets whose topic still exists as the topic they were committed to."""
        out = {}
        for (topic, partition), committed in self.store.offsets.get(group_id, {}).items():
            if self._offset_is_live(topic, partition, committed):
                out[(topic, partition)] = committed
        return out

    def _offset_is_live(self, topic: str, partition: int, committed: CommittedOffset) -> bool:
        t = self.logs.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return False
        return committed.topic_id is None or committed.topic_id == str(t.topic_id)

    def fetch(
        self,
        group_id: str,
        topics: list[m.OffsetFetchRequestTopic] | None,
        require_stable: bool = False,
    ) -> FetchedGroup:
        """``require_stable`` (OffsetFetch v7+): partitions with an offset pending in an open
        transaction are answered UNSTABLE_OFFSET_COMMIT, which clients retry (KIP-447)."""
        error = group_id_error(group_id, ApiKey.OFFSET_FETCH)
        if error is not None:
            return FetchedGroup(group_id, error, [])
        offsets = self._visible_offsets(group_id)
        wanted: list[tuple[str, list[int]]]
        if topics is None:
            by_topic: dict[str, list[int]] = {}
            for topic, partition in sorted(offsets):
                by_topic.setdefault(topic, []).append(partition)
            wanted = list(by_topic.items())
        else:
            # Each partition once, however often it is named (each answer may carry 4 KiB of
            # metadata: 200,000 mentions of one partition were an 800 MB answer).
            named: dict[str, dict[int, None]] = {}
            for t in topics:
                named.setdefault(t.name, {}).update(dict.fromkeys(t.partition_indexes))
            wanted = [(name, list(parts)) for name, parts in named.items()]
        found = [(topic, [(p, offsets.get((topic, p))) for p in parts]) for topic, parts in wanted]
        unstable = frozenset(
            (topic, p)
            for topic, parts in wanted
            for p in parts
            if require_stable and self.store.has_pending(group_id, (topic, p))
        )
        return FetchedGroup(group_id, ErrorCode.NONE, found, unstable)

    # -- OffsetDelete, group deletion, expiry -------------------------------------------------------

    def delete_group(self, group: Group) -> list[Change]:
        """End a group whole: Dead and forgotten by membership, and the tombstones of its
        metadata and of every offset it has, committed or still being written."""
        changes = self.membership.drop_group(group)
        # A tombstone also ends the partition's pending transactional offsets (as in Kafka).
        for topic, partition in self._stored_partitions(group.group_id):
            changes.append((OffsetKey(group.group_id, topic, partition), None))
        # Commits still waiting for their write were appended before these tombstones (the
        # store writes in call order), so tombstoning them too leaves no offset behind a group
        # that no longer exists.
        changes.extend((key, None) for key in self._pending_of(group.group_id))
        return changes

    async def write_deletion(self, changes: list[Change], dropped: list[str]) -> None:
        """Write ``changes``, which delete the groups ``dropped``. Those are forgotten in memory
        before the write (a join or commit meanwhile starts a new group rather than reviving
        one being deleted); if the store refuses, they come back as the store still holds them,
        so a retry finds them. Raises the store's SluiceError."""
        try:
            await self.store.write(changes)
        except SluiceError:
            self.membership.restore(dropped)
            raise

    def _stored_partitions(self, group_id: str) -> set[TopicPartition]:
        """Partitions with a committed offset or one pending in an open transaction."""
        stored = set(self.store.offsets.get(group_id, {}))
        for pending in self.store.pending.get(group_id, {}).values():
            stored.update(pending)
        return stored

    def _pending_of(self, group_id: str) -> list[OffsetKey]:
        return [key for key in self._pending_commits if key.group == group_id]

    async def delete(
        self, req: m.OffsetDeleteRequest
    ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode]]:
        error = group_id_error(req.group_id, ApiKey.OFFSET_DELETE)
        if error is not None:
            return error, {}
        group = self.membership.groups.get(req.group_id)
        if group is None or group.is_(GroupState.DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND, {}
        if not (group.is_(GroupState.EMPTY) or group.is_consumer_group):
            return ErrorCode.NON_EMPTY_GROUP, {}
        errors: dict[TopicPartition, ErrorCode] = {}
        eligible: list[TopicPartition] = []
        for t in req.topics:
            for p in t.partitions:
                tp = (t.name, p.partition_index)
                if not self._partition_exists(*tp):
                    errors[tp] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif not group.is_(GroupState.EMPTY) and group.is_subscribed_to(t.name):
                    errors[tp] = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
                else:
                    eligible.append(tp)
                    errors[tp] = ErrorCode.NONE
        committed = self._stored_partitions(req.group_id)
        pending = {(k.topic, k.partition) for k in self._pending_of(req.group_id)}
        changes: list[Change] = [
            (OffsetKey(req.group_id, *tp), None)
            for tp in eligible
            if tp in committed or tp in pending
        ]
        if changes:
            remaining = (set(committed) | pending) - set(eligible)
            dropped: list[str] = []
            if group.is_(GroupState.EMPTY) and not remaining:
                changes = self.delete_group(group)
                dropped.append(req.group_id)
            try:
                await self.write_deletion(changes, dropped)
            except SluiceError as exc:
                log.warning("group %s: offset delete failed in storage: %s", req.group_id, exc)
                for tp in eligible:
                    errors[tp] = ErrorCode.COORDINATOR_NOT_AVAILABLE
        return ErrorCode.NONE, errors

    async def expire(self) -> int:
        """Kafka's offsets.retention.minutes (KIP-211): an empty group's offsets expire once the
        group has been empty that long; a stable consumer group's offsets for topics it no longer
        subscribes to expire that long after their last commit; offsets of deleted topics go at
        once. An empty group left with no offsets is deleted. Returns offsets removed.

        The groups are examined a chunk at a time, each chunk's tombstones written before the
        next is examined, so the event loop is never held for long (examining a million
        offsets in one go held it for about 4 s). Each chunk is examined and its write called
        with no await in between, so no commit can slip between the check and the tombstone."""
        now = self.wall_clock()
        retention = self.config.offsets_retention_ms
        removed = 0
        groups = list(self.membership.groups.values())
        next_group = 0
        while next_group < len(groups):
            changes: list[Change] = []
            dropped: list[str] = []
            in_flight: dict[str, set[TopicPartition]] = {}
            for key in self._pending_commits:
                in_flight.setdefault(key.group, set()).add((key.topic, key.partition))
            topics: dict[str, tuple[int, str] | None] = {}
            examined = 0
            while next_group < len(groups) and examined < _EXPIRY_CHUNK_OFFSETS:
                group = groups[next_group]
                next_group += 1
                if group.is_(GroupState.DEAD) or self.membership.groups.get(group.group_id) is not group:
                    continue  # deleted (or deleted and made again) while an earlier chunk was written
                examined += 1 + len(self.store.offsets.get(group.group_id, ()))
                removed += self._expire_group(
                    group, now, retention, in_flight.get(group.group_id, set()), topics, changes, dropped
                )
            if changes:
                await self.write_deletion(changes, dropped)
            else:
                await asyncio.sleep(0)
        if removed:
            log.info("offset expiry removed %s", plural(removed, "committed offset"))
        return removed

    def _expire_group(
        self,
        group: Group,
        now: int,
        retention: int,
        in_flight: set[TopicPartition],
        topics: dict[str, tuple[int, str] | None],
        changes: list[Change],
        dropped: list[str],
    ) -> int:
        """One group's expired offsets (or the whole group) into ``changes``; returns how many
        offsets. ``topics`` caches each topic's partition count and id for the chunk."""
        group_id = group.group_id
        offsets = self.store.offsets.get(group_id, {})
        pending = self.store.pending.get(group_id)
        in_txn: set[TopicPartition] = set().union(*pending.values()) if pending else set()
        expired: list[TopicPartition] = []
        for tp, committed in offsets.items():
            if tp in in_flight or tp in in_txn:
                continue  # not while a write or an open transaction may still set it (Kafka)
            topic, partition = tp
            if topic not in topics:
                t = self.logs.topics.get(topic)
                topics[topic] = None if t is None else (len(t.partitions), str(t.topic_id))
            known = topics[topic]
            live = (
                known is not None
                and 0 <= partition < known[0]
                and (committed.topic_id is None or committed.topic_id == known[1])
            )
            if not live or self._offset_expired(group, topic, committed, now, retention):
                expired.append(tp)
        if (
            group.is_(GroupState.EMPTY)
            and len(expired) == len(offsets)
            and not group.pending_members
            and not in_flight
            and not pending
        ):
            changes.extend(self.delete_group(group))
            dropped.append(group_id)
            log.info("group %s expired (empty, no offsets left)", group_id)
            return len(offsets)
        changes.extend((OffsetKey(group_id, t, p), None) for t, p in expired)
        return len(expired)

    def _offset_expired(
        self, group: Group, topic: str, committed: CommittedOffset, now: int, retention: int
    ) -> bool:
        if group.protocol_type is not None and group.is_(GroupState.EMPTY):
            base = group.state_timestamp or committed.commit_timestamp
        elif (
            group.is_consumer_group
            and group.subscribed_topics is not None
            and group.is_(GroupState.STABLE)
        ):
            if topic in group.subscribed_topics:
                return False
            base = committed.commit_timestamp
        elif group.protocol_type is None:
            base = committed.commit_timestamp
        else:
            return False
        if committed.expire_timestamp is not None:
            return now >= committed.expire_timestamp
        return now - base >= retention


def _refuse_valid(results: list[ErrorCode], error: ErrorCode) -> list[ErrorCode]:
    """``results`` with every entry still valid (NONE) answered ``error`` instead; entries
    refused for themselves (an unknown partition, metadata too long) keep their own answer."""
    return [error if e is ErrorCode.NONE else e for e in results]
