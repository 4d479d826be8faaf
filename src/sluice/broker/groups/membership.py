"""``GroupMembership``: who is in each group, its rebalances and their deadlines.

Kafka's GroupMetadataManager (classic protocol) and the rules of its GroupCoordinator; the
machinery is asyncio's:

* A JoinGroup or SyncGroup that must wait parks a future on its member; whoever completes the
  phase (the last joiner, the leader's SyncGroup, a timer) answers every parked future. The
  broker processes one request per connection at a time, so a parked JoinGroup holds only its
  own connection.
* Kafka's purgatories become deadlines on groups and members, checked by
  :meth:`GroupMembership.poll_timers`, so tests drive time with an injected clock instead of
  sleeping.
* Group state changes are synchronous (one event loop, no locks); the only awaits are writes
  of group metadata, after which state is re-checked because the group may have moved on.

It knows nothing of committed offsets (the offsets manager asks it about groups, never the
other way round) and nothing of the wire: it takes typed request bodies and returns results
that :mod:`~sluice.broker.groups.responses` shapes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from sluice.broker.groups.config import GroupConfig
from sluice.broker.groups.group import (
    Group,
    GroupState,
    JoinResult,
    Member,
    Protocols,
    SyncResult,
    new_member_id,
)
from sluice.broker.groups.store import Change, GroupKey, GroupStore, StoredGroup, StoredMember
from sluice.broker.state_log import LOG_CONFIG
from sluice.dataclass import dataclass
from sluice.errors import ErrorCode, RecordTooLargeError, SluiceError
from sluice.plural import plural
from sluice.protocol import ApiKey
from sluice.protocol import messages as m

log = logging.getLogger(__name__)

Spawn = Callable[[Awaitable[object], str], None]
"""Runs a coroutine in the background, owned (and awaited at close) by the coordinator."""

NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000
"""Kafka's bound on a JoinGroup from a brand-new member that never completes a rebalance (its
client may have gone away while parked; it cannot heartbeat yet)."""

_EMPTY_GROUP_ID_ALLOWED = frozenset(
    {ApiKey.OFFSET_COMMIT, ApiKey.OFFSET_FETCH, ApiKey.DESCRIBE_GROUPS, ApiKey.DELETE_GROUPS}
)


def group_id_error(group_id: str | None, api: ApiKey) -> ErrorCode | None:
    """Kafka's isValidGroupId: "" is a group id only for the offset and admin APIs."""
    if group_id is None or (group_id == "" and api not in _EMPTY_GROUP_ID_ALLOWED):
        return ErrorCode.INVALID_GROUP_ID
    return None


