"""Malformed input of every kind gives ProtocolError (or a clean decode), never another
exception. (Framing's own checks are in test_framing.)"""

from __future__ import annotations

import contextlib
import random

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
from sluice.protocol.primitives import ProtocolError

from .samples import sample

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


@settings(max_examples=300)
@given(st.sampled_from(EDGES), st.binary(max_size=200))
def test_garbage_bodies(case: tuple[int, int], garbage: bytes) -> None:
    key, version = case
    header = key.to_bytes(2, "big") + version.to_bytes(2, "big") + b"\0\0\0\1\xff\xff"
    if APIS[key].flexible(version):
        header += b"\0"
    with contextlib.suppress(ProtocolError):
        decode_request(header + garbage)


@settings(max_examples=300)
@given(st.binary(max_size=100))
def test_garbage_frames(garbage: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_request(garbage)
