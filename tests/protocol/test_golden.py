"""Byte vectors derived by hand from the protocol guide, as real clients send them."""

from __future__ import annotations

import pytest

from sluice.errors import ErrorCode
from sluice.protocol import messages as m
from sluice.protocol.api_versions import SUPPORTED
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
    answer = encode_unsupported_api_versions(err.correlation_id or 0, SUPPORTED)
    n = len(SUPPORTED)
    assert answer[:14] == hx(f"{4 + 2 + 4 + 6 * n:08x} 00000009 0023 {n:08x}")
    assert answer[14:20] == hx("0000 0003 0009")  # Produce 3-9 first
    # a client that sent v3 reads this v0 answer
    corr, body = decode_response(answer[4:], 18, 3)
    assert corr == 9
    assert isinstance(body, m.ApiVersionsResponse)
    assert body.error_code == 35
    assert {(k.api_key, k.min_version, k.max_version) for k in body.api_keys} == {
        (k, lo, hi) for k, (lo, hi) in SUPPORTED.items()
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


# ---- the admin APIs answered for a single node -------------------------------------------------


def sized(frame: bytes) -> bytes:
    return len(frame).to_bytes(4, "big") + frame


# DescribeCluster v0 is flexible from v0: header v2 (legacy client id, then a tag section), a
# bool, the body's tag section. The second form carries an unknown tagged field (tag 5, 2 bytes).
DESCRIBE_CLUSTER_V0_REQUEST = sized(hx("003c 0000 00000007 0001") + b"c" + hx("00 01 00"))
DESCRIBE_CLUSTER_V0_REQUEST_WITH_TAG = sized(
    hx("003c 0000 00000007 0001") + b"c" + hx("00 01 01 05 02 abcd")
)
# Response header v1 (correlation id + tag section); compact strings are length + 1.
DESCRIBE_CLUSTER_V0_RESPONSE = sized(
    hx("00000007 00")  # header
    + hx("00000000 0000 00")  # throttle, error, null error message
    + hx("0f")
    + b"sluice-cluster"
    + hx("00000000")  # controller id
    + hx("02 00000000 0a")  # one broker: id 0, host
    + b"127.0.0.1"
    + hx("00002384 00 00")  # port 9092, null rack, broker tags
    + hx("00001fa0 00")  # cluster authorized operations, body tags
)


def test_describe_cluster_v0_frames() -> None:
    body = m.DescribeClusterRequest(include_cluster_authorized_operations=True)
    assert encode_request(ApiKey.DESCRIBE_CLUSTER, 0, 7, "c", body) == DESCRIBE_CLUSTER_V0_REQUEST
    assert decode_request(DESCRIBE_CLUSTER_V0_REQUEST[4:]).body == body
    assert decode_request(DESCRIBE_CLUSTER_V0_REQUEST_WITH_TAG[4:]).body == body
    response = m.DescribeClusterResponse(
        cluster_id="sluice-cluster",
        controller_id=0,
        brokers=[m.DescribeClusterBroker(broker_id=0, host="127.0.0.1", port=9092)],
        cluster_authorized_operations=0x1FA0,
    )
    assert (
        encode_response_bytes(ApiKey.DESCRIBE_CLUSTER, 0, 7, response)
        == DESCRIBE_CLUSTER_V0_RESPONSE
    )
    assert decode_response(DESCRIBE_CLUSTER_V0_RESPONSE[4:], ApiKey.DESCRIBE_CLUSTER, 0) == (
        7,
        response,
    )


def test_describe_cluster_v2_adds_fenced_flags() -> None:
    body = m.DescribeClusterRequest(include_fenced_brokers=True)
    # v1 endpoint type (1), v2 include_fenced_brokers
    expected = sized(hx("003c 0002 00000007 0001") + b"c" + hx("00 00 01 01 00"))
    assert encode_request(ApiKey.DESCRIBE_CLUSTER, 2, 7, "c", body) == expected


def test_describe_log_dirs_frames() -> None:
    # v1, not flexible: a null topic array asks for everything.
    everything = sized(hx("0023 0001 00000001 0001") + b"c" + hx("ffffffff"))
    req = decode_request(everything[4:])
    assert req.body == m.DescribeLogDirsRequest(topics=None)
    # v4 response, flexible: top-level error code (v3+), total/usable bytes (v4+).
    response = m.DescribeLogDirsResponse(
        results=[
            m.DescribeLogDirsResult(
                log_dir="/d",
                topics=[
                    m.DescribeLogDirsTopic(
                        name="t",
                        partitions=[
                            m.DescribeLogDirsPartition(partition_index=0, partition_size=1024)
                        ],
                    )
                ],
                total_bytes=2**40,
                usable_bytes=2**30,
            )
        ]
    )
    expected = sized(
        hx("00000001 00")  # header v1
        + hx("00000000 0000")  # throttle, error code
        + hx("02 0000 03")
        + b"/d"  # one result: error, log dir
        + hx("02 02")
        + b"t"  # one topic "t"
        + hx("02 00000000 0000000000000400 0000000000000000 00 00")  # partition 0: 1 KiB, lag 0
        + hx("00")  # topic tags
        + hx("0000010000000000 0000000040000000 00")  # total, usable, result tags
        + hx("00")  # body tags
    )
    assert encode_response_bytes(ApiKey.DESCRIBE_LOG_DIRS, 4, 1, response) == expected
    # v2 has neither the top-level error code nor the byte counts.
    v2 = decode_response(
        sized(hx("00000001 00 00000000 02 0000 03") + b"/d" + hx("01 00 00"))[4:],
        ApiKey.DESCRIBE_LOG_DIRS,
        2,
    )[1]
    assert v2 == m.DescribeLogDirsResponse(results=[m.DescribeLogDirsResult(log_dir="/d")])


def test_elect_leaders_v0_request() -> None:
    # No election type before v1; an int32-counted array of (topic, partitions); timeout.
    frame = sized(
        hx("002b 0000 00000001 0001")
        + b"c"
        + hx("00000001 0001")
        + b"t"
        + hx("00000002 00000000 00000001 0000ea60")
    )
    body = m.ElectLeadersRequest(
        topic_partitions=[m.ElectLeadersTopic(topic="t", partitions=[0, 1])], timeout_ms=60000
    )
    assert decode_request(frame[4:]).body == body
    assert encode_request(ApiKey.ELECT_LEADERS, 0, 1, "c", body) == frame


def test_describe_configs_v0_has_is_default_and_v1_a_source() -> None:
    entry = m.DescribeConfigsResourceResult(
        name="retention.ms", value="60000", read_only=False, is_default=True, config_source=5
    )
    body = m.DescribeConfigsResponse(
        results=[
            m.DescribeConfigsResult(
                error_message=None, resource_type=2, resource_name="t", configs=[entry]
            )
        ]
    )
    head = hx("00000001 00000000 00000001 0000 ffff 02 0001") + b"t" + hx("00000001 000c")
    head += b"retention.ms" + hx("0005") + b"60000"
    v0 = sized(head + hx("00 01 00"))  # read_only, is_default, is_sensitive
    v1 = sized(head + hx("00 05 00 00000000"))  # read_only, config_source, is_sensitive, synonyms
    assert encode_response_bytes(ApiKey.DESCRIBE_CONFIGS, 0, 1, body) == v0
    assert encode_response_bytes(ApiKey.DESCRIBE_CONFIGS, 1, 1, body) == v1
