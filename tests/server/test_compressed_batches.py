"""Forged batch headers and compression bombs against a real broker, over the wire.

A forged header must never move the log end offset beyond what its bytes can hold, and a bomb
(a small compressed batch inflating to gigabytes) is stored like any batch but never decompressed
whole: ListOffsets streams it off the event loop, with the broker's memory staying bounded and
other clients answered meanwhile.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import crc32c
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.compression import Compression, compress, compress_raw_snappy
from sluice.protocol.records import write_varint
from sluice.testing import BrokerProcess
from tests.server.conftest import MakeBroker
from tests.server.wire import (
    WireClient,
    batch,
    create_topic,
    list_offset,
    list_offsets_request,
    metadata,
    produce,
)


def forge(
    payload: bytes,
    *,
    count: int,
    attributes: int = 0,
    base_timestamp: int = 1_000,
    max_timestamp: int = 1_000,
) -> bytes:
    """A batch with a valid CRC over any header and records section: a forger's batch."""
    tail = (
        struct.pack(">hiqqqhii", attributes, count - 1, base_timestamp, max_timestamp, -1, -1, -1, count)
        + payload
    )
    return struct.pack(">qiibI", 0, len(tail) + 9, 0, 2, crc32c.crc32c(tail)) + tail


def test_forged_70_byte_batch_claiming_2_31_records_is_refused(make_broker: MakeBroker) -> None:
    broker = make_broker()
    with WireClient.to(broker) as client:
        create_topic(client, "forged")
        assert produce(client, "forged", 0, batch([b"a", b"b"])).error_code == 0
        forged = forge(b"\x00" * 9, count=2**31 - 1)
        assert len(forged) == 70
        part = produce(client, "forged", 0, forged)
        assert part.error_code == ErrorCode.INVALID_RECORD
        assert part.error_message is not None and "2147483647 records" in part.error_message
        assert list_offset(client, "forged", 0) == (0, 2)
        # The same claim inside a compressed batch: the broker decompresses only what it needs.
        zforged = forge(compress(Compression.ZSTD, b"\x00" * 9), count=2**31 - 1, attributes=Compression.ZSTD)
        part = produce(client, "forged", 0, zforged)
        assert part.error_code == ErrorCode.INVALID_RECORD, part.error_message
        assert list_offset(client, "forged", 0) == (0, 2)
        assert produce(client, "forged", 0, batch([b"c"])).base_offset == 2


def test_a_forged_control_batch_cannot_burn_offsets(make_broker: MakeBroker) -> None:
    """A control batch's count need not match its offset delta, so one claiming 1 record over
    2^31 - 1 offsets would jump the log end offset by 2^31 a request: clients may not write
    control batches at all (Kafka: INVALID_RECORD), compressed or not."""
    broker = make_broker()
    with WireClient.to(broker) as client:
        create_topic(client, "ctl")
        assert produce(client, "ctl", 0, batch([b"a"])).error_code == 0
        tail = struct.pack(">hiqqqhii", 0x20, 2**31 - 2, 1_000, 1_000, -1, -1, -1, 1) + b"\x00" * 9
        control = struct.pack(">qiibI", 0, len(tail) + 9, 0, 2, crc32c.crc32c(tail)) + tail
        part = produce(client, "ctl", 0, control)
        assert part.error_code == ErrorCode.INVALID_RECORD, part.error_message
        zcontrol = forge(compress(Compression.ZSTD, b"\x00" * 9), count=1, attributes=0x20 | Compression.ZSTD)
        part = produce(client, "ctl", 0, zcontrol)
        assert part.error_code == ErrorCode.INVALID_RECORD, part.error_message
        assert list_offset(client, "ctl", 0) == (0, 1)
        assert produce(client, "ctl", 0, batch([b"b"])).base_offset == 1


CODECS = [Compression.NONE, Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD]


def test_forged_headers_never_move_the_end_offset_beyond_their_bytes(make_broker: MakeBroker) -> None:
    """Any claimed count over any records section, in any codec: an accepted batch moves the log
    end offset by its count, and only ever by what its decompressed bytes can hold."""
    broker = make_broker()
    client = WireClient.to(broker)
    create_topic(client, "fuzzed")
    state = {"end": 0}

    @given(
        count=st.one_of(st.integers(1, 200), st.integers(1, 2**31 - 1)),
        section=st.one_of(st.binary(max_size=600), st.builds(bytes, st.integers(0, 5000))),
        codec=st.sampled_from([*CODECS, -1]),  # -1: raw snappy, as librdkafka sends it
    )
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    def check(count: int, section: bytes, codec: int) -> None:
        if codec == -1:
            payload, attributes = compress_raw_snappy(section), Compression.SNAPPY
        else:
            payload, attributes = compress(codec, section), codec
        part = produce(client, "fuzzed", 0, forge(payload, count=count, attributes=attributes))
        _, end = list_offset(client, "fuzzed", 0)
        if part.error_code == 0:
            assert count * 7 <= len(section)
            assert end == state["end"] + count
        else:
            assert part.error_code in (ErrorCode.INVALID_RECORD, ErrorCode.CORRUPT_MESSAGE)
            assert end == state["end"]
        state["end"] = end

    try:
        check()
    finally:
        client.close()


