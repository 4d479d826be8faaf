"""``GroupCoordinator``: the classic consumer-group protocol and committed offsets.

Semantics follow Apache Kafka's GroupCoordinator (the rules, errors and state transitions are
what clients are written against); the machinery is asyncio's:

* A JoinGroup or SyncGroup that must wait parks a future on its member; whoever completes the
  phase (the last joiner, the leader's SyncGroup, a timer) answers every parked future. The
  broker processes one request per connection at a time, so a parked JoinGroup holds only its
  own connection.
* Kafka's purgatories become deadlines on groups and members, checked by one timer task
  (:meth:`GroupCoordinator.poll_timers`), so tests drive time with an injected clock instead of
  sleeping.
* Group state changes are synchronous (one event loop, no locks); the only awaits are storage
  writes, after which state is re-checked because the group may have moved on meanwhile.

Durable state (offsets, group metadata) lives in :mod:`sluice.broker.groups.store`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sluice.broker.groups import responses
from sluice.broker.groups.group import (
    Group,
    GroupState,
    JoinResult,
    Member,
    Protocols,
    SyncResult,
    new_member_id,
)
from sluice.broker.groups.store import (
    Change,
    CommittedOffset,
    GroupKey,
    GroupStore,
    OffsetKey,
    StoredGroup,
    StoredMember,
)
from sluice.errors import ErrorCode, SluiceError
from sluice.protocol import ApiKey, Request, ResponseBody
from sluice.protocol import messages as m
from sluice.storage.log import wall_clock_ms
from sluice.storage.manager import LogManager

log = logging.getLogger(__name__)

GROUP_APIS: frozenset[int] = frozenset(
    {
        ApiKey.FIND_COORDINATOR,
        ApiKey.JOIN_GROUP,
        ApiKey.SYNC_GROUP,
        ApiKey.HEARTBEAT,
        ApiKey.LEAVE_GROUP,
        ApiKey.OFFSET_COMMIT,
        ApiKey.OFFSET_FETCH,
        ApiKey.DESCRIBE_GROUPS,
        ApiKey.LIST_GROUPS,
        ApiKey.DELETE_GROUPS,
        ApiKey.OFFSET_DELETE,
    }
)

NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000
"""Kafka's bound on a JoinGroup from a brand-new member that never completes a rebalance (its
client may have gone away while parked; it cannot heartbeat yet)."""

_EMPTY_GROUP_ID_ALLOWED = frozenset(
    {ApiKey.OFFSET_COMMIT, ApiKey.OFFSET_FETCH, ApiKey.DESCRIBE_GROUPS, ApiKey.DELETE_GROUPS}
)


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Kafka's broker settings of the same names (``group.*``, ``offsets.*``)."""

    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 0
    """Kafka defaults to 3000 to let a starting fleet join in one generation; an embedded
    broker for tests and development wants the first consumer assigned at once."""
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096
    timer_interval_ms: int = 100
    """Resolution of session, rebalance and sync timeouts."""


