"""Kafka wire protocol, sans-IO: bytes in, typed values out, and back. No sockets here.

Modules: :mod:`.primitives` (reader/writers, errors), :mod:`.schema` (the generic,
schema-driven codec), :mod:`.messages` (typed bodies of every API; those of the admin and transaction
APIs in :mod:`.admin_messages`, built on first use), :mod:`.fast` (Produce and
Fetch paths that never touch records), :mod:`.codec` (whole frames: headers + bodies),
:mod:`.framing` (size prefixes, the frame reader), :mod:`.api_versions` (what we advertise), :mod:`.records`
(record batch v2).
"""

from sluice.protocol.api_versions import SUPPORTED, api_versions_response, is_supported
from sluice.protocol.codec import (
    Request,
    RequestBody,
    RequestHeader,
    ResponseBody,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    encode_response_bytes,
    encode_unsupported_api_versions,
    request_header_version,
    response_header_version,
)
from sluice.protocol.fast import Piece
from sluice.protocol.framing import FrameReader, FrameSizeError, frame_size
from sluice.protocol.messages import APIS, ApiKey
from sluice.protocol.primitives import ProtocolError, UnsupportedVersionError

__all__ = [
    "APIS",
    "SUPPORTED",
    "ApiKey",
    "FrameReader",
    "FrameSizeError",
    "Piece",
    "ProtocolError",
    "Request",
    "RequestBody",
    "RequestHeader",
    "ResponseBody",
    "UnsupportedVersionError",
    "api_versions_response",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "encode_response_bytes",
    "encode_unsupported_api_versions",
    "frame_size",
    "is_supported",
    "request_header_version",
    "response_header_version",
]
