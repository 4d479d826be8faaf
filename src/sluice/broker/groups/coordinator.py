"""``GroupCoordinator``: the group APIs' one entry point, and the owner of what they share.

Kafka's GroupCoordinatorShard, for the one node: it owns the durable
:class:`~sluice.broker.groups.store.GroupStore`, the background tasks and the timer task, and
wires :class:`~sluice.broker.groups.membership.GroupMembership` (who is in a group) to
:class:`~sluice.broker.groups.committed.CommittedOffsets` (what a group has committed). Each
API is one coroutine of the typed request and the client's host, which the broker registers one
handler per API.
Answers are shaped by :mod:`~sluice.broker.groups.responses`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection

from sluice.broker.background import BackgroundTasks
from sluice.broker.context import turn_after
from sluice.broker.groups import responses
from sluice.broker.groups.committed import CommittedOffsets
from sluice.broker.groups.config import GroupConfig
from sluice.broker.groups.group import Group, GroupState
from sluice.broker.groups.membership import GroupMembership, group_id_error
from sluice.broker.groups.store import DIR_NAME, Change, GroupStore
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
        ApiKey.TXN_OFFSET_COMMIT,
    }
)

GroupApi = Callable[[Request, str], Awaitable[ResponseBody]]

TxnVerifier = Callable[[str, int, int, str], ErrorCode | None]
"""(transactional id, producer id, epoch, group) -> None if that producer's open transaction
includes the group's offsets (AddOffsetsToTxn), else the error TxnOffsetCommit answers: the
transaction coordinator's check, injected so groups never import it."""


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
        verify_txn: TxnVerifier | None = None,
    ) -> None:
        """Open the durable store and rebuild groups from it. Blocking (replays a log); runs
        in the broker's opening thread, with no event loop."""
        self.logs = logs
        self.node = node
        # A config given explicitly carries its own retention.
        self.config = config or GroupConfig(offsets_retention_ms=offsets_retention_ms)
        self.clock = clock
        self.wall_clock = wall_clock
        self.verify_txn = verify_txn
        """None: TxnOffsetCommit is accepted from any producer (no transaction coordinator)."""
        self.store = GroupStore.open(
            logs.data_dir / DIR_NAME,
            logs.executor,
            wall_clock,
            compact_min_records=store_compact_min_records,
        )
        self._tasks = BackgroundTasks("group coordinator", log)
        self.membership = GroupMembership(
            self.store, self.config, clock, wall_clock, self._tasks.spawn
        )
        self.offsets = CommittedOffsets(self.store, logs, self.membership, self.config, wall_clock)
        self._next_expiry = 0.0
        """When the timers next expire offsets, by ``clock`` (set at :meth:`start`)."""
        self._shutting_down = False
        self._closed = False
        self.membership.load(self.store.groups, {*self.store.offsets, *self.store.pending})
        self._apis: dict[int, GroupApi] = {
            ApiKey.FIND_COORDINATOR: self.find_coordinator,
            ApiKey.JOIN_GROUP: self.join_group,
            ApiKey.SYNC_GROUP: self.sync_group,
            ApiKey.HEARTBEAT: self.heartbeat,
            ApiKey.LEAVE_GROUP: self.leave_group,
            ApiKey.OFFSET_COMMIT: self.offset_commit,
            ApiKey.OFFSET_FETCH: self.offset_fetch,
            ApiKey.DESCRIBE_GROUPS: self.describe_groups,
            ApiKey.LIST_GROUPS: self.list_groups,
            ApiKey.DELETE_GROUPS: self.delete_groups,
            ApiKey.OFFSET_DELETE: self.offset_delete,
            ApiKey.TXN_OFFSET_COMMIT: self.txn_offset_commit,
        }

    @property
    def groups(self) -> dict[str, Group]:
        return self.membership.groups

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timers (on the running loop). Loaded members' sessions count from here."""
        self.membership.restart_sessions()
        self._next_expiry = self.clock() + self.config.offsets_retention_check_interval_ms / 1000
        self._tasks.start_timers(
            "group-timers",
            [(self.config.timer_interval_ms / 1000, self._tick)],
            asyncio.get_running_loop().time,
        )

    def begin_shutdown(self) -> None:
        """Answer every parked JoinGroup/SyncGroup now with NOT_COORDINATOR (clients look for the
        coordinator again and rejoin) and park no more, so a server draining its connections
        does not wait out a rebalance timeout. Offsets keep committing until :meth:`close`."""
        self._shutting_down = True
        self._tasks.stop.set()
        self.membership.release_parked(ErrorCode.NOT_COORDINATOR)

    async def close(self) -> None:
        """:meth:`begin_shutdown`, then let pending writes finish and close the store."""
        if self._closed:
            return
        self.begin_shutdown()
        self._closed = True
        await self._tasks.close()
        await self.store.close()

    # -- timers -----------------------------------------------------------------------------------

    def _tick(self) -> None:
        """Every ``timer_interval_ms`` of real time: the membership deadlines, and the offset
        expiry once its interval has passed by the coordinator's clock (which tests move)."""
        self.poll_timers()
        if self.clock() >= self._next_expiry:
            self._next_expiry = self.clock() + self.config.offsets_retention_check_interval_ms / 1000
            self._tasks.spawn(self.expire_offsets(), "offset-expiry")

    def poll_timers(self) -> None:
        """Fire every membership deadline that has passed (sessions, pending member ids, join
        and sync phases). Synchronous and idempotent; tests call it after moving the clock."""
        self.membership.poll_timers()

    async def expire_offsets(self) -> int:
        """One run of offsets.retention.minutes; returns how many offsets it removed."""
        return await self.offsets.expire()

    # -- dispatch ---------------------------------------------------------------------------------

    async def handle(self, request: Request, client_host: str) -> ResponseBody:
        """Answer any API in GROUP_APIS by its key (the broker registers the per-API coroutines
        directly; this is for callers holding a request of any group API). Bad input becomes an
        error code; what an unexpected failure does is the broker's policy, not this module's."""
        return await self._apis[request.api_key](request, client_host)

    def _refusal(self, request: Request) -> ResponseBody | None:
        """Every API is refused once closed; a coordinator shutting down parks nothing more."""
        if self._closed:
            return responses.error_response(request, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if self._shutting_down and request.api_key in (ApiKey.JOIN_GROUP, ApiKey.SYNC_GROUP):
            return responses.error_response(request, ErrorCode.NOT_COORDINATOR)
        return None

    # -- the APIs ---------------------------------------------------------------------------------

    async def find_coordinator(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.FindCoordinatorRequest)
        version = request.api_version
        found = self._lookup(body.key_type if version >= 1 else 0)
        return responses.find_coordinator_response(version, body, found)

    def _lookup(self, key_type: int) -> responses.CoordinatorLookup:
        """Every group (key type 0) and every transactional id (1) is coordinated here: this
        is the only node."""
        if key_type in (0, 1):
            node_id, host, port = self.node()
            return responses.CoordinatorLookup(ErrorCode.NONE, None, node_id, host, port)
        return responses.CoordinatorLookup(
            ErrorCode.INVALID_REQUEST, f"unknown key type {key_type}", -1, "", -1
        )

    async def join_group(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.JoinGroupRequest)
        version = request.api_version
        host = client_host if client_host.startswith("/") else f"/{client_host}"
        result = await self.membership.join_group(version, body, request.client_id or "", host)
        return responses.join_group_response(version, result)

    async def sync_group(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.SyncGroupRequest)
        result = await self.membership.sync_group(request.api_version, body)
        return responses.sync_group_response(request.api_version, result)

    async def heartbeat(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.HeartbeatRequest)
        return responses.heartbeat_response(self.membership.heartbeat(request.api_version, body))

    async def leave_group(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.LeaveGroupRequest)
        version = request.api_version
        # v3+ batches members (and may name static ones by instance id alone).
        leaving = body.members if version >= 3 else [m.MemberIdentity(member_id=body.member_id)]
        top, results = self.membership.leave(body.group_id, leaving)
        return responses.leave_group_response(version, leaving, top, results)

    async def offset_commit(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.OffsetCommitRequest)
        results = await self.offsets.commit(request.api_version, body)
        return responses.offset_commit_response(body, results)

    async def offset_fetch(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.OffsetFetchRequest)
        version = request.api_version
        stable = version >= 7 and body.require_stable
        if version >= 8:
            # Each group once, however often it is asked for, with every topic any mention
            # named (None, every topic, wins): an 8 KiB request naming a group of 1000
            # offsets 2000 times was a 38 MiB answer, 24 s of the event loop, and naming it
            # with a different partition each time still answered each mention apart.
            # Clients never repeat one (they key the answer by group).
            wanted: dict[str, list[m.OffsetFetchRequestTopic] | None] = {}
            for g in body.groups:
                if g.group_id not in wanted:
                    wanted[g.group_id] = g.topics
                elif (earlier := wanted[g.group_id]) is not None:
                    wanted[g.group_id] = None if g.topics is None else earlier + g.topics
            fetched = [self.offsets.fetch(group_id, topics, stable) for group_id, topics in wanted.items()]
        else:
            fetched = [self.offsets.fetch(body.group_id, body.topics, stable)]
        return responses.offset_fetch_response(version, body, fetched)

    async def txn_offset_commit(self, request: Request, client_host: str) -> ResponseBody:
        """Offsets pending in a transaction until it ends (:meth:`end_transaction`)."""
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.TxnOffsetCommitRequest)
        txn_error = None
        if self.verify_txn is not None:
            txn_error = self.verify_txn(
                body.transactional_id, body.producer_id, body.producer_epoch, body.group_id
            )
        results = await self.offsets.commit_transactional(request.api_version, body, txn_error)
        return responses.txn_offset_commit_response(body, results)

    async def end_transaction(self, producer_id: int, groups: Collection[str], commit: bool) -> None:
        """For the transaction coordinator: ``producer_id``'s pending offsets in ``groups``
        become committed or are dropped, durably. Raises a SluiceError if the store refuses."""
        if groups:
            await self.offsets.end_transaction(producer_id, groups, commit)

    async def describe_groups(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.DescribeGroupsRequest)
        ops = responses.group_operations(request.api_version, body)
        groups = []
        for done, group_id in enumerate(dict.fromkeys(body.groups), 1):  # each once
            await turn_after(done)
            group = self.membership.groups.get(group_id)
            error = group_id_error(group_id, ApiKey.DESCRIBE_GROUPS)
            groups.append(responses.described_group(responses.DescribedGroup(group_id, error, group), ops))
        return m.DescribeGroupsResponse(groups=groups)

    async def list_groups(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.ListGroupsRequest)
        listed = self.membership.list_groups(request.api_version, body)
        return responses.list_groups_response(listed)

    async def delete_groups(self, request: Request, client_host: str) -> ResponseBody:
        """Only empty groups can be deleted (membership decides); deleting one tombstones its
        metadata and all its offsets in one write."""
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.DeleteGroupsRequest)
        results: dict[str, ErrorCode] = {}
        changes: list[Change] = []
        deleted: list[str] = []
        # Each group once (Kafka takes a set): a name listed twice was deleted by the first
        # and then answered GROUP_ID_NOT_FOUND by the second.
        for group_id in dict.fromkeys(body.groups_names):
            error = group_id_error(group_id, ApiKey.DELETE_GROUPS)
            group = self.membership.groups.get(group_id)
            if error is not None:
                results[group_id] = error
            elif group is None or group.is_(GroupState.DEAD):
                results[group_id] = ErrorCode.GROUP_ID_NOT_FOUND
            elif group.is_(GroupState.EMPTY):
                changes.extend(self.offsets.delete_group(group))
                deleted.append(group_id)
                results[group_id] = ErrorCode.NONE
            else:
                results[group_id] = ErrorCode.NON_EMPTY_GROUP
        if changes:
            try:
                await self.offsets.write_deletion(changes, deleted)
                log.info("deleted groups %s", deleted)
            except SluiceError as exc:
                log.warning("deleting groups %s failed in storage: %s", deleted, exc)
                for group_id in deleted:
                    results[group_id] = ErrorCode.COORDINATOR_NOT_AVAILABLE
        return responses.delete_groups_response(results)

    async def offset_delete(self, request: Request, client_host: str) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.OffsetDeleteRequest)
        top, errors = await self.offsets.delete(body)
        return responses.offset_delete_response(top, errors)
