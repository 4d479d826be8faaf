"""Round trips of every API at every supported version, through whole frames (headers
included), plus the fast paths checked against the generic codec."""

from __future__ import annotations

import random

import pytest

from sluice.protocol import messages as m
from sluice.protocol.api_versions import SUPPORTED
from sluice.protocol.codec import (
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    encode_response_bytes,
)
from sluice.protocol.fast import decode_fetch_request, decode_produce_request
from sluice.protocol.framing import frame_size
from sluice.protocol.messages import APIS, ApiKey
from sluice.protocol.primitives import ProtocolError, Reader
from sluice.protocol.samples import sample
from sluice.protocol.schema import decode_struct, encode_struct

CASES = [(key, v) for key, (lo, hi) in sorted(SUPPORTED.items()) for v in range(lo, hi + 1)]


def _ids(case: tuple[int, int]) -> str:
    return f"{ApiKey(case[0]).name}-v{case[1]}"


def _body(frame: bytes | bytearray) -> memoryview:
    size = frame_size(frame)
    assert size == len(frame) - 4
    return memoryview(frame)[4:]


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_request_round_trip(case: tuple[int, int]) -> None:
    key, version = case
    spec = APIS[key]
    for seed in range(5):
        body = sample(spec.request, version, random.Random(seed * 1000 + version))
        frame = encode_request(key, version, 77 + seed, "client-1", body)
        req = decode_request(_body(frame))
        assert (req.api_key, req.api_version, req.correlation_id) == (key, version, 77 + seed)
        assert req.client_id == "client-1"
        assert req.body == body
        # decoding is exact: re-encoding what we decoded gives the same bytes
        assert encode_request(key, version, 77 + seed, "client-1", req.body) == frame


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_response_round_trip(case: tuple[int, int]) -> None:
    key, version = case
    spec = APIS[key]
    for seed in range(5):
        body = sample(spec.response, version, random.Random(seed * 1000 + version))
        pieces = encode_response(key, version, 5, body)
        frame = b"".join(pieces)
        assert frame == encode_response_bytes(key, version, 5, body)
        corr, decoded = decode_response(_body(frame), key, version)
        assert corr == 5
        assert decoded == body


@pytest.mark.parametrize("version", range(3, 10))
def test_produce_fast_path_matches_generic(version: int) -> None:
    flexible = APIS[ApiKey.PRODUCE].flexible(version)
    for seed in range(10):
        body = sample(m.ProduceRequest, version, random.Random(seed))
        data = encode_struct(body, version, flexible)
        fast = decode_produce_request(Reader(data), version)
        assert fast == decode_struct(m.ProduceRequest, data, version, flexible) == body


@pytest.mark.parametrize("version", range(4, 13))
def test_fetch_request_fast_path_matches_generic(version: int) -> None:
    flexible = APIS[ApiKey.FETCH].flexible(version)
    for seed in range(10):
        body = sample(m.FetchRequest, version, random.Random(seed))
        data = encode_struct(body, version, flexible)
        fast = decode_fetch_request(Reader(data), version)
        assert fast == decode_struct(m.FetchRequest, data, version, flexible) == body
        for n in range(len(data)):
            with pytest.raises(ProtocolError):
                decode_fetch_request(Reader(data[:n]), version)


def test_produce_records_are_views_of_the_frame() -> None:
    records = bytes(range(256)) * 64
    body = m.ProduceRequest(
        acks=-1,
        timeout_ms=1000,
        topic_data=[
            m.ProduceTopicData(
                name="t", partition_data=[m.ProducePartitionData(index=0, records=records)]
            )
        ],
    )
    for version in (3, 9):
        frame = bytearray(_body(encode_request(ApiKey.PRODUCE, version, 1, "c", body)))
        req = decode_request(frame)
        assert isinstance(req.body, m.ProduceRequest)
        view = req.body.topic_data[0].partition_data[0].records
        assert isinstance(view, memoryview) and not view.readonly
        assert view == records
        view[0] = 0xFF  # writes through to the frame: no copy was made
        assert frame[frame.index(bytes(range(1, 256)), 0) - 1] == 0xFF


def test_header_versions() -> None:
    from sluice.protocol.codec import request_header_version, response_header_version

    assert request_header_version(ApiKey.METADATA, 8) == 1
    assert request_header_version(ApiKey.METADATA, 9) == 2
    assert response_header_version(ApiKey.METADATA, 8) == 0
    assert response_header_version(ApiKey.METADATA, 9) == 1
    assert request_header_version(ApiKey.API_VERSIONS, 3) == 2
    assert response_header_version(ApiKey.API_VERSIONS, 3) == 0  # always v0
    assert request_header_version(ApiKey.SASL_HANDSHAKE, 1) == 1
    assert response_header_version(ApiKey.OFFSET_DELETE, 0) == 0


def test_every_api_key_is_declared_and_advertised() -> None:
    assert set(SUPPORTED) == set(APIS) == set(ApiKey)
    assert len(SUPPORTED) == 40


