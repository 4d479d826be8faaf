"""Transaction markers: the control batches that end a producer's transaction on a partition
(sans-IO).

A marker is a batch with attributes 0x30 (transactional and control) holding one record whose
key is ``int16 version 0, int16 type`` (0 ABORT, 1 COMMIT) and whose value is ``int16 version 0,
int32 coordinator epoch``, as Kafka's ``EndTransactionMarker`` writes it. Only the broker writes
them (clients may not: :func:`sluice.protocol.records.scan_batches` refuses control batches), so
building one needs no validation, and reading one trusts the log.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from sluice.errors import CorruptRecordError
from sluice.protocol.crc import crc32c
from sluice.protocol.records import (
    CONTROL_BIT,
    HEADER_SIZE,
    TRANSACTIONAL_BIT,
    BatchHeader,
    Bytes,
    read_varint,
    write_varint,
)

_KEY = struct.Struct(">hh")
_VALUE = struct.Struct(">hi")
_TAIL = struct.Struct(">hiqqqhii")
_LEAD = struct.Struct(">qiibI")
MARKER_ATTRIBUTES = TRANSACTIONAL_BIT | CONTROL_BIT


class ControlType(IntEnum):
    ABORT = 0
    COMMIT = 1


class Marker(NamedTuple):
    """What a marker says: how its transaction ended, and the coordinator epoch that wrote it."""

    commit: bool
    coordinator_epoch: int


def build_marker(
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    commit: bool,
    *,
    timestamp: int,
    base_offset: int = 0,
) -> bytes:
    """The control batch ending ``producer_id``'s transaction: COMMIT or ABORT, one record."""
    key = _KEY.pack(0, ControlType.COMMIT if commit else ControlType.ABORT)
    value = _VALUE.pack(0, coordinator_epoch)
    record = bytearray()
    record.append(0)  # record attributes
    write_varint(record, 0)  # timestamp delta
    write_varint(record, 0)  # offset delta
    write_varint(record, len(key))
    record += key
    write_varint(record, len(value))
    record += value
    write_varint(record, 0)  # headers
    body = bytearray()
    write_varint(body, len(record))
    body += record
    tail = (
        _TAIL.pack(
            MARKER_ATTRIBUTES,
            0,  # last offset delta
            timestamp,
            timestamp,
            producer_id,
            producer_epoch,
            -1,  # base sequence: markers have none
            1,
        )
        + body
    )
    return _LEAD.pack(base_offset, len(tail) + 9, 0, 2, crc32c(tail)) + tail


def read_marker(header: BatchHeader, batch: Bytes) -> Marker | None:
    """The marker a stored control batch holds (``batch`` starts at its header), or None when it
    holds no record (the cleaner emptied it) or is not a transaction marker."""
    if header.records_count < 1 or header.compression:
        return None
    view = memoryview(batch)
    pos = HEADER_SIZE
    try:
        _length, pos = read_varint(view, pos)
        pos += 1  # attributes
        _, pos = read_varint(view, pos)  # timestamp delta
        _, pos = read_varint(view, pos)  # offset delta
        key_len, pos = read_varint(view, pos)
        if key_len < _KEY.size:
            return None
        _version, kind = _KEY.unpack_from(view, pos)
        pos += key_len
        value_len, pos = read_varint(view, pos)
        epoch = _VALUE.unpack_from(view, pos)[1] if value_len >= _VALUE.size else -1
    except (struct.error, CorruptRecordError):
        return None
    if kind not in (ControlType.ABORT, ControlType.COMMIT):
        return None
    return Marker(kind == ControlType.COMMIT, epoch)
