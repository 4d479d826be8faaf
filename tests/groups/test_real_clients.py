"""Consumer groups with real clients against a real broker (EmbeddedBroker or ``sluice serve``):
partition sharing, failover after SIGKILL, at-least-once delivery, mixed client libraries,
offsets across restarts, cooperative-sticky rebalances and refused commits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import confluent_kafka as ck
import pytest

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.testing import BrokerProcess, EmbeddedBroker, create_topic
from tests.groups.conftest import join_body
from tests.groups.realclients import (
    SESSION_TIMEOUT_MS,
    ChildMember,
    WireClient,
    committed,
    produce,
    wait_until,
)

PARTITIONS = 6


@pytest.fixture
def children() -> Iterator[Callable[..., ChildMember]]:
    made: list[ChildMember] = []

    def make(*args: Any) -> ChildMember:
        child = ChildMember(*args)
        made.append(child)
        return child

    yield make
    for child in made:
        child.kill()  # a child still running is killed; every child's pipes are closed


def test_three_members_share_partitions_and_survive_a_sigkill(
    sluice_fresh_broker: EmbeddedBroker, children: Callable[..., ChildMember]
) -> None:
    bootstrap, topic, group = sluice_fresh_broker.bootstrap_servers, "work", "workers"
    create_topic(bootstrap, topic, PARTITIONS)
    members = [children(bootstrap, topic, group) for _ in range(3)]

    def split_evenly(ms: list[ChildMember], each: int) -> bool:
        owned = [set(c.assignment) for c in ms]
        return all(len(o) == each for o in owned) and set().union(*owned) == set(range(PARTITIONS))

    wait_until(lambda: split_evenly(members, 2), 30, "three members owning two partitions each")

    first = [(i % PARTITIONS, f"a{i}") for i in range(300)]
    produce(bootstrap, topic, first)
    wanted = {v for _, v in first}
    wait_until(
        lambda: wanted <= {v for c in members for _, _, v in c.processed},
        30,
        "the first batch processed",
    )

    victim, survivors = members[0], members[1:]
    victim_partitions = set(victim.assignment)
    victim.kill()
    killed_at = time.monotonic()
    second = [(i % PARTITIONS, f"b{i}") for i in range(300)]
    produce(bootstrap, topic, second)
    took = wait_until(lambda: split_evenly(survivors, 3), 30, "the survivors taking over")
    # Detecting the death takes the session timeout; the rebalance after it is quick.
    assert took <= SESSION_TIMEOUT_MS / 1000 + 4, took
    assert victim_partitions <= set().union(*(set(c.assignment) for c in survivors))

    wanted |= {v for _, v in second}
    wait_until(
        lambda: wanted <= {v for c in members for _, _, v in c.processed},
        30,
        "every message processed at least once",
    )
    for c in survivors:
        c.stop()
    # Commits after processing: the group's committed position is the end of every partition,
    # so nothing is lost and a restart would not re-deliver.
    assert committed(bootstrap, group, topic, PARTITIONS) == {p: 100 for p in range(PARTITIONS)}
    processed = [(p, o) for c in members for p, o, _ in c.processed]
    assert set(processed) == {(p, o) for p in range(PARTITIONS) for o in range(100)}
    assert time.monotonic() - killed_at < 60


# -- a group of three client libraries ---------------------------------------------------------------


class ThreadMember:
    """A consumer of one library polling in a thread; ``assignment`` is its current view."""

    def __init__(self, name: str, run: Callable[[ThreadMember], None]) -> None:
        self.name = name
        self.assignment: frozenset[int] = frozenset()
        self.consumed: list[tuple[int, int]] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self._run = run
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self._run(self)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), f"{self.name} did not stop"
        if self.error is not None:
            raise self.error


def confluent_member(
    bootstrap: str, topic: str, group: str, strategy: str
) -> Callable[[ThreadMember], None]:
    def run(me: ThreadMember) -> None:
        c = ck.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "partition.assignment.strategy": strategy,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 300,
                "auto.offset.reset": "earliest",
                "log_level": 3,
            }
        )
        c.subscribe([topic])
        try:
            while not me.stopping.is_set():
                msg = c.poll(0.1)
                me.assignment = frozenset(tp.partition for tp in c.assignment())
                if msg is not None and msg.error() is None:
                    me.consumed.append((int(msg.partition() or 0), int(msg.offset() or 0)))
        finally:
            c.close()

    return run


def kafka_python_member(bootstrap: str, topic: str, group: str) -> Callable[[ThreadMember], None]:
    from kafka import KafkaConsumer  # type: ignore[import-untyped]
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor  # type: ignore[import-untyped]

    def run(me: ThreadMember) -> None:
        c = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            partition_assignment_strategy=[RoundRobinPartitionAssignor],
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=300,
            auto_offset_reset="earliest",
        )
        try:
            while not me.stopping.is_set():
                batches = c.poll(timeout_ms=100)
                me.assignment = frozenset(tp.partition for tp in c.assignment())
                for tp, records in batches.items():
                    me.consumed.extend((tp.partition, r.offset) for r in records)
        finally:
            c.close()

    return run


def aiokafka_member(bootstrap: str, topic: str, group: str) -> Callable[[ThreadMember], None]:
    import aiokafka  # type: ignore[import-untyped]
    from aiokafka.coordinator.assignors.roundrobin import (  # type: ignore[import-untyped]
        RoundRobinPartitionAssignor,
    )

    async def main(me: ThreadMember) -> None:
        c = aiokafka.AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            partition_assignment_strategy=(RoundRobinPartitionAssignor,),
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=300,
            auto_offset_reset="earliest",
        )
        await c.start()
        try:
            while not me.stopping.is_set():
                batches = await c.getmany(timeout_ms=100)
                me.assignment = frozenset(tp.partition for tp in c.assignment())
                for tp, records in batches.items():
                    me.consumed.extend((tp.partition, r.offset) for r in records)
        finally:
            await c.stop()

    return lambda me: asyncio.run(main(me))


def test_mixed_client_libraries_split_partitions_without_overlap(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    bootstrap, topic, group = sluice_fresh_broker.bootstrap_servers, "mixed", "polyglot"
    create_topic(bootstrap, topic, PARTITIONS)
    members = [
        ThreadMember("confluent", confluent_member(bootstrap, topic, group, "roundrobin")),
        ThreadMember("kafka-python", kafka_python_member(bootstrap, topic, group)),
        ThreadMember("aiokafka", aiokafka_member(bootstrap, topic, group)),
    ]
    try:

        def split() -> bool:
            owned = [mb.assignment for mb in members]
            return all(len(o) == 2 for o in owned) and frozenset().union(*owned) == frozenset(
                range(PARTITIONS)
            )

        wait_until(split, 60, "three libraries owning two partitions each")
        wire = WireClient(bootstrap)
        try:
            described = wire.call(
                ApiKey.DESCRIBE_GROUPS, 5, m.DescribeGroupsRequest(groups=[group])
            ).groups[0]
        finally:
            wire.close()
        assert described.group_state == "Stable" and described.protocol_data == "roundrobin"
        assert len(described.members) == 3
        # Records produced now are each read once, by the member that owns their partition.
        produce(bootstrap, topic, [(i % PARTITIONS, f"m{i}") for i in range(60)])
        wait_until(
            lambda: sum(len(mb.consumed) for mb in members) >= 60, 30, "every record consumed"
        )
        consumed = [pair for mb in members for pair in mb.consumed]
        assert sorted(consumed) == sorted({(p, o) for p in range(PARTITIONS) for o in range(10)})
        for mb in members:
            assert {p for p, _ in mb.consumed} <= mb.assignment, mb.name
    finally:
        for mb in members:
            mb.stop()


# -- cooperative-sticky ---------------------------------------------------------------------------------


def test_cooperative_sticky_moves_only_what_must_move(sluice_fresh_broker: EmbeddedBroker) -> None:
    bootstrap, topic, group = sluice_fresh_broker.bootstrap_servers, "coop", "cooperative"
    create_topic(bootstrap, topic, PARTITIONS)
    log: list[tuple[str, str, frozenset[int]]] = []
    lock = threading.Lock()

    def member(name: str) -> Callable[[ThreadMember], None]:
        def run(me: ThreadMember) -> None:
            c = ck.Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": group,
                    "client.id": name,
                    "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": SESSION_TIMEOUT_MS,
                    "heartbeat.interval.ms": 300,
                    "log_level": 3,
                }
            )

            def on_assign(_c: ck.Consumer, tps: list[ck.TopicPartition]) -> None:
                with lock:
                    log.append((name, "assign", frozenset(tp.partition for tp in tps)))

            def on_revoke(_c: ck.Consumer, tps: list[ck.TopicPartition]) -> None:
                with lock:
                    log.append((name, "revoke", frozenset(tp.partition for tp in tps)))

            c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
            try:
                while not me.stopping.is_set():
                    c.poll(0.1)
                    me.assignment = frozenset(tp.partition for tp in c.assignment())
            finally:
                c.close()

        return run

    def revoked(name: str) -> set[int]:
        with lock:
            return set().union(*(ps for n, kind, ps in log if n == name and kind == "revoke"))

    members: list[ThreadMember] = []
    try:
        members.append(ThreadMember("c1", member("c1")))
        wait_until(lambda: len(members[0].assignment) == 6, 30, "c1 owning everything")
        members.append(ThreadMember("c2", member("c2")))
        wait_until(
            lambda: [len(x.assignment) for x in members] == [3, 3], 30, "an even split of two"
        )
        kept = set(members[0].assignment)
        assert revoked("c1") == set(range(PARTITIONS)) - kept  # only what moved to c2
        assert revoked("c2") == set()
        members.append(ThreadMember("c3", member("c3")))
        wait_until(
            lambda: [len(x.assignment) for x in members] == [2, 2, 2], 30, "an even split of three"
        )
        # Each of c1 and c2 gave up exactly one partition; nothing else was revoked from anyone.
        assert len(revoked("c1")) == 4 and len(revoked("c2")) == 1 and revoked("c3") == set()
        assert members[0].assignment <= kept
        owned = [x.assignment for x in members]
        assert frozenset().union(*owned) == frozenset(range(PARTITIONS))
    finally:
        for mb in reversed(members):
            mb.stop()


# -- offsets across restarts ------------------------------------------------------------------------


def consume_and_commit(bootstrap: str, topic: str, group: str, count: int) -> ck.Consumer:
    """A confluent-kafka member that reads ``count`` records of partition 0 and commits after
    them (synchronously: acknowledged only once durable). Returned open."""
    c = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": 300,
            "log_level": 3,
        }
    )
    c.subscribe([topic])
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while len(seen) < count and time.monotonic() < deadline:
        msg = c.poll(0.2)
        if msg is not None and msg.error() is None:
            seen.append(int(msg.offset() or 0))
            if len(seen) == count:
                c.commit(message=msg, asynchronous=False)
    assert seen == list(range(count))
    return c


def first_offset_kafka_python(bootstrap: str, topic: str, group: str) -> int:
    """Where a kafka-python member of ``group`` starts: its committed offset."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=300,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for records in c.poll(timeout_ms=200).values():
                return int(records[0].offset)
        raise AssertionError("kafka-python consumed nothing")
    finally:
        c.close()


