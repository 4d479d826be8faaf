"""The Fetch response fast path: record sets pass through as pieces, never concatenated."""

from __future__ import annotations

from dataclasses import dataclass

from sluice.protocol import messages as m
from sluice.protocol.codec import decode_response, encode_response, encode_response_bytes
from sluice.protocol.fast import INLINE_RECORDS, Piece
from sluice.protocol.schema import Records


@dataclass(frozen=True)
class FakeSlice:
    """Stands in for storage's FileSlice."""

    data: bytes

    @property
    def length(self) -> int:
        return len(self.data)

    def read(self) -> bytes:
        return self.data


def _response(records: list[Records | None]) -> m.FetchResponse:
    parts = [
        m.FetchPartitionData(
            partition_index=i, high_watermark=100 + i, records=r, aborted_transactions=None
        )
        for i, r in enumerate(records)
    ]
    return m.FetchResponse(responses=[m.FetchableTopicResponse(topic="t", partitions=parts)])


def _join(pieces: list[Piece]) -> bytes:
    return b"".join(
        bytes(p) if isinstance(p, bytes | bytearray | memoryview) else p.read() for p in pieces
    )


def test_big_record_sets_are_passed_through_by_identity() -> None:
    big = memoryview(bytearray(b"r" * (1 << 20)))
    on_disk = FakeSlice(b"f" * (INLINE_RECORDS + 1))
    small = b"s" * 10
    resp = _response([big, small, None, on_disk, b""])
    for version in (4, 11, 12):
        pieces = encode_response(1, version, 9, resp)
        assert any(p is big for p in pieces)
        assert any(p is on_disk for p in pieces)
        assert not any(p is small for p in pieces)  # small sets are inlined
        frame = _join(pieces)
        assert int.from_bytes(frame[:4], "big") == len(frame) - 4
        assert frame == encode_response_bytes(1, version, 9, resp)
        corr, body = decode_response(memoryview(frame)[4:], 1, version)
        assert corr == 9
        assert isinstance(body, m.FetchResponse)
        got = [p.records for p in body.responses[0].partitions]
        assert got == [big, small, None, on_disk.data, b""]


def test_only_header_bytes_are_copied() -> None:
    big = b"x" * (1 << 20)
    pieces = encode_response(1, 12, 1, _response([big, big]))
    copied = sum(len(p) for p in pieces if isinstance(p, bytearray))
    assert sum(p is big for p in pieces) == 2
    assert copied < 200
