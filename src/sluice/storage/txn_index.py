"""The aborted-transactions index of a segment (``<base>.txnindex``, after Kafka's
``TransactionIndex``): one entry per transaction whose ABORT marker lies in the segment, so a
``read_committed`` Fetch can tell the consumer which transactional records to drop without the
broker reading any record.

An entry is Kafka's ``AbortedTxn``, 34 bytes big-endian: version (int16, 0), producer id, first
offset of the transaction, last offset (the marker's) and the last stable offset when it was
aborted (int64 each). The LSO lets a search stop early: once an entry's LSO is at or past the end
of the fetched range, every later entry belongs to a transaction that started after that range.
Committed transactions and markers of empty transactions need no entry.

The entries live in memory; the file is written whole when the segment is sealed and at a clean
close, and recovery rebuilds the entries of the segments it walks (they depend on producer state
from earlier segments, so unlike the offset and time indexes they cannot be rebuilt from the
segment alone: the recovery point never passes a segment whose entries are not on disk).
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from sluice.storage.files import write_atomic

SUFFIX = ".txnindex"
_ENTRY = struct.Struct(">hqqqq")
ENTRY_SIZE = _ENTRY.size
VERSION = 0


class TxnIndexCorruptError(Exception):
    """An index file that is not a whole number of version-0 entries in offset order."""


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int
    """The offset of the ABORT marker."""
    last_stable_offset: int
    """The partition's LSO once this transaction was aborted (the first offset of the earliest
    other transaction still open then, else the marker's offset + 1)."""


def encode(entries: Iterable[AbortedTxn]) -> bytes:
    return b"".join(_ENTRY.pack(VERSION, *entry) for entry in entries)


def decode(raw: bytes, name: str = "txnindex") -> list[AbortedTxn]:
    if len(raw) % ENTRY_SIZE:
        raise TxnIndexCorruptError(f"{name}: size {len(raw)} is not a whole number of entries")
    out: list[AbortedTxn] = []
    last = -1
    for version, pid, first, end, lso in _ENTRY.iter_unpack(raw):
        if version != VERSION or end <= last or first > end:
            raise TxnIndexCorruptError(f"{name}: an entry of version {version} or out of order")
        last = end
        out.append(AbortedTxn(pid, first, end, lso))
    return out


def load(path: Path) -> list[AbortedTxn]:
    """The entries of ``path``; none when it does not exist."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    return decode(raw, path.name)


def save(path: Path, entries: Sequence[AbortedTxn], *, sync: bool = True) -> None:
    """Write the file whole (atomically), or remove it when there is no entry."""
    if entries:
        write_atomic(path, encode(entries), sync=sync)
    else:
        path.unlink(missing_ok=True)


def _last_offset(entry: AbortedTxn) -> int:
    return entry.last_offset


def collect(
    entries: Sequence[AbortedTxn], start: int, upper: int, out: list[AbortedTxn]
) -> bool:
    """Add to ``out`` the entries overlapping [start, upper); True when the search is complete
    (an entry's LSO reached ``upper``: later ones started past the range), Kafka's rule.

    The entries are in marker order, so those whose marker lies before ``start`` (which
    overlap nothing, and whose LSO is at most their marker's offset + 1, so they end no
    search) are skipped by a binary search: a read_committed fetch near the end of a segment
    of a million aborted transactions looked at every one of them, on the event loop."""
    for i in range(bisect_left(entries, start, key=_last_offset), len(entries)):
        entry = entries[i]
        if entry.first_offset < upper:
            out.append(entry)
        if entry.last_stable_offset >= upper:
            return True
    return False
