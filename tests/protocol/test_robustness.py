"""Malformed input of every kind gives ProtocolError (or a clean decode), never another
exception, and framing rejects oversized frames before their bodies arrive."""

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
from sluice.protocol.framing import FrameDecoder, frame_size
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


@given(st.lists(st.binary(min_size=1, max_size=50), max_size=10), st.integers(1, 20))
def test_frame_decoder_reassembles_any_split(bodies: list[bytes], chunk: int) -> None:
    stream = b"".join(len(b).to_bytes(4, "big") + b for b in bodies)
    dec = FrameDecoder(max_frame_bytes=1000)
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        got += [bytes(f) for f in dec.feed(stream[i : i + chunk])]
    assert got == bodies
    assert dec.buffered == 0


def test_frame_size() -> None:
    assert frame_size(b"\0\0\0") is None
    assert frame_size(b"\0\0\1\0rest") == 256
    assert frame_size(b"xx\0\0\0\5", 2) == 5
    with pytest.raises(ProtocolError):
        frame_size(b"\xff\xff\xff\xfe")


def test_oversized_frame_rejected_from_its_size_alone() -> None:
    dec = FrameDecoder(max_frame_bytes=100)
    assert dec.feed(b"\0\0\0\x64" + b"x" * 100) == [bytearray(b"x" * 100)]
    with pytest.raises(ProtocolError):
        dec.feed(b"\0\0\0\x65")  # 101 bytes announced, none sent yet
