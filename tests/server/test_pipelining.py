"""Pipelining: requests on one connection are answered in order however they arrive, while a slow
request (a long-polling fetch) holds only its own connection."""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time

from sluice.protocol import ApiKey, decode_response
from sluice.protocol import messages as m
from sluice.testing import EmbeddedBroker
from tests.server.wire import (
    WireClient,
    Witness,
    api_versions,
    batch,
    create_topic,
    fetch_all_values,
    fetch_partition,
    fetch_request,
    list_offset,
    list_offsets_request,
    metadata,
    metadata_request,
    produce,
    produce_request,
    record_offsets,
    record_values,
    records_bytes,
)


def test_back_to_back_requests_are_answered_in_order(sluice_fresh_broker: EmbeddedBroker) -> None:
    """400 mixed requests written in one stream, cut at random points (some frames far bigger
    than the broker's read buffer): every answer comes back in request order, and the produce
    offsets show the requests were executed in that order too, acks=0 ones included.

    An acks=0 produce is answered by nothing and acknowledged once queued (sluice's QUEUED
    level), so a read right behind it may not see it yet; everything up to the last
    acknowledged produce is always visible (the partition's writer is FIFO)."""
    rng = random.Random(1234)
    client = WireClient.to(sluice_fresh_broker)
    create_topic(client, "p", partitions=2)
    expected: list[tuple[int, int, int, object]] = []  # (cid, api key, version, what to check)
    stream = bytearray()
    end_offset = 0  # partition 0's log end offset once every request so far has run
    acked_end = 0  # ...and up to the last acknowledged (acks=1/-1) produce
    for i in range(400):
        kind = rng.choice(
            ["versions", "metadata", "produce", "produce", "produce0", "offsets", "fetch"]
        )
        if kind == "versions":
            version = rng.choice([0, 3])
            cid, frame = client.frame(ApiKey.API_VERSIONS, version, m.ApiVersionsRequest())
            expected.append((cid, ApiKey.API_VERSIONS, version, None))
        elif kind == "metadata":
            version = rng.choice([1, 9, 12])
            cid, frame = client.frame(ApiKey.METADATA, version, metadata_request(["p"]))
            expected.append((cid, ApiKey.METADATA, version, None))
        elif kind in ("produce", "produce0"):
            big = rng.random() < 0.05
            count = rng.randint(1, 2 if big else 5)  # under max.message.bytes (1 MiB)
            values = [
                (b"B" if big else b"s") * (400 * 1024 if big else rng.randint(1, 200))
                + f"{i}-{j}".encode()
                for j in range(count)
            ]
            acks = 0 if kind == "produce0" else rng.choice([1, -1])
            cid, frame = client.frame(
                ApiKey.PRODUCE, 9, produce_request("p", 0, batch(values), acks=acks)
            )
            if acks != 0:
                expected.append((cid, ApiKey.PRODUCE, 9, end_offset))
            end_offset += count
            if acks != 0:
                acked_end = end_offset
        elif kind == "offsets":
            cid, frame = client.frame(ApiKey.LIST_OFFSETS, 7, list_offsets_request("p", 0, -1))
            expected.append((cid, ApiKey.LIST_OFFSETS, 7, (acked_end, end_offset)))
        else:
            offset = max(0, acked_end - 1)
            cid, frame = client.frame(
                ApiKey.FETCH, 12, fetch_request("p", 0, offset, max_bytes=64 * 1024)
            )
            expected.append((cid, ApiKey.FETCH, 12, (acked_end, end_offset)))
        stream += frame

    cuts = sorted(rng.sample(range(1, len(stream)), len(stream) // (32 * 1024)))

    def write() -> None:
        with contextlib.suppress(OSError):  # the test failed and closed the socket
            for begin, end in itertools.pairwise([0, *cuts, len(stream)]):
                client.send_bytes(stream[begin:end])

    writer = threading.Thread(target=write, daemon=True)  # reads and writes overlap, as in a client
    writer.start()
    seen_end = 0
    try:
        for cid, api_key, version, check in expected:
            got_cid, body = decode_response(client.recv_frame(), api_key, version)
            assert got_cid == cid
            if isinstance(body, m.ProduceResponse):
                produced = body.responses[0].partition_responses[0]
                assert (produced.error_code, produced.base_offset) == (0, check)
            elif isinstance(body, m.ListOffsetsResponse):
                assert isinstance(check, tuple)
                latest = body.topics[0].partitions[0].offset
                assert check[0] <= latest <= check[1] and latest >= seen_end
                seen_end = latest
            elif isinstance(body, m.FetchResponse):
                assert isinstance(check, tuple)
                fetched = fetch_partition(body, "p", 0)
                assert (
                    check[0] <= fetched.high_watermark <= check[1]
                    and fetched.high_watermark >= seen_end
                )
                seen_end = fetched.high_watermark
                if check[0] > 0:
                    assert check[0] - 1 in record_offsets(fetched.records)
            elif isinstance(body, m.MetadataResponse):
                assert [len(t.partitions) for t in body.topics] == [2]
            else:
                assert isinstance(body, m.ApiVersionsResponse) and body.error_code == 0
        writer.join(10)
        assert client.is_quiet()  # acks=0 produces got no answer at all
        assert list_offset(client, "p", 0) == (0, end_offset)
    finally:
        client.close()


def test_long_poll_holds_only_its_own_connection(
    sluice_fresh_broker: EmbeddedBroker, witness: Witness
) -> None:
    with WireClient.to(sluice_fresh_broker) as setup:
        create_topic(setup, "quiet")
        create_topic(setup, "busy")
    poller = WireClient.to(sluice_fresh_broker)
    other = WireClient.to(sluice_fresh_broker)
    try:
        started = time.monotonic()
        poll_id = poller.send(ApiKey.FETCH, 12, fetch_request("quiet", 0, 0, max_wait_ms=2000))
        behind_id = poller.send(ApiKey.API_VERSIONS, 3, m.ApiVersionsRequest())  # queued behind it
        # Meanwhile another connection gets everything done at once.
        for i in range(20):
            assert metadata(other, ["busy"]).topics[0].error_code == 0
            assert produce(other, "busy", 0, batch([f"b{i}".encode()])).base_offset == i
        witness.check()
        busy_time = time.monotonic() - started
        print(f"20 metadata + produce round trips during the long poll: {busy_time * 1000:.0f} ms")
        assert busy_time < 1.5
        assert poller.is_quiet()  # the long poll is still waiting, and what is behind it too
        resp = poller.recv(ApiKey.FETCH, 12, poll_id, m.FetchResponse)
        waited = time.monotonic() - started
        part = fetch_partition(resp, "quiet", 0)
        assert (part.error_code, part.high_watermark, records_bytes(part.records)) == (0, 0, b"")
        assert 2.0 - 0.05 <= waited < 4.0, waited
        assert poller.recv(ApiKey.API_VERSIONS, 3, behind_id, m.ApiVersionsResponse).error_code == 0
        assert fetch_all_values(other, "busy") == [f"b{i}".encode() for i in range(20)]
    finally:
        poller.close()
        other.close()


def test_long_poll_returns_when_data_arrives(sluice_fresh_broker: EmbeddedBroker) -> None:
    producer = WireClient.to(sluice_fresh_broker)
    poller = WireClient.to(sluice_fresh_broker)
    try:
        create_topic(producer, "t", partitions=2)
        # ApiVersions and the fetch in one write: once ApiVersions is answered, the broker has
        # read the fetch too and is already waiting on it (one connection's requests run in order).
        _, first = poller.frame(ApiKey.API_VERSIONS, 3, m.ApiVersionsRequest())
        poll_id, poll = poller.frame(
            ApiKey.FETCH, 12, fetch_request("t", 0, 0, max_wait_ms=10_000, min_bytes=300)
        )
        started = time.monotonic()
        poller.send_bytes(first + poll)
        assert poller.recv_frame()  # the ApiVersions answer
        # Data elsewhere, and too little data here (min_bytes=300), do not end the wait...
        produce(producer, "t", 1, batch([b"elsewhere"]))
        produce(producer, "t", 0, batch([b"small"]))
        api_versions(producer)
        assert poller.is_quiet()
        # ...enough data here does, long before max_wait_ms.
        produce(producer, "t", 0, batch([b"x" * 400]))
        resp = poller.recv(ApiKey.FETCH, 12, poll_id, m.FetchResponse, timeout=10)
        waited = time.monotonic() - started
        print(f"long poll answered {waited * 1000:.0f} ms after it started (max_wait_ms=10000)")
        assert waited < 3.0
        part = fetch_partition(resp, "t", 0)
        assert part.error_code == 0 and part.high_watermark == 2
        assert record_values(part.records) == [b"small", b"x" * 400]
        # Immediately answered when the data is already there.
        started = time.monotonic()
        resp = poller.call(
            ApiKey.FETCH, 12, fetch_request("t", 1, 0, max_wait_ms=10_000), m.FetchResponse
        )
        assert record_values(fetch_partition(resp, "t", 1).records) == [b"elsewhere"]
        assert time.monotonic() - started < 2.0
    finally:
        producer.close()
        poller.close()


def test_many_connections_long_polling_at_once(sluice_fresh_broker: EmbeddedBroker) -> None:
    """Fifty long polls on fifty connections all wake on one produce each, while the producing
    connection is never slowed down by them."""
    with WireClient.to(sluice_fresh_broker) as setup:
        create_topic(setup, "fan", partitions=50)
    pollers = [WireClient.to(sluice_fresh_broker) for _ in range(50)]
    producer = WireClient.to(sluice_fresh_broker)
    try:
        ids = [
            p.send(ApiKey.FETCH, 12, fetch_request("fan", i, 0, max_wait_ms=10_000))
            for i, p in enumerate(pollers)
        ]
        started = time.monotonic()
        for i in range(50):
            assert produce(producer, "fan", i, batch([f"v{i}".encode()])).error_code == 0
        for i, (p, cid) in enumerate(zip(pollers, ids, strict=True)):
            resp = p.recv(ApiKey.FETCH, 12, cid, m.FetchResponse)
            assert record_values(fetch_partition(resp, "fan", i).records) == [f"v{i}".encode()]
        assert time.monotonic() - started < 5.0
    finally:
        for p in [*pollers, producer]:
            p.close()
