"""Storage benchmark: the partition log against a raw ``os.write`` baseline on the same disk.

Prints one table; run with ``sluice bench storage`` (``--help`` for sizes and durations). Each
case runs for ``--seconds`` or ``--max-mib``, whichever ends first, in a fresh directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluice.protocol.records import build_batch, iter_stored_batches
from sluice.storage import AckLevel, LogConfig, PartitionLog
from sluice.storage.partition import Partition

KIB = 1024
MIB = 1024 * KIB


@dataclass
class Result:
    case: str
    batch_bytes: int
    batches: int
    seconds: float

    @property
    def mb_s(self) -> float:
        return self.batches * self.batch_bytes / self.seconds / 1e6

    @property
    def batches_s(self) -> float:
        return self.batches / self.seconds


def make_batch_of(size: int) -> bytes:
    """A valid record batch of about ``size`` bytes (records of up to 1000-byte values)."""
    value_size = min(1000, max(1, size - 80))
    count = max(1, (size - 61) // (value_size + 12))
    batch = build_batch([(None, b"x" * value_size)] * count)
    pad = size - len(batch)
    if pad > 0:  # grow the last record's value to hit the size exactly
        records = [(None, b"x" * value_size)] * (count - 1) + [(None, b"x" * (value_size + pad))]
        batch = build_batch(records)
        while len(batch) > size:
            pad -= len(batch) - size
            records[-1] = (None, b"x" * (value_size + pad))
            batch = build_batch(records)
    return batch


def _bounded(seconds: float, max_bytes: int, batch: int) -> Callable[[int], bool]:
    deadline = time.perf_counter() + seconds
    limit = max(1, max_bytes // batch)
    return lambda n: n < limit and (n % 16 != 0 or time.perf_counter() < deadline)


def raw_write(path: Path, batch: bytes, seconds: float, max_bytes: int, fsync: bool) -> Result:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    go = _bounded(seconds, max_bytes, len(batch))
    n = 0
    start = time.perf_counter()
    try:
        while go(n):
            os.write(fd, batch)
            if fsync:
                os.fdatasync(fd)
            n += 1
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    return Result("raw os.write" + (" + fdatasync each" if fsync else ""), len(batch), n, elapsed)


def log_inline(directory: Path, batch: bytes, seconds: float, max_bytes: int, ack: str) -> Result:
    log = PartitionLog.open(directory, LogConfig.from_dict({"sluice.append.mode": "inline", "sluice.append.ack": ack}))
    go = _bounded(seconds, max_bytes, len(batch))
    n = 0
    start = time.perf_counter()
    while go(n):
        log.append(batch)
        n += 1
    elapsed = time.perf_counter() - start
    log.close()
    return Result(f"log inline, ack={ack}", len(batch), n, elapsed)


def log_writer(directory: Path, batch: bytes, seconds: float, max_bytes: int, ack: str, appenders: int) -> Result:
    async def run() -> Result:
        log = Partition.open(directory, LogConfig.from_dict({"sluice.append.mode": "writer", "sluice.append.ack": ack}))
        go = _bounded(seconds, max_bytes, len(batch))
        count = 0

        async def appender() -> None:
            nonlocal count
            while go(count):
                count += 1
                await log.append(batch)

        start = time.perf_counter()
        await asyncio.gather(*(appender() for _ in range(appenders)))
        if ack == "queued":  # count until every queued append is written: appends are FIFO
            await log.append(batch, AckLevel.WRITTEN)
            count += 1
        elapsed = time.perf_counter() - start
        await log.close()
        return Result(f"log writer x{appenders}, ack={ack}", len(batch), count, elapsed)

    return _run_async(run())


def _run_async(coro: Coroutine[Any, Any, Result]) -> Result:
    import uvloop

    return uvloop.run(coro)


def read_all(directory: Path, fetch_bytes: int) -> Result:
    log = PartitionLog.open(directory, LogConfig())
    offset, total, reads = log.log_start_offset, 0, 0
    start = time.perf_counter()
    while offset < log.high_watermark:
        found = log.read(offset, fetch_bytes)
        assert found is not None
        data = found.read()
        total += len(data)
        reads += 1
        batches = list(iter_stored_batches(data))
        offset = batches[-1].next_offset
    elapsed = time.perf_counter() - start
    log.close()
    return Result(f"log read, {fetch_bytes // KIB} KiB fetches", total // max(1, reads), reads, elapsed)


def recovery(directory: Path, gib: float) -> tuple[float, float, int]:
    """Write ``gib`` GiB into one segment, 'crash', time the unclean and then the clean reopen."""
    batch = make_batch_of(16 * KIB)
    size = int(gib * 1024 * MIB)
    log = PartitionLog.open(directory, LogConfig.from_dict({"segment.bytes": str(min(size + MIB, (1 << 31) - 1)), "sluice.append.mode": "inline"}))
    while log.active_segment.size + len(batch) <= size:
        log.append(batch)
    log.flush()
    written = log.active_segment.size
    log.abandon()
    start = time.perf_counter()
    log = PartitionLog.open(directory, LogConfig())
    unclean = time.perf_counter() - start
    assert not log.recovery.clean and log.active_segment.size == written
    log.close()
    start = time.perf_counter()
    log = PartitionLog.open(directory, LogConfig())
    clean = time.perf_counter() - start
    assert log.recovery.clean
    log.close()
    return unclean, clean, written


STORAGE_JSON_KEYS = ("scenario", "case", "batch_bytes", "mb_s", "batches_s", "vs_raw")
"""The keys of ``--json``'s case lines (stable; the recovery line has ``segment_bytes``,
``unclean_open_s`` and ``clean_reopen_s`` instead of the last four)."""


def _json_line(case: str, batch_bytes: int, mb_s: float, batches_s: float, vs_raw: float | None) -> None:
    values = ("storage", case, batch_bytes, mb_s, batches_s, vs_raw)
    print(json.dumps(dict(zip(STORAGE_JSON_KEYS, values, strict=True))), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sluice bench storage", description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir under the cwd)")
    parser.add_argument("--sizes", default="1,16,256", help="batch sizes in KiB")
    parser.add_argument("--seconds", type=float, default=2.0, help="time bound per case")
    parser.add_argument("--max-mib", type=int, default=1024, help="byte bound per case")
    parser.add_argument("--recovery-gib", type=float, default=1.0)
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per case instead of the table (keys: STORAGE_JSON_KEYS)")
    args = parser.parse_args(argv)
    as_json = args.json
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-", dir=args.dir or Path.cwd()))
    max_bytes = args.max_mib * MIB
    counter = iter(range(1_000_000))

    def fresh() -> Path:
        path = root / f"case-{next(counter)}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
        os.sync()  # start every case with no dirty pages left by the one before
        return path

    if not as_json:
        print("| case | batch | MB/s | batches/s | vs raw |")
        print("| --- | ---: | ---: | ---: | ---: |")
    try:
        for kib in (int(s) for s in args.sizes.split(",")):
            batch = make_batch_of(kib * KIB)
            raw = raw_write(fresh(), batch, args.seconds, max_bytes, fsync=False)
            raw_sync = raw_write(fresh(), batch, args.seconds, max_bytes, fsync=True)
            rows: list[tuple[Result, Result]] = [(raw, raw), (raw_sync, raw_sync)]
            for ack in ("written", "fsynced"):
                base = raw_sync if ack == "fsynced" else raw
                rows.append((log_inline(fresh(), batch, args.seconds, max_bytes, ack), base))
            for ack in ("queued", "written", "fsynced"):
                base = raw_sync if ack == "fsynced" else raw
                for appenders in (1, 8):
                    rows.append((log_writer(fresh(), batch, args.seconds, max_bytes, ack, appenders), base))
            for result, base in rows:
                if as_json:
                    _json_line(result.case, kib * KIB, result.mb_s, result.batches_s, result.mb_s / base.mb_s)
                    continue
                print(
                    f"| {result.case} | {kib} KiB | {result.mb_s:,.0f} | {result.batches_s:,.0f} "
                    f"| {result.mb_s / base.mb_s:.0%} |",
                    flush=True,
                )
        directory = fresh()
        log_inline(directory, make_batch_of(16 * KIB), args.seconds, max_bytes, "written")
        for fetch in (64 * KIB, MIB):
            r = read_all(directory, fetch)
            if as_json:
                _json_line(r.case, r.batch_bytes, r.mb_s, r.batches_s, None)
                continue
            print(f"| {r.case} | {r.batch_bytes // KIB} KiB/read | {r.mb_s:,.0f} | {r.batches_s:,.0f} reads/s | |")
        unclean, clean, written = recovery(fresh(), args.recovery_gib)
        if as_json:
            print(json.dumps({"scenario": "storage", "case": "recovery", "segment_bytes": written,
                              "unclean_open_s": unclean, "clean_reopen_s": clean}), flush=True)
            return
        print()
        print(f"recovery of an unclean {written / MIB:,.0f} MiB segment: {unclean:.2f} s "
              f"({written / unclean / 1e6:,.0f} MB/s); clean reopen: {clean * 1000:.1f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
