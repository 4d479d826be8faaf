"""Every API and version the broker advertises, fed generated requests: well formed but with
hostile values (extreme integers, null and odd strings, repeated entries, real and internal topic
names), and the same with bytes flipped, cut, extended or overwritten by a lying length.

Each request is answered or closes its one connection; an ApiVersions pipelined behind it is
answered (nothing hangs); the broker logs no error (a handler that fails on input is a bug even
though the connection is then closed politely: the autouse guard of tests/server/conftest.py);
connections and their tasks are all gone afterwards; a witness's data is intact. What the fuzzer
found is kept below as plain regression tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import struct
import time
from typing import Any

from sluice.broker.broker import ADVERTISED
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, encode_request
from sluice.protocol import messages as m
from sluice.protocol.messages import APIS
from sluice.protocol.samples import sample
from sluice.testing import EmbeddedBroker
from tests.server.conftest import MakeBroker, WitnessFor
from tests.server.wire import (
    I32,
    ConnectionClosed,
    WireClient,
    batch,
    connections_settle,
    create_topic,
    fetch,
    list_offset,
    produce,
    record_offsets,
    record_values,
)

_TOPICS = ["fz", "fz", "one", "__consumer_offsets", "__transaction_state", "missing"]
_IDS = ["g", "tx", "", "retention.ms", "cleanup.policy", "segment.bytes", "max.message.bytes"]
_VALUES = ["-1", "0", "1", "compact", "9" * 20, "1.5", "", "delete,compact", "LogAppendTime"]
_INTS = [-1, 0, 1, 2, 3, -2, -3, 2**31 - 1, -(2**31), 100_000]
_INT_FIELDS = {
    "partition_index", "partition", "partitions", "count", "num_partitions",
    "replication_factor", "offset", "committed_offset", "timestamp", "fetch_offset",
    "log_start_offset", "partition_max_bytes", "max_bytes", "min_bytes", "current_leader_epoch",
    "leader_epoch", "producer_id", "producer_epoch", "generation_id", "session_timeout_ms",
    "isolation_level", "acks", "transaction_timeout_ms", "duration_filter",
}  # fmt: skip


def _steer(obj: Any, rng: random.Random) -> None:
    """Point a generated request at things that exist (topics, groups, configs), with values at
    the edges, and repeat some entries: a random request mostly names nothing."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, list):
            for item in value:
                _steer(item, rng)
            if value and rng.random() < 0.1:
                value.extend([value[0]] * rng.choice([1, 2, 50]))
        elif dataclasses.is_dataclass(value):
            _steer(value, rng)
        elif isinstance(value, str) and rng.random() < 0.7:
            if f.name in ("name", "topic", "topic_name", "resource_name"):
                setattr(obj, f.name, rng.choice(_TOPICS))
            elif f.name in ("group_id", "transactional_id", "key", "config_name"):
                setattr(obj, f.name, rng.choice(_IDS))
            elif f.name == "value":
                setattr(obj, f.name, rng.choice(_VALUES))
        elif type(value) is int and f.name in _INT_FIELDS and rng.random() < 0.7:
            setattr(obj, f.name, rng.choice(_INTS))


