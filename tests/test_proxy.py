"""The fault-injecting proxy of the idempotence tests (tests/proxy.py): it forwards Kafka frames
byte for byte whichever way they are cut into segments, and drops a connection exactly where it
is told: after the broker has taken a Produce request, before its answer reaches the client."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.testing import EmbeddedBroker
from sluice.testing.process import free_port
from tests.proxy import PRODUCE, FaultProxy
from tests.server.wire import (
    ConnectionClosed,
    WireClient,
    api_versions,
    batch,
    create_topic,
    fetch_all_values,
    list_offset,
    metadata,
    produce,
    produce_request,
)

TOPIC = "proxied"


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[FaultProxy, EmbeddedBroker]]:
    """A broker behind a proxy, advertising the proxy's address."""
    with (
        FaultProxy() as proxy,
        EmbeddedBroker(
            tmp_path / "data", settings={"advertised.listeners": proxy.address}
        ) as broker,
    ):
        proxy.forward_to("127.0.0.1", broker.port)
        with WireClient.to(broker) as direct:
            create_topic(direct, TOPIC)
        yield proxy, broker


def through(proxy: FaultProxy) -> WireClient:
    return WireClient("127.0.0.1", proxy.port, timeout=5.0)


def send_record(client: WireClient, value: bytes) -> int:
    """Produce one record (acks=1); its offset."""
    part = produce(client, TOPIC, 0, batch([value]))
    assert part.error_code == 0
    return part.base_offset


# -- forwarding ------------------------------------------------------------------------------------


class Recorder:
    """A stand-in upstream on a plain socket: it records every byte it receives and answers each
    frame with a frame of its own (the request body from the correlation id on, reversed after
    it), so the test knows exactly which bytes each side must see."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.received = bytearray()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(request_frame: bytes) -> bytes:
        body = request_frame[4:]
        answer = body[4:8] + body[8:][::-1]
        return struct.pack(">i", len(answer)) + answer

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            pending = bytearray()
            while chunk := conn.recv(1 << 16):
                self.received += chunk
                pending += chunk
                while len(pending) >= 4:
                    (size,) = struct.unpack_from(">i", pending)
                    if len(pending) < 4 + size:
                        break
                    conn.sendall(self.answer(bytes(pending[: 4 + size])))
                    del pending[: 4 + size]

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def request_frame(api_key: int, correlation_id: int, payload: bytes) -> bytes:
    body = struct.pack(">hhi", api_key, 9, correlation_id) + payload
    return struct.pack(">i", len(body)) + body


def test_frames_pass_byte_for_byte_however_they_are_cut() -> None:
    recorder = Recorder()
    try:
        with FaultProxy(("127.0.0.1", recorder.port)) as proxy:
            frames = [
                request_frame(PRODUCE, 1, b"\x00produce\xff" * 50),
                request_frame(ApiKey.METADATA, 2, b""),
                request_frame(ApiKey.FETCH, 3, bytes(range(256)) * 300),  # bigger than one read
                request_frame(PRODUCE, 4, b"x"),
            ]
            stream = b"".join(frames)
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
                client.sendall(stream[:1])  # a size prefix in pieces
                client.sendall(stream[1:3])
                client.sendall(stream[3:100])
                client.sendall(stream[100:])  # the rest of one frame and three whole ones
                expected = b"".join(Recorder.answer(f) for f in frames)
                got = bytearray()
                while len(got) < len(expected):
                    chunk = client.recv(1 << 16)
                    assert chunk, "the proxy closed the connection"
                    got += chunk
            assert bytes(got) == expected
            stats = proxy.stats
        assert bytes(recorder.received) == stream
        assert (stats.connections, stats.requests, stats.responses) == (1, 4, 4)
        assert (stats.produce_requests, stats.drops) == (2, 0)
    finally:
        recorder.close()


def test_real_traffic_passes_and_metadata_names_the_proxy(
    proxied: tuple[FaultProxy, EmbeddedBroker],
) -> None:
    proxy, broker = proxied
    with through(proxy) as client:
        assert api_versions(client).error_code == 0
        (b,) = metadata(client, [TOPIC]).brokers
        assert (b.host, b.port) == ("127.0.0.1", proxy.port)
        assert [send_record(client, f"v{i}".encode()) for i in range(3)] == [0, 1, 2]
        assert fetch_all_values(client, TOPIC) == [b"v0", b"v1", b"v2"]
    with WireClient.to(broker) as direct:
        assert fetch_all_values(direct, TOPIC) == [b"v0", b"v1", b"v2"]
    assert proxy.stats.drops == 0


# -- drops -----------------------------------------------------------------------------------------


def test_drop_after_the_nth_produce_request(proxied: tuple[FaultProxy, EmbeddedBroker]) -> None:
    """The broker stores the second record, the client never hears so; the third goes through."""
    proxy, broker = proxied
    proxy.drop_after_produce(2)
    with through(proxy) as client:
        assert metadata(client, [TOPIC]).brokers  # not a Produce: does not count
        assert send_record(client, b"first") == 0
        with pytest.raises(ConnectionClosed):
            send_record(client, b"second")
    with through(proxy) as client:
        assert send_record(client, b"third") == 2
    with WireClient.to(broker) as direct:
        assert fetch_all_values(direct, TOPIC) == [b"first", b"second", b"third"]
        assert list_offset(direct, TOPIC, 0) == (0, 3)
    stats = proxy.stats
    assert (stats.produce_requests, stats.drops, stats.connections) == (3, 1, 2)


def test_a_drop_in_a_pipeline(proxied: tuple[FaultProxy, EmbeddedBroker]) -> None:
    """Four requests pipelined on one connection, the second doomed: the first answer arrives,
    the second (whose request the broker stored) and every one behind it die with the
    connection. Requests behind the doomed one may or may not have reached the broker."""
    proxy, broker = proxied
    proxy.drop_after_produce(2)
    sent = [f"p{i}".encode() for i in range(4)]
    with through(proxy) as client:
        ids = [client.send(ApiKey.PRODUCE, 9, produce_request(TOPIC, 0, batch([v]))) for v in sent]
        first = client.recv(ApiKey.PRODUCE, 9, ids[0], m.ProduceResponse)
        assert first.responses[0].partition_responses[0].base_offset == 0
        with pytest.raises(ConnectionClosed):
            client.recv_frame()
    with WireClient.to(broker) as direct:
        stored = fetch_all_values(direct, TOPIC)
    assert stored[:2] == sent[:2] and stored == sent[: len(stored)]
    assert proxy.stats.drops == 1


def _dropped(proxy: FaultProxy, answers: int) -> list[bool]:
    """Send ``answers`` Produce requests one at a time, reconnecting after each drop; which
    of them were dropped."""
    out = []
    client = through(proxy)
    try:
        for i in range(answers):
            try:
                send_record(client, f"r{i}".encode())
                out.append(False)
            except ConnectionClosed:
                out.append(True)
                client.close()
                client = through(proxy)
    finally:
        client.close()
    return out


def test_random_drops_follow_the_seed_and_stop_at_the_cap(
    proxied: tuple[FaultProxy, EmbeddedBroker],
) -> None:
    proxy, broker = proxied
    seed, p, cap = 7, 0.5, 4
    proxy.drop_randomly(p, max_drops=cap, seed=seed)
    got = _dropped(proxy, 20)
    rng, expected, left = random.Random(seed), [], cap
    for _ in range(20):
        hit = left > 0 and rng.random() < p
        left -= hit
        expected.append(hit)
    assert got == expected
    assert sum(got) == cap == proxy.stats.drops
    with WireClient.to(broker) as direct:  # dropped or not, the broker stored every one
        assert list_offset(direct, TOPIC, 0) == (0, 20)


def test_certain_drops_and_stop_dropping(proxied: tuple[FaultProxy, EmbeddedBroker]) -> None:
    proxy, _ = proxied
    proxy.drop_randomly(1.0, max_drops=2, seed=0)
    assert _dropped(proxy, 4) == [True, True, False, False]
    proxy.drop_randomly(1.0, max_drops=5, seed=0)
    proxy.drop_after_produce(1)
    proxy.stop_dropping()
    assert _dropped(proxy, 3) == [False, False, False]
    assert proxy.stats.drops == 2


def test_broker_down_closes_the_client_connection() -> None:
    """Nothing listens upstream: the client's connection is closed, not left hanging."""
    with FaultProxy(("127.0.0.1", free_port())) as proxy, through(proxy) as client:
        client.wait_closed()


