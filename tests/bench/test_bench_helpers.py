"""The benchmark's pure helpers (no broker, no JVM): config files, /proc parsing, output."""

from __future__ import annotations

import socket
from pathlib import Path

from sluice.bench import kafka09
from sluice.bench.clients import BenchResult, Latency, Memory, Throughput, format_result, median
from sluice.bench.compare import format_comparison


def test_properties_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "a.properties"
    src.write_text("# comment\n\nbroker.id=0\nlisteners = PLAINTEXT://:9092\n! other\n")
    props = kafka09.read_properties(src)
    assert props == {"broker.id": "0", "listeners": "PLAINTEXT://:9092"}
    kafka09.write_properties(tmp_path / "b.properties", props)
    assert kafka09.read_properties(tmp_path / "b.properties") == props


def test_listening_addresses_sees_our_loopback_socket() -> None:
    import os

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        found = kafka09.listening_addresses(os.getpid())
    assert ("127.0.0.1", port) in found
    assert all(kafka09.is_loopback(addr) for addr, p in found if p == port)
    assert not kafka09.is_loopback("0.0.0.0")
    assert not kafka09.is_loopback("::")
    assert kafka09.is_loopback("::ffff:127.0.0.1")


def test_rss_of_self() -> None:
    import os

    rss = kafka09.rss_bytes(os.getpid())
    peak = kafka09.peak_rss_bytes(os.getpid())
    assert rss is not None and peak is not None and 0 < rss <= peak


def _result(label: str, rate: float) -> BenchResult:
    runs = [Throughput("produce", 100, 1, "1", 1000, 1000 / r, 0, 1000) for r in
            (rate, rate * 2, rate / 2)]
    return BenchResult(
        label, [median(runs)],
        Latency(5000, 10, 50_000, 50_000, 1.0, 2.0, 3.0, 4.0, 5.0),
        {"broker": Memory(50 << 20, 60 << 20, 55 << 20)}, ready_seconds=0.3,
    )


def test_median_and_tables() -> None:
    kafka, sluice = _result("Kafka", 1000.0), _result("sluice", 2000.0)
    assert kafka.throughput[0].msgs_s == 1000.0
    assert kafka.throughput[0].samples == [1000.0, 2000.0, 500.0]
    text = format_result(kafka)
    assert "| produce 100 B x 1p, acks=1 | 1,000 |" in text
    assert "| 500-2,000 |" in text
    both = format_comparison(kafka, sluice)
    assert "| 2.00x |" in both
    assert "| RSS idle, MiB | 50 | 50 |" in both


def test_ingest_bench_builds_librdkafka_like_batches_and_times_them() -> None:
    import asyncio

    from sluice.bench import ingest
    from sluice.config import LogConfig
    from sluice.protocol.compression import Compression
    from sluice.protocol.records import decode_records, scan_batches

    for codec in (Compression.NONE, Compression.SNAPPY, Compression.ZSTD):
        batch = ingest.librdkafka_batch(codec, 100, 4096)
        (header,) = scan_batches(batch)  # a valid batch, CRC included
        assert header.compression == codec
        assert all(len(r.value or b"") == 100 for r in decode_records(batch))
    loop = asyncio.new_event_loop()
    try:
        line = ingest.row(loop, LogConfig(), Compression.LZ4, 100, 4096, 0.001)
    finally:
        loop.close()
    assert line.split()[:2] == ["lz4", "100"]
