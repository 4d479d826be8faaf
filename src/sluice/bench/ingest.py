"""What the produce path's batch checks cost: microseconds per batch, printed as one table.

Run with ``python -m sluice.bench.ingest``. Batches are built the way librdkafka builds them
(one batch per request, raw snappy, records of ~50% compressible bytes); each case times

* ``scan``: the log's header validation without CRC (the O(1) plausibility check included);
* ``prepare``: the Produce handler's step before the log (:func:`sluice.broker.ingest.prepare`)
  on a ``producer`` topic: a header walk, and for a compressed batch the record-count
  verification (inline below 256 KiB of decompression, else in the executor);
* ``verify``: that verification alone (:func:`sluice.protocol.records.verify_record_count`);
* ``inflate``: decompressing the whole batch, for scale (what validating every record would at
  least cost).

Last, what one hop to a worker thread and back costs (the reason small work stays inline).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import crc32c

from sluice.broker.ingest import prepare
from sluice.config import LogConfig
from sluice.protocol.compression import CODEC_NAMES, Compression, compress_raw_snappy, inflate
from sluice.protocol.records import (
    DEFAULT_MAX_UNCOMPRESSED,
    HEADER_SIZE,
    build_batch,
    read_header,
    scan_batches,
    verify_record_count,
)

KIB = 1024


def librdkafka_batch(codec: int, record_bytes: int, batch_bytes: int) -> bytes:
    """Records of half random, half repeated bytes up to ``batch_bytes`` of records."""
    n = max(1, batch_bytes // (record_bytes + 10))
    values = [
        os.urandom(record_bytes // 4).hex()[: record_bytes // 2].encode().ljust(record_bytes, b"x")
        for _ in range(n)
    ]
    plain = codec == Compression.SNAPPY
    batch = build_batch([(None, v) for v in values], base_timestamp=1, compression=0 if plain else codec)
    if codec != Compression.SNAPPY:
        return batch
    # librdkafka sends one raw snappy block (build_batch writes Java's xerial framing).
    tail = bytearray(batch[21:HEADER_SIZE])
    struct.pack_into(">h", tail, 0, Compression.SNAPPY)
    tail += compress_raw_snappy(batch[HEADER_SIZE:])
    return struct.pack(">qiibI", 0, len(tail) + 9, 0, 2, crc32c.crc32c(bytes(tail))) + bytes(tail)


def per_call_us(fn: Callable[[], object], min_seconds: float) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and n >= 5:
            return elapsed / n * 1e6


def thread_hop_us(loop: asyncio.AbstractEventLoop, min_seconds: float) -> float:
    """One round trip through the loop's default executor (a no-op there): what handing work
    to a worker thread costs before any work is done. Pass the broker's kind of loop (uvloop)."""

    async def hops() -> float:
        await loop.run_in_executor(None, int)
        n, start = 0, time.perf_counter()
        while True:
            await loop.run_in_executor(None, int)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds and n >= 5:
                return elapsed / n * 1e6

    return loop.run_until_complete(hops())


def drive(loop: asyncio.AbstractEventLoop, make: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """Run a coroutine as the handler does. Inline work completes on the first step, timed
    without the loop's own overhead; work handed to the executor (which needs a running loop)
    goes through the loop, its thread hop included."""
    coro = make()
    try:
        coro.send(None)
    except StopIteration:
        return
    except RuntimeError:  # no running loop: it wanted the executor
        pass
    coro.close()
    loop.run_until_complete(make())


def row(
    loop: asyncio.AbstractEventLoop,
    config: LogConfig,
    codec: int,
    record_bytes: int,
    batch_bytes: int,
    seconds: float,
) -> str:
    batch = librdkafka_batch(codec, record_bytes, batch_bytes)
    header = read_header(batch)
    buf = bytearray(batch)
    limit = DEFAULT_MAX_UNCOMPRESSED

    def scan() -> object:
        return scan_batches(buf, check_crc=False)

    def prep() -> None:
        drive(loop, lambda: prepare(buf, config, limit))

    def verify() -> None:
        verify_record_count(header, batch, limit=limit)

    def full() -> int:
        return sum(len(x) for x in inflate(codec, memoryview(batch)[HEADER_SIZE:]))

    tail = f"{'-':>9} {'-':>10}"
    if codec:
        tail = f"{per_call_us(verify, seconds):9.1f} {per_call_us(full, seconds):10.1f}"
    return (
        f"{CODEC_NAMES[codec]:7} {record_bytes:6} {batch_bytes // KIB:6}Ki "
        f"{header.records_count:7} {len(batch):8}  {per_call_us(scan, seconds):8.1f} "
        f"{per_call_us(prep, seconds):10.1f} {tail}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice.bench.ingest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.3, help="minimum time per measurement")
    args = parser.parse_args(argv)
    config = LogConfig.from_dict({"max.message.bytes": str(4 * 1024 * KIB)})
    loop = asyncio.new_event_loop()
    print(f"{'codec':7} {'record':>6} {'batch':>8} {'records':>7} {'wire':>8}  "
          f"{'scan us':>8} {'prepare us':>10} {'verify us':>9} {'inflate us':>10}")
    try:
        for codec in (Compression.NONE, Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD):
            for record_bytes in (100, 1024):
                for batch_bytes in (16 * KIB, 1024 * KIB):
                    print(row(loop, config, codec, record_bytes, batch_bytes, args.seconds), flush=True)
        import uvloop

        uv = uvloop.new_event_loop()
        try:
            hop = thread_hop_us(uv, args.seconds)
        finally:
            uv.close()
        print(f"a thread hop on uvloop (run_in_executor of a no-op, awaited): {hop:.0f} us")
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