def test_committed_offsets_survive_a_clean_restart(sluice_fresh_broker: EmbeddedBroker) -> None:
    bootstrap, topic, group = sluice_fresh_broker.bootstrap_servers, "resume", "resumer"
    create_topic(bootstrap, topic, 1)
    produce(bootstrap, topic, [(0, f"r{i}") for i in range(20)])
    consume_and_commit(bootstrap, topic, group, 8).close()
    sluice_fresh_broker.restart()
    assert committed(sluice_fresh_broker.bootstrap_servers, group, topic, 1) == {0: 8}
    assert first_offset_kafka_python(sluice_fresh_broker.bootstrap_servers, topic, group) == 8


def test_committed_offsets_survive_sigkill(sluice_process: BrokerProcess) -> None:
    bootstrap, topic, group = sluice_process.bootstrap_servers, "crashy", "survivors"
    create_topic(bootstrap, topic, 1)
    produce(bootstrap, topic, [(0, f"s{i}") for i in range(20)])
    member = consume_and_commit(bootstrap, topic, group, 12)
    sluice_process.kill()  # right after the commit was acknowledged; the member is still in the group
    sluice_process.start()
    # The group came back with its member (its metadata is durable too), so the member's own
    # LeaveGroup is understood and the next member starts where it committed.
    member.close()
    assert committed(bootstrap, group, topic, 1) == {0: 12}
    assert first_offset_kafka_python(bootstrap, topic, group) == 12


