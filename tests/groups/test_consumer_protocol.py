"""The consumer protocol codec: what members put in JoinGroup and the leader in SyncGroup."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.broker.groups.consumer_protocol import (
    Assignment,
    Subscription,
    encode_assignment,
    encode_subscription,
    parse_assignment,
    parse_subscription,
)
from sluice.protocol.primitives import ProtocolError

names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=20)
partitions = st.dictionaries(names, st.lists(st.integers(0, 2**31 - 1), max_size=5), max_size=4)


@given(
    topics=st.lists(names, max_size=5),
    user_data=st.none() | st.binary(max_size=30),
    owned=partitions,
    generation=st.integers(-1, 2**31 - 1),
    rack=st.none() | names,
    version=st.integers(0, 3),
)
def test_subscription_round_trip(
    topics: list[str],
    user_data: bytes | None,
    owned: dict[str, list[int]],
    generation: int,
    rack: str | None,
    version: int,
) -> None:
    sub = Subscription(topics, user_data, owned, generation, rack, version)
    back = parse_subscription(encode_subscription(sub))
    assert back.topics == topics and back.user_data == user_data and back.version == version
    assert back.owned_partitions == (owned if version >= 1 else {})
    assert back.generation_id == (generation if version >= 2 else -1)
    assert back.rack_id == (rack if version >= 3 else None)


@given(parts=partitions, user_data=st.none() | st.binary(max_size=30))
def test_assignment_round_trip(parts: dict[str, list[int]], user_data: bytes | None) -> None:
    back = parse_assignment(encode_assignment(Assignment(parts, user_data)))
    assert back.partitions == parts and back.user_data == user_data


def test_newer_versions_and_trailing_bytes_are_read_leniently() -> None:
    v3 = encode_subscription(Subscription(["a"], None, {"a": [1]}, 4, "r", version=3))
    future = b"\x00\x09" + v3[2:] + b"new fields"
    assert parse_subscription(future).topics == ["a"]
    assert parse_assignment(b"").partitions == {}


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\x00\x00\x00\x00\x00\x09ab", b"\xff\xff"])
def test_garbage_subscriptions_raise_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_subscription(garbage)
