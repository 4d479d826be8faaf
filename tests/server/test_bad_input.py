"""Bad input on the wire: malformed frames, impossible sizes, unknown APIs and versions, corrupt or
malformed record batches, invalid requests and garbage bytes.

The broker must answer with the protocol's error or close that one connection, never crash, never
hang, and never disturb anyone else: in every test a witness client (its own connection, opened
before the bad input and kept open) keeps working and finds its data intact.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from pathlib import Path

import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.broker.broker import ADVERTISED
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey, RequestBody, encode_request
from sluice.protocol import messages as m
from sluice.testing import EmbeddedBroker
from tests.server.conftest import MakeBroker, WitnessFor
from tests.server.wire import (
    I32,
    ConnectionClosed,
    WireClient,
    Witness,
    api_versions,
    batch,
    connections_settle,
    create_topic,
    create_topics,
    fetch,
    fetch_all_values,
    fetch_request,
    header,
    list_offset,
    list_offsets_request,
    metadata,
    metadata_request,
    produce,
    produce_request,
    records_bytes,
    sized,
)

# -- framing ---------------------------------------------------------------------------------------


def test_truncated_frame_then_half_close(sluice_fresh_broker: EmbeddedBroker, witness: Witness) -> None:
    with WireClient.to(sluice_fresh_broker) as bad:
        bad.send_bytes(I32.pack(100) + header(ApiKey.API_VERSIONS, 3, 1)[:10])
        witness.check()  # served while the partial frame sits in the broker's buffer
        assert bad.is_quiet()  # no answer to half a request
        bad.sock.shutdown(socket.SHUT_WR)
        assert bad.wait_closed() == b""
    witness.check()
    connections_settle(sluice_fresh_broker, 1)


def test_truncated_frame_then_reset(sluice_fresh_broker: EmbeddedBroker, witness: Witness) -> None:
    bad = WireClient.to(sluice_fresh_broker)
    bad.send_bytes(I32.pack(100) + b"\x00" * 10)
    witness.check()
    # An abortive close (RST) in the middle of a frame.
    bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bad.close()
    connections_settle(sluice_fresh_broker, 1)
    witness.check()


def test_truncated_frame_then_wait(sluice_fresh_broker: EmbeddedBroker, witness: Witness) -> None:
    """A client that stops mid-frame holds only its own connection; finishing the frame later
    gets it answered."""
    with WireClient.to(sluice_fresh_broker) as slow:
        cid, frame = slow.frame(
            ApiKey.API_VERSIONS,
            3,
            m.ApiVersionsRequest(client_software_name="slow", client_software_version="1"),
        )
        for i in range(0, len(frame), 3):  # three bytes at a time, others served in between
            assert slow.is_quiet()
            slow.send_bytes(frame[i : i + 3])
            if i % 12 == 0:
                witness.check()
        resp = slow.recv(ApiKey.API_VERSIONS, 3, cid, m.ApiVersionsResponse)
        assert resp.error_code == 0
        assert api_versions(slow).error_code == 0
    witness.check()


def test_frame_shorter_than_its_header_closes(
    sluice_fresh_broker: EmbeddedBroker, witness: Witness
) -> None:
    bodies = [
        b"\x00",  # not even an API key
        b"\x00\x12\x00\x03",  # key and version, no correlation id
        b"\x00\x12\x00\x03\x00\x00\x00",  # three bytes of the correlation id
        b"\x00\x12\x00\x03\x00\x00\x00\x07\x00\x64abc",  # client id claims 100 bytes, has 3
        header(ApiKey.METADATA, 12, 7) + b"\x00",  # v12 header and its empty tagged fields, no body
        header(ApiKey.PRODUCE, 9, 7)[:-1],  # client id one byte short
    ]
    for body in bodies:
        with WireClient.to(sluice_fresh_broker) as bad:
            bad.send_bytes(sized(body))
            assert bad.wait_closed() == b"", body
    witness.check()
    connections_settle(sluice_fresh_broker, 1)


def test_request_size_limit_is_checked_before_the_body(
    make_broker: MakeBroker, witness_for: WitnessFor
) -> None:
    limit = 1 << 20
    broker = make_broker(**{"socket.request.max.bytes": str(limit)})
    witness = witness_for(broker)
    # Only the size prefix is sent: the broker closes at once rather than wait for (or
    # allocate) the body it announces.
    for size in (limit + 1, 100 * 1024 * 1024, 0x7FFFFFFF):
        with WireClient.to(broker) as big:
            big.send_bytes(I32.pack(size))
            assert big.wait_closed() == b""
    # A frame of exactly the limit is read and answered (the padding is the client's
    # software name, which ApiVersions v3 carries as a compact string).
    with WireClient.to(broker) as exact:
        name_len = limit - 100
        while True:
            cid, frame = exact.frame(
                ApiKey.API_VERSIONS,
                3,
                m.ApiVersionsRequest(
                    client_software_name="a" * name_len, client_software_version="1"
                ),
            )
            if len(frame) - 4 == limit:
                break
            name_len += limit - (len(frame) - 4)
        exact.send_bytes(frame)
        assert exact.recv(ApiKey.API_VERSIONS, 3, cid, m.ApiVersionsResponse).error_code == 0
        # ...and one byte more is not: closed after the size prefix alone.
        exact.send_bytes(I32.pack(limit + 1))
        assert exact.wait_closed() == b""
    witness.check()


def test_zero_and_negative_sizes_close(sluice_fresh_broker: EmbeddedBroker, witness: Witness) -> None:
    for size in (0, -1, -4, -(2**31)):
        with WireClient.to(sluice_fresh_broker) as bad:
            assert api_versions(bad).error_code == 0  # a good request first: answered
            bad.send_bytes(I32.pack(size) + b"\x00" * 16)
            assert bad.wait_closed() == b""
    witness.check()


# -- unknown APIs and versions ---------------------------------------------------------------------


def test_unknown_api_key_closes(sluice_fresh_broker: EmbeddedBroker, witness: Witness) -> None:
    for key in (32767, 1000, 99, 4, -1):  # 4 (LeaderAndIsr) is a real but broker-internal API
        with WireClient.to(sluice_fresh_broker) as bad:
            # Pipelined behind a good request: the good one is answered, then the close.
            cid, good = bad.frame(ApiKey.API_VERSIONS, 3, m.ApiVersionsRequest())
            bad.send_bytes(good + sized(header(key, 0, 42) + b"\x00" * 8))
            assert bad.recv(ApiKey.API_VERSIONS, 3, cid, m.ApiVersionsResponse).error_code == 0
            assert bad.wait_closed() == b"", key
    witness.check()


def test_unsupported_produce_and_fetch_versions_close(
    sluice_fresh_broker: EmbeddedBroker, witness: Witness
) -> None:
    create_topic(witness.client, "t")
    cases: list[bytes] = []
    probe = WireClient.to(sluice_fresh_broker)
    try:
        for version in (0, 2, 10, 11):  # Produce serves 3-9
            _, frame = probe.frame(ApiKey.PRODUCE, version, produce_request("t", 0, batch([b"v"])))
            cases.append(frame)
        for version in (3, 13, 16):  # Fetch serves 4-12
            _, frame = probe.frame(ApiKey.FETCH, version, fetch_request("t", 0, 0))
            cases.append(frame)
        cases.append(sized(header(ApiKey.PRODUCE, 99, 5) + b"\x00" * 20))
        cases.append(sized(header(ApiKey.PRODUCE, -1, 5)))
    finally:
        probe.close()
    for frame in cases:
        with WireClient.to(sluice_fresh_broker) as bad:
            bad.send_bytes(frame)
            assert bad.wait_closed() == b""
    assert list_offset(witness.client, "t", 0) == (0, 0)  # none of those produces stored anything
    witness.check()


def _v0_api_versions(frame: bytes, correlation_id: int) -> tuple[int, dict[int, tuple[int, int]]]:
    """Parse an ApiVersions v0 response by hand: (error code, {key: (min, max)}), checking that
    the frame holds exactly that and nothing more (no throttle time, no tagged fields)."""
    cid, error, count = struct.unpack_from(">ihi", frame)
    assert cid == correlation_id
    assert len(frame) == 10 + 6 * count, "not a v0 ApiVersions response"
    ranges = {}
    for i in range(count):
        key, lo, hi = struct.unpack_from(">hhh", frame, 10 + 6 * i)
        ranges[key] = (lo, hi)
    return error, ranges


def test_api_versions_unknown_version_answers_v0_then_connection_works(
    sluice_fresh_broker: EmbeddedBroker, witness: Witness
) -> None:
    with WireClient.to(sluice_fresh_broker) as client:
        # A future client's flexible request (header v2), a bare header, and garbage after the
        # header: all get the v0 fallback, and the connection stays usable.
        requests = [
            client.frame(
                ApiKey.API_VERSIONS, 99, m.ApiVersionsRequest(client_software_name="future")
            )[1],
            sized(header(ApiKey.API_VERSIONS, 4, 77)),
            sized(header(ApiKey.API_VERSIONS, 32767, 78) + bytes(range(200))),
        ]
        expected_cids = [1, 77, 78]
        for frame, cid in zip(requests, expected_cids, strict=True):
            client.send_bytes(frame)
            error, ranges = _v0_api_versions(client.recv_frame(), cid)
            assert error == ErrorCode.UNSUPPORTED_VERSION
            assert ranges == ADVERTISED
            assert ranges[ApiKey.API_VERSIONS] == (0, 3)
            resp = api_versions(client, 3)
            assert resp.error_code == 0
            assert {k.api_key: (k.min_version, k.max_version) for k in resp.api_keys} == ADVERTISED
        assert metadata(client, None).brokers[0].port == sluice_fresh_broker.port
    witness.check()


# -- record batches --------------------------------------------------------------------------------


def _with_crc(data: bytearray) -> bytes:
    """Recompute the CRC of a single batch after editing a CRC-covered field."""
    struct.pack_into(">I", data, 17, crc32c.crc32c(bytes(data[21:])))
    return bytes(data)


def _malformed_batches() -> dict[str, tuple[bytes | None, int]]:
    good = batch([b"m0", b"m1", b"m2"])
    cases: dict[str, tuple[bytes | None, int]] = {}

    flipped = bytearray(good)
    flipped[-1] ^= 0x01  # a bit of the last record's value
    cases["payload bit flip"] = (bytes(flipped), ErrorCode.CORRUPT_MESSAGE)
    wrong_crc = bytearray(good)
    struct.pack_into(">I", wrong_crc, 17, (struct.unpack_from(">I", good, 17)[0] + 1) & 0xFFFFFFFF)
    cases["crc field"] = (bytes(wrong_crc), ErrorCode.CORRUPT_MESSAGE)
    cases["good then corrupt"] = (good + bytes(flipped), ErrorCode.CORRUPT_MESSAGE)
    cases["corrupt then good"] = (bytes(flipped) + good, ErrorCode.CORRUPT_MESSAGE)
    for magic in (0, 1, 3, 0xFF):
        bad_magic = bytearray(good)
        bad_magic[16] = magic
        cases[f"magic {magic}"] = (bytes(bad_magic), ErrorCode.CORRUPT_MESSAGE)
    length = struct.unpack_from(">i", good, 8)[0]
    for name, new_length in {
        "length past the end": length + 1,
        "length shorter": length - 7,
        "length below header": 10,
        "length zero": 0,
        "length negative": -1,
    }.items():
        edited = bytearray(good)
        struct.pack_into(">i", edited, 8, new_length)
        cases[name] = (bytes(edited), ErrorCode.CORRUPT_MESSAGE)
    # A batch claiming 2 GiB is refused for its claimed size (over max.message.bytes) before
    # the broker notices the bytes are not there.
    huge = bytearray(good)
    struct.pack_into(">i", huge, 8, 0x7FFFFFFF)
    cases["length far past the end"] = (bytes(huge), ErrorCode.MESSAGE_TOO_LARGE)
    cases["truncated header"] = (good[:30], ErrorCode.CORRUPT_MESSAGE)
    cases["truncated records"] = (good[:-3], ErrorCode.CORRUPT_MESSAGE)
    cases["trailing bytes"] = (good + b"\x00" * 10, ErrorCode.CORRUPT_MESSAGE)
    # CRC-valid batches whose header contradicts itself.
    count_mismatch = bytearray(good)
    struct.pack_into(">i", count_mismatch, 57, 5)
    cases["record count mismatch"] = (_with_crc(count_mismatch), ErrorCode.INVALID_RECORD)
    negative_count = bytearray(good)
    struct.pack_into(">i", negative_count, 57, -1)
    cases["negative record count"] = (_with_crc(negative_count), ErrorCode.INVALID_RECORD)
    zero = bytearray(good)
    struct.pack_into(">i", zero, 23, -1)  # lastOffsetDelta
    struct.pack_into(">i", zero, 57, 0)
    cases["no records"] = (_with_crc(zero), ErrorCode.INVALID_RECORD)
    cases["empty record set"] = (b"", ErrorCode.INVALID_RECORD)
    cases["null record set"] = (None, ErrorCode.INVALID_RECORD)
    return cases


def test_corrupt_and_malformed_batches_are_refused_and_store_nothing(
    sluice_fresh_broker: EmbeddedBroker, witness: Witness
) -> None:
    with WireClient.to(sluice_fresh_broker) as client:
        create_topic(client, "t")
        first = [b"a0", b"a1", b"a2"]
        assert produce(client, "t", 0, batch(first)).base_offset == 0
        stored = list(first)
        outcomes = {}
        for name, (records, _code) in _malformed_batches().items():
            part = produce(client, "t", 0, records)
            outcomes[name] = part.error_code
            assert part.base_offset == -1, name
            assert part.error_message, name
            # Nothing of the refused request is stored, the earlier data is intact, and the
            # connection keeps working.
            assert list_offset(client, "t", 0) == (0, len(stored)), name
        assert outcomes == {name: code for name, (_, code) in _malformed_batches().items()}
        assert fetch_all_values(client, "t") == stored
        after = [b"b0", b"b1"]
        assert produce(client, "t", 0, batch(after)).base_offset == len(stored)
        assert fetch_all_values(client, "t") == stored + after
    witness.check()


def test_failed_acks_zero_produce_closes_the_connection(
    sluice_fresh_broker: EmbeddedBroker, witness: Witness
) -> None:
    """With acks=0 there is no answer to carry an error, so (as in Kafka) a refused produce
    closes the connection; a good one is stored and answered by silence."""
    with WireClient.to(sluice_fresh_broker) as client:
        create_topic(client, "t")
        client.send(ApiKey.PRODUCE, 9, produce_request("t", 0, batch([b"quiet"]), acks=0))
        assert list_offset(client, "t", 0)[0] == 0  # answered: the acks=0 produce was not
    corrupt = bytearray(batch([b"corrupt"]))
    corrupt[-1] ^= 0xFF
    for topic, partition, records in (
        ("t", 0, bytes(corrupt)),
        ("t", 3, batch([b"x"])),
        ("t", 0, b""),
    ):
        with WireClient.to(sluice_fresh_broker) as silent:
            silent.send(ApiKey.PRODUCE, 9, produce_request(topic, partition, records, acks=0))
            assert silent.wait_closed() == b""
    with WireClient.to(sluice_fresh_broker) as client:
        # A later acknowledged produce proves every earlier one has been written (FIFO writer).
        assert produce(client, "t", 0, batch([b"loud"])).base_offset == 1
        assert fetch_all_values(client, "t") == [b"quiet", b"loud"]
    witness.check()


def test_produce_to_unknown_partition_or_topic(
    make_broker: MakeBroker, witness_for: WitnessFor
) -> None:
    broker = make_broker(**{"auto.create.topics.enable": "true"})
    witness = witness_for(broker)
    with WireClient.to(broker) as client:
        create_topic(client, "two", partitions=2)
        for partition in (2, 99, -1, 2**31 - 1):
            part = produce(client, "two", partition, batch([b"x"]))
            assert (part.error_code, part.base_offset) == (ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)
        # Produce never creates topics (only Metadata does, as in Kafka).
        part = produce(client, "never-created", 0, batch([b"x"]))
        assert part.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        gone = metadata(client, ["never-created"], auto_create=False).topics
        assert [(t.name, t.error_code) for t in gone] == [
            ("never-created", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        ]
        # Errors are per partition: the good partition of the same request is stored.
        body = m.ProduceRequest(
            acks=1,
            timeout_ms=5000,
            topic_data=[
                m.ProduceTopicData(
                    name="two",
                    partition_data=[
                        m.ProducePartitionData(index=1, records=bytearray(batch([b"good"]))),
                        m.ProducePartitionData(index=7, records=bytearray(batch([b"bad"]))),
                    ],
                ),
            ],
        )
        resp = client.call(ApiKey.PRODUCE, 9, body, m.ProduceResponse)
        codes = [
            (p.index, p.error_code, p.base_offset) for p in resp.responses[0].partition_responses
        ]
        assert codes == [(1, 0, 0), (7, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, -1)]
        assert fetch_all_values(client, "two", 1) == [b"good"]
        assert list_offset(client, "two", 0) == (0, 0)
    witness.check()


def test_invalid_acks(sluice_fresh_broker: EmbeddedBroker, witness: Witness) -> None:
    with WireClient.to(sluice_fresh_broker) as client:
        create_topic(client, "t", partitions=2)
        for acks in (2, -2, 5, 32767, -32768):
            body = m.ProduceRequest(
                acks=acks,
                timeout_ms=5000,
                topic_data=[
                    m.ProduceTopicData(
                        name="t",
                        partition_data=[
                            m.ProducePartitionData(index=p, records=bytearray(batch([b"x"])))
                            for p in (0, 1)
                        ],
                    ),
                ],
            )
            resp = client.call(ApiKey.PRODUCE, 9, body, m.ProduceResponse)
            codes = [(p.index, p.error_code) for p in resp.responses[0].partition_responses]
            assert codes == [
                (0, ErrorCode.INVALID_REQUIRED_ACKS),
                (1, ErrorCode.INVALID_REQUIRED_ACKS),
            ]
        assert list_offset(client, "t", 0) == (0, 0)
        assert list_offset(client, "t", 1) == (0, 0)
    witness.check()


def test_fetch_out_of_range_offsets(sluice_fresh_broker: EmbeddedBroker, witness: Witness) -> None:
    with WireClient.to(sluice_fresh_broker) as client:
        create_topic(client, "t")
        produce(client, "t", 0, batch([b"a", b"b", b"c"]))
        for offset in (4, 1000, 2**62, -1, -1000):
            part = fetch(client, "t", 0, offset)
            assert part.error_code == ErrorCode.OFFSET_OUT_OF_RANGE, offset
            assert part.high_watermark == 3
            assert not part.records
        # An out-of-range offset is an answer, not a reason to long-poll.
        started = time.monotonic()
        part = fetch(client, "t", 0, 50, max_wait_ms=5000)
        assert part.error_code == ErrorCode.OFFSET_OUT_OF_RANGE
        assert time.monotonic() - started < 2.5
        # The log end itself is in range: nothing to return yet, and no error.
        at_end = fetch(client, "t", 0, 3)
        assert (at_end.error_code, at_end.high_watermark, records_bytes(at_end.records)) == (
            0,
            3,
            b"",
        )
        assert fetch(client, "t", 5, 0).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert fetch(client, "missing", 0, 0).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert fetch_all_values(client, "t") == [b"a", b"b", b"c"]
    witness.check()


INVALID_TOPIC_NAMES = [
    "",
    ".",
    "..",
    "a/b",
    "../escape",
    "/abs",
    "x" * 250,
    "has space",
    "t\u00e9st",
    "tab\t",
    "nul\x00",
    "colon:",
    "star*",
]


def test_invalid_topic_names(
    sluice_fresh_broker: EmbeddedBroker, witness: Witness, tmp_path: Path
) -> None:
    data_dir = sluice_fresh_broker.data_dir
    before_outside = sorted(p.name for p in tmp_path.iterdir())
    with WireClient.to(sluice_fresh_broker) as client:
        names = [*INVALID_TOPIC_NAMES, "ok.name_-1", "y" * 246]
        codes = create_topics(client, names)
        assert codes == {
            **{n: ErrorCode.INVALID_TOPIC_EXCEPTION for n in INVALID_TOPIC_NAMES},
            "ok.name_-1": 0,
            "y" * 246: 0,
        }
        # Metadata with auto-creation on refuses to create them too.
        resp = metadata(client, ["../meta-escape", "bad name"])
        assert [(t.name, t.error_code) for t in resp.topics] == [
            ("../meta-escape", ErrorCode.INVALID_TOPIC_EXCEPTION),
            ("bad name", ErrorCode.INVALID_TOPIC_EXCEPTION),
        ]
        listed = sorted(t.name or "" for t in metadata(client, None).topics)
        assert listed == sorted(["ok.name_-1", "y" * 246, "witness"])
    # Nothing was written outside the data directory, and inside only the valid topics' dirs.
    assert sorted(p.name for p in tmp_path.iterdir()) == before_outside
    topic_dirs = sorted(
        p.name.rsplit(".", 1)[0] for p in data_dir.iterdir() if not p.name.startswith((".", "__"))
    )
    assert topic_dirs == sorted(["ok.name_-1", "y" * 200, "witness"])
    witness.check()


def test_longest_valid_topic_names_are_created(
    sluice_fresh_broker: EmbeddedBroker, witness: Witness
) -> None:
    with WireClient.to(sluice_fresh_broker) as client:
        assert create_topics(client, ["z" * 249]) == {"z" * 249: 0}
        assert produce(client, "z" * 249, 0, batch([b"long"])).base_offset == 0
        assert fetch_all_values(client, "z" * 249) == [b"long"]
    witness.check()


# -- garbage ---------------------------------------------------------------------------------------


def _read_until_closed(client: WireClient, timeout: float = 5.0) -> list[bytes]:
    """Whole frames received before the broker closed the connection."""
    tail = client.wait_closed(timeout)
    frames = []
    pos = 0
    while pos < len(tail):
        assert len(tail) - pos >= 4, "a torn size prefix"
        (size,) = I32.unpack_from(tail, pos)
        assert 4 <= size <= len(tail) - pos - 4, "a torn frame"
        frames.append(tail[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return frames


_RANDOM_FRAMES = st.one_of(
    st.binary(min_size=1, max_size=300),  # anything at all
    st.binary(max_size=300).map(sized),  # well-framed garbage
    st.tuples(  # a plausible header, then garbage
        st.sampled_from(sorted({*ADVERTISED, 4, 22, 36, 17, 1000})),
        st.integers(-1, 20),
        st.integers(-(2**31), 2**31 - 1),
        st.binary(max_size=200),
    ).map(lambda t: sized(struct.pack(">hhi", t[0], t[1], t[2]) + t[3])),
)


def test_random_bytes_never_crash(make_broker: MakeBroker, witness_for: WitnessFor) -> None:
    broker = make_broker(**{"socket.request.max.bytes": str(8 << 20)})
    witness = witness_for(broker)

    examples: list[bytes] = []

    @settings(
        max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(_RANDOM_FRAMES)
    def garbage_in(data: bytes) -> None:
        examples.append(data)
        with WireClient.to(broker) as bad:
            bad.send_bytes(data)
            bad.sock.shutdown(socket.SHUT_WR)  # the garbage ends here: the broker must close
            _read_until_closed(bad)

    garbage_in()
    assert len(examples) >= 100
    witness.check()
    connections_settle(broker, 1)


def _mutate(rng: random.Random, frame: bytes, protect: range) -> bytes:
    """Flip, overwrite, cut or extend the request (never its size prefix, which stays exact)."""
    body = bytearray(frame[4:])
    choice = rng.randrange(4)
    if choice == 0:
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(body))
            if pos not in protect:
                body[pos] ^= 1 << rng.randrange(8)
    elif choice == 1:
        pos = rng.randrange(len(body))
        if pos not in protect:
            body[pos] = rng.choice([0x00, 0xFF, 0x7F, 0x80, rng.randrange(256)])
    elif choice == 2:
        body = body[: rng.randrange(len(body))]
    else:
        body += rng.randbytes(rng.randint(1, 16))
    return sized(bytes(body))


def test_mutated_requests_are_answered_or_close(
    make_broker: MakeBroker, witness_for: WitnessFor
) -> None:
    """Valid requests with bytes flipped, cut or added: each either gets an answer or closes the
    connection; a request pipelined right behind it is then answered too (the broker never
    hangs on one)."""
    broker = make_broker()
    witness = witness_for(broker)
    rng = random.Random(20240601)
    with WireClient.to(broker) as setup:
        create_topic(setup, "fuzz", partitions=2)
        produce(setup, "fuzz", 0, batch([b"seed"]))
    requests: list[tuple[int, int, RequestBody]] = [
        (
            ApiKey.API_VERSIONS,
            3,
            m.ApiVersionsRequest(client_software_name="x", client_software_version="1"),
        ),
        (ApiKey.API_VERSIONS, 0, m.ApiVersionsRequest()),
        (ApiKey.METADATA, 12, metadata_request(["fuzz"], auto_create=False)),
        (ApiKey.METADATA, 1, metadata_request(["fuzz"])),
        (ApiKey.PRODUCE, 9, produce_request("fuzz", 1, batch([b"p0", b"p1"]))),
        (ApiKey.PRODUCE, 3, produce_request("fuzz", 1, batch([b"p2"]))),
        (ApiKey.FETCH, 12, fetch_request("fuzz", 0, 0)),
        (ApiKey.FETCH, 4, fetch_request("fuzz", 0, 0)),
        (ApiKey.LIST_OFFSETS, 7, list_offsets_request("fuzz", 0, -1)),
        (ApiKey.LIST_OFFSETS, 1, list_offsets_request("fuzz", 0, -2)),
    ]
    templates: list[tuple[bytes, range]] = []
    for api_key, version, body in requests:
        frame = bytes(encode_request(api_key, version, 1000, "fz", body))
        # A Fetch may legally wait max_wait_ms: leave the first 12 bytes of its body (replica
        # id, max wait, min bytes) alone so no mutation asks for a long poll. Positions count
        # from after the size prefix; the header is 12 bytes with client id "fz", plus one of
        # tagged fields at v12.
        header_len = 12 + (1 if version >= 12 else 0)
        protect = range(header_len, header_len + 12) if api_key == ApiKey.FETCH else range(0)
        templates.append((frame, protect))

    answered = closed = 0
    client = WireClient.to(broker)
    try:
        for _ in range(400):
            frame, protect = rng.choice(templates)
            mutated = _mutate(rng, frame, protect)
            cid, sentinel = client.frame(
                ApiKey.API_VERSIONS, 0, m.ApiVersionsRequest(), correlation_id=2**31 - 1
            )
            client.send_bytes(mutated + sentinel)
            try:
                while True:  # the mutated request's answer (if any), then the sentinel's
                    got = client.recv_frame(timeout=5.0)
                    if got[:4] == I32.pack(cid) and len(got) > 6 and got[4:6] == b"\x00\x00":
                        answered += 1
                        break
            except ConnectionClosed:
                closed += 1
                client.close()
                client = WireClient.to(broker)
    finally:
        client.close()
    print(f"mutations: {answered} answered, {closed} closed")
    assert answered + closed == 400
    assert answered > 50 and closed > 50, (answered, closed)  # both outcomes exercised
    witness.check()
    with WireClient.to(broker) as check:
        # Whatever the mutations did to the fuzz topic, it still reads back cleanly.
        assert fetch_all_values(check, "fuzz")[0] == b"seed"
        fetch_all_values(check, "fuzz", 1)
    connections_settle(broker, 1)


# -- a real client alongside -----------------------------------------------------------------------


def _attacks(broker: EmbeddedBroker, topic: str, rng: random.Random) -> int:
    """One round of every kind of bad input; returns how many attacks were made."""
    frames = [
        I32.pack(100) + b"\x00" * 10,  # truncated
        I32.pack(0x7FFFFFFF),  # oversized
        I32.pack(-1),  # negative
        sized(header(1000, 0, 1)),  # unknown API
        sized(header(ApiKey.PRODUCE, 2, 1)),  # unsupported version
        rng.randbytes(64),
        sized(rng.randbytes(64)),
    ]
    for data in frames:
        with WireClient.to(broker) as bad:
            bad.send_bytes(data)
            bad.sock.shutdown(socket.SHUT_WR)
            bad.wait_closed()
    with WireClient.to(broker) as bad:
        corrupt = bytearray(batch([b"corrupt"]))
        corrupt[-1] ^= 0xFF
        assert produce(bad, topic, 0, bytes(corrupt)).error_code == ErrorCode.CORRUPT_MESSAGE
        assert (
            produce(bad, topic, 0, batch([b"x"]), acks=3).error_code
            == ErrorCode.INVALID_REQUIRED_ACKS
        )
        assert fetch(bad, topic, 0, 10**9).error_code == ErrorCode.OFFSET_OUT_OF_RANGE
    return len(frames) + 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # kafka-python's importlib.resources use
def test_real_clients_see_no_errors_during_bad_input(sluice_fresh_broker: EmbeddedBroker) -> None:
    """A librdkafka producer and a kafka-python consumer work through a storm of bad input on
    the same topic-partition: every message arrives once, in order, with no client errors."""
    import confluent_kafka as ck
    import kafka  # type: ignore[import-untyped]

    topic = "storm"
    total = 3000
    with WireClient.to(sluice_fresh_broker) as setup:
        create_topic(setup, topic)
    errors: list[str] = []
    delivered: list[int] = []
    producer = ck.Producer(
        {
            "bootstrap.servers": sluice_fresh_broker.bootstrap_servers,
            "linger.ms": 2,
            "batch.num.messages": 50,
            "error_cb": lambda err: errors.append(f"producer: {err}"),
        }
    )

    def on_delivery(err: ck.KafkaError | None, msg: ck.Message) -> None:
        if err is not None:
            errors.append(f"delivery: {err}")
        else:
            offset = msg.offset()
            assert offset is not None
            delivered.append(offset)

    consumed: list[bytes] = []
    consumer_done = threading.Event()

    def consume() -> None:
        consumer = kafka.KafkaConsumer(
            bootstrap_servers=sluice_fresh_broker.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        try:
            tp = kafka.TopicPartition(topic, 0)
            consumer.assign([tp])
            consumer.seek(tp, 0)
            deadline = time.monotonic() + 60
            while len(consumed) < total and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    consumed.extend(r.value for r in records)
        except Exception as exc:
            errors.append(f"consumer: {exc!r}")
        finally:
            consumer.close()
            consumer_done.set()

    consumer_thread = threading.Thread(target=consume, daemon=True)
    consumer_thread.start()
    rng = random.Random(7)
    attacks = 0
    for i in range(total):
        producer.produce(topic, value=f"msg-{i}".encode(), partition=0, on_delivery=on_delivery)
        if i % 300 == 0:
            producer.poll(0)
            attacks += _attacks(sluice_fresh_broker, topic, rng)
    assert producer.flush(30) == 0
    assert consumer_done.wait(60)
    consumer_thread.join(5)
    assert errors == []
    assert sorted(delivered) == list(range(total))
    assert consumed == [f"msg-{i}".encode() for i in range(total)]
    assert attacks == 10 * 10
    with WireClient.to(sluice_fresh_broker) as check:
        assert list_offset(check, topic, 0) == (0, total)
