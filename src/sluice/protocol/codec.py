"""Requests and responses as whole frames: headers, bodies, and the choice between the generic
codec and the fast paths. This is the module the broker (decode requests, encode responses) and
the client side (encode requests, decode responses) call.

Header versions: requests use header v1 (client id) or, for flexible versions, v2 (plus tagged
fields); responses use v0 (correlation id) or, for flexible versions, v1 (plus tagged fields),
except ApiVersions responses, which are always v0 so that a client that does not yet know the
broker's versions can read them.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from sluice.dataclass import dataclass
from sluice.errors import ErrorCode
from sluice.protocol import messages as m
from sluice.protocol.api_versions import is_supported
from sluice.protocol.fast import (
    Piece,
    decode_fetch_request,
    decode_produce_request,
    encode_fetch_response,
)
from sluice.protocol.messages import APIS, ApiKey
from sluice.protocol.primitives import (
    I16,
    I32,
    Buffer,
    ProtocolError,
    Reader,
    UnsupportedVersionError,
    write_nullable_string,
)
from sluice.protocol.schema import encode_struct, plan

if TYPE_CHECKING:
    RequestBody = (
        m.ProduceRequest
        | m.FetchRequest
        | m.ListOffsetsRequest
        | m.MetadataRequest
        | m.OffsetCommitRequest
        | m.OffsetFetchRequest
        | m.FindCoordinatorRequest
        | m.JoinGroupRequest
        | m.HeartbeatRequest
        | m.LeaveGroupRequest
        | m.SyncGroupRequest
        | m.DescribeGroupsRequest
        | m.ListGroupsRequest
        | m.SaslHandshakeRequest
        | m.ApiVersionsRequest
        | m.CreateTopicsRequest
        | m.DeleteTopicsRequest
        | m.DeleteRecordsRequest
        | m.InitProducerIdRequest
        | m.AddPartitionsToTxnRequest
        | m.AddOffsetsToTxnRequest
        | m.EndTxnRequest
        | m.TxnOffsetCommitRequest
        | m.DescribeConfigsRequest
        | m.AlterConfigsRequest
        | m.SaslAuthenticateRequest
        | m.CreatePartitionsRequest
        | m.DeleteGroupsRequest
        | m.IncrementalAlterConfigsRequest
        | m.OffsetDeleteRequest
        | m.DescribeLogDirsRequest
        | m.ElectLeadersRequest
        | m.AlterPartitionReassignmentsRequest
        | m.ListPartitionReassignmentsRequest
        | m.DescribeClusterRequest
        | m.WriteTxnMarkersRequest
        | m.DescribeProducersRequest
        | m.DescribeTransactionsRequest
        | m.ListTransactionsRequest
        | m.ConsumerGroupHeartbeatRequest
    )

    ResponseBody = (
        m.ProduceResponse
        | m.FetchResponse
        | m.ListOffsetsResponse
        | m.MetadataResponse
        | m.OffsetCommitResponse
        | m.OffsetFetchResponse
        | m.FindCoordinatorResponse
        | m.JoinGroupResponse
        | m.HeartbeatResponse
        | m.LeaveGroupResponse
        | m.SyncGroupResponse
        | m.DescribeGroupsResponse
        | m.ListGroupsResponse
        | m.SaslHandshakeResponse
        | m.ApiVersionsResponse
        | m.CreateTopicsResponse
        | m.DeleteTopicsResponse
        | m.DeleteRecordsResponse
        | m.InitProducerIdResponse
        | m.AddPartitionsToTxnResponse
        | m.AddOffsetsToTxnResponse
        | m.EndTxnResponse
        | m.TxnOffsetCommitResponse
        | m.DescribeConfigsResponse
        | m.AlterConfigsResponse
        | m.SaslAuthenticateResponse
        | m.CreatePartitionsResponse
        | m.DeleteGroupsResponse
        | m.IncrementalAlterConfigsResponse
        | m.OffsetDeleteResponse
        | m.DescribeLogDirsResponse
        | m.ElectLeadersResponse
        | m.AlterPartitionReassignmentsResponse
        | m.ListPartitionReassignmentsResponse
        | m.DescribeClusterResponse
        | m.WriteTxnMarkersResponse
        | m.DescribeProducersResponse
        | m.DescribeTransactionsResponse
        | m.ListTransactionsResponse
        | m.ConsumerGroupHeartbeatResponse
    )
else:  # at run time: not built from the admin APIs' classes, which load on first use
    RequestBody = ResponseBody = Any


@dataclass(slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None = None


@dataclass(slots=True)
class Request:
    """A decoded request: its header fields and a typed body (match on its class)."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: RequestBody

    @property
    def header(self) -> RequestHeader:
        return RequestHeader(self.api_key, self.api_version, self.correlation_id, self.client_id)


def is_flexible(api_key: int, api_version: int) -> bool:
    spec = APIS.get(api_key)
    return spec is not None and spec.flexible(api_version)


def request_header_version(api_key: int, api_version: int) -> int:
    return 2 if is_flexible(api_key, api_version) else 1


def response_header_version(api_key: int, api_version: int) -> int:
    if api_key == ApiKey.API_VERSIONS:
        return 0
    return 1 if is_flexible(api_key, api_version) else 0


# -- headers ---------------------------------------------------------------------------------------


def encode_request_header(out: bytearray, header: RequestHeader, header_version: int) -> None:
    out += I16.pack(header.api_key)
    out += I16.pack(header.api_version)
    out += I32.pack(header.correlation_id)
    if header_version >= 1:
        write_nullable_string(out, header.client_id)  # never compact, even in v2
    if header_version >= 2:
        out.append(0)


def encode_response_header(out: bytearray, correlation_id: int, header_version: int) -> None:
    out += I32.pack(correlation_id)
    if header_version >= 1:
        out.append(0)


