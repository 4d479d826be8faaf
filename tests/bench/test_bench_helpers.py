"""The benchmark's helpers: config files, /proc parsing, and the small benches run small."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sluice.bench import harness, kafka09


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

    rss = harness.rss_bytes(os.getpid())
    peak = harness.peak_rss_bytes(os.getpid())
    assert rss is not None and peak is not None and 0 < rss <= peak


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


def test_consumer_throughput_refuses_a_case_it_does_not_have(capsys: pytest.CaptureFixture[str]) -> None:
    """``--only raw,1`` ran the getmany case twice, under those names, with nothing said."""
    from sluice.bench import consumer_throughput

    with pytest.raises(SystemExit) as exit_:
        consumer_throughput.main(["--only", "raw consume loop,1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no case '1'; the cases: raw consume loop," in err and "run c=1" in err


def test_big_requests_bench_measures_each_kind(capsys: pytest.CaptureFixture[str]) -> None:
    """Its table: one row per kind, the other connection served meanwhile; a kind it does not
    have is a usage error."""
    from sluice.bench import big_requests

    assert big_requests.main(["--elements", "5000", "--kinds", "produce,list_offsets"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows[2:]] == ["produce", "list_offsets"]
    assert all(float(row.split("|")[2]) > 0 for row in rows[2:])
    with pytest.raises(SystemExit) as exit_:
        big_requests.main(["--kinds", "produce,delete"])
    assert exit_.value.code == 2
    assert "no kind delete" in capsys.readouterr().err
