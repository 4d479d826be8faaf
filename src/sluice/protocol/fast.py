"""Hand-written paths for the two messages that carry record sets: Produce requests in, Fetch
responses out.

Both treat the record set as opaque bytes. Produce decoding returns ``memoryview`` slices of the
request frame (which the server reads into a writable ``bytearray``, so the log can patch offsets
in place). Fetch encoding returns a list of pieces: small header buffers interleaved with the
record sets as they were given (any buffer), ready for ``writelines``; record data is never
concatenated.
The generic codec in :mod:`sluice.protocol.schema` gives the same results (the tests check it),
only slower.
"""

from __future__ import annotations

import struct
from typing import Any, NoReturn

from sluice.protocol.messages import (
    FetchPartition,
    FetchPartitionData,
    FetchRequest,
    FetchResponse,
    FetchTopic,
    ForgottenTopic,
    ProducePartitionData,
    ProduceRequest,
    ProduceTopicData,
)
from sluice.protocol.primitives import I16, I32, Buffer, ProtocolError, Reader, uvarint_bytes
from sluice.protocol.schema import Records, plan

_Q3 = struct.Struct(">qqq")
_Q2 = struct.Struct(">qq")

Piece = Buffer
"""One piece of an encoded response."""

INLINE_RECORDS = 4096
"""Record sets up to this size are copied into the header buffer: one fewer piece (and syscall
iovec entry) is worth more than avoiding a copy this small."""


def decode_produce_request(r: Reader, version: int) -> ProduceRequest:
    """Decode a Produce v3+ body; each partition's ``records`` is a slice of the input."""
    if version >= 9:
        tid = r.compact_nullable_string()
        acks = r.int16()
        timeout = r.int32()
        topics = []
        for _ in range(_count(r.compact_array_length())):
            name = r.compact_string()
            parts = []
            for _ in range(_count(r.compact_array_length())):
                index = r.int32()
                records = r.compact_nullable_bytes()
                r.skip_tagged_fields()
                parts.append(ProducePartitionData(index=index, records=records))
            r.skip_tagged_fields()
            topics.append(ProduceTopicData(name=name, partition_data=parts))
        r.skip_tagged_fields()
    else:
        tid = r.nullable_string()
        acks = r.int16()
        timeout = r.int32()
        topics = []
        for _ in range(_count(r.array_length())):
            name = r.string()
            parts = []
            for _ in range(_count(r.array_length())):
                index = r.int32()
                parts.append(ProducePartitionData(index=index, records=r.nullable_bytes()))
            topics.append(ProduceTopicData(name=name, partition_data=parts))
    return ProduceRequest(transactional_id=tid, acks=acks, timeout_ms=timeout, topic_data=topics)


def decode_fetch_request(r: Reader, version: int) -> FetchRequest:
    """Decode a Fetch v4-12 body. Every consumer poll is one of these, so the per-partition
    fields are read with one struct call each instead of the generic codec's closures."""
    flexible = version >= 12
    head = _FETCH_HEAD[version >= 7]
    if r.remaining < head.size:
        _short(r, head.size)
    replica_id, max_wait, min_bytes, max_bytes, isolation, *session = head.unpack_from(r.buf, r.pos)
    r.pos += head.size
    part = struct.Struct(
        ">i"
        + ("i" if version >= 9 else "")
        + "q"
        + ("i" if version >= 12 else "")
        + ("q" if version >= 5 else "")
        + "i"
    )
    string = r.compact_string if flexible else r.string
    length = r.compact_array_length if flexible else r.array_length
    topics = []
    for _ in range(_count(length())):
        name = string()
        parts = []
        for _ in range(_count(length())):
            if r.remaining < part.size:
                _short(r, part.size)
            vals = part.unpack_from(r.buf, r.pos)
            r.pos += part.size
            if flexible:
                r.skip_tagged_fields()
            it = iter(vals)
            parts.append(
                FetchPartition(
                    partition=next(it),
                    current_leader_epoch=next(it) if version >= 9 else -1,
                    fetch_offset=next(it),
                    last_fetched_epoch=next(it) if version >= 12 else -1,
                    log_start_offset=next(it) if version >= 5 else -1,
                    partition_max_bytes=next(it),
                )
            )
        if flexible:
            r.skip_tagged_fields()
        topics.append(FetchTopic(topic=name, partitions=parts))
    forgotten = []
    if version >= 7:
        for _ in range(_count(length())):
            name = string()
            n = _count(length())
            if r.remaining < 4 * n:
                _short(r, 4 * n)
            ids = list(struct.unpack_from(f">{n}i", r.buf, r.pos))
            r.pos += 4 * n
            if flexible:
                r.skip_tagged_fields()
            forgotten.append(ForgottenTopic(topic=name, partitions=ids))
    rack_id = string() if version >= 11 else ""
    req = FetchRequest(
        replica_id=replica_id,
        max_wait_ms=max_wait,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        isolation_level=isolation,
        session_id=session[0] if session else 0,
        session_epoch=session[1] if session else -1,
        topics=topics,
        forgotten_topics_data=forgotten,
        rack_id=rack_id,
    )
    if flexible:
        tags: dict[str, Any] = {}
        plan(FetchRequest, version, True).read_tagged(r, tags)
        if "cluster_id" in tags:
            req.cluster_id = tags["cluster_id"]
    return req


