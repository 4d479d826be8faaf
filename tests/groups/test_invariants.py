"""Seeded random interleavings of every membership API (joins with odd protocol lists and
timeouts, stale and unknown ids, static instances, syncs, heartbeats, leaves, commits, deletions,
dropped connections, time passing), checking after every step what must always hold: no request
fails inside the coordinator, the group's bookkeeping agrees with its members, and, once time
has passed, no request is left parked."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from sluice.broker.groups.group import GroupState
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, RequestBody
from sluice.protocol import messages as m
from tests.groups.conftest import Harness, sub

PROTOCOLS = ["range", "roundrobin", "sticky"]


def assert_consistent(h: Harness) -> None:
    for g in h.coordinator.groups.values():
        counted: Counter[str] = Counter()
        for member in g.members.values():
            counted.update(member.protocol_names())
        assert +counted == +g.supported, g.group_id
        if g.members:
            assert g.leader_id in g.members, g.group_id
        for instance_id, member_id in g.static_members.items():
            assert g.members[member_id].group_instance_id == instance_id
        for member_id, member in g.members.items():
            assert member.member_id == member_id
            if member.group_instance_id is not None:
                assert g.static_members.get(member.group_instance_id) == member_id
        if g.is_(GroupState.EMPTY):
            assert not g.members
        if g.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            assert g.members and g.protocol_name is not None
            assert all(g.protocol_name in mm.protocol_names() for mm in g.members.values())
        assert g.pending_sync <= set(g.members)
        # The tally JoinGroup reads instead of counting the members (linear rebalances).
        assert g.tally.awaiting == sum(mm.awaiting_join for mm in g.members.values()), g.group_id
        assert all(mm.tally is g.tally for mm in g.members.values()), g.group_id


class Fuzzer:
    def __init__(self, h: Harness, seed: int) -> None:
        self.h = h
        self.rnd = random.Random(seed)
        self.ids: list[str] = []
        self.tasks: list[asyncio.Task[Any]] = []

    def member_id(self) -> str:
        return self.rnd.choice([*self.ids, "", "ghost"])

    def generation(self, group: str) -> int:
        g = self.h.coordinator.groups.get(group)
        if g is not None and self.rnd.random() < 0.8:
            return g.generation_id
        return self.rnd.randint(-1, 5)

    def send(self, api: ApiKey, version: int, body: RequestBody) -> None:
        # Not settled here: requests interleave with one another and with storage writes.
        self.tasks.append(self.h.loop.create_task(self.h.over_the_wire(api, version, body, "c")))

    def step(self) -> None:
        rnd, group = self.rnd, self.rnd.choice(["g", "g2"])
        op = rnd.random()
        if op < 0.35:
            protocols = [
                m.JoinGroupRequestProtocol(name=rnd.choice(PROTOCOLS), metadata=sub("t"))
                for _ in range(rnd.randint(0, 3))
            ]
            self.send(
                ApiKey.JOIN_GROUP,
                rnd.choice([0, 3, 4, 5, 7]),
                m.JoinGroupRequest(
                    group_id=group,
                    session_timeout_ms=rnd.choice([5000, 6000, 10_000]),
                    rebalance_timeout_ms=rnd.choice([-1, 0, 3000, 30_000]),
                    member_id=self.member_id(),
                    group_instance_id=rnd.choice([None, None, "s1", "s2"]),
                    protocol_type=rnd.choice(["consumer", "consumer", "connect", ""]),
                    protocols=protocols,
                ),
            )
        elif op < 0.55:
            self.send(
                ApiKey.SYNC_GROUP,
                rnd.choice([0, 3, 5]),
                m.SyncGroupRequest(
                    group_id=group,
                    generation_id=self.generation(group),
                    member_id=self.member_id(),
                    group_instance_id=rnd.choice([None, "s1"]),
                    assignments=[
                        m.SyncGroupRequestAssignment(member_id=x, assignment=b"a")
                        for x in rnd.sample(self.ids, min(len(self.ids), 2))
                    ],
                ),
            )
        elif op < 0.65:
            self.send(
                ApiKey.HEARTBEAT,
                4,
                m.HeartbeatRequest(
                    group_id=group,
                    generation_id=self.generation(group),
                    member_id=self.member_id(),
                    group_instance_id=rnd.choice([None, "s1"]),
                ),
            )
        elif op < 0.72:
            leaving = [
                m.MemberIdentity(
                    member_id=rnd.choice([self.member_id(), ""]),
                    group_instance_id=rnd.choice([None, "s1", "s2"]),
                )
                for _ in range(rnd.randint(1, 3))
            ]
            self.send(
                ApiKey.LEAVE_GROUP,
                rnd.choice([3, 4]),
                m.LeaveGroupRequest(group_id=group, members=leaving),
            )
        elif op < 0.80:
            partition = m.OffsetCommitRequestPartition(partition_index=0, committed_offset=1)
            self.send(
                ApiKey.OFFSET_COMMIT,
                8,
                m.OffsetCommitRequest(
                    group_id=group,
                    generation_id_or_member_epoch=rnd.choice([-1, self.generation(group)]),
                    member_id=self.member_id(),
                    group_instance_id=rnd.choice([None, "s1"]),
                    topics=[m.OffsetCommitRequestTopic(name="t", partitions=[partition])],
                ),
            )
        elif op < 0.85:
            self.send(ApiKey.DELETE_GROUPS, 2, m.DeleteGroupsRequest(groups_names=[group]))
        else:
            self.h.advance(rnd.choice([0.5, 3, 7, 31]))
        self.h.settle()
        if self.tasks and rnd.random() < 0.1:
            rnd.choice(self.tasks).cancel()  # a client's connection dropped while parked
        self.collect()
        assert_consistent(self.h)

    def collect(self) -> None:
        for task in [t for t in self.tasks if t.done()]:
            self.tasks.remove(task)
            if task.cancelled():
                continue
            assert task.exception() is None, repr(task.exception())
            answer = task.result()
            assert getattr(answer, "error_code", 0) != ErrorCode.UNKNOWN_SERVER_ERROR, answer
        for g in self.h.coordinator.groups.values():
            for member_id in [*g.members, *g.pending_members]:
                if member_id not in self.ids:
                    self.ids.append(member_id)


@pytest.mark.parametrize("seed", range(12))
def test_random_interleavings_keep_groups_consistent(h: Harness, seed: int) -> None:
    fuzz = Fuzzer(h, seed)
    for _ in range(150):
        fuzz.step()
    for _ in range(12):  # past every session, rebalance and new-member timeout
        h.advance(60)
    if fuzz.tasks:  # answers waiting on storage writes still in flight: a generous bound
        h.run(asyncio.wait(fuzz.tasks, timeout=10))
    h.settle()
    fuzz.collect()
    assert [t for t in fuzz.tasks if not t.done()] == []