class GroupCoordinator:
    """Every group of this node: membership, rebalances, committed offsets. All methods run on
    the broker's event loop except the constructor (the broker's opening thread)."""

    def __init__(
        self,
        logs: LogManager,
        node: Callable[[], tuple[int, str, int]],
        *,
        offsets_retention_ms: int = 7 * 24 * 3600 * 1000,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], int] = wall_clock_ms,
        config: GroupConfig | None = None,
        store_compact_min_records: int = 10_000,
    ) -> None:
        """Open the durable store and rebuild groups from it. Blocking (replays a log); runs
        in the broker's opening thread, with no event loop."""
        self.logs = logs
        self.node = node
        # A config given explicitly carries its own retention.
        self.config = config or GroupConfig(offsets_retention_ms=offsets_retention_ms)
        self.clock = clock
        self.wall_clock = wall_clock
        self.store = GroupStore.open(
            logs.data_dir, logs.executor, wall_clock, compact_min_records=store_compact_min_records
        )
        self.groups: dict[str, Group] = {}
        self._pending_commits: Counter[OffsetKey] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._shutting_down = False
        self._closed = False
        self._load_groups()

    # -- lifecycle ------------------------------------------------------------------------------------

    def _load_groups(self) -> None:
        """Kafka's onGroupLoaded: groups come back Stable (with their members, who keep
        heartbeating as if nothing happened) or Empty; nothing mid-rebalance survives."""
        now = self.clock()
        for group_id, stored in self.store.groups.items():
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
        for group_id in self.store.offsets:
            if group_id not in self.groups:
                self.groups[group_id] = Group(group_id)

    def start(self) -> None:
        """Start the timers (on the running loop). Loaded members' sessions count from here."""
        now = self.clock()
        for group in self.groups.values():
            for member in group.members.values():
                member.deadline = now + member.session_timeout_ms / 1000
        self._timer = asyncio.get_running_loop().create_task(
            self._run_timers(), name="group-timers"
        )

    def begin_shutdown(self) -> None:
        """Answer every parked JoinGroup/SyncGroup now with NOT_COORDINATOR (clients look for the
        coordinator again and rejoin) and park no more, so a server draining its connections
        does not wait out a rebalance timeout. Offsets keep committing until :meth:`close`."""
        self._shutting_down = True
        if self._timer is not None:
            self._timer.cancel()
        for group in self.groups.values():
            for member in group.members.values():
                member.answer_join(JoinResult(ErrorCode.NOT_COORDINATOR, member.member_id))
                member.answer_sync(SyncResult(ErrorCode.NOT_COORDINATOR))

    async def close(self) -> None:
        """:meth:`begin_shutdown`, then let pending writes finish and close the store."""
        if self._closed:
            return
        self.begin_shutdown()
        self._closed = True
        if self._timer is not None:
            await asyncio.gather(self._timer, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()

    def _spawn(self, coro: Awaitable[object], name: str) -> None:
        async def run() -> None:
            try:
                await coro
            except SluiceError as exc:
                log.warning("group coordinator task %s failed: %s", name, exc)
            except Exception:
                log.exception("group coordinator task %s failed", name)

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- timers -----------------------------------------------------------------------------------------

    async def _run_timers(self) -> None:
        interval = self.config.timer_interval_ms / 1000
        next_expiry = self.clock() + self.config.offsets_retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                self.poll_timers()
                if self.clock() >= next_expiry:
                    next_expiry = (
                        self.clock() + self.config.offsets_retention_check_interval_ms / 1000
                    )
                    self._spawn(self.expire_offsets(), "offset-expiry")
            except Exception:
                log.exception("group timers failed")

    def poll_timers(self) -> None:
        """Fire every deadline that has passed: session expiry, pending member ids, join phase
        (rebalance timeout, initial delay) and sync phase. Synchronous and idempotent."""
        now = self.clock()
        for group in list(self.groups.values()):
            if group.is_(GroupState.DEAD):
                continue
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

    def _heartbeat(self, member: Member) -> None:
        """Kafka's completeAndScheduleNextHeartbeatExpiration."""
        member.deadline = self.clock() + member.session_timeout_ms / 1000

    # -- dispatch --------------------------------------------------------------------------------------

    async def handle(self, request: Request, client_host: str) -> ResponseBody:
        """Answer any API in GROUP_APIS at ``request.api_version``. Bad input becomes an error
        code; an internal failure becomes UNKNOWN_SERVER_ERROR rather than a dropped connection."""
        body = request.body
        version = request.api_version
        client_id = request.client_id or ""
        host = client_host if client_host.startswith("/") else f"/{client_host}"
        try:
            if self._closed:
                return responses.error_response(request, ErrorCode.COORDINATOR_NOT_AVAILABLE)
            if self._shutting_down and isinstance(body, m.JoinGroupRequest | m.SyncGroupRequest):
                return responses.error_response(request, ErrorCode.NOT_COORDINATOR)
            match body:
                case m.FindCoordinatorRequest():
                    found = self._lookup(body.key_type if version >= 1 else 0)
                    return responses.find_coordinator_response(version, body, found)
                case m.JoinGroupRequest():
                    return responses.join_group_response(
                        version, await self._join_group(version, body, client_id, host)
                    )
                case m.SyncGroupRequest():
                    return responses.sync_group_response(
                        version, await self._sync_group(version, body)
                    )
                case m.HeartbeatRequest():
                    return responses.heartbeat_response(self._heartbeat_request(version, body))
                case m.LeaveGroupRequest():
                    leaving = (
                        body.members
                        if version >= 3
                        else [m.MemberIdentity(member_id=body.member_id)]
                    )
                    top, results = self._leave(body.group_id, leaving)
                    return responses.leave_group_response(version, leaving, top, results)
                case m.OffsetCommitRequest():
                    return responses.offset_commit_response(
                        body, await self._offset_commit(version, body)
                    )
                case m.OffsetFetchRequest():
                    return responses.offset_fetch_response(
                        version, body, self._offset_fetch(version, body)
                    )
                case m.DescribeGroupsRequest():
                    return responses.describe_groups_response(
                        version, body, self._describe_groups(body)
                    )
                case m.ListGroupsRequest():
                    return responses.list_groups_response(self._list_groups(version, body))
                case m.DeleteGroupsRequest():
                    return responses.delete_groups_response(await self._delete_groups(body))
                case m.OffsetDeleteRequest():
                    return responses.offset_delete_response(*await self._offset_delete(body))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("group coordinator failed on %s", type(body).__name__)
            return responses.error_response(request, ErrorCode.UNKNOWN_SERVER_ERROR)
        return responses.error_response(request, ErrorCode.UNKNOWN_SERVER_ERROR)

    def _group_id_error(self, group_id: str | None, api: ApiKey) -> ErrorCode | None:
        if group_id is None or (group_id == "" and api not in _EMPTY_GROUP_ID_ALLOWED):
            return ErrorCode.INVALID_GROUP_ID
        if self._closed:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        return None

    def _new_group(self, group_id: str) -> Group:
        group = Group(group_id, state_timestamp=self.wall_clock())
        self.groups[group_id] = group
        return group

    # -- FindCoordinator -----------------------------------------------------------------------------

    def _lookup(self, key_type: int) -> responses.CoordinatorLookup:
        """Every group is coordinated here (one node). Transactions are not implemented, so a
        transaction key gets COORDINATOR_NOT_AVAILABLE: clients treat it as retriable."""
        if key_type == 0:
            node_id, host, port = self.node()
            return responses.CoordinatorLookup(ErrorCode.NONE, None, node_id, host, port)
        if key_type == 1:
            return responses.CoordinatorLookup(
                ErrorCode.COORDINATOR_NOT_AVAILABLE, "transactions are not supported", -1, "", -1
            )
        return responses.CoordinatorLookup(
            ErrorCode.INVALID_REQUEST, f"unknown key type {key_type}", -1, "", -1
        )

    # -- JoinGroup ----------------------------------------------------------------------------------

    async def _join_group(
        self, version: int, req: m.JoinGroupRequest, client_id: str, client_host: str
    ) -> JoinResult:
        member_id = req.member_id
        error = self._group_id_error(req.group_id, ApiKey.JOIN_GROUP)
        if error is not None:
            return JoinResult(error, member_id)
        cfg = self.config
        if not cfg.min_session_timeout_ms <= req.session_timeout_ms <= cfg.max_session_timeout_ms:
            return JoinResult(ErrorCode.INVALID_SESSION_TIMEOUT, member_id)
        instance_id = req.group_instance_id if version >= 5 else None
        rebalance_timeout = req.rebalance_timeout_ms if version >= 1 else req.session_timeout_ms
        if rebalance_timeout <= 0:
            rebalance_timeout = req.session_timeout_ms
        protocols: Protocols = [(p.name, bytes(p.metadata)) for p in req.protocols]
        unknown = member_id == ""
        group = self.groups.get(req.group_id)
        if group is None:
            if not unknown:
                return JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            group = self._new_group(req.group_id)
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
        old = _MemberSettings(member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms)
        self._apply_rejoin(group, member, join)
        self._heartbeat(member)  # after the update: the new session timeout counts from now
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
        try:
            await self.store.write([(GroupKey(group.group_id), self._stored_group(group))])
        except SluiceError as exc:
            log.warning("group %s: could not persist static member: %s", group.group_id, exc)
            if member.join_waiter is join.waiter and group.members.get(member.member_id) is member:
                member.join_waiter = None
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
                self.store.write([(GroupKey(group.group_id), self._stored_group(group))]),
                f"store-empty:{group.group_id}",
            )
            return
        log.info(
            "group %s: generation %d with %d members, protocol %s, leader %s",
            group.group_id,
            group.generation_id,
            group.size,
            group.protocol_name,
            group.leader_id,
        )
        for member in group.members.values():
            member.answer_join(group.join_result(member))
            self._heartbeat(member)
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
                self._heartbeat(member)

    def _remove_member_and_update_group(self, group: Group, member: Member) -> None:
        member.answer_join(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, ""))
        member.answer_sync(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        group.remove(member.member_id)
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._maybe_prepare_rebalance(group, f"member {member.member_id} left")
        elif group.is_(GroupState.PREPARING_REBALANCE):
            self._try_complete_join(group)

    # -- SyncGroup -----------------------------------------------------------------------------------

    async def _sync_group(self, version: int, req: m.SyncGroupRequest) -> SyncResult:
        error = self._group_id_error(req.group_id, ApiKey.SYNC_GROUP)
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
            self._heartbeat(member)
            return SyncResult(
                ErrorCode.NONE, group.protocol_type, group.protocol_name, member.assignment
            )
        # CompletingRebalance: park until the leader's assignment is stored.
        waiter: asyncio.Future[SyncResult] = asyncio.get_running_loop().create_future()
        if member.sync_waiter is not None:
            member.answer_sync(SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        member.sync_waiter = waiter
        self._remove_pending_sync(group, member.member_id)
        if group.is_leader(member.member_id):
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

    async def _store_assignment(
        self, group: Group, generation: int, assignment: dict[str, bytes]
    ) -> None:
        error = ErrorCode.NONE
        try:
            await self.store.write(
                [(GroupKey(group.group_id), self._stored_group(group, assignment))]
            )
        except SluiceError as exc:
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

    def _heartbeat_request(self, version: int, req: m.HeartbeatRequest) -> ErrorCode:
        error = self._group_id_error(req.group_id, ApiKey.HEARTBEAT)
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
        self._heartbeat(group.members[req.member_id])
        if group.is_(GroupState.PREPARING_REBALANCE):
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def _leave(
        self, group_id: str, leaving: list[m.MemberIdentity]
    ) -> tuple[ErrorCode, list[ErrorCode]]:
        error = self._group_id_error(group_id, ApiKey.LEAVE_GROUP)
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

    # -- OffsetCommit ----------------------------------------------------------------------------------

    def _topic_id(self, topic: str) -> str | None:
        t = self.logs.topics.get(topic)
        return None if t is None else str(t.topic_id)

    def _partition_exists(self, topic: str, partition: int) -> bool:
        t = self.logs.topics.get(topic)
        return t is not None and 0 <= partition < len(t.partitions)

    def _validate_commit(
        self, group: Group, generation: int, member_id: str, instance_id: str | None
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
        if not group.is_(GroupState.EMPTY):
            # Only members may commit for a group that has members (simple, generation -1
            # commits are for groups that use Kafka for offset storage only).
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    async def _offset_commit(
        self, version: int, req: m.OffsetCommitRequest
    ) -> dict[tuple[str, int], ErrorCode]:
        """Each partition's result (the whole commit is one atomic write)."""
        results: dict[tuple[str, int], ErrorCode] = {}

        def fail_all(error: ErrorCode) -> dict[tuple[str, int], ErrorCode]:
            return {(t.name, p.partition_index): error for t in req.topics for p in t.partitions}

        error = self._group_id_error(req.group_id, ApiKey.OFFSET_COMMIT)
        if error is not None:
            return fail_all(error)
        instance_id = req.group_instance_id if version >= 7 else None
        generation = req.generation_id_or_member_epoch
        group = self.groups.get(req.group_id)
        if group is None:
            if generation >= 0:
                # Not a group we know: a member of a generation that no longer exists.
                return fail_all(ErrorCode.ILLEGAL_GENERATION)
            group = self._new_group(req.group_id)
        error = self._validate_commit(group, generation, req.member_id, instance_id)
        if error is None and group.is_(GroupState.COMPLETING_REBALANCE):
            # A valid member that has its JoinGroup answer but no assignment yet.
            error = ErrorCode.REBALANCE_IN_PROGRESS
        if error is not None:
            return fail_all(error)
        member = group.members.get(req.member_id)
        if member is not None:
            self._heartbeat(member)
        now = self.wall_clock()
        expire = None
        if version <= 4 and req.retention_time_ms >= 0:
            expire = now + req.retention_time_ms
        changes: list[Change] = []
        for t in req.topics:
            topic_id = self._topic_id(t.name)
            for p in t.partitions:
                tp = (t.name, p.partition_index)
                metadata = p.committed_metadata or ""
                if not self._partition_exists(t.name, p.partition_index):
                    results[tp] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif len(metadata.encode()) > self.config.offset_metadata_max_bytes:
                    results[tp] = ErrorCode.OFFSET_METADATA_TOO_LARGE
                else:
                    committed = CommittedOffset(
                        p.committed_offset,
                        p.committed_leader_epoch if version >= 6 else -1,
                        metadata,
                        now,
                        expire,
                        topic_id,
                    )
                    changes.append((OffsetKey(req.group_id, *tp), committed))
                    results[tp] = ErrorCode.NONE
        if changes:
            keys = [k for k, _ in changes if isinstance(k, OffsetKey)]
            self._pending_commits.update(keys)
            try:
                await self.store.write(changes)
            except SluiceError as exc:
                log.warning("group %s: offset commit failed in storage: %s", req.group_id, exc)
                for key in keys:
                    results[(key.topic, key.partition)] = ErrorCode.COORDINATOR_NOT_AVAILABLE
            finally:
                self._pending_commits.subtract(keys)
                self._pending_commits += Counter()
        return results

    # -- OffsetFetch ---------------------------------------------------------------------------------

    def _visible_offsets(self, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
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

    def _fetch_group(
        self, group_id: str, topics: list[m.OffsetFetchRequestTopic] | None
    ) -> responses.FetchedGroup:
        error = self._group_id_error(group_id, ApiKey.OFFSET_FETCH)
        if error is not None:
            return responses.FetchedGroup(group_id, error, [])
        offsets = self._visible_offsets(group_id)
        wanted: list[tuple[str, list[int]]]
        if topics is None:
            by_topic: dict[str, list[int]] = {}
            for topic, partition in sorted(offsets):
                by_topic.setdefault(topic, []).append(partition)
            wanted = list(by_topic.items())
        else:
            wanted = [(t.name, list(t.partition_indexes)) for t in topics]
        found = [(topic, [(p, offsets.get((topic, p))) for p in parts]) for topic, parts in wanted]
        return responses.FetchedGroup(group_id, ErrorCode.NONE, found)

    def _offset_fetch(
        self, version: int, req: m.OffsetFetchRequest
    ) -> list[responses.FetchedGroup]:
        if version >= 8:
            return [self._fetch_group(g.group_id, g.topics) for g in req.groups]
        return [self._fetch_group(req.group_id, req.topics)]

    # -- DescribeGroups, ListGroups ---------------------------------------------------------------------

    def _describe_groups(self, req: m.DescribeGroupsRequest) -> list[responses.DescribedGroup]:
        return [
            responses.DescribedGroup(
                group_id,
                self._group_id_error(group_id, ApiKey.DESCRIBE_GROUPS),
                self.groups.get(group_id),
            )
            for group_id in req.groups
        ]

    def _list_groups(self, version: int, req: m.ListGroupsRequest) -> list[Group]:
        wanted = {s.lower() for s in req.states_filter} if version >= 4 else set()
        return [
            g
            for g in self.groups.values()
            if not g.is_(GroupState.DEAD) and (not wanted or g.state.value.lower() in wanted)
        ]

    # -- DeleteGroups, OffsetDelete, expiry ---------------------------------------------------------------

    def _drop_group(self, group: Group) -> list[Change]:
        """Mark a group Dead and forget it; the tombstones that make that durable."""
        group.transition(GroupState.DEAD, self.wall_clock())
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]
        changes: list[Change] = [(GroupKey(group.group_id), None)]
        for topic, partition in self.store.offsets.get(group.group_id, {}):
            changes.append((OffsetKey(group.group_id, topic, partition), None))
        # Commits still waiting for their write were appended before these tombstones (the
        # store writes in call order), so tombstoning them too leaves no offset behind a group
        # that no longer exists.
        changes.extend((key, None) for key in self._pending_of(group.group_id))
        return changes

    def _pending_of(self, group_id: str) -> list[OffsetKey]:
        return [key for key in self._pending_commits if key.group == group_id]

    async def _delete_groups(self, req: m.DeleteGroupsRequest) -> dict[str, ErrorCode]:
        results: dict[str, ErrorCode] = {}
        changes: list[Change] = []
        deleted: list[str] = []
        for group_id in req.groups_names:
            error = self._group_id_error(group_id, ApiKey.DELETE_GROUPS)
            group = self.groups.get(group_id)
            if error is not None:
                results[group_id] = error
            elif group is None or group.is_(GroupState.DEAD):
                results[group_id] = ErrorCode.GROUP_ID_NOT_FOUND
            elif group.is_(GroupState.EMPTY):
                changes.extend(self._drop_group(group))
                deleted.append(group_id)
                results[group_id] = ErrorCode.NONE
            else:
                results[group_id] = ErrorCode.NON_EMPTY_GROUP
        if changes:
            try:
                await self.store.write(changes)
                log.info("deleted groups %s", deleted)
            except SluiceError as exc:
                log.warning("deleting groups %s failed in storage: %s", deleted, exc)
                for group_id in deleted:
                    results[group_id] = ErrorCode.COORDINATOR_NOT_AVAILABLE
        return results

    async def _offset_delete(
        self, req: m.OffsetDeleteRequest
    ) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        error = self._group_id_error(req.group_id, ApiKey.OFFSET_DELETE)
        if error is not None:
            return error, {}
        group = self.groups.get(req.group_id)
        if group is None or group.is_(GroupState.DEAD):
            return ErrorCode.GROUP_ID_NOT_FOUND, {}
        if not (group.is_(GroupState.EMPTY) or group.is_consumer_group):
            return ErrorCode.NON_EMPTY_GROUP, {}
        errors: dict[tuple[str, int], ErrorCode] = {}
        eligible: list[tuple[str, int]] = []
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
        committed = self.store.offsets.get(req.group_id, {})
        pending = {(k.topic, k.partition) for k in self._pending_of(req.group_id)}
        changes: list[Change] = [
            (OffsetKey(req.group_id, *tp), None)
            for tp in eligible
            if tp in committed or tp in pending
        ]
        if changes:
            remaining = (set(committed) | pending) - set(eligible)
            if group.is_(GroupState.EMPTY) and not remaining:
                changes = self._drop_group(group)
            try:
                await self.store.write(changes)
            except SluiceError as exc:
                log.warning("group %s: offset delete failed in storage: %s", req.group_id, exc)
                for tp in eligible:
                    errors[tp] = ErrorCode.COORDINATOR_NOT_AVAILABLE
        return ErrorCode.NONE, errors

    async def expire_offsets(self) -> int:
        """Kafka's offsets.retention.minutes (KIP-211): an empty group's offsets expire once the
        group has been empty that long; a stable consumer group's offsets for topics it no longer
        subscribes to expire that long after their last commit; offsets of deleted topics go at
        once. An empty group left with no offsets is deleted. Returns offsets removed."""
        now = self.wall_clock()
        retention = self.config.offsets_retention_ms
        changes: list[Change] = []
        removed = 0
        for group in list(self.groups.values()):
            if group.is_(GroupState.DEAD):
                continue
            offsets = self.store.offsets.get(group.group_id, {})
            expired: list[tuple[str, int]] = []
            for (topic, partition), committed in offsets.items():
                key = OffsetKey(group.group_id, topic, partition)
                if self._pending_commits[key]:
                    continue
                if not self._offset_is_live(topic, partition, committed) or self._offset_expired(
                    group, topic, committed, now, retention
                ):
                    expired.append((topic, partition))
            if (
                group.is_(GroupState.EMPTY)
                and len(expired) == len(offsets)
                and not group.pending_members
                and not any(k.group == group.group_id for k in self._pending_commits)
            ):
                removed += len(offsets)
                changes.extend(self._drop_group(group))
                log.info("group %s expired (empty, no offsets left)", group.group_id)
                continue
            removed += len(expired)
            changes.extend((OffsetKey(group.group_id, t, p), None) for t, p in expired)
        if changes:
            await self.store.write(changes)
            log.info("offset expiry removed %d offsets", removed)
        return removed

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