# -- a compression bomb -----------------------------------------------------------------------------

GIB = 1 << 30


def zstd_bomb(big_values: int, ts: int) -> bytes:
    """A zstd batch of ``big_values`` records of 1 GiB of zeros each and then one small record,
    compressed as a stream (never held): ~32 KiB a GiB. Timestamps: ts, ts+1, ...; the small
    record's is ts + big_values."""
    obj = zstandard.ZstdCompressor(level=3).compressobj()
    out = bytearray()
    zeros = bytes(1 << 20)
    for i in range(big_values):
        head = bytearray([0])  # attributes
        write_varint(head, i)  # timestamp delta
        write_varint(head, i)  # offset delta
        write_varint(head, -1)  # no key
        write_varint(head, GIB)
        length = len(head) + GIB + 1  # + header count
        record = bytearray()
        write_varint(record, length)
        out += obj.compress(bytes(record + head))
        for _ in range(GIB // len(zeros)):
            out += obj.compress(zeros)
        out += obj.compress(b"\x00")  # no headers
    small = bytearray([0])
    write_varint(small, big_values)
    write_varint(small, big_values)
    write_varint(small, -1)
    write_varint(small, 5)
    small += b"small\x00"
    record = bytearray()
    write_varint(record, len(small))
    out += obj.compress(bytes(record + small)) + obj.flush()
    n = big_values + 1
    return forge(bytes(out), count=n, attributes=Compression.ZSTD, base_timestamp=ts, max_timestamp=ts + big_values)


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_zstd_bomb_is_searched_with_bounded_memory_and_without_stalling(tmp_path: Path) -> None:
    """4 GiB of records in a 128 KiB batch (the issue's size that killed the broker): stored,
    then found by timestamp (the answer is the record after all four gigabytes) while the
    broker's peak RSS stays far below one of them and a second client's Metadata and Produce
    are answered meanwhile."""
    ts = int(time.time() * 1000) + 3_600_000  # after the batch written before it
    bomb = zstd_bomb(4, ts)
    assert len(bomb) < 160 * 1024
    with BrokerProcess(tmp_path / "data", tmp_path / "serve.log") as broker:
        broker.start()
        assert broker.proc is not None
        pid = broker.proc.pid
        with (
            WireClient("127.0.0.1", broker.port, timeout=60) as searcher,
            WireClient("127.0.0.1", broker.port) as bystander,
        ):
            create_topic(searcher, "bombs")
            create_topic(searcher, "others")
            assert produce(searcher, "bombs", 0, batch([b"before"])).error_code == 0
            part = produce(searcher, "bombs", 0, bomb)
            assert part.error_code == 0, part.error_message
            assert part.base_offset == 1
            assert list_offset(searcher, "bombs", 0) == (0, 6)

            cid = searcher.send(ApiKey.LIST_OFFSETS, 7, list_offsets_request("bombs", 0, ts + 4))
            started = time.monotonic()
            # While the search streams 4 GiB, the bystander is answered promptly, more than once.
            for i in range(3):
                t0 = time.monotonic()
                assert metadata(bystander, ["others"], auto_create=False).topics[0].error_code == 0
                assert produce(bystander, "others", 0, batch([b"x"])).base_offset == i
                assert time.monotonic() - t0 < 1.0, "a bystander waited on the bomb"
            assert searcher.is_quiet(), "the search ended before the bystander was served"
            resp = searcher.recv(ApiKey.LIST_OFFSETS, 7, cid, m.ListOffsetsResponse, timeout=60)
            searched = time.monotonic() - started
            (answer,) = resp.topics[0].partitions
            assert (answer.error_code, answer.offset, answer.timestamp) == (0, 5, ts + 4)

            cid = searcher.send(ApiKey.LIST_OFFSETS, 7, list_offsets_request("bombs", 0, -3))
            resp = searcher.recv(ApiKey.LIST_OFFSETS, 7, cid, m.ListOffsetsResponse, timeout=60)
            (answer,) = resp.topics[0].partitions
            assert (answer.error_code, answer.offset, answer.timestamp) == (0, 5, ts + 4)
        peak_mib = vm_hwm_kib(pid) / 1024
        print(f"bomb search: {searched:.2f} s for 4 GiB; broker peak RSS {peak_mib:.0f} MiB")
        assert peak_mib < 300, f"broker peak RSS {peak_mib:.0f} MiB"
