"""The log cleaner's files, apart from its cleaning: the checkpoint (where the next run starts,
and below which recovery accepts offset gaps) and the swap files a crash may leave, which the
loader finishes at open. Kept out of :mod:`.compaction` so that opening a log (and importing
the broker) does not load the cleaning code."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sluice.dataclass import dataclass
from sluice.storage import txn_index
from sluice.storage.files import fsync_dir, read_json, write_json
from sluice.storage.segment import segment_name

log = logging.getLogger(__name__)

CLEANED_SUFFIX = ".log.cleaned"
SWAP_SUFFIX = ".swap"
TXN_SWAP_SUFFIX = f"{txn_index.SUFFIX}.swap"
CHECKPOINT_FILE = "cleaner-offset-checkpoint"
MAP_ENTRY_BYTES = 128
"""What one key costs in the offset map (a Python dict of keys of at most 16 bytes, measured at
about 120 bytes an entry for a million): ``log.cleaner.dedupe.buffer.size`` / this many keys."""


class CleaningAborted(Exception):
    """The log was closed or deleted, or the cleaner stopped, while this run was working."""


# -- the checkpoint ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CleanerCheckpoint:
    """A partition's cleaner state, durable in its directory (``cleaner-offset-checkpoint``)."""

    first_dirty: int
    """Where the next run's dirty section starts (Kafka's cleaner offset checkpoint)."""
    gaps_below: int
    """Every offset gap cleaning made lies below this: recovery accepts gaps there and only
    there (elsewhere a gap means stale bytes). Written before a run's first swap, never lowered."""

    def to_json(self) -> dict[str, int]:
        return {"first_dirty": self.first_dirty, "gaps_below": self.gaps_below}


def read_checkpoint(directory: Path) -> CleanerCheckpoint | None:
    raw = read_json(directory / CHECKPOINT_FILE)
    try:
        return CleanerCheckpoint(int(raw["first_dirty"]), int(raw["gaps_below"]))
    except (KeyError, TypeError, ValueError):
        return None


def write_checkpoint(directory: Path, checkpoint: CleanerCheckpoint) -> None:
    write_json(directory / CHECKPOINT_FILE, checkpoint.to_json())


def gaps_below(directory: Path) -> int:
    """Below which offset recovery must accept gaps (-1: nowhere)."""
    checkpoint = read_checkpoint(directory)
    return -1 if checkpoint is None else checkpoint.gaps_below


# -- the swap files ---------------------------------------------------------------------------------


def cleaned_path(directory: Path, base: int, token: str) -> Path:
    return directory / f"{segment_name(base)}.{token}{CLEANED_SUFFIX}"


def swap_path(directory: Path, base: int, end: int) -> Path:
    return directory / f"{segment_name(base)}.{segment_name(end)}{SWAP_SUFFIX}"


def txn_swap_path(directory: Path, base: int, end: int) -> Path:
    return directory / f"{segment_name(base)}.{segment_name(end)}{TXN_SWAP_SUFFIX}"


def _parse_swap(path: Path) -> tuple[int, int] | None:
    parts = path.name.split(".")
    if len(parts) == 3 and all(len(p) == 20 and p.isdigit() for p in parts[:2]):
        return int(parts[0]), int(parts[1])
    return None


def finish_swaps(directory: Path) -> int:
    """What a crash left of swaps (at open, before the segments are listed): committed ones are
    finished, uncommitted ``.cleaned`` files removed. Returns how many swaps were finished."""
    finished = 0
    for path in sorted(directory.glob(f"*{SWAP_SUFFIX}")):
        parsed = _parse_swap(path)
        if parsed is None:
            continue
        base, end = parsed
        log.warning("finishing the swap of cleaned segment %s (offsets %d-%d) a crash interrupted", path, base, end - 1)
        finish_swap_files(directory, base, end)
        finished += 1
    for stray in [*directory.glob(f"*{CLEANED_SUFFIX}"), *directory.glob(f"*{TXN_SWAP_SUFFIX}")]:
        stray.unlink(missing_ok=True)  # a transaction index swap file is stray once its swap is done
    if finished:
        fsync_dir(directory)
    return finished


def finish_swap_files(directory: Path, base: int, end: int) -> None:
    """Replace every segment with a base offset in [base, end) by the swap file. Idempotent, so a
    crash in the middle of it is finished by doing it again."""
    kinds = ("*.log", "*.index", "*.timeindex", f"*{txn_index.SUFFIX}")
    for path in [p for kind in kinds for p in directory.glob(kind)]:
        stem = path.name.split(".")[0]
        if len(stem) != 20 or not stem.isdigit() or not base <= int(stem) < end:
            continue
        if path.suffix in (".log", txn_index.SUFFIX) and int(stem) == base:
            continue  # replaced by the renames below, atomically
        path.unlink(missing_ok=True)
    txn_swap = txn_swap_path(directory, base, end)
    if txn_swap.exists():
        os.replace(txn_swap, directory / f"{segment_name(base)}{txn_index.SUFFIX}")
    os.replace(swap_path(directory, base, end), directory / f"{segment_name(base)}.log")