_FETCH_HEAD = (struct.Struct(">iiiib"), struct.Struct(">iiiibii"))


def _short(r: Reader, n: int) -> NoReturn:
    raise ProtocolError(f"truncated: need {n} bytes at {r.pos}, have {r.remaining}")


def _count(n: int) -> int:
    if n < 0:
        raise ProtocolError("null in a non-nullable array")
    return n


def records_length(records: Records) -> int:
    if isinstance(records, memoryview):
        return records.nbytes
    return len(records)


def encode_fetch_response(correlation_id: int, version: int, resp: FetchResponse) -> list[Piece]:
    """A whole Fetch v4+ response frame (size prefix, header, body) as pieces."""
    flexible = version >= 12
    first = out = bytearray(4)  # size, patched at the end
    out += I32.pack(correlation_id)
    if flexible:
        out.append(0)  # response header v1: no tagged fields
    pieces: list[Piece] = []
    total = 0
    out += I32.pack(resp.throttle_time_ms)
    if version >= 7:
        out += I16.pack(resp.error_code)
        out += I32.pack(resp.session_id)
    _length(out, len(resp.responses), flexible)
    tagged = plan(FetchPartitionData, version, True) if flexible else None
    for topic in resp.responses:
        name = topic.topic.encode()
        if flexible:
            out += uvarint_bytes(len(name) + 1)
        else:
            out += I16.pack(len(name))
        out += name
        _length(out, len(topic.partitions), flexible)
        for p in topic.partitions:
            out += I32.pack(p.partition_index)
            out += I16.pack(p.error_code)
            out += _Q3.pack(p.high_watermark, p.last_stable_offset, p.log_start_offset)[
                : 24 if version >= 5 else 16
            ]
            aborted = p.aborted_transactions
            if aborted is None:
                out += b"\x00" if flexible else b"\xff\xff\xff\xff"
            else:
                _length(out, len(aborted), flexible)
                for a in aborted:
                    out += _Q2.pack(a.producer_id, a.first_offset)
                    if flexible:
                        out.append(0)
            if version >= 11:
                out += I32.pack(p.preferred_read_replica)
            records = p.records
            if records is None:
                out += b"\x00" if flexible else b"\xff\xff\xff\xff"
            else:
                n = records_length(records)
                _length(out, n, flexible)
                if n <= INLINE_RECORDS:
                    out += records
                elif n:
                    pieces.append(out)
                    pieces.append(records)
                    total += len(out) + n
                    out = bytearray()
            if tagged is not None:
                if p.diverging_epoch is None and p.current_leader is None and p.snapshot_id is None:
                    out.append(0)
                else:
                    tagged.write_tagged(out, p)
        if flexible:
            out.append(0)
    if flexible:
        plan(FetchResponse, version, True).write_tagged(out, resp)
    pieces.append(out)
    total += len(out)
    first[0:4] = I32.pack(total - 4)
    return pieces


def _length(out: bytearray, n: int, flexible: bool) -> None:
    """An array count or bytes length: int32, or uvarint n + 1 in flexible versions."""
    if flexible:
        out += uvarint_bytes(n + 1)
    else:
        out += I32.pack(n)