def _bounded(obj: Any) -> None:
    """No request may legally wait long: a long poll, an acks=all or a rebalance timeout are
    answered late by design, not hung. Keep them short everywhere in the tree."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, list):
            for item in value:
                _bounded(item)
        elif dataclasses.is_dataclass(value):
            _bounded(value)
        elif f.name in ("timeout_ms", "max_wait_ms", "rebalance_timeout_ms") and type(value) is int:
            setattr(obj, f.name, min(abs(value), 100))


_LIES = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00", b"\xff\xff\xff\x0f"]


def _mutate(rng: random.Random, frame: bytes) -> bytes:
    """Flip, overwrite, cut, extend, or plant a lying length or count in the body (past the
    12-byte fixed header, so the request still names its API and version)."""
    body = bytearray(frame[4:])

    def pos() -> int:
        return rng.randrange(12, len(body)) if len(body) > 12 else len(body) - 1

    choice = rng.randrange(5)
    if choice == 0:
        for _ in range(rng.randint(1, 4)):
            body[pos()] ^= 1 << rng.randrange(8)
    elif choice == 1:
        body[pos()] = rng.choice([0x00, 0xFF, 0x7F, 0x80, 0x01])
    elif choice == 2:
        del body[rng.randrange(12, len(body) + 1) :]
    elif choice == 3:
        body += rng.randbytes(rng.randint(1, 16))
    else:
        at = pos()
        body[at : at + 4] = rng.choice(_LIES)
    return I32.pack(len(body)) + bytes(body)


def _reads_back(client: WireClient, topic: str, partition: int) -> None:
    """Whatever the fuzzer did to the partition (DeleteRecords, produces), it reads back cleanly
    from its log start to its end, every batch whole and in order."""
    error, start = list_offset(client, topic, partition, -2)
    assert error == 0
    error, end = list_offset(client, topic, partition, -1)
    assert error == 0 and start <= end
    offset = start
    while offset < end:
        part = fetch(client, topic, partition, offset)
        assert part.error_code == 0, part.error_code
        offsets = record_offsets(part.records)
        assert offsets and offsets[0] <= offset < offsets[-1] + 1, (offset, offsets[:3])
        record_values(part.records)  # every record decodes
        offset = offsets[-1] + 1
    assert offset == end


def _tasks(broker: EmbeddedBroker) -> int:
    """The broker's tasks but its partitions' writers (one per partition written, for good)."""
    return broker.call(
        lambda: sum(
            not t.get_name().startswith(("writer:", "sync:")) for t in asyncio.all_tasks()
        )
    )


def test_every_advertised_api_survives_generated_and_mutated_requests(
    make_broker: MakeBroker, witness_for: WitnessFor
) -> None:
    broker = make_broker(**{"group.initial.rebalance.delay.ms": "0"})
    witness = witness_for(broker)
    with WireClient.to(broker) as setup:
        create_topic(setup, "fz", partitions=2)
        create_topic(setup, "one")
        produce(setup, "fz", 0, batch([b"seed"]))
    connections_settle(broker, 1)
    tasks_before = _tasks(broker)
    rng = random.Random(20261201)
    answered = closed = sent = 0
    client = WireClient.to(broker)
    try:
        for api, (lo, hi) in sorted(ADVERTISED.items()):
            for version in range(lo, hi + 1):
                for _ in range(8):
                    tame = rng.random() < 0.5
                    body = sample(APIS[api].request, version, random.Random(rng.random()), tame)
                    if rng.random() < 0.6:
                        _steer(body, rng)
                    _bounded(body)
                    try:
                        frame = bytes(encode_request(api, version, 77, "fz", body))
                    except (ValueError, OverflowError, struct.error):  # a value too big for its type
                        continue
                    if rng.random() < 0.5:
                        frame = _mutate(rng, frame)
                    cid, sentinel = client.frame(
                        ApiKey.API_VERSIONS, 0, m.ApiVersionsRequest(), correlation_id=2**31 - 1
                    )
                    sent += 1
                    client.send_bytes(frame + sentinel)
                    try:
                        while client.recv_frame(timeout=10.0)[:4] != I32.pack(cid):
                            pass  # the request's own answer, if any
                        answered += 1
                    except ConnectionClosed:
                        closed += 1
                        client.close()
                        client = WireClient.to(broker)
    finally:
        client.close()
    print(f"{sent} requests over {len(ADVERTISED)} APIs: {answered} answered, {closed} closed")
    assert answered + closed == sent and sent > 500
    assert answered > closed > 50  # both outcomes exercised, most requests decodable
    witness.check()
    with WireClient.to(broker) as check:
        for partition in (0, 1):
            _reads_back(check, "fz", partition)
    connections_settle(broker, 1)
    # Every connection's task ended with its connection, and no request left one behind.
    tasks_after = _tasks(broker)
    print(f"event loop tasks: {tasks_before} before, {tasks_after} after")
    assert tasks_after == tasks_before


# -- what the fuzzer found -------------------------------------------------------------------------


def test_metadata_by_topic_id_before_v12_is_invalid_request(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    """Metadata v10-11 let a requested topic's name be null (the id alone) but not the answer's:
    the broker failed to encode its answer and dropped the connection. Kafka refuses such a
    request (INVALID_REQUEST); v12 looks the id up."""
    with WireClient.to(sluice_fresh_broker) as client:
        create_topic(client, "named")
        known = client.call(
            ApiKey.METADATA,
            12,
            m.MetadataRequest(topics=[m.MetadataRequestTopic(name="named")]),
            m.MetadataResponse,
        ).topics[0]
        by_id = [m.MetadataRequestTopic(topic_id=known.topic_id, name=None)]
        for version in (10, 11):
            answer = client.call(
                ApiKey.METADATA,
                version,
                m.MetadataRequest(topics=[*by_id, m.MetadataRequestTopic(name="named")]),
                m.MetadataResponse,
            )
            assert [(t.error_code, t.name) for t in answer.topics] == [
                (ErrorCode.INVALID_REQUEST, ""),
                (ErrorCode.NONE, "named"),
            ]
        answer = client.call(ApiKey.METADATA, 12, m.MetadataRequest(topics=by_id), m.MetadataResponse)
        assert [(t.error_code, t.name) for t in answer.topics] == [(ErrorCode.NONE, "named")]


def test_leave_group_batch_with_an_invalid_group_id_is_answered(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    """LeaveGroup v3+ names members in a batch; with an empty group id the handler failed
    (a per-member answer for none of them) and the connection was dropped. Kafka answers
    INVALID_GROUP_ID (24) at the top, with no members."""
    members = [m.MemberIdentity(member_id="a"), m.MemberIdentity(member_id="", group_instance_id="i")]
    with WireClient.to(sluice_fresh_broker) as client:
        for version in (3, 4):
            answer = client.call(
                ApiKey.LEAVE_GROUP,
                version,
                m.LeaveGroupRequest(group_id="", members=members),
                m.LeaveGroupResponse,
            )
            assert (answer.error_code, answer.members) == (ErrorCode.INVALID_GROUP_ID, [])
        # the same connection goes on; an unknown group answers each member
        answer = client.call(
            ApiKey.LEAVE_GROUP, 4, m.LeaveGroupRequest(group_id="g", members=members), m.LeaveGroupResponse
        )
        assert answer.error_code == ErrorCode.NONE
        assert [p.error_code for p in answer.members] == [ErrorCode.UNKNOWN_MEMBER_ID] * 2


def _join(client: WireClient, member_id: str, protocols: list[str]) -> int:
    """Send a JoinGroup v3 (no member id round trip) to group "g"; returns its correlation id."""
    return client.send(
        ApiKey.JOIN_GROUP,
        3,
        m.JoinGroupRequest(
            group_id="g",
            session_timeout_ms=10_000,
            rebalance_timeout_ms=10_000,
            member_id=member_id,
            protocol_type="consumer",
            protocols=[m.JoinGroupRequestProtocol(name=n, metadata=b"") for n in protocols],
        ),
    )


def test_a_protocol_listed_twice_does_not_break_the_group(make_broker: MakeBroker) -> None:
    """A member listing one protocol twice was counted twice as supporting it: the group then
    found no protocol all its members support, and each JoinGroup that completed the rebalance
    failed in the handler, closing the connection of whichever member came last (here an
    innocent one) with the group stuck. Each name now counts once per member, as in Kafka."""
    broker = make_broker(**{"group.initial.rebalance.delay.ms": "0"})
    with WireClient.to(broker) as good, WireClient.to(broker) as odd:
        cid = _join(good, "", ["range"])
        first = good.recv(ApiKey.JOIN_GROUP, 3, cid, m.JoinGroupResponse)
        assert (first.error_code, first.generation_id) == (ErrorCode.NONE, 1)
        odd_cid = _join(odd, "", ["range", "range"])  # held until the group rebalances
        deadline = time.monotonic() + 10
        while True:  # until the broker has taken the odd join (another connection)
            beat = good.call(
                ApiKey.HEARTBEAT,
                3,
                m.HeartbeatRequest(group_id="g", generation_id=1, member_id=first.member_id),
                m.HeartbeatResponse,
            )
            if beat.error_code == ErrorCode.REBALANCE_IN_PROGRESS:
                break
            assert beat.error_code == ErrorCode.NONE and time.monotonic() < deadline
            time.sleep(0.01)
        cid = _join(good, first.member_id, ["range"])
        rejoined = good.recv(ApiKey.JOIN_GROUP, 3, cid, m.JoinGroupResponse)
        joined = odd.recv(ApiKey.JOIN_GROUP, 3, odd_cid, m.JoinGroupResponse)
        for answer in (rejoined, joined):
            assert (answer.error_code, answer.generation_id, answer.protocol_name) == (
                ErrorCode.NONE,
                2,
                "range",
            )


def _group_records(broker: EmbeddedBroker) -> int:
    """Records the group coordinator has written to its private log."""
    server = broker.server
    assert server is not None and server.broker is not None
    store = server.broker.groups.store
    return broker.call(lambda: store.records_in_log)


def test_a_partition_committed_many_times_in_one_request_is_written_once(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    """An OffsetCommit naming 4 partitions 20,000 times wrote a record for every mention (the
    100,000-mention request kept every other client waiting 5 s). As in Kafka, a partition
    counts once, with its last mention; each mention is still answered."""
    mentions = 20_000
    with WireClient.to(sluice_fresh_broker, timeout=60) as client:
        create_topic(client, "c4", partitions=4)
        commit = m.OffsetCommitRequest(
            group_id="dup",
            generation_id_or_member_epoch=-1,
            member_id="",
            topics=[
                m.OffsetCommitRequestTopic(
                    name="c4",
                    partitions=[
                        m.OffsetCommitRequestPartition(partition_index=i % 4, committed_offset=i)
                        for i in range(mentions)
                    ],
                )
            ],
        )
        before = _group_records(sluice_fresh_broker)
        answer = client.call(ApiKey.OFFSET_COMMIT, 8, commit, m.OffsetCommitResponse)
        assert [p.error_code for t in answer.topics for p in t.partitions] == [0] * mentions
        assert _group_records(sluice_fresh_broker) - before == 4
        fetched = client.call(
            ApiKey.OFFSET_FETCH,
            7,
            m.OffsetFetchRequest(
                group_id="dup",
                topics=[m.OffsetFetchRequestTopic(name="c4", partition_indexes=[0, 1, 2, 3])],
            ),
            m.OffsetFetchResponse,
        )
        offsets = [p.committed_offset for p in fetched.topics[0].partitions]
        assert offsets == [mentions - 4 + i for i in range(4)]  # each partition's last mention


def test_a_topic_named_many_times_in_metadata_is_answered_once(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    """Metadata answered every mention of a topic with all its partitions: a 43 KiB request
    naming a 1000-partition topic 2000 times was a 50 MiB answer, the broker busy 22 s and
    730 MiB bigger (a 1 MiB request: minutes and tens of GiB). As in Kafka, which reads the
    names into a set, each topic is answered once."""
    with WireClient.to(sluice_fresh_broker, timeout=60) as client:
        create_topic(client, "wide", partitions=1000)
        create_topic(client, "narrow")
        by_name = client.call(
            ApiKey.METADATA,
            12,
            m.MetadataRequest(topics=[m.MetadataRequestTopic(name="wide")]),
            m.MetadataResponse,
        ).topics[0]
        named = [m.MetadataRequestTopic(name="wide"), m.MetadataRequestTopic(name="narrow")]
        by_id = m.MetadataRequestTopic(topic_id=by_name.topic_id, name=None)
        answer = client.call(
            ApiKey.METADATA,
            12,
            m.MetadataRequest(topics=[*named * 2000, by_id, by_id], allow_auto_topic_creation=False),
            m.MetadataResponse,
        )
        assert [(t.name, len(t.partitions)) for t in answer.topics] == [
            ("wide", 1000),
            ("narrow", 1),
            ("wide", 1000),  # asked by id (twice): once more, as sluice answers ids apart
        ]


def test_a_group_asked_for_many_times_is_answered_once(sluice_fresh_broker: EmbeddedBroker) -> None:
    """OffsetFetch v8 answered every mention of a group with all its offsets: an 8 KiB request
    naming a group of 1000 offsets 2000 times was a 38 MiB answer and 24 s of the event loop;
    mentions naming different partitions were each answered apart. A group is answered once,
    with every partition any mention named, and DescribeGroups likewise. A partition named
    many times (any version) is answered once: each answer may carry 4 KiB of metadata."""
    with WireClient.to(sluice_fresh_broker, timeout=60) as client:
        create_topic(client, "c100", partitions=100)
        commit = m.OffsetCommitRequest(
            group_id="g",
            generation_id_or_member_epoch=-1,
            member_id="",
            topics=[
                m.OffsetCommitRequestTopic(
                    name="c100",
                    partitions=[
                        m.OffsetCommitRequestPartition(partition_index=i, committed_offset=i)
                        for i in range(100)
                    ],
                )
            ],
        )
        client.call(ApiKey.OFFSET_COMMIT, 8, commit, m.OffsetCommitResponse)
        some = [m.OffsetFetchRequestTopic(name="c100", partition_indexes=[7])]
        groups = [
            m.OffsetFetchRequestGroup(group_id="g", topics=None),
            m.OffsetFetchRequestGroup(group_id="g", topics=some),
            m.OffsetFetchRequestGroup(group_id="other", topics=None),
        ]
        answer = client.call(
            ApiKey.OFFSET_FETCH, 8, m.OffsetFetchRequest(groups=groups * 2000), m.OffsetFetchResponse
        )
        assert [
            (g.group_id, [p.committed_offset for t in g.topics for p in t.partitions])
            for g in answer.groups
        ] == [("g", list(range(100))), ("other", [])]
        mentions = [
            m.OffsetFetchRequestGroup(
                group_id="g",
                topics=[m.OffsetFetchRequestTopic(name="c100", partition_indexes=[i % 3, 5])],
            )
            for i in range(3000)
        ]
        answer = client.call(
            ApiKey.OFFSET_FETCH, 8, m.OffsetFetchRequest(groups=mentions), m.OffsetFetchResponse
        )
        assert [
            (g.group_id, [(t.name, [p.partition_index for p in t.partitions]) for t in g.topics])
            for g in answer.groups
        ] == [("g", [("c100", [0, 5, 1, 2])])]
        repeated = [m.OffsetFetchRequestTopic(name="c100", partition_indexes=[9, 8] * 2000)] * 2
        old = client.call(
            ApiKey.OFFSET_FETCH,
            7,
            m.OffsetFetchRequest(group_id="g", topics=repeated),
            m.OffsetFetchResponse,
        )
        assert [(t.name, [p.committed_offset for p in t.partitions]) for t in old.topics] == [
            ("c100", [9, 8])
        ]
        described = client.call(
            ApiKey.DESCRIBE_GROUPS,
            5,
            m.DescribeGroupsRequest(groups=["g", "other"] * 2000),
            m.DescribeGroupsResponse,
        )
        assert [g.group_id for g in described.groups] == ["g", "other"]


def test_a_partition_named_many_times_in_describe_producers_is_answered_once(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    """Each mention listed every producer the partition's log remembers (any number: each
    InitProducerId makes one); each partition is answered once."""
    with WireClient.to(sluice_fresh_broker) as client:
        create_topic(client, "p2", partitions=2)
        request = m.DescribeProducersRequest(
            topics=[
                m.DescribeProducersTopicRequest(name="p2", partition_indexes=[0, 1, 0] * 1000),
                m.DescribeProducersTopicRequest(name="p2", partition_indexes=[1, 0]),
                m.DescribeProducersTopicRequest(name="gone", partition_indexes=[0, 0]),
            ]
        )
        answer = client.call(ApiKey.DESCRIBE_PRODUCERS, 0, request, m.DescribeProducersResponse)
        assert [(t.name, [(p.partition_index, p.error_code) for p in t.partitions]) for t in answer.topics] == [
            ("p2", [(0, 0), (1, 0)]),
            ("gone", [(0, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)]),
        ]