# -- holding answers -------------------------------------------------------------------------------


def wait_held(proxy: FaultProxy, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while proxy.stats.held < n:
        assert time.monotonic() < deadline, proxy.stats
        time.sleep(0.005)


def api_versions_request() -> m.ApiVersionsRequest:
    return m.ApiVersionsRequest(client_software_name="proxy-tests", client_software_version="1")


def test_held_answers_arrive_in_order_when_released(
    proxied: tuple[FaultProxy, EmbeddedBroker],
) -> None:
    proxy, _ = proxied
    proxy.hold_answers()
    with through(proxy) as client:
        assert metadata(client, [TOPIC]).brokers  # no Produce answer yet: not held
        produced = client.send(ApiKey.PRODUCE, 9, produce_request(TOPIC, 0, batch([b"held"])))
        behind = client.send(ApiKey.API_VERSIONS, 3, api_versions_request())
        wait_held(proxy, 2)  # the Produce answer and the one behind it
        assert client.is_quiet()
        proxy.release_answers()
        part = client.recv(ApiKey.PRODUCE, 9, produced, m.ProduceResponse)
        assert part.responses[0].partition_responses[0].base_offset == 0
        assert client.recv(ApiKey.API_VERSIONS, 3, behind, m.ApiVersionsResponse).error_code == 0
        assert send_record(client, b"after") == 1  # no longer held
    stats = proxy.stats
    assert (stats.held, stats.lost, stats.drops) == (0, 0, 0)


def test_held_answers_die_with_the_broker(proxied: tuple[FaultProxy, EmbeddedBroker]) -> None:
    """The broker stored the record and answered; it goes away before the answer is let through:
    the client sees its connection close, and nothing else."""
    proxy, broker = proxied
    proxy.hold_answers()
    with through(proxy) as client:
        client.send(ApiKey.PRODUCE, 9, produce_request(TOPIC, 0, batch([b"stored"])))
        wait_held(proxy, 1)
        broker.stop()
        assert client.wait_closed() == b""
    stats = proxy.stats
    assert (stats.held, stats.lost, stats.drops) == (0, 1, 0)
    broker.start()
    with WireClient.to(broker) as direct:
        assert fetch_all_values(direct, TOPIC) == [b"stored"]
