"""Byte vectors derived by hand from the protocol guide, as real clients send them."""

from __future__ import annotations

import pytest

from sluice.errors import ErrorCode
from sluice.protocol import messages as m
from sluice.protocol.api_versions import ADVERTISED
from sluice.protocol.codec import (
    decode_request,
    decode_response,
    encode_request,
    encode_response_bytes,
    encode_unsupported_api_versions,
)
from sluice.protocol.messages import ApiKey
from sluice.protocol.primitives import ProtocolError, UnsupportedVersionError


def hx(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# kafka-python's first request: ApiVersions v0, header v1, empty body.
API_VERSIONS_V0_REQUEST = hx("00000016 0012 0000 00000001 000c") + b"kafka-python"
# librdkafka's: ApiVersions v3, header v2 (client id stays a legacy string, then no tags),
# body of two compact strings (length + 1) and an empty tag section.
API_VERSIONS_V3_REQUEST = (
    hx("00000024 0012 0003 00000001 0007")
    + b"rdkafka"
    + hx("00 0b")
    + b"librdkafka"
    + hx("06")
    + b"2.3.0"
    + hx("00")
)
API_VERSIONS_V0_RESPONSE = hx("00000016 00000001 0000 00000002 0000 0003 0009 0012 0000 0003")
# v3 response: still header v0 (no tag byte after the correlation id); compact array of 2 (03),
# each entry with its own empty tag section, throttle time, then the body's tag section.
API_VERSIONS_V3_RESPONSE = hx(
    "0000001a 00000001 0000 03 0000 0003 0009 00 0012 0000 0003 00 00000000 00"
)
METADATA_V1_REQUEST = hx("00000015 0003 0001 00000007 0001") + b"c" + hx("00000001 0004") + b"test"
METADATA_V1_REQUEST_ALL_TOPICS = hx("00000011 0003 0001 00000007 0001") + b"c" + hx("ffffffff")

ENTRIES = [
    m.ApiVersion(api_key=0, min_version=3, max_version=9),
    m.ApiVersion(api_key=18, min_version=0, max_version=3),
]


def test_api_versions_v0_request() -> None:
    req = decode_request(API_VERSIONS_V0_REQUEST[4:])
    assert (req.api_key, req.api_version, req.correlation_id) == (18, 0, 1)
    assert req.client_id == "kafka-python"
    assert req.body == m.ApiVersionsRequest()
    assert (
        encode_request(18, 0, 1, "kafka-python", m.ApiVersionsRequest()) == API_VERSIONS_V0_REQUEST
    )


def test_api_versions_v3_request() -> None:
    req = decode_request(API_VERSIONS_V3_REQUEST[4:])
    assert (req.api_version, req.correlation_id, req.client_id) == (3, 1, "rdkafka")
    body = m.ApiVersionsRequest(client_software_name="librdkafka", client_software_version="2.3.0")
    assert req.body == body
    assert encode_request(18, 3, 1, "rdkafka", body) == API_VERSIONS_V3_REQUEST


def test_api_versions_responses() -> None:
    body = m.ApiVersionsResponse(error_code=0, api_keys=ENTRIES)
    assert encode_response_bytes(18, 0, 1, body) == API_VERSIONS_V0_RESPONSE
    assert encode_response_bytes(18, 3, 1, body) == API_VERSIONS_V3_RESPONSE
    assert decode_response(API_VERSIONS_V3_RESPONSE[4:], 18, 3) == (1, body)


def test_tagged_field_written_only_when_not_default() -> None:
    body = m.ApiVersionsResponse(api_keys=[], finalized_features_epoch=5)
    # tag section: 1 field, tag 1, 8 bytes, int64 5
    expected = hx("00000016 00000002 0000 01 00000000 01 01 08 0000000000000005")
    assert encode_response_bytes(18, 3, 2, body) == expected
    assert decode_response(expected[4:], 18, 3) == (2, body)


def test_unknown_tags_are_skipped() -> None:
    # tags 1 (known) and 9 (unknown, 3 bytes) in ascending order
    frame = hx("00000002 0000 01 00000000 02 01 08 0000000000000005 09 03 aabbcc")
    _, body = decode_response(frame, 18, 3)
    assert isinstance(body, m.ApiVersionsResponse)
    assert body.finalized_features_epoch == 5


def test_metadata_v1_request() -> None:
    body = m.MetadataRequest(topics=[m.MetadataRequestTopic(name="test")])
    assert encode_request(3, 1, 7, "c", body) == METADATA_V1_REQUEST
    req = decode_request(METADATA_V1_REQUEST[4:])
    assert req.body == body
    everything = decode_request(METADATA_V1_REQUEST_ALL_TOPICS[4:])
    assert isinstance(everything.body, m.MetadataRequest)
    assert everything.body.topics is None


def test_unknown_api_versions_version_is_answered_with_v0() -> None:
    # A future client: ApiVersions v127, header v2, a body we cannot know.
    frame = hx("0012 007f 00000009 0001") + b"c" + hx("00") + b"\x99future body"
    with pytest.raises(UnsupportedVersionError) as info:
        decode_request(frame)
    err = info.value
    assert err.code == ErrorCode.UNSUPPORTED_VERSION
    assert int(err.code) == 35
    assert (err.api_key, err.api_version, err.correlation_id, err.client_id) == (18, 127, 9, "c")
    answer = encode_unsupported_api_versions(err.correlation_id or 0)
    n = len(ADVERTISED)
    assert answer[:14] == hx(f"{4 + 2 + 4 + 6 * n:08x} 00000009 0023 {n:08x}")
    assert answer[14:20] == hx("0000 0003 0009")  # Produce 3-9 first
    # a client that sent v3 reads this v0 answer
    corr, body = decode_response(answer[4:], 18, 3)
    assert corr == 9
    assert isinstance(body, m.ApiVersionsResponse)
    assert body.error_code == 35
    assert {(k.api_key, k.min_version, k.max_version) for k in body.api_keys} == {
        (k, lo, hi) for k, (lo, hi) in ADVERTISED.items()
    }


def test_unknown_api_versions_version_with_a_broken_header_still_gives_correlation() -> None:
    with pytest.raises(UnsupportedVersionError) as info:
        decode_request(hx("0012 0010 0000002a 7fff"))
    assert info.value.correlation_id == 42


@pytest.mark.parametrize(
    ("key", "version"),
    [(3, 0), (3, 13), (0, 2), (1, 13), (ApiKey.OFFSET_DELETE, 1), (99, 0), (-1, 0)],
)
def test_unsupported_keys_and_versions(key: int, version: int) -> None:
    frame = hx(f"{key & 0xFFFF:04x} {version:04x} 00000003 ffff") + bytes(20)
    with pytest.raises(UnsupportedVersionError) as info:
        decode_request(frame)
    assert (info.value.api_key, info.value.api_version) == (key, version)
    assert info.value.correlation_id == 3


def test_truncated_header() -> None:
    for n in range(8):
        with pytest.raises(ProtocolError):
            decode_request(hx("0003 0001 00000007")[:n])
    with pytest.raises(ProtocolError):
        decode_request(hx("0003 0001 00000007 0005") + b"ab")  # client id cut short
