"""One classic consumer group's metadata and state machine (after Kafka's GroupMetadata and
MemberMetadata): members, generations, protocol selection, leader, static members.

This module is pure bookkeeping: it never schedules anything or touches storage. The
coordinator drives it (who joins, when a rebalance completes, when a session expires) and owns
every timer, so the rules here can be read, and tested, without time or I/O.

States and the transitions Kafka allows::

    Empty --> PreparingRebalance --> CompletingRebalance --> Stable
      ^              |   ^                   |                  |
      +--------------+   +-------------------+------------------+
    any --> Dead (deleted, expired or unloaded)
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import field
from enum import StrEnum

from sluice.broker.groups.consumer_protocol import PROTOCOL_TYPE, parse_subscription
from sluice.dataclass import dataclass
from sluice.errors import ErrorCode
from sluice.protocol.primitives import ProtocolError


class GroupState(StrEnum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


_VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.DEAD: frozenset(GroupState),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}
    ),
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
}


class IllegalStateTransition(RuntimeError):
    """A bug in the coordinator, never a client's fault."""


@dataclass(frozen=True, slots=True)
class JoinMember:
    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    error: ErrorCode
    member_id: str
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader: str = ""
    members: tuple[JoinMember, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncResult:
    error: ErrorCode
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


Protocols = list[tuple[str, bytes]]


@dataclass(slots=True)
class JoinTally:
    """How many of a group's members await a JoinGroup answer, kept as their waiters are set
    and answered: whether everyone has joined is asked on every JoinGroup, and counting the
    members each time made a rebalance of n members cost n**2/2 checks (5,000 members
    rejoining took 4 s of the event loop)."""

    awaiting: int = 0


@dataclass(slots=True)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    protocols: Protocols
    assignment: bytes = b""
    join_waiter: asyncio.Future[JoinResult] | None = None
    """Set while the member awaits a JoinGroup answer. The member counts as joined even if its
    connection dropped (the future is then cancelled): Kafka cannot tell either."""
    sync_waiter: asyncio.Future[SyncResult] | None = None
    is_new: bool = False
    """Joined during the current rebalance and never completed one: may expire while waiting."""
    deadline: float = float("inf")
    """Session expiry, in the coordinator's clock (seconds)."""
    tally: JoinTally | None = None
    """Its group's count of members awaiting a JoinGroup answer, while it is a member."""

    @property
    def awaiting_join(self) -> bool:
        return self.join_waiter is not None

    @property
    def awaiting_sync(self) -> bool:
        return self.sync_waiter is not None

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    def protocol_names(self) -> list[str]:
        """Each name is listed once: JoinGroup drops a member's repeated names as it reads them
        (membership._distinct_protocols), and a stored member has its group's one protocol."""
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        raise KeyError(protocol)

    def matches(self, protocols: Protocols) -> bool:
        return self.protocols == protocols

    def vote(self, candidates: set[str]) -> str:
        """This member's most preferred protocol among those every member supports."""
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise ValueError(f"member {self.member_id} supports none of {sorted(candidates)}")

    def expired(self, now: float) -> bool:
        """Kafka's hasSatisfiedHeartbeat, inverted: members in the middle of a rebalance are
        exempt (the rebalance and sync timeouts watch them), except new ones."""
        if not self.is_new and (self.awaiting_join or self.awaiting_sync):
            return False
        return now >= self.deadline

    def set_join_waiter(self, waiter: asyncio.Future[JoinResult] | None) -> None:
        """The only way ``join_waiter`` changes, so that the group's tally stays exact."""
        if self.tally is not None:
            self.tally.awaiting += (waiter is not None) - (self.join_waiter is not None)
        self.join_waiter = waiter

    def answer_join(self, result: JoinResult) -> bool:
        waiter = self.join_waiter
        self.set_join_waiter(None)
        if waiter is None:
            return False
        if not waiter.done():
            waiter.set_result(result)
        return True

    def answer_sync(self, result: SyncResult) -> bool:
        waiter, self.sync_waiter = self.sync_waiter, None
        if waiter is None:
            return False
        if not waiter.done():
            waiter.set_result(result)
        return True


def new_member_id(client_id: str, group_instance_id: str | None) -> str:
    """Kafka's form (prefix-uuid): the prefix makes ids readable in DescribeGroups."""
    return f"{group_instance_id if group_instance_id is not None else client_id}-{uuid.uuid4()}"


@dataclass(slots=True)
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    state_timestamp: int = 0
    """Wall-clock ms of the last transition: an empty group's offsets expire counting from it."""
    protocol_type: str | None = None
    protocol_name: str | None = None
    generation_id: int = 0
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)
    """group.instance.id -> current member id."""
    pending_members: dict[str, float] = field(default_factory=dict)
    """Member ids handed out with MEMBER_ID_REQUIRED, with the deadline to come back by."""
    pending_sync: set[str] = field(default_factory=set)
    supported: Counter[str] = field(default_factory=Counter)
    subscribed_topics: frozenset[str] | None = None
    """Topics the current generation consumes, when every member's subscription parsed."""
    new_member_added: bool = False
    join_deadline: float | None = None
    """PreparingRebalance: when the join phase completes even if members are missing."""
    initial_delay_ms: int = 0
    initial_remaining_ms: int = 0
    """group.initial.rebalance.delay.ms bookkeeping (Kafka's InitialDelayedJoin)."""
    sync_deadline: float | None = None
    """CompletingRebalance/Stable: when members that never sent SyncGroup are removed."""
    storing_generation: int | None = None
    """The generation whose leader's assignment is being (or was) stored: stored once."""
    rebalances: int = 0
    """Rebalances started since this broker loaded or created the group (metrics)."""
    tally: JoinTally = field(default_factory=JoinTally)

    # -- state --------------------------------------------------------------------------------------

    def is_(self, state: GroupState) -> bool:
        return self.state is state

    def transition(self, state: GroupState, now_ms: int) -> None:
        if self.state not in _VALID_PREVIOUS[state]:
            raise IllegalStateTransition(
                f"group {self.group_id!r}: {self.state} -> {state} is not a valid transition"
            )
        self.state = state
        self.state_timestamp = now_ms

    def can_rebalance(self) -> bool:
        return self.state in _VALID_PREVIOUS[GroupState.PREPARING_REBALANCE]

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def is_consumer_group(self) -> bool:
        return self.protocol_type == PROTOCOL_TYPE

    # -- membership ---------------------------------------------------------------------------------

    def has(self, member_id: str) -> bool:
        return member_id in self.members

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id == member_id

    def add(self, member: Member, waiter: asyncio.Future[JoinResult] | None = None) -> None:
        if not self.members:
            self.protocol_type = member.protocol_type
        if self.leader_id is None:
            self.leader_id = member.member_id
        self.members[member.member_id] = member
        self.supported.update(member.protocol_names())
        if member.group_instance_id is not None:
            self.static_members[member.group_instance_id] = member.member_id
        if member.tally is not self.tally:
            member.tally = self.tally
            self.tally.awaiting += member.join_waiter is not None
        member.set_join_waiter(waiter)
        self.pending_members.pop(member.member_id, None)

    def remove(self, member_id: str) -> Member | None:
        """Drop a member (or a pending id). The caller answers its waiters first."""
        self.pending_members.pop(member_id, None)
        self.pending_sync.discard(member_id)
        member = self.members.pop(member_id, None)
        if member is None:
            return None
        if member.tally is self.tally:
            self.tally.awaiting -= member.join_waiter is not None
            member.tally = None
        self.supported.subtract(member.protocol_names())
        self.supported += Counter()  # drop zero counts
        if member.group_instance_id is not None and (
            self.static_members.get(member.group_instance_id) == member_id
        ):
            del self.static_members[member.group_instance_id]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return member

    def update_member(
        self,
        member: Member,
        protocols: Protocols,
        waiter: asyncio.Future[JoinResult] | None,
        *,
        rebalance_timeout_ms: int,
        session_timeout_ms: int,
    ) -> None:
        """A rejoin: its protocols and timeouts replace the old ones (Kafka's updateMember), so a
        consumer redeployed with a longer session or poll interval is judged by the new ones."""
        self.supported.subtract(member.protocol_names())
        member.protocols = protocols
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        self.supported.update(member.protocol_names())
        self.supported += Counter()
        if waiter is not None:
            if member.join_waiter is not None and member.join_waiter is not waiter:
                # A retried JoinGroup supersedes the first; answer that one so no request hangs.
                member.answer_join(JoinResult(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id))
            member.set_join_waiter(waiter)

    def replace_static_member(self, instance_id: str, old_id: str, new_id: str) -> Member:
        """A static member came back with a new member id: the old id is fenced at once (its
        pending JoinGroup/SyncGroup answered FENCED_INSTANCE_ID), the member keeps its place,
        assignment and leadership."""
        member = self.members.pop(old_id)
        member.answer_join(JoinResult(ErrorCode.FENCED_INSTANCE_ID, old_id))
        member.answer_sync(SyncResult(ErrorCode.FENCED_INSTANCE_ID))
        member.member_id = new_id
        self.members[new_id] = member
        if self.leader_id == old_id:
            self.leader_id = new_id
        if old_id in self.pending_sync:
            self.pending_sync.discard(old_id)
            self.pending_sync.add(new_id)
        self.static_members[instance_id] = new_id
        return member

    def static_member_id(self, instance_id: str) -> str | None:
        return self.static_members.get(instance_id)

    def validate_member(self, member_id: str, instance_id: str | None) -> ErrorCode | None:
        """Kafka's validateCurrentMember: a known static instance with a different member id is
        a fenced zombie; an unknown instance or member id is unknown."""
        if instance_id is not None:
            current = self.static_members.get(instance_id)
            if current is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if current != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in self.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return None

    # -- protocols ----------------------------------------------------------------------------------

    def supports_protocols(self, protocol_type: str, protocols: Protocols) -> bool:
        """A joiner must speak the group's protocol type and at least one protocol every
        current member supports (that is what lets a group mix client libraries)."""
        names = {name for name, _ in protocols}
        if self.is_(GroupState.EMPTY) or not self.members:
            return bool(protocol_type) and bool(names)
        return self.protocol_type == protocol_type and any(
            self.supported[name] == len(self.members) for name in names
        )

    def candidate_protocols(self) -> set[str]:
        n = len(self.members)
        return {name for name, count in self.supported.items() if count == n}

    def select_protocol(self) -> str:
        """Each member votes for its most preferred common protocol; most votes wins (ties go to
        the protocol voted first, so the choice is deterministic)."""
        candidates = self.candidate_protocols()
        votes: Counter[str] = Counter()
        for member in self.members.values():
            votes[member.vote(candidates)] += 1
        best = max(votes.values())
        return next(name for name, count in votes.items() if count == best)

    @property
    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    # -- rebalance ------------------------------------------------------------------------------------

    def has_all_members_joined(self) -> bool:
        return self.tally.awaiting == len(self.members) and not self.pending_members

    def not_yet_rejoined(self) -> list[Member]:
        return [m for m in self.members.values() if not m.awaiting_join]

    def maybe_elect_new_joined_leader(self) -> bool:
        """Keep the leader if it rejoined, else pick any rejoined member; False if none did."""
        if self.leader_id is None:
            return False
        leader = self.members.get(self.leader_id)
        if leader is not None and leader.awaiting_join:
            return True
        for member_id, member in self.members.items():
            if member.awaiting_join:
                self.leader_id = member_id
                return True
        return False

    def init_next_generation(self, now_ms: int) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(GroupState.COMPLETING_REBALANCE, now_ms)
        else:
            self.protocol_name = None
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition(GroupState.EMPTY, now_ms)
        self.pending_sync.clear()
        self.sync_deadline = None

    def compute_subscribed_topics(self) -> frozenset[str] | None:
        """Kafka's rule: known only for consumer groups whose subscriptions all parse."""
        if not self.is_consumer_group:
            return None
        if not self.members:
            return frozenset()
        if self.protocol_name is None:
            return None
        topics: set[str] = set()
        try:
            for member in self.members.values():
                topics.update(parse_subscription(member.metadata(self.protocol_name)).topics)
        except (ProtocolError, KeyError):
            return None
        return frozenset(topics)

    def is_subscribed_to(self, topic: str) -> bool:
        """Unknown subscriptions count as subscribed: never delete what might be in use."""
        return self.subscribed_topics is None or topic in self.subscribed_topics

    def current_member_metadata(self) -> tuple[JoinMember, ...]:
        assert self.protocol_name is not None
        return tuple(
            JoinMember(m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
            for m in self.members.values()
        )

    def join_result(self, member: Member, *, leader: str | None = None) -> JoinResult:
        """The successful JoinGroup answer for ``member`` in the current generation (the member
        list goes to the leader only)."""
        leader_id = self.leader_id if leader is None else leader
        return JoinResult(
            ErrorCode.NONE,
            member.member_id,
            self.generation_id,
            self.protocol_type,
            self.protocol_name,
            leader_id or "",
            self.current_member_metadata() if member.member_id == leader_id else (),
        )