# -- refused commits ---------------------------------------------------------------------------------


def test_commits_from_unknown_members_and_stale_generations_are_refused(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    bootstrap, topic, group = sluice_fresh_broker.bootstrap_servers, "guarded", "guarded-group"
    create_topic(bootstrap, topic, 2)
    wire = WireClient(bootstrap)
    try:
        coordinator = wire.call(ApiKey.FIND_COORDINATOR, 3, m.FindCoordinatorRequest(key=group))
        assert coordinator.error_code == ErrorCode.NONE
        assert f"{coordinator.host}:{coordinator.port}" == bootstrap
        first = wire.call(
            ApiKey.JOIN_GROUP, 5, join_body(group, session_timeout_ms=SESSION_TIMEOUT_MS)
        )
        assert first.error_code == ErrorCode.MEMBER_ID_REQUIRED
        joined = wire.call(
            ApiKey.JOIN_GROUP,
            5,
            join_body(group, first.member_id, session_timeout_ms=SESSION_TIMEOUT_MS),
        )
        me, gen = joined.member_id, joined.generation_id
        synced = wire.call(
            ApiKey.SYNC_GROUP,
            3,
            m.SyncGroupRequest(group_id=group, generation_id=gen, member_id=me),
        )
        assert synced.error_code == ErrorCode.NONE

        def commit(generation: int, member_id: str) -> int:
            resp = wire.call(
                ApiKey.OFFSET_COMMIT,
                8,
                m.OffsetCommitRequest(
                    group_id=group,
                    generation_id_or_member_epoch=generation,
                    member_id=member_id,
                    topics=[
                        m.OffsetCommitRequestTopic(
                            name=topic,
                            partitions=[
                                m.OffsetCommitRequestPartition(
                                    partition_index=0, committed_offset=3
                                )
                            ],
                        )
                    ],
                ),
            )
            code: int = resp.topics[0].partitions[0].error_code
            return code

        assert commit(gen, "not-a-member") == ErrorCode.UNKNOWN_MEMBER_ID
        assert commit(gen - 1, me) == ErrorCode.ILLEGAL_GENERATION
        assert commit(-1, "") == ErrorCode.UNKNOWN_MEMBER_ID  # only members commit to a live group
        assert commit(gen, me) == ErrorCode.NONE
        left = wire.call(
            ApiKey.LEAVE_GROUP,
            4,
            m.LeaveGroupRequest(group_id=group, members=[m.MemberIdentity(member_id=me)]),
        )
        assert left.members[0].error_code == ErrorCode.NONE
        assert commit(gen, me) == ErrorCode.UNKNOWN_MEMBER_ID
        assert commit(-1, "") == ErrorCode.NONE  # an empty group takes admin (simple) commits
    finally:
        wire.close()
    # A real client sees the refusal as the error its API documents.
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        found = c.committed([ck.TopicPartition(topic, 0)], timeout=30)
        assert found[0].offset == 3
    finally:
        c.close()


# -- static membership --------------------------------------------------------------------------------


def test_static_member_restart_gets_its_partitions_back_without_a_rebalance(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    bootstrap, topic, group = sluice_fresh_broker.bootstrap_servers, "static", "statics"
    create_topic(bootstrap, topic, 4)

    def member(instance: str) -> ck.Consumer:
        c = ck.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "group.instance.id": instance,
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": 300,
                "log_level": 3,
            }
        )
        c.subscribe([topic])
        return c

    def owned(c: ck.Consumer) -> set[int]:
        return {int(tp.partition) for tp in c.assignment()}

    def spin(consumers: list[ck.Consumer], condition: Callable[[], bool]) -> None:
        def step() -> bool:
            for c in consumers:
                c.poll(0.05)
            return condition()

        wait_until(step, 30, "the static members' assignments")

    a, b = member("A"), member("B")
    spin([a, b], lambda: len(owned(a)) == len(owned(b)) == 2)
    b_partitions, a_partitions = owned(b), owned(a)
    wire = WireClient(bootstrap)
    try:
        generation = wire.call(
            ApiKey.DESCRIBE_GROUPS, 5, m.DescribeGroupsRequest(groups=[group])
        ).groups[0]
        b.close()  # a static member leaves no LeaveGroup behind: its place is kept
        b = member("B")
        spin([a, b], lambda: owned(b) == b_partitions)
        assert owned(a) == a_partitions
        after = wire.call(
            ApiKey.DESCRIBE_GROUPS, 5, m.DescribeGroupsRequest(groups=[group])
        ).groups[0]
    finally:
        wire.close()
        a.close()
        b.close()
    assert after.group_state == "Stable"
    assert {x.group_instance_id for x in after.members} == {"A", "B"}
    # Same members by instance, B under a new member id, and no new generation was needed: the
    # assignment bytes are the ones the leader made before B restarted.
    assert {x.group_instance_id: bytes(x.member_assignment) for x in after.members} == {
        x.group_instance_id: bytes(x.member_assignment) for x in generation.members
    }