class GroupMembership:
    """Every group of this node and its members. Runs on the broker's event loop, except
    :meth:`load` (the broker's opening thread)."""

    def __init__(
        self,
        store: GroupStore,
        config: GroupConfig,
        clock: Callable[[], float],
        wall_clock: Callable[[], int],
        spawn: Spawn,
    ) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.wall_clock = wall_clock
        self._spawn = spawn
        self.groups: dict[str, Group] = {}
        self._timed: dict[str, Group] = {}
        """Groups that may have a deadline: every group a JoinGroup touched or a load brought
        back, until the timers find it idle (Empty, no pending member ids). An idle group has
        no deadline and becomes timed again only through a JoinGroup, so the timers skip the
        many groups that only hold offsets: polling all of them every 100 ms took 13 ms per
        10,000 groups, and with 100,000 kept the event loop busy all the time."""

    # -- loading, shutdown ------------------------------------------------------------------------

    def load(self, stored_groups: Mapping[str, StoredGroup], offset_groups: Iterable[str]) -> None:
        """Kafka's onGroupLoaded: groups come back Stable (with their members, who keep
        heartbeating as if nothing happened) or Empty; nothing mid-rebalance survives. A group
        known only by its committed offsets (``offset_groups``) comes back Empty."""
        now = self.clock()
        for group_id, stored in stored_groups.items():
            group = Group(
                group_id,
                state_timestamp=stored.state_timestamp,
                protocol_type=stored.protocol_type,
                protocol_name=stored.protocol_name,
                generation_id=stored.generation,
            )
            if stored.members and stored.protocol_name is not None:
                for sm in stored.members:
                    member = Member(
                        sm.member_id,
                        sm.group_instance_id,
                        sm.client_id,
                        sm.client_host,
                        sm.rebalance_timeout_ms,
                        sm.session_timeout_ms,
                        stored.protocol_type or "",
                        [(stored.protocol_name, sm.subscription)],
                        assignment=sm.assignment,
                        deadline=now + sm.session_timeout_ms / 1000,
                    )
                    group.add(member)
                group.leader_id = (
                    stored.leader if stored.leader in group.members else group.leader_id
                )
                group.protocol_type = stored.protocol_type
                group.state = GroupState.STABLE
            group.subscribed_topics = group.compute_subscribed_topics()
            self.groups[group_id] = group
            self._timed[group_id] = group
        for group_id in offset_groups:
            if group_id not in self.groups:
                self.groups[group_id] = Group(group_id)

    def restart_sessions(self) -> None:
        """Loaded members' sessions count from when the coordinator starts serving."""
        now = self.clock()
        for group in self.groups.values():
            for member in group.members.values():
                member.deadline = now + member.session_timeout_ms / 1000

    def release_parked(self, error: ErrorCode) -> None:
        """Answer every parked JoinGroup and SyncGroup with ``error``."""
        for group in self.groups.values():
            for member in group.members.values():
                member.answer_join(JoinResult(error, member.member_id))
                member.answer_sync(SyncResult(error))

    def new_group(self, group_id: str) -> Group:
        group = Group(group_id, state_timestamp=self.wall_clock())
        self.groups[group_id] = group
        return group

    def drop_group(self, group: Group) -> list[Change]:
        """Mark a group Dead and forget it; the tombstone of its metadata. Its offsets are the
        offsets manager's to tombstone (see ``CommittedOffsets.delete_group``)."""
        group.transition(GroupState.DEAD, self.wall_clock())
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]
        return [(GroupKey(group.group_id), None)]

    def restore(self, group_ids: Iterable[str]) -> None:
        """After the store refused a deletion: each group comes back as the store still holds
        it (as a restart would bring it back), unless a group of that id was created while the
        write was in flight. Kafka's coordinator likewise reverts its in-memory state when a
        write fails."""
        for group_id in group_ids:
            if group_id in self.groups:
                continue
            stored = self.store.groups.get(group_id)
            if stored is not None:
                self.load({group_id: stored}, ())
            elif group_id in self.store.offsets or group_id in self.store.pending:
                self.load({}, (group_id,))

    # -- timers -----------------------------------------------------------------------------------

    def poll_timers(self) -> None:
        """Fire every deadline that has passed: session expiry, pending member ids, join phase
        (rebalance timeout, initial delay) and sync phase. Synchronous and idempotent."""
        now = self.clock()
        for group_id, group in list(self._timed.items()):
            if group.is_(GroupState.DEAD) or self.groups.get(group_id) is not group:
                del self._timed[group_id]
                continue
            self._poll_group(group, now)
            if group.is_(GroupState.EMPTY) and not group.members and not group.pending_members:
                del self._timed[group_id]

    def _poll_group(self, group: Group, now: float) -> None:
        """One group's passed deadlines."""
        for member_id, deadline in list(group.pending_members.items()):
            if now >= deadline:
                log.info(
                    "group %s: pending member %s never rejoined", group.group_id, member_id
                )
                group.remove(member_id)
                self._try_complete_join(group)
        for member in list(group.members.values()):
            if group.members.get(member.member_id) is member and member.expired(now):
                log.info(
                    "group %s: member %s session expired, removing it",
                    group.group_id,
                    member.member_id,
                )
                self._remove_member_and_update_group(group, member)
        if (
            group.is_(GroupState.PREPARING_REBALANCE)
            and group.join_deadline is not None
            and now >= group.join_deadline
        ):
            self._on_join_deadline(group)
        if (
            group.state in (GroupState.COMPLETING_REBALANCE, GroupState.STABLE)
            and group.sync_deadline is not None
            and now >= group.sync_deadline
        ):
            self._on_sync_deadline(group)

    def renew_session(self, member: Member) -> None:
        """Kafka's completeAndScheduleNextHeartbeatExpiration."""
        member.deadline = self.clock() + member.session_timeout_ms / 1000

    # -- JoinGroup ----------------------------------------------------------------------------------

    async def join_group(
        self, version: int, req: m.JoinGroupRequest, client_id: str, client_host: str
    ) -> JoinResult:
        member_id = req.member_id
        error = group_id_error(req.group_id, ApiKey.JOIN_GROUP)
        if error is not None:
            return JoinResult(error, member_id)
        cfg = self.config
        if not cfg.min_session_timeout_ms <= req.session_timeout_ms <= cfg.max_session_timeout_ms:
            return JoinResult(ErrorCode.INVALID_SESSION_TIMEOUT, member_id)
        instance_id = req.group_instance_id if version >= 5 else None
        rebalance_timeout = req.rebalance_timeout_ms if version >= 1 else req.session_timeout_ms
        if rebalance_timeout <= 0:
            rebalance_timeout = req.session_timeout_ms
        protocols = _distinct_protocols(req.protocols)
        unknown = member_id == ""
        group = self.groups.get(req.group_id)
        if group is None:
            if not unknown:
                return JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            group = self.new_group(req.group_id)
        self._timed[group.group_id] = group  # only a JoinGroup gives an idle group a deadline
        waiter: asyncio.Future[JoinResult] = asyncio.get_running_loop().create_future()
        join = _Join(
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout,
            req.session_timeout_ms,
            req.protocol_type,
            protocols,
            waiter,
        )
        if unknown:
            self._new_member_join(group, join, require_known_member_id=version >= 4)
        else:
            self._current_member_join(group, join)
        if group.is_(GroupState.PREPARING_REBALANCE):
            self._try_complete_join(group)
        return await waiter

    def _new_member_join(self, group: Group, join: _Join, *, require_known_member_id: bool) -> None:
        if group.is_(GroupState.DEAD):
            join.answer(ErrorCode.COORDINATOR_NOT_AVAILABLE, "")
        elif not group.supports_protocols(join.protocol_type, join.protocols):
            join.answer(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, "")
        else:
            new_id = new_member_id(join.client_id, join.instance_id)
            if join.instance_id is not None:
                old_id = group.static_member_id(join.instance_id)
                if old_id is not None:
                    log.info(
                        "group %s: static member %s rejoined as %s (was %s)",
                        group.group_id,
                        join.instance_id,
                        new_id,
                        old_id,
                    )
                    self._update_static_member_and_rebalance(group, join, old_id, new_id)
                else:
                    self._add_member_and_rebalance(group, join, new_id)
            elif require_known_member_id:
                # KIP-394: hand out the id first, so a client that times out and retries its
                # JoinGroup comes back as the same member instead of leaving a ghost behind.
                group.pending_members[new_id] = self.clock() + join.session_timeout_ms / 1000
                join.answer(ErrorCode.MEMBER_ID_REQUIRED, new_id)
            else:
                self._add_member_and_rebalance(group, join, new_id)

    def _current_member_join(self, group: Group, join: _Join) -> None:
        member_id = join.member_id
        if group.is_(GroupState.DEAD):
            join.answer(ErrorCode.COORDINATOR_NOT_AVAILABLE, member_id)
            return
        if not group.supports_protocols(join.protocol_type, join.protocols):
            join.answer(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id)
            return
        if member_id in group.pending_members:
            if join.instance_id is not None:  # pending ids are only ever given to dynamic members
                join.answer(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            else:
                self._add_member_and_rebalance(group, join, member_id)
            return
        error = group.validate_member(member_id, join.instance_id)
        if error is not None:
            join.answer(error, member_id)
            return
        member = group.members[member_id]
        state = group.state
        if state is GroupState.PREPARING_REBALANCE:
            self._update_member_and_rebalance(group, member, join)
        elif state is GroupState.COMPLETING_REBALANCE:
            if member.matches(join.protocols):
                # The member missed its JoinGroup answer (retry): give it the same one again.
                join.waiter.set_result(group.join_result(member))
            else:
                self._update_member_and_rebalance(group, member, join)
        elif state is GroupState.STABLE:
            if group.is_leader(member_id) or not member.matches(join.protocols):
                # The leader rejoining is how a client asks for a rebalance (e.g. metadata change).
                self._update_member_and_rebalance(group, member, join)
            else:
                join.waiter.set_result(group.join_result(member))
        else:
            join.answer(ErrorCode.UNKNOWN_MEMBER_ID, member_id)

    def _add_member_and_rebalance(self, group: Group, join: _Join, member_id: str) -> None:
        member = Member(
            member_id,
            join.instance_id,
            join.client_id,
            join.client_host,
            join.rebalance_timeout_ms,
            join.session_timeout_ms,
            join.protocol_type,
            join.protocols,
            is_new=True,
        )
        if group.is_(GroupState.PREPARING_REBALANCE) and group.generation_id == 0:
            group.new_member_added = True
        group.add(member, join.waiter)
        member.deadline = self.clock() + NEW_MEMBER_JOIN_TIMEOUT_MS / 1000
        self._maybe_prepare_rebalance(group, f"member {member_id} joined")

    @staticmethod
    def _apply_rejoin(group: Group, member: Member, join: _Join) -> None:
        group.update_member(
            member,
            join.protocols,
            join.waiter,
            rebalance_timeout_ms=join.rebalance_timeout_ms,
            session_timeout_ms=join.session_timeout_ms,
        )

    def _update_member_and_rebalance(self, group: Group, member: Member, join: _Join) -> None:
        self._apply_rejoin(group, member, join)
        self._maybe_prepare_rebalance(group, f"member {member.member_id} rejoined")

    def _update_static_member_and_rebalance(
        self, group: Group, join: _Join, old_id: str, new_id: str
    ) -> None:
        assert join.instance_id is not None
        current_leader = group.leader_id
        member = group.replace_static_member(join.instance_id, old_id, new_id)
        old = _MemberSettings(
            member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms
        )
        self._apply_rejoin(group, member, join)
        self.renew_session(member)  # after the update: the new session timeout counts from now
        if group.is_(GroupState.STABLE):
            if group.protocol_name == group.select_protocol():
                # Nothing the assignment depends on changed: no rebalance (the point of static
                # membership); persist the new member id, then answer with the current
                # generation. The old leader id is returned so that a returning leader does not
                # run a pointless assignment a Stable group would ignore.
                self._spawn(
                    self._persist_static_replacement(
                        group, member, join, old_id, old, current_leader
                    ),
                    f"static-rejoin:{group.group_id}",
                )
            else:
                self._maybe_prepare_rebalance(
                    group, f"static member {join.instance_id} changed protocols"
                )
        elif group.is_(GroupState.COMPLETING_REBALANCE):
            # The leader may be assigning to the old member id: start over.
            self._prepare_rebalance(
                group, f"static member {join.instance_id} rejoined mid-rebalance"
            )

    async def _persist_static_replacement(
        self,
        group: Group,
        member: Member,
        join: _Join,
        old_id: str,
        old: _MemberSettings,
        current_leader: str | None,
    ) -> None:
        generation = group.generation_id
        if not self._is_current(group):
            return  # deleted before this task ran (its members were answered as they left)
        try:
            await self.store.write([(GroupKey(group.group_id), self._stored_group(group))])
        except SluiceError as exc:
            log.warning("group %s: could not persist static member: %s", group.group_id, exc)
            if member.join_waiter is join.waiter and group.members.get(member.member_id) is member:
                member.set_join_waiter(None)
                group.update_member(
                    member,
                    old.protocols,
                    None,
                    rebalance_timeout_ms=old.rebalance_timeout_ms,
                    session_timeout_ms=old.session_timeout_ms,
                )
                assert join.instance_id is not None
                group.replace_static_member(join.instance_id, member.member_id, old_id)
            if not join.waiter.done():
                join.waiter.set_result(JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, ""))
            return
        if (
            member.join_waiter is join.waiter
            and group.is_(GroupState.STABLE)
            and group.generation_id == generation
        ):
            member.answer_join(
                JoinResult(
                    ErrorCode.NONE,
                    member.member_id,
                    group.generation_id,
                    group.protocol_type,
                    group.protocol_name,
                    current_leader or "",
                )
            )

    # -- rebalance phases -----------------------------------------------------------------------------

    def _maybe_prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.can_rebalance():
            self._prepare_rebalance(group, reason)

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.is_(GroupState.COMPLETING_REBALANCE):
            self._reset_and_propagate_assignment_error(group, ErrorCode.REBALANCE_IN_PROGRESS)
        group.pending_sync.clear()
        group.sync_deadline = None
        now = self.clock()
        delay = self.config.initial_rebalance_delay_ms
        if group.is_(GroupState.EMPTY) and delay > 0:
            group.initial_delay_ms = delay
            group.initial_remaining_ms = max(group.rebalance_timeout_ms - delay, 0)
            group.join_deadline = now + delay / 1000
        else:
            group.initial_delay_ms = 0
            group.join_deadline = now + group.rebalance_timeout_ms / 1000
        log.info(
            "group %s: preparing rebalance from generation %d (%s)",
            group.group_id,
            group.generation_id,
            reason,
        )
        group.transition(GroupState.PREPARING_REBALANCE, self.wall_clock())
        group.rebalances += 1
        self._try_complete_join(group)

    def _try_complete_join(self, group: Group) -> None:
        """Complete the join phase as soon as every member (and pending id) is in, unless the
        initial delay is holding the door open for more of a starting fleet."""
        if (
            group.is_(GroupState.PREPARING_REBALANCE)
            and group.initial_delay_ms == 0
            and group.has_all_members_joined()
        ):
            self._complete_join(group)

    def _on_join_deadline(self, group: Group) -> None:
        if group.initial_delay_ms > 0 and group.new_member_added and group.initial_remaining_ms > 0:
            group.new_member_added = False
            delay = min(group.initial_delay_ms, group.initial_remaining_ms)
            group.initial_remaining_ms = max(group.initial_remaining_ms - delay, 0)
            group.join_deadline = self.clock() + delay / 1000
            return
        self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        """Kafka's onCompleteJoin: drop dynamic members that did not rejoin in time, start the
        next generation and answer every parked JoinGroup (the leader gets the member list)."""
        group.join_deadline = None
        group.initial_delay_ms = 0
        for member in group.not_yet_rejoined():
            if not member.is_static:
                log.info(
                    "group %s: member %s did not rejoin in time", group.group_id, member.member_id
                )
                member.answer_sync(SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
                group.remove(member.member_id)
        if group.is_(GroupState.DEAD):
            return
        if not group.maybe_elect_new_joined_leader() and group.members:
            # Only static members that have not rejoined are left: wait for them (or for their
            # sessions to expire) another rebalance timeout.
            group.join_deadline = self.clock() + group.rebalance_timeout_ms / 1000
            return
        group.init_next_generation(self.wall_clock())
        if group.is_(GroupState.EMPTY):
            log.info("group %s: generation %d is empty", group.group_id, group.generation_id)
            # Not awaited, as in Kafka: if it is lost, the previous generation comes back after a
            # restart and its members simply time out.
            self._spawn(
                self._store_if_current(group, self._stored_group(group)),
                f"store-empty:{group.group_id}",
            )
            return
        log.info(
            "group %s: generation %d with %s, protocol %s, leader %s",
            group.group_id,
            group.generation_id,
            plural(group.size, "member"),
            group.protocol_name,
            group.leader_id,
        )
        for member in group.members.values():
            member.answer_join(group.join_result(member))
            self.renew_session(member)
            member.is_new = False
            group.pending_sync.add(member.member_id)
        group.sync_deadline = self.clock() + group.rebalance_timeout_ms / 1000

    def _on_sync_deadline(self, group: Group) -> None:
        """Members that got their JoinGroup answer but never sent SyncGroup within the rebalance
        timeout are removed, and the group rebalances without them."""
        group.sync_deadline = None
        if not group.pending_sync:
            return
        missing = sorted(group.pending_sync)
        log.info("group %s: members %s never sent SyncGroup", group.group_id, missing)
        for member_id in missing:
            member = group.members.get(member_id)
            if member is not None:
                member.answer_join(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id))
            group.remove(member_id)
        self._prepare_rebalance(group, "members missed SyncGroup")

    def _reset_and_propagate_assignment_error(self, group: Group, error: ErrorCode) -> None:
        for member in group.members.values():
            member.assignment = b""
        self._propagate_assignment(group, error)

    def _propagate_assignment(self, group: Group, error: ErrorCode) -> None:
        ok = error is ErrorCode.NONE
        for member in group.members.values():
            result = SyncResult(
                error,
                group.protocol_type if ok else None,
                group.protocol_name if ok else None,
                member.assignment,
            )
            if member.answer_sync(result):
                # Sessions restart after the assignment is out: a member could not heartbeat
                # usefully while parked in SyncGroup.
                self.renew_session(member)

    def _remove_member_and_update_group(self, group: Group, member: Member) -> None:
        member.answer_join(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, ""))
        member.answer_sync(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        group.remove(member.member_id)
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._maybe_prepare_rebalance(group, f"member {member.member_id} left")
        elif group.is_(GroupState.PREPARING_REBALANCE):
            self._try_complete_join(group)

    # -- SyncGroup -----------------------------------------------------------------------------------

    async def sync_group(self, version: int, req: m.SyncGroupRequest) -> SyncResult:
        error = group_id_error(req.group_id, ApiKey.SYNC_GROUP)
        if error is not None:
            return SyncResult(error)
        group = self.groups.get(req.group_id)
        if group is None:
            return SyncResult(ErrorCode.UNKNOWN_MEMBER_ID)
        if group.is_(GroupState.DEAD):
            return SyncResult(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        instance_id = req.group_instance_id if version >= 3 else None
        error = group.validate_member(req.member_id, instance_id)
        if error is not None:
            return SyncResult(error)
        if req.generation_id != group.generation_id:
            return SyncResult(ErrorCode.ILLEGAL_GENERATION)
        if version >= 5 and (
            (req.protocol_type is not None and req.protocol_type != group.protocol_type)
            or (req.protocol_name is not None and req.protocol_name != group.protocol_name)
        ):
            return SyncResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        member = group.members[req.member_id]
        if group.is_(GroupState.EMPTY):
            return SyncResult(ErrorCode.UNKNOWN_MEMBER_ID)
        if group.is_(GroupState.PREPARING_REBALANCE):
            return SyncResult(ErrorCode.REBALANCE_IN_PROGRESS)
        if group.is_(GroupState.STABLE):
            self._remove_pending_sync(group, member.member_id)
            self.renew_session(member)
            return SyncResult(
                ErrorCode.NONE, group.protocol_type, group.protocol_name, member.assignment
            )
        # CompletingRebalance: park until the leader's assignment is stored.
        waiter: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        if member.sync_waiter is not None:
            member.answer_sync(SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        member.sync_waiter = waiter
        self._remove_pending_sync(group, member.member_id)
        if group.is_leader(member.member_id) and group.storing_generation != group.generation_id:
            # Once per generation: a leader retrying SyncGroup while the first is being stored
            # waits for that one. A second write of another assignment landed after the first
            # had been handed out, so a restart brought back an assignment no member was given.
            group.storing_generation = group.generation_id
            assignment = {a.member_id: bytes(a.assignment) for a in req.assignments}
            for member_id in group.members:
                assignment.setdefault(member_id, b"")
            # A task of its own, so the leader's connection dropping cannot strand the group.
            self._spawn(
                self._store_assignment(group, group.generation_id, assignment),
                f"sync:{group.group_id}",
            )
        return await waiter

    def _remove_pending_sync(self, group: Group, member_id: str) -> None:
        group.pending_sync.discard(member_id)
        if not group.pending_sync:
            group.sync_deadline = None

    def _is_current(self, group: Group) -> bool:
        """Whether ``group`` is still the group of its id (not deleted, nor deleted and made
        again)."""
        return not group.is_(GroupState.DEAD) and self.groups.get(group.group_id) is group

    async def _store_if_current(self, group: Group, stored: StoredGroup) -> None:
        """Write ``group``'s metadata from a task of its own, unless the group was deleted
        before the task ran: the deletion's tombstone is then already written, and this record
        landing after it would bring the deleted group back at the next restart."""
        if self._is_current(group):
            await self.store.write([(GroupKey(group.group_id), stored)])

    async def _store_assignment(
        self, group: Group, generation: int, assignment: dict[str, bytes]
    ) -> None:
        if not (
            self._is_current(group)
            and group.is_(GroupState.COMPLETING_REBALANCE)
            and group.generation_id == generation
        ):
            return  # moved on (or deleted) before this task ran: nothing to store or answer
        error = ErrorCode.NONE
        stored = self._stored_group(group, assignment)
        least = _least_encoded_size(stored)
        try:
            if least > LOG_CONFIG.max_message_bytes:
                # Refused before encoding it: encoding 64 MiB of JSON held the event loop
                # (every client) for seconds, on every rebalance of a group that loops.
                raise RecordTooLargeError(
                    f"its metadata is at least {least} bytes, over the group store's limit "
                    f"of {LOG_CONFIG.max_message_bytes}"
                )
            await self.store.write([(GroupKey(group.group_id), stored)])
        except SluiceError as exc:
            if exc.code in (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE):
                # Kafka's answer when a group's metadata record is over the offsets log's
                # limit: no retry can help, and Java consumers raise it from poll() instead
                # of looking for a coordinator that is there (COORDINATOR_NOT_AVAILABLE).
                log.error("group %s: cannot store the assignment: %s", group.group_id, exc)
                error = ErrorCode.UNKNOWN_SERVER_ERROR
            else:
                log.warning("group %s: could not store the assignment: %s", group.group_id, exc)
                error = ErrorCode.COORDINATOR_NOT_AVAILABLE
        if not (group.is_(GroupState.COMPLETING_REBALANCE) and group.generation_id == generation):
            return  # the group moved on (a member joined or left) while we were writing
        if error is not ErrorCode.NONE:
            self._reset_and_propagate_assignment_error(group, error)
            self._maybe_prepare_rebalance(group, "storing the assignment failed")
            return
        for member_id, member in group.members.items():
            member.assignment = assignment.get(member_id, b"")
        self._propagate_assignment(group, ErrorCode.NONE)
        group.transition(GroupState.STABLE, self.wall_clock())

    def _stored_group(
        self, group: Group, assignment: dict[str, bytes] | None = None
    ) -> StoredGroup:
        members = []
        if group.protocol_name is not None:
            for member in group.members.values():
                members.append(
                    StoredMember(
                        member.member_id,
                        member.group_instance_id,
                        member.client_id,
                        member.client_host,
                        member.rebalance_timeout_ms,
                        member.session_timeout_ms,
                        member.metadata(group.protocol_name)
                        if group.protocol_name in member.protocol_names()
                        else b"",
                        member.assignment
                        if assignment is None
                        else assignment.get(member.member_id, b""),
                    )
                )
        return StoredGroup(
            group.protocol_type,
            group.generation_id,
            group.protocol_name,
            group.leader_id if members else None,
            group.state_timestamp,
            members,
        )

    # -- Heartbeat, LeaveGroup --------------------------------------------------------------------------

    def heartbeat(self, version: int, req: m.HeartbeatRequest) -> ErrorCode:
        error = group_id_error(req.group_id, ApiKey.HEARTBEAT)
        if error is not None:
            return error
        group = self.groups.get(req.group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.is_(GroupState.DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        instance_id = req.group_instance_id if version >= 3 else None
        error = group.validate_member(req.member_id, instance_id)
        if error is not None:
            return error
        if req.generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        if group.is_(GroupState.EMPTY):
            return ErrorCode.UNKNOWN_MEMBER_ID
        self.renew_session(group.members[req.member_id])
        if group.is_(GroupState.PREPARING_REBALANCE):
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def leave(
        self, group_id: str, leaving: list[m.MemberIdentity]
    ) -> tuple[ErrorCode, list[ErrorCode]]:
        error = group_id_error(group_id, ApiKey.LEAVE_GROUP)
        if error is not None:
            return error, []
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.NONE, [ErrorCode.UNKNOWN_MEMBER_ID for _ in leaving]
        if group.is_(GroupState.DEAD):
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, []
        results: list[ErrorCode] = []
        for ident in leaving:
            if ident.member_id == "":
                # Administrative removal of a static member by instance id (KIP-345).
                current = (
                    group.static_member_id(ident.group_instance_id)
                    if ident.group_instance_id is not None
                    else None
                )
                if current is None:
                    results.append(ErrorCode.UNKNOWN_MEMBER_ID)
                else:
                    self._remove_member_and_update_group(group, group.members[current])
                    results.append(ErrorCode.NONE)
            elif ident.member_id in group.pending_members:
                group.remove(ident.member_id)
                self._try_complete_join(group)
                results.append(ErrorCode.NONE)
            else:
                error = group.validate_member(ident.member_id, ident.group_instance_id)
                if error is None:
                    log.info("group %s: member %s left", group_id, ident.member_id)
                    self._remove_member_and_update_group(group, group.members[ident.member_id])
                    results.append(ErrorCode.NONE)
                else:
                    results.append(error)
        return ErrorCode.NONE, results

    # -- ListGroups (DescribeGroups reads groups directly) ----------------------------------------

    def list_groups(self, version: int, req: m.ListGroupsRequest) -> list[Group]:
        wanted = {s.lower() for s in req.states_filter} if version >= 4 else set()
        return [
            g
            for g in self.groups.values()
            if not g.is_(GroupState.DEAD) and (not wanted or g.state.value.lower() in wanted)
        ]


def _distinct_protocols(requested: Iterable[m.JoinGroupRequestProtocol]) -> Protocols:
    """A member's protocols, each name once (its first metadata, as Kafka's MemberMetadata
    looks it up). The group counts each member's vote for a name once: a name listed twice
    counted twice made a one-member group look like two supporters, so every other joiner
    was refused INCONSISTENT_GROUP_PROTOCOL, and the protocol vote found no common protocol
    and failed the JoinGroup, leaving the group stuck mid-rebalance."""
    seen: dict[str, bytes] = {}
    for p in requested:
        seen.setdefault(p.name, bytes(p.metadata))
    return list(seen.items())


def _least_encoded_size(stored: StoredGroup) -> int:
    """A lower bound of ``stored``'s record in the group store (base64 of each member's
    subscription and assignment, and its ids), computed without encoding it."""
    size = 0
    for sm in stored.members:
        size += 4 * ((len(sm.subscription) + 2) // 3) + 4 * ((len(sm.assignment) + 2) // 3)
        size += len(sm.member_id) + len(sm.client_id) + len(sm.client_host)
        size += len(sm.group_instance_id or "")
    return size


@dataclass(frozen=True, slots=True)
class _MemberSettings:
    """What a static rejoin replaces, kept to restore if persisting the replacement fails."""

    protocols: Protocols
    rebalance_timeout_ms: int
    session_timeout_ms: int


@dataclass(slots=True)
class _Join:
    """One JoinGroup request's parameters and its parked answer."""

    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: Protocols
    waiter: asyncio.Future[JoinResult]

    def answer(self, error: ErrorCode, member_id: str) -> None:
        if not self.waiter.done():
            self.waiter.set_result(JoinResult(error, member_id))