# -- the broker side: requests in, responses out ---------------------------------------------------


def decode_request(frame: Buffer, *, max_elements: int = sys.maxsize) -> Request:
    """Decode one request frame (without its size prefix).

    Raises UnsupportedVersionError for an API key or version outside
    :data:`sluice.protocol.api_versions.SUPPORTED` (with the correlation id whenever the header
    could be read, so the broker can answer ApiVersions with a v0 error response), and
    ProtocolError for malformed bytes (TooManyElementsError for more than ``max_elements``
    array elements in all).
    """
    r = Reader(frame, max_elements=max_elements)
    api_key = r.int16()
    api_version = r.int16()
    correlation_id = r.int32()
    spec = APIS.get(api_key)
    if spec is None:
        raise UnsupportedVersionError(
            f"unknown API key {api_key}", api_key, api_version, correlation_id
        )
    try:
        client_id = r.nullable_string()
        if spec.flexible(api_version):
            r.skip_tagged_fields()
    except ProtocolError:
        if is_supported(api_key, api_version):
            raise
        client_id = None
    if not is_supported(api_key, api_version):
        raise UnsupportedVersionError(
            f"{spec.key.name} v{api_version} is not supported",
            api_key,
            api_version,
            correlation_id,
            client_id,
        )
    body: Any
    if api_key == ApiKey.PRODUCE:
        body = decode_produce_request(r, api_version)
    elif api_key == ApiKey.FETCH:
        body = decode_fetch_request(r, api_version)
    else:
        cls = _REQUEST_CLASS.get(api_key)
        if cls is None:
            cls = _REQUEST_CLASS[api_key] = spec.request
        body = plan(cls, api_version, spec.flexible(api_version)).read(r)
    return Request(api_key, api_version, correlation_id, client_id, body)


def encode_response(
    api_key: int, api_version: int, correlation_id: int, body: ResponseBody
) -> list[Piece]:
    """A whole response frame (size prefix included) as buffers to write in order.

    Only Fetch yields more than one piece: record sets bigger than a few KiB are passed through
    as pieces of their own, never copied.
    """
    if api_key == ApiKey.FETCH and isinstance(body, m.FetchResponse):
        return encode_fetch_response(correlation_id, api_version, body)
    return [encode_response_bytes(api_key, api_version, correlation_id, body)]


def encode_response_bytes(
    api_key: int, api_version: int, correlation_id: int, body: ResponseBody
) -> bytearray:
    """As :func:`encode_response`, as one buffer (record sets are copied into it)."""
    spec = _spec(api_key)
    cls = _RESPONSE_CLASS.get(api_key)
    if cls is None:
        cls = _RESPONSE_CLASS[api_key] = spec.response
    if not isinstance(body, cls):
        raise TypeError(f"{type(body).__name__} is not a {spec.key.name} response")
    out = bytearray(4)
    encode_response_header(out, correlation_id, response_header_version(api_key, api_version))
    encode_struct(body, api_version, spec.flexible(api_version), out)
    out[0:4] = I32.pack(len(out) - 4)
    return out


def encode_unsupported_api_versions(
    correlation_id: int, served: dict[int, tuple[int, int]]
) -> bytearray:
    """The answer to an ApiVersions request at a version we do not know: a v0 response with
    UNSUPPORTED_VERSION and the ``served`` ranges, from which the client picks and retries."""
    from sluice.protocol.api_versions import api_versions_response

    body = api_versions_response(served, ErrorCode.UNSUPPORTED_VERSION)
    return encode_response_bytes(ApiKey.API_VERSIONS, 0, correlation_id, body)


# -- the client side: requests out, responses in ---------------------------------------------------


def encode_request(
    api_key: int,
    api_version: int,
    correlation_id: int,
    client_id: str | None,
    body: RequestBody,
) -> bytearray:
    """A whole request frame, size prefix included. Any version the schema describes is
    accepted, so a client can speak to brokers beyond sluice's own ranges."""
    spec = _spec(api_key)
    if not isinstance(body, spec.request):
        raise TypeError(f"{type(body).__name__} is not a {spec.key.name} request")
    out = bytearray(4)
    header = RequestHeader(api_key, api_version, correlation_id, client_id)
    encode_request_header(out, header, request_header_version(api_key, api_version))
    encode_struct(body, api_version, spec.flexible(api_version), out)
    out[0:4] = I32.pack(len(out) - 4)
    return out


def decode_response(frame: Buffer, api_key: int, api_version: int) -> tuple[int, ResponseBody]:
    """Decode a response frame (without its size prefix) to a request we sent at
    ``api_version``; returns (correlation_id, body). Record sets are slices of ``frame``."""
    spec = _spec(api_key)
    r = Reader(frame)
    correlation_id = r.int32()
    if response_header_version(api_key, api_version) >= 1:
        r.skip_tagged_fields()
    if (
        api_key == ApiKey.API_VERSIONS
        and r.remaining >= 2
        and I16.unpack_from(r.buf, r.pos)[0] == ErrorCode.UNSUPPORTED_VERSION
    ):
        api_version = 0  # the broker did not know our version and answered in v0
    body = plan(spec.response, api_version, spec.flexible(api_version)).read(r)
    return correlation_id, body


_REQUEST_CLASS: dict[int, type] = {}
_RESPONSE_CLASS: dict[int, type] = {}
"""The broker's side looks each API's classes up here: ``spec.request`` names them (an admin
API's are built on first use) and costs a property call, which every request would pay."""


def _spec(api_key: int) -> m.ApiSpec:
    spec = APIS.get(api_key)
    if spec is None:
        raise UnsupportedVersionError(f"unknown API key {api_key}", api_key, -1)
    return spec
