"""Malformed input of every kind gives ProtocolError or a clean decode, never another exception;
what decodes re-encodes to an equal message. (Framing's own checks are in test_framing.)"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.protocol.api_versions import SUPPORTED
from sluice.protocol.codec import (
    decode_request,
    decode_response,
    encode_request,
    encode_response_bytes,
)
from sluice.protocol.messages import APIS, ApiKey
from sluice.protocol.primitives import ProtocolError, UnsupportedVersionError
from sluice.protocol.samples import sample

EDGES = [(k, v) for k, (lo, hi) in sorted(SUPPORTED.items()) for v in sorted({lo, hi})]


@pytest.mark.parametrize("case", EDGES, ids=lambda c: f"{ApiKey(c[0]).name}-v{c[1]}")
def test_every_truncation_of_a_request_is_a_protocol_error(case: tuple[int, int]) -> None:
    key, version = case
    body = sample(APIS[key].request, version, random.Random(1))
    frame = bytes(encode_request(key, version, 1, "c", body))[4:]
    for n in range(len(frame)):
        with pytest.raises(ProtocolError):
            decode_request(frame[:n])


@pytest.mark.parametrize("case", EDGES, ids=lambda c: f"{ApiKey(c[0]).name}-v{c[1]}")
def test_every_truncation_of_a_response_is_a_protocol_error(case: tuple[int, int]) -> None:
    key, version = case
    spec = APIS[key]
    body = sample(spec.response, version, random.Random(2))
    frame = bytes(encode_response_bytes(key, version, 1, body))[4:]
    for n in range(len(frame)):
        with pytest.raises(ProtocolError):
            decode_response(frame[:n], key, version)


def _reencodes(frame: bytes) -> bool:
    """If ``frame`` decodes as a request, what it decodes to survives encoding: the encoding
    decodes to an equal request, and encoding that gives the same bytes again (garbage need not
    be canonical, e.g. a bool byte of 2 or unknown tagged fields, so the input itself is not
    the reference). Returns whether it decoded."""
    try:
        req = decode_request(frame)
    except ProtocolError:
        return False
    again = encode_request(
        req.api_key, req.api_version, req.correlation_id, req.client_id, req.body
    )
    back = decode_request(bytes(again)[4:])
    assert back == req
    assert (
        encode_request(
            back.api_key, back.api_version, back.correlation_id, back.client_id, back.body
        )
        == again
    )
    return True


def _reencodes_response(frame: bytes, key: int, version: int) -> bool:
    """As :func:`_reencodes`, for a response to a request at ``version``."""
    try:
        corr, body = decode_response(frame, key, version)
    except ProtocolError:
        return False
    again = encode_response_bytes(key, version, corr, body)
    assert decode_response(bytes(again)[4:], key, version) == (corr, body)
    assert (
        encode_response_bytes(
            key, version, corr, decode_response(bytes(again)[4:], key, version)[1]
        )
        == again
    )
    return True


def _header(key: int, version: int) -> bytes:
    header = key.to_bytes(2, "big") + version.to_bytes(2, "big") + b"\0\0\0\1\xff\xff"
    if APIS[key].flexible(version):
        header += b"\0"
    return header


@settings(max_examples=300)
@given(st.sampled_from(EDGES), st.binary(max_size=200))
def test_garbage_bodies(case: tuple[int, int], garbage: bytes) -> None:
    key, version = case
    _reencodes(_header(key, version) + garbage)


@settings(max_examples=300)
@given(st.binary(max_size=100))
def test_garbage_frames(garbage: bytes) -> None:
    with contextlib.suppress(UnsupportedVersionError):  # a ProtocolError too: nothing to compare
        _reencodes(garbage)


BYTE_VALUES = (0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF)
"""What each byte of a valid frame is changed to: zero, small, bool-but-not-0/1, the sign and
varint-continuation edges. Random garbage rarely gets past the first fields; a valid frame
with one byte changed reaches every field of the message."""


def _one_byte_changes(frame: bytes) -> Iterator[bytes]:
    for at in range(len(frame)):
        if 0 < at < len(frame) - 1 and frame[at - 1] == frame[at] == frame[at + 1]:
            continue  # inside a run of equal bytes (a long string): its ends stand for it
        for b in BYTE_VALUES:
            if frame[at] != b:
                yield frame[:at] + bytes([b]) + frame[at + 1 :]


@pytest.mark.parametrize("case", EDGES, ids=lambda c: f"{ApiKey(c[0]).name}-v{c[1]}")
def test_every_one_byte_change_of_a_request_reencodes(case: tuple[int, int]) -> None:
    key, version = case
    body = sample(APIS[key].request, version, random.Random(3))
    frame = bytes(encode_request(key, version, 1, "c", body))[4:]
    decoded = 0
    for changed in _one_byte_changes(frame[8:]):  # past key, version, correlation id
        decoded += _reencodes(frame[:8] + changed)
    assert decoded > 0  # else nothing was compared


@pytest.mark.parametrize("case", EDGES, ids=lambda c: f"{ApiKey(c[0]).name}-v{c[1]}")
def test_every_one_byte_change_of_a_response_reencodes(case: tuple[int, int]) -> None:
    key, version = case
    body = sample(APIS[key].response, version, random.Random(4))
    frame = bytes(encode_response_bytes(key, version, 1, body))[4:]
    decoded = sum(
        _reencodes_response(changed, key, version) for changed in _one_byte_changes(frame)
    )
    assert decoded > 0

