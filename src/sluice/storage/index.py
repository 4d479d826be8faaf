"""Sparse indexes of one segment, after Kafka's ``OffsetIndex`` and ``TimeIndex``.

Entries live in memory as compact arrays and are written to disk whole when a segment is sealed
or the log closes cleanly. The active segment's index files are therefore never trusted after an
unclean stop: recovery rebuilds them from the log, which is the only source of truth.

On disk (little-endian): ``.index`` holds (relative offset i32, position i32) pairs;
``.timeindex`` holds (timestamp i64, relative offset i64) pairs.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_right
from pathlib import Path

from sluice.storage.files import write_atomic


class IndexCorruptError(Exception):
    """An index file failed its sanity check; the caller rebuilds it from the log."""


def _load(path: Path, typecode: str) -> tuple[array[int], array[int]]:
    raw = path.read_bytes()
    item = array(typecode)
    if len(raw) % (2 * item.itemsize):
        raise IndexCorruptError(f"{path.name}: size {len(raw)} is not a whole number of entries")
    item.frombytes(raw)
    if sys.byteorder != "little":
        item.byteswap()
    return item[0::2], item[1::2]


def _save(path: Path, typecode: str, first: array[int], second: array[int], sync: bool) -> None:
    pairs = array(typecode, bytes(2 * len(first) * first.itemsize))
    pairs[0::2] = array(typecode, first)
    pairs[1::2] = array(typecode, second)
    if sys.byteorder != "little":
        pairs.byteswap()
    write_atomic(path, pairs.tobytes(), sync=sync)


class OffsetIndex:
    """Relative offset -> file position of the batch starting there, one entry every few KiB."""

    __slots__ = ("max_entries", "offsets", "positions")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.offsets: array[int] = array("i")
        self.positions: array[int] = array("i")

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def full(self) -> bool:
        return len(self.offsets) >= self.max_entries

    def append(self, relative_offset: int, position: int) -> None:
        self.offsets.append(relative_offset)
        self.positions.append(position)

    def entry_at_or_before(self, relative_offset: int) -> int:
        """The number of the last entry at or before ``relative_offset`` (-1: none): where a scan
        for it starts (:meth:`LogSegment.scan_position`, which checks the entry against the log
        first)."""
        return bisect_right(self.offsets, relative_offset) - 1

    def load(self, path: Path, log_size: int) -> None:
        offsets, positions = _load(path, "i")
        prev_o, prev_p = -1, -1
        for o, p in zip(offsets, positions, strict=True):
            if o <= prev_o or p <= prev_p or p >= log_size:
                raise IndexCorruptError(f"{path.name}: entries are not increasing or past the log")
            prev_o, prev_p = o, p
        self.offsets, self.positions = offsets, positions

    def save(self, path: Path, *, sync: bool = True) -> None:
        _save(path, "i", self.offsets, self.positions, sync)


class TimeIndex:
    """Max timestamp so far -> relative offset of the batch that reached it (timestamps increase)."""

    __slots__ = ("max_entries", "offsets", "timestamps")

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.timestamps: array[int] = array("q")
        self.offsets: array[int] = array("q")

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def full(self) -> bool:
        return len(self.timestamps) >= self.max_entries

    @property
    def last_timestamp(self) -> int:
        return self.timestamps[-1] if self.timestamps else -1

    def maybe_append(self, timestamp: int, relative_offset: int) -> None:
        if not self.timestamps or timestamp > self.timestamps[-1]:
            self.timestamps.append(timestamp)
            self.offsets.append(relative_offset)

    def entry_before(self, timestamp: int) -> int:
        """The number of the last entry whose timestamp is below ``timestamp`` (-1: none): a scan
        for the first batch with max timestamp >= ``timestamp`` may start after its offset,
        every batch up to it being older (:meth:`LogSegment.time_scan_start`, which checks
        the entry against the log first)."""
        return bisect_right(self.timestamps, timestamp - 1) - 1

    def load(self, path: Path, max_relative_offset: int) -> None:
        timestamps, offsets = _load(path, "q")
        prev_t, prev_o = None, -1
        for t, o in zip(timestamps, offsets, strict=True):
            if (prev_t is not None and t <= prev_t) or o < prev_o or o > max_relative_offset:
                raise IndexCorruptError(f"{path.name}: entries are not increasing or past the log")
            prev_t, prev_o = t, o
        self.timestamps, self.offsets = timestamps, offsets

    def save(self, path: Path, *, sync: bool = True) -> None:
        _save(path, "q", self.timestamps, self.offsets, sync)
