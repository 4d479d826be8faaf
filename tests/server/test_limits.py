"""Connection limits: max.connections, connections.max.idle.ms and socket.request.max.bytes."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time

import pytest

from sluice.broker.broker import INLINE_ELEMENTS
from sluice.broker.context import ELEMENTS_PER_TURN
from sluice.config import BrokerConfig
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import group_messages as g
from sluice.protocol import messages as m
from sluice.testing import EmbeddedBroker
from tests.server.conftest import MakeBroker, WitnessFor
from tests.server.wire import (
    I32,
    ConnectionClosed,
    WireClient,
    Witness,
    api_versions,
    batch,
    connections_settle,
    create_topic,
    fetch_all_values,
    fetch_request,
    list_offset,
    list_offsets_request,
    metadata,
    metadata_request,
    produce,
    produce_request,
    record_values,
)


def test_max_connections(make_broker: MakeBroker) -> None:
    broker = make_broker(**{"max.connections": "3"})
    clients = [WireClient.to(broker) for _ in range(3)]
    try:
        for c in clients:  # a round trip each: all three are registered
            assert api_versions(c).error_code == 0
        # The kernel accepts the 4th, the broker drops it at once without reading a byte.
        with WireClient.to(broker) as extra:
            assert extra.wait_closed() == b""
        with WireClient.to(broker) as extra:  # a request on it is never answered
            with contextlib.suppress(OSError):  # the reset may already have arrived
                extra.send(ApiKey.API_VERSIONS, 3, m.ApiVersionsRequest())
            assert extra.wait_closed() == b""
        # The three admitted ones are unaffected.
        create_topic(clients[0], "t")
        for i, c in enumerate(clients):
            assert produce(c, "t", 0, batch([f"c{i}".encode()])).base_offset == i
        # Closing one frees a slot for a new connection, and only one.
        clients.pop().close()
        connections_settle(broker, 2)
        clients.append(WireClient.to(broker))
        assert fetch_all_values(clients[-1], "t") == [b"c0", b"c1", b"c2"]
        with WireClient.to(broker) as extra:
            assert extra.wait_closed() == b""
        for c in clients:
            assert metadata(c, ["t"]).topics[0].error_code == 0
    finally:
        for c in clients:
            c.close()


def _connection_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sluice.server.connections"]


def test_idle_connections_are_closed(
    make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections quiet for longer than connections.max.idle.ms are closed by the broker (the
    broker and these tests share one monotonic clock, so the bounds below are exact); busy ones
    and ones with a request in progress are not. A request that starts and never finishes is
    closed by its receive deadline (here as short as the idle timeout)."""
    caplog.set_level(logging.INFO, logger="sluice.server.connections")
    idle_ms = 500
    broker = make_broker(
        **{
            "connections.max.idle.ms": str(idle_ms),
            "sluice.request.receive.timeout.ms": str(idle_ms),
        }
    )
    with WireClient.to(broker) as setup:
        create_topic(setup, "t")
    last_activity: dict[str, float] = {}  # taken before the broker's own record of it
    last_activity["silent"] = time.monotonic()
    silent = WireClient.to(broker)  # never sends a byte
    idle = WireClient.to(broker)  # one request, then nothing
    slowloris = WireClient.to(broker)  # starts a frame and never finishes it
    busy = WireClient.to(broker)  # keeps sending requests
    polling = WireClient.to(broker)  # one long poll, longer than the idle timeout
    try:
        last_activity["idle"] = time.monotonic()
        assert api_versions(idle).error_code == 0
        last_activity["slowloris"] = time.monotonic()
        slowloris.send_bytes(I32.pack(100) + b"\x00" * 10)
        started = time.monotonic()
        poll_id = polling.send(ApiKey.FETCH, 12, fetch_request("t", 0, 0, max_wait_ms=3 * idle_ms))

        closed_at: dict[str, float] = {}

        def watch(name: str, client: WireClient) -> None:
            assert client.wait_closed(timeout=10) == b""
            closed_at[name] = time.monotonic()

        polled: list[tuple[m.FetchResponse, float]] = []

        def answer_poll() -> None:
            part = polling.recv(ApiKey.FETCH, 12, poll_id, m.FetchResponse)
            polled.append((part, time.monotonic()))

        watchers = [
            threading.Thread(target=watch, args=(name, c), daemon=True)
            for name, c in (("idle", idle), ("silent", silent), ("slowloris", slowloris))
        ]
        watchers.append(threading.Thread(target=answer_poll, daemon=True))
        for w in watchers:
            w.start()
        # The busy connection is never idle for long, so it is never closed.
        while time.monotonic() - started < 3 * idle_ms / 1000:
            assert api_versions(busy).error_code == 0
            time.sleep(0.05)
        for w in watchers:
            w.join(10)
        assert sorted(closed_at) == ["idle", "silent", "slowloris"]
        # A request in progress is not idleness: the long poll is answered at its own deadline
        # (max_wait_ms after it was sent, timed when the answer arrived), not early.
        assert len(polled) == 1, "the long poll was not answered"
        part, answered_at = polled[0]
        assert part.responses[0].partitions[0].error_code == 0
        waited = answered_at - started
        print(f"long poll answered after {waited:.2f}s (max_wait_ms={3 * idle_ms})")
        assert 3 * idle_ms / 1000 <= waited < 3 * idle_ms / 1000 + 5.0
        for name, at in closed_at.items():
            quiet_for = at - last_activity[name]
            print(f"{name} closed after {quiet_for:.2f}s quiet (connections.max.idle.ms={idle_ms})")
            assert idle_ms / 1000 <= quiet_for < 5.0, name
        assert api_versions(busy).error_code == 0
        busy.close()  # by the client: left open, it would go idle and be reaped (and logged) too
        # ...and once it goes quiet, the long-polling connection is reaped too.
        assert polling.wait_closed(timeout=10) == b""
        # Each close is logged with the peer and the cause.
        lines = _connection_log(caplog)
        idle_lines = [x for x in lines if "(connections.max.idle.ms=500)" in x]
        assert len(idle_lines) == 3, lines  # idle, silent, and the long poller at the end
        assert all(
            re.match(r"closing 127\.0\.0\.1:\d+: no request for [\d.]+ s", x) for x in idle_lines
        )
        late = [x for x in lines if "past its deadline" in x]
        assert len(late) == 1 and re.match(
            r"closing 127\.0\.0\.1:\d+: 14 of 104 request bytes arrived in [\d.]+ s", late[0]
        ), lines
    finally:
        for c in (idle, silent, slowloris, busy, polling):
            c.close()


