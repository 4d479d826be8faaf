"""The error answers of scripted faults: for every API a fault can fail and every version the
broker serves, the answer encodes at that version and carries the error code wherever the API
has one (per partition, topic, resource or group, or at the top), and nowhere another code."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from sluice.broker.broker import HANDLERS
from sluice.errors import ErrorCode
from sluice.protocol import (
    ApiKey,
    Request,
    decode_request,
    decode_response,
    encode_request,
    encode_response_bytes,
)
from sluice.protocol import messages as m
from sluice.protocol.messages import APIS
from sluice.protocol.samples import sample
from sluice.testing.answers import ANSWERABLE, error_answer

CASES = [
    (api, version)
    for api in sorted(ANSWERABLE)
    for version in range(HANDLERS[api].min_version, HANDLERS[api].max_version + 1)
]


def _error_codes(value: Any, version: int) -> list[int]:
    """Every ``error_code`` a decoded message has at ``version``, nested ones included."""
    if isinstance(value, list):
        return [code for item in value for code in _error_codes(item, version)]
    if not dataclasses.is_dataclass(value):
        return []
    codes = []
    for fld in dataclasses.fields(value):
        if version not in fld.metadata["kafka"].versions:
            continue
        item = getattr(value, fld.name)
        if fld.name == "error_code":
            codes.append(item)
        else:
            codes += _error_codes(item, version)
    return codes


def test_every_served_api_but_a_few_can_be_failed() -> None:
    """A new API gets an error answer, or is consciously left to drop_after() and delay()."""
    assert set(HANDLERS) - ANSWERABLE == {
        ApiKey.DESCRIBE_LOG_DIRS,
        ApiKey.ELECT_LEADERS,
        ApiKey.LIST_PARTITION_REASSIGNMENTS,
        ApiKey.ALTER_PARTITION_REASSIGNMENTS,
        ApiKey.CONSUMER_GROUP_HEARTBEAT,  # always refused (KIP-848): no fault to script
    }


@pytest.mark.parametrize(("api", "version"), CASES, ids=[f"{a.name}-v{v}" for a, v in CASES])
def test_the_answer_encodes_and_carries_the_code(api: ApiKey, version: int) -> None:
    rnd = random.Random(version * 100 + api)
    for _ in range(5):
        body = sample(APIS[api].request, version, rnd, tame=True)
        if api == ApiKey.PRODUCE:
            body.acks = 1
        request = decode_request(bytes(encode_request(api, version, 7, "t", body))[4:])
        assert isinstance(request, Request)
        answer = error_answer(request, ErrorCode.NOT_LEADER_OR_FOLLOWER, (3, "host", 9092))
        frame = encode_response_bytes(api, version, 7, answer)
        _, decoded = decode_response(bytes(frame)[4:], api, version)
        codes = _error_codes(decoded, version)
        assert set(codes) <= {ErrorCode.NOT_LEADER_OR_FOLLOWER}, codes
        top = [f for f in dataclasses.fields(decoded) if f.name == "error_code"]
        if top and version in top[0].metadata["kafka"].versions:
            assert codes, f"{api.name} v{version}: the top-level code is missing"


def test_a_metadata_answer_lists_the_broker_and_each_topic_with_the_code() -> None:
    body = m.MetadataRequest(topics=[m.MetadataRequestTopic(name="a"), m.MetadataRequestTopic(name="b")])
    request = Request(ApiKey.METADATA, 12, 1, "t", body)
    answer = error_answer(request, ErrorCode.LEADER_NOT_AVAILABLE, (3, "host", 9092))
    assert isinstance(answer, m.MetadataResponse)
    assert [(b.node_id, b.host, b.port) for b in answer.brokers] == [(3, "host", 9092)]
    assert [(t.name, t.error_code) for t in answer.topics] == [
        ("a", ErrorCode.LEADER_NOT_AVAILABLE),
        ("b", ErrorCode.LEADER_NOT_AVAILABLE),
    ]


def test_a_produce_answer_refuses_every_partition() -> None:
    body = m.ProduceRequest(
        acks=-1,
        timeout_ms=1000,
        topic_data=[
            m.ProduceTopicData(
                name="t",
                partition_data=[m.ProducePartitionData(index=i, records=b"") for i in (0, 2)],
            )
        ],
    )
    answer = error_answer(Request(ApiKey.PRODUCE, 9, 1, "t", body), ErrorCode.REQUEST_TIMED_OUT, (0, "h", 1))
    assert isinstance(answer, m.ProduceResponse)
    assert [(p.index, p.error_code, p.base_offset) for p in answer.responses[0].partition_responses] == [
        (0, ErrorCode.REQUEST_TIMED_OUT, -1),
        (2, ErrorCode.REQUEST_TIMED_OUT, -1),
    ]
