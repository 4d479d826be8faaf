"""The Fetch response fast path: record sets pass through as pieces, never concatenated."""

from __future__ import annotations

from sluice.protocol import messages as m
from sluice.protocol.codec import decode_response, encode_response, encode_response_bytes
from sluice.protocol.fast import INLINE_RECORDS, Piece
from sluice.protocol.schema import Records


def _response(records: list[Records | None]) -> m.FetchResponse:
    parts = [
        m.FetchPartitionData(
            partition_index=i, high_watermark=100 + i, records=r, aborted_transactions=None
        )
        for i, r in enumerate(records)
    ]
    return m.FetchResponse(responses=[m.FetchableTopicResponse(topic="t", partitions=parts)])


def _join(pieces: list[Piece]) -> bytes:
    return b"".join(pieces)


def test_big_record_sets_are_passed_through_by_identity() -> None:
    big = memoryview(bytearray(b"r" * (1 << 20)))
    read = b"f" * (INLINE_RECORDS + 1)
    small = b"s" * 10
    resp = _response([big, small, None, read, b""])
    for version in (4, 11, 12):
        pieces = encode_response(1, version, 9, resp)
        assert any(p is big for p in pieces)
        assert any(p is read for p in pieces)
        assert not any(p is small for p in pieces)  # small sets are inlined
        frame = _join(pieces)
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4
        assert frame == encode_response_bytes(1, version, 9, resp)
        corr, body = decode_response(memoryview(frame)[4:], 1, version)
        assert corr == 9
        assert isinstance(body, m.FetchResponse)
        got = [p.records for p in body.responses[0].partitions]
        assert got == [big, small, None, read, b""]


def test_only_header_bytes_are_copied() -> None:
    big = b"x" * (1 << 20)
    pieces = encode_response(1, 12, 1, _response([big, big]))
    copied = sum(len(p) for p in pieces if isinstance(p, bytearray))
    assert sum(p is big for p in pieces) == 2
    assert copied < 200