def test_request_size_limit_default_is_100_mib(
    sluice_fresh_broker: EmbeddedBroker, witness: Witness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sluice.server.connections")
    limit = 100 * 1024 * 1024
    assert BrokerConfig().request_max_bytes == limit
    with WireClient.to(sluice_fresh_broker) as over:
        over.send_bytes(I32.pack(limit + 1))
        assert over.wait_closed() == b""
    assert any(
        re.fullmatch(
            rf"closing 127\.0\.0\.1:\d+: request size {limit + 1} is outside 1\.\.{limit} "
            r"\(socket\.request\.max\.bytes\)",
            x,
        )
        for x in _connection_log(caplog)
    ), _connection_log(caplog)
    # At the limit, the broker waits for the rest of the frame instead of closing.
    with WireClient.to(sluice_fresh_broker) as at:
        at.send_bytes(I32.pack(limit) + b"\x00" * 10)
        witness.check()
        assert at.is_quiet()
    witness.check()


def test_large_requests_up_to_the_limit(make_broker: MakeBroker, witness_for: WitnessFor) -> None:
    """Frames bigger than the read buffer (256 KiB) take the big-frame path, whose buffer grows
    as the bytes arrive: a 6 MiB batch under an 8 MiB request limit is stored whole and reads
    back intact; a 9 MiB request is refused by closing."""
    limit = 8 << 20
    broker = make_broker(
        **{"socket.request.max.bytes": str(limit), "message.max.bytes": str(limit)}
    )
    witness = witness_for(broker)
    with WireClient.to(broker) as client:
        create_topic(client, "big")
        values = [bytes([i]) * (300 * 1024) for i in range(20)]
        assert produce(client, "big", 0, batch(values)).error_code == 0
        assert produce(client, "big", 0, batch([b"small"])).base_offset == 20
        assert fetch_all_values(client, "big") == [*values, b"small"]
        too_big = [bytes([9]) * (300 * 1024) for _ in range(30)]
        _, frame = client.frame(ApiKey.PRODUCE, 9, produce_request("big", 0, batch(too_big)))
        assert len(frame) - 4 > limit
        with contextlib.suppress(OSError):  # the broker may close before it is all sent
            client.send_bytes(frame)
        assert client.wait_closed() == b""
    with WireClient.to(broker) as check:
        assert list_offset(check, "big", 0) == (0, 21)
        assert fetch_all_values(check, "big") == [*values, b"small"]
    witness.check()


def test_message_too_large_is_answered(make_broker: MakeBroker) -> None:
    broker = make_broker(
        **{"socket.request.max.bytes": str(4 << 20), "message.max.bytes": str(64 * 1024)}
    )
    with WireClient.to(broker) as client:
        create_topic(client, "t")
        part = produce(client, "t", 0, batch([b"x" * (128 * 1024)]))
        assert (part.error_code, part.base_offset) == (ErrorCode.MESSAGE_TOO_LARGE, -1)
        assert list_offset(client, "t", 0) == (0, 0)
        assert produce(client, "t", 0, batch([b"small"])).base_offset == 0


def test_a_client_that_never_reads_its_answers_is_closed_when_idle(
    make_broker: MakeBroker,
) -> None:
    """Pipelined fetches whose answers the client never reads: the broker's writes back up, its
    queue of requests stays full, and nothing completes. That is idleness too, so the
    connection is closed after connections.max.idle.ms rather than held forever."""
    idle_ms = 500
    broker = make_broker(**{"connections.max.idle.ms": str(idle_ms)})
    with WireClient.to(broker) as setup:
        create_topic(setup, "t")
        for i in range(4):
            assert produce(setup, "t", 0, batch([bytes([i]) * (256 * 1024)])).error_code == 0
    connections_settle(broker, 0)
    stuck = WireClient.to(broker)
    try:
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert api_versions(stuck).error_code == 0
        connections_settle(broker, 1)
        frames = b"".join(
            stuck.frame(ApiKey.FETCH, 12, fetch_request("t", 0, 0, max_bytes=2 << 20))[1]
            for _ in range(32)
        )  # 32 answers of 1 MiB each: far more than the sockets' buffers hold
        started = time.monotonic()  # before its last request: an upper bound on its activity
        stuck.send_bytes(frames)
        connections_settle(broker, 0, timeout=10)
        quiet = time.monotonic() - started
        print(f"a client that never read its answers was closed after {quiet:.2f} s")
        assert quiet >= idle_ms / 1000
    finally:
        stuck.close()


def _fetch_bytes(client: WireClient, partitions: int, max_bytes: int) -> list[int]:
    """One Fetch naming partition 0 of "big" ``partitions`` times from offset 0, asking up to
    2^31-1 bytes of each: the record bytes answered for each mention."""
    request = fetch_request("big", 0, 0, max_bytes=2**31 - 1)
    request.max_bytes = max_bytes
    request.topics[0].partitions *= partitions
    answer = client.call(ApiKey.FETCH, 12, request, m.FetchResponse)
    return [len(bytes(p.records or b"")) for p in answer.responses[0].partitions]


def test_fetch_max_bytes_bounds_every_answer(make_broker: MakeBroker) -> None:
    """fetch.max.bytes caps a Fetch answer whatever the request asks: a 3 KiB request naming one
    partition 300 times with max_bytes 2^31-1 made the broker read and hold the partition 300
    times over (a 7 MiB log: 2 GiB; measured 412 MiB resident for 60 mentions). max_bytes 0
    or -1 was read as unlimited; as in Kafka, it is the first batch alone."""
    broker = make_broker(**{"fetch.max.bytes": str(1 << 20)})
    with WireClient.to(broker) as client:
        create_topic(client, "big")
        for i in range(4):
            assert produce(client, "big", 0, batch([bytes([i]) * 300_000])).error_code == 0
        one_batch = _fetch_bytes(client, 1, 1)[0]
        assert 300_000 < one_batch < 310_000  # the first batch, whole, past max_bytes
        got = _fetch_bytes(client, 300, 2**31 - 1)
        print(f"300 mentions of a 4-batch partition: {sum(got)} record bytes answered")
        assert one_batch * 3 <= sum(got) <= 1 << 20
        for max_bytes in (0, -1, -(2**31)):
            assert sum(_fetch_bytes(client, 300, max_bytes)) == one_batch
        # a consumer reading the partition gets everything, over several answers
        assert fetch_all_values(client, "big") == [bytes([i]) * 300_000 for i in range(4)]


def _produce_to(client: WireClient, topics: int, partitions: int) -> m.ProduceResponse:
    """acks=1 to ``partitions`` empty partitions of each of ``topics`` unknown topics."""
    request = produce_request("none", 0, b"")
    request.topic_data = [
        m.ProduceTopicData(
            name=f"none-{t}",
            partition_data=[m.ProducePartitionData(index=i, records=None) for i in range(partitions)],
        )
        for t in range(topics)
    ]
    return client.call(ApiKey.PRODUCE, 9, request, m.ProduceResponse)


def test_error_text_of_a_produce_answer_is_bounded(make_broker: MakeBroker) -> None:
    """Each partition's error message names its topic and partition: 200,000 partitions of an
    unknown topic were answered with the topic's name 200,000 times (about 60 MiB for a 2 MiB
    request). Past 64 KiB of text, partitions are answered with their code alone."""
    broker = make_broker()
    with WireClient.to(broker) as client:
        small = _produce_to(client, 2, 3)
        texts = [p.error_message for t in small.responses for p in t.partition_responses]
        assert all(text and "none-" in text for text in texts)  # a normal answer keeps them all
        answer = _produce_to(client, 1, 50_000)
        parts = [p for t in answer.responses for p in t.partition_responses]
        assert len(parts) == 50_000
        assert {p.error_code for p in parts} == {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
        text = sum(len(p.error_message or "") for p in parts)
        print(f"50,000 unknown partitions: {text} characters of error text in the answer")
        assert parts[0].error_message and 0 < text <= 64 * 1024
        request = produce_request("none", 0, b"")
        request.acks = 5
        request.topic_data = [
            m.ProduceTopicData(
                name="none",
                partition_data=[m.ProducePartitionData(index=i, records=None) for i in range(50_000)],
            )
        ]
        refused = client.call(ApiKey.PRODUCE, 9, request, m.ProduceResponse)
        parts = refused.responses[0].partition_responses
        assert {p.error_code for p in parts} == {ErrorCode.INVALID_REQUIRED_ACKS}
        assert "acks must be" in (parts[0].error_message or "")
        assert 0 < sum(len(p.error_message or "") for p in parts) <= 64 * 1024


def test_requests_past_the_inline_elements_are_answered_whole(
    make_broker: MakeBroker, witness_for: WitnessFor
) -> None:
    """A request holding more than INLINE_ELEMENTS array elements is decoded, and its answer
    encoded, on the codec thread (the event loop serves other clients meanwhile): its answer is
    the whole answer, and sluice.request.max.array.elements still bounds it exactly."""
    inline = INLINE_ELEMENTS
    broker = make_broker(**{"sluice.request.max.array.elements": str(inline * 3)})
    witness = witness_for(broker)
    with WireClient.to(broker) as client:
        create_topic(client, "t", 3)
        assert produce(client, "t", 1, batch([b"a", b"b"])).base_offset == 0
        # 1 topic + 2.5 x INLINE_ELEMENTS partitions, most unknown: past the inline budget
        request = list_offsets_request("t", 0, -1)
        count = inline * 5 // 2
        request.topics[0].partitions = [
            m.ListOffsetsPartition(partition_index=i % (count // 2), timestamp=-1)
            for i in range(count)
        ]
        answer = client.call(ApiKey.LIST_OFFSETS, 5, request, m.ListOffsetsResponse)
        parts = answer.topics[0].partitions
        assert [p.partition_index for p in parts] == [i % (count // 2) for i in range(count)]
        assert [(p.error_code, p.offset) for p in parts[:3]] == [(0, 0), (0, 2), (0, 0)]
        assert {p.error_code for p in parts[3 : count // 2]} == {
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        }
        # the element bound, past the inline budget: at it answered, one more closed
        assert len(_produce_to(client, 1, inline * 3 - 1).responses[0].partition_responses) == (
            inline * 3 - 1
        )
    with WireClient.to(broker) as client, pytest.raises(ConnectionClosed):
        _produce_to(client, 1, inline * 3)
    witness.check()


def test_a_fetch_of_many_partitions_is_read_turn_by_turn(make_broker: MakeBroker) -> None:
    """A Fetch naming more partitions than ELEMENTS_PER_TURN finds and reads them a turn at a
    time (the loop serves others between turns): every partition's records are in its answer,
    wherever in the request it is named, and the answer's byte budget spans the turns."""
    broker = make_broker()
    count = ELEMENTS_PER_TURN * 5 // 2
    named = {0: 0, count // 2: 1, count - 1: 2}  # request position -> partition with records
    with WireClient.to(broker) as client:
        create_topic(client, "t", 3)
        for p in range(3):
            assert produce(client, "t", p, batch([b"p%d-%d" % (p, i) for i in range(3)])).error_code == 0
        request = fetch_request("t", 0, 0)
        request.topics[0].partitions = [
            m.FetchPartition(partition=named.get(i, 3 + i), fetch_offset=0, partition_max_bytes=1 << 20)
            for i in range(count)
        ]
        answer = client.call(ApiKey.FETCH, 11, request, m.FetchResponse)
        parts = answer.responses[0].partitions
        assert len(parts) == count
        for i, p in named.items():
            assert parts[i].error_code == 0
            assert record_values(parts[i].records) == [b"p%d-%d" % (p, j) for j in range(3)]
        assert {parts[i].error_code for i in range(count) if i not in named} == {
            ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        }
        # max_bytes holds across turns: past the first batch, nothing more fits in 10 bytes
        request.max_bytes = 10
        answer = client.call(ApiKey.FETCH, 11, request, m.FetchResponse)
        parts = answer.responses[0].partitions
        assert record_values(parts[0].records) == [b"p0-%d" % j for j in range(3)]
        assert not parts[count // 2].records and not parts[count - 1].records


def test_a_long_poll_past_the_inline_elements_does_not_hold_up_others(make_broker: MakeBroker) -> None:
    """Requests past INLINE_ELEMENTS are handled one at a time (their memory); a Fetch of that
    many partitions waiting for data gives its turn up meanwhile: another such request is
    answered while the long poll still waits (held back, it waited out max_wait_ms), and the
    long poll is answered with the records produced after it."""
    broker = make_broker()
    count = INLINE_ELEMENTS + 10
    with WireClient.to(broker) as setup:
        create_topic(setup, "t", 1)
    poll = fetch_request("t", 0, 0)
    poll.max_wait_ms = 60_000
    poll.topics[0].partitions *= count
    other = list_offsets_request("t", 0, -1)
    other.topics[0].partitions *= count
    with WireClient.to(broker, timeout=90) as poller, WireClient.to(broker) as client:
        polled = poller.send(ApiKey.FETCH, 11, poll)
        server = broker.server
        assert server is not None and server.broker is not None
        waiters = server.broker.fetch_waiters
        deadline = time.monotonic() + 30
        while len(waiters) == 0:  # the long poll has taken its turn and is parked
            assert time.monotonic() < deadline, "the long poll never parked"
            time.sleep(0.01)  # polling the broker's state, bounded by the deadline
        started = time.monotonic()
        answer = client.call(ApiKey.LIST_OFFSETS, 5, other, m.ListOffsetsResponse, timeout=30)
        assert len(answer.topics[0].partitions) == count
        assert time.monotonic() - started < 30
        assert poller.is_quiet()  # still waiting
        assert produce(client, "t", 0, batch([b"late"])).error_code == 0
        parts = poller.recv(ApiKey.FETCH, 11, polled, m.FetchResponse).responses[0].partitions
        assert record_values(parts[0].records) == [b"late"]


def test_a_parked_join_past_the_inline_elements_does_not_hold_up_others(make_broker: MakeBroker) -> None:
    """A JoinGroup of more than INLINE_ELEMENTS protocols waits for the group's rebalance as any
    join does (here for a member that does not rejoin): it does not hold the one-at-a-time turn
    of such requests meanwhile, which every other one (a 5,000-topic Metadata request here)
    would have waited for, a rebalance timeout long."""
    broker = make_broker(**{"group.initial.rebalance.delay.ms": "0"})
    ours = g.JoinGroupRequestProtocol(name="range", metadata=b"")

    def join(protocols: list[g.JoinGroupRequestProtocol], member_id: str = "") -> g.JoinGroupRequest:
        return g.JoinGroupRequest(
            group_id="grp", session_timeout_ms=60_000, rebalance_timeout_ms=60_000,
            member_id=member_id, protocol_type="consumer", protocols=protocols,
        )

    with WireClient.to(broker) as first, WireClient.to(broker, timeout=90) as second, WireClient.to(broker) as other:
        joined = first.call(ApiKey.JOIN_GROUP, 3, join([ours]), g.JoinGroupResponse)
        assert joined.error_code == ErrorCode.NONE and joined.generation_id == 1
        many = [ours] + [
            g.JoinGroupRequestProtocol(name=f"p{i}", metadata=b"") for i in range(INLINE_ELEMENTS)
        ]
        parked = second.send(ApiKey.JOIN_GROUP, 3, join(many))  # waits for the first to rejoin
        describe = g.DescribeGroupsRequest(groups=["grp"], include_authorized_operations=False)
        deadline = time.monotonic() + 30
        while len(
            other.call(ApiKey.DESCRIBE_GROUPS, 3, describe, g.DescribeGroupsResponse).groups[0].members
        ) < 2:
            assert time.monotonic() < deadline, "the second member never joined"
            time.sleep(0.01)  # polling the group's state, bounded by the deadline
        names = [f"no-such-topic-{i}" for i in range(INLINE_ELEMENTS + 10)]
        answer = other.call(ApiKey.METADATA, 9, metadata_request(names, auto_create=False), m.MetadataResponse, timeout=30)
        assert len(answer.topics) == len(names)
        assert second.is_quiet()  # the join still waits
        rejoined = first.call(ApiKey.JOIN_GROUP, 3, join([ours], joined.member_id), g.JoinGroupResponse)
        assert rejoined.error_code == ErrorCode.NONE and rejoined.generation_id == 2
        late = second.recv(ApiKey.JOIN_GROUP, 3, parked, g.JoinGroupResponse)
        assert late.error_code == ErrorCode.NONE and late.generation_id == 2


def test_big_answers_wait_while_unread_answers_fill_the_bound(make_broker: MakeBroker) -> None:
    """Past INLINE_ELEMENTS, any API but Fetch may answer with far more than it was sent: a
    CreateTopics of 200,000 new names (validate only) is a 225 MB answer, its topics' configs.
    A client that never reads it leaves it in the broker's memory; each connection doing the
    same added another. Such requests now start only while the answers nobody has taken
    are within sluice.unsent.response.max.bytes; a Fetch, which sizes its answer to the room
    left, and small requests are served meanwhile, and the waiting request is answered once
    the hog reads."""
    bound = 1 << 20
    broker = make_broker(**{"sluice.unsent.response.max.bytes": str(bound)})
    server = broker.server
    assert server is not None and server.broker is not None
    unsent = server.broker.unsent
    names = [f"new-topic-{i}" for i in range(3 * INLINE_ELEMENTS)]
    create = m.CreateTopicsRequest(
        topics=[
            m.CreatableTopic(name=n, num_partitions=1, replication_factor=1, assignments=[], configs=[])
            for n in names
        ],
        timeout_ms=30_000,
        validate_only=True,
    )
    with WireClient.to(broker, timeout=60) as hog, WireClient.to(broker, timeout=60) as waiting, \
            WireClient.to(broker) as other:
        create_topic(other, "t", 1)
        asked = hog.send(ApiKey.CREATE_TOPICS, 7, create)  # about 14 MB of answer, unread
        deadline = time.monotonic() + 60
        while unsent.held <= bound:
            assert time.monotonic() < deadline, "the hog's answer was never held"
            time.sleep(0.01)  # polling the broker's state, bounded by the deadline
        unknown = [f"no-such-topic-{i}" for i in range(INLINE_ELEMENTS + 10)]
        held_back = waiting.send(ApiKey.METADATA, 9, metadata_request(unknown, auto_create=False))
        poll = fetch_request("t", 0, 0)
        poll.topics[0].partitions *= INLINE_ELEMENTS + 10
        fetched = other.call(ApiKey.FETCH, 11, poll, m.FetchResponse, timeout=30)  # not held
        assert len(fetched.responses[0].partitions) == INLINE_ELEMENTS + 10
        assert api_versions(other).error_code == 0
        assert waiting.is_quiet()  # asked before the Fetch, and still waiting
        answer = hog.recv(ApiKey.CREATE_TOPICS, 7, asked, m.CreateTopicsResponse, timeout=60)
        assert [t.name for t in answer.topics] == names
        assert {t.error_code for t in answer.topics} == {ErrorCode.NONE}
        assert answer.topics[-1].configs  # v5+: each topic's configs
        late = waiting.recv(ApiKey.METADATA, 9, held_back, m.MetadataResponse, timeout=60)
        assert [t.name for t in late.topics] == unknown


def test_array_elements_per_request_are_bounded(
    make_broker: MakeBroker, witness_for: WitnessFor, caplog: pytest.LogCaptureFixture
) -> None:
    """Every array element becomes an object and often an answer of its own: a 2.9 MiB Produce
    naming 500,000 partitions of an unknown topic kept every client waiting 6 s, answered
    150 MiB and grew the broker by 514 MiB. sluice.request.max.array.elements bounds them,
    counted across every array of the request as it is decoded."""
    broker = make_broker(**{"sluice.request.max.array.elements": "1000"})
    witness = witness_for(broker)
    caplog.set_level(logging.INFO, logger="sluice.server.connection")
    with WireClient.to(broker) as client:
        answer = _produce_to(client, 1, 999)  # 1 topic + 999 partitions: at the limit
        codes = {p.error_code for t in answer.responses for p in t.partition_responses}
        assert codes == {ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
        answer = _produce_to(client, 2, 499)  # 2 + 998
        assert sum(len(t.partition_responses) for t in answer.responses) == 998
    for topics, partitions in ((1, 1000), (2, 500), (1, 10**6)):
        with WireClient.to(broker) as client, pytest.raises(ConnectionClosed):
            _produce_to(client, topics, partitions)
    assert sum("sluice.request.max.array.elements=1000" in r.getMessage() for r in caplog.records) == 3
    witness.check()
    connections_settle(broker, 1)
