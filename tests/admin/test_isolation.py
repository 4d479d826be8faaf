"""HTTP clients of the admin side cannot hurt the Kafka listener: clients that ask for
/metrics and never read the answer, clients that trickle half a request, and a flood of admin
connections (past the cap, each displacing the one idle longest) leave produce round trips
fast, and a fresh scrape still answers. The broker is a ``sluice serve`` child, so the test's own threads do not share
its event loop or its GIL."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from confluent_kafka import Producer

from sluice.server.admin.app import MAX_CONNECTIONS
from sluice.testing import BrokerProcess, create_topic
from tests.admin.http import request

PARTITIONS = 2000
"""Enough that one /metrics answer (~1 MB) is far more than a stalled reader's socket buffers
take, so its handler really waits on the client."""
DEADLINE_S = 2.0
"""Slowest produce round trip allowed: a stalled event loop would show seconds; a healthy one
answers in milliseconds even on a busy 2-core machine."""


def _produce_round_trips(bootstrap: str, topic: str, count: int) -> list[float]:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": 1, "linger.ms": 0})
    producer.produce(topic, b"warm-up", partition=0)
    assert producer.flush(30) == 0
    times = []
    for i in range(count):
        started = time.monotonic()
        producer.produce(topic, f"r{i}".encode(), partition=i % 8)
        assert producer.flush(30) == 0
        times.append(time.monotonic() - started)
    return times


def _stalled_scrape(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock  # never read


def _trickled_request(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.")  # and nothing more
    return sock


def test_stalled_and_flooding_http_clients_do_not_slow_produce(tmp_path: Path) -> None:
    with BrokerProcess(tmp_path / "data", tmp_path / "broker.log", admin=True) as broker:
        broker.start()
        port = int(broker.admin_url.rsplit(":", 1)[1])
        # Generous timeouts: creating 2000 partitions fsyncs, which a busy disk makes slow.
        topic = create_topic(
            broker.bootstrap_servers, "isolation", partitions=PARTITIONS, timeout=120
        )
        first = request(broker.admin_url + "/metrics", timeout=60)
        assert first.status == 200 and len(first.body) > 500_000, len(first.body)

        held: list[socket.socket] = []
        try:
            held += [_stalled_scrape(port) for _ in range(10)]
            held += [_trickled_request(port) for _ in range(20)]
            # A fresh scrape still answers while those wait (they hold their connections, not
            # the scrape).
            scraped = request(broker.admin_url + "/metrics", timeout=60)
            assert scraped.status == 200
            times = _produce_round_trips(broker.bootstrap_servers, topic, 50)

            # Past the connection cap, a newcomer displaces the connection idle longest (the
            # stalled and trickling ones first): a flood of idle connections costs no more than
            # the cap's descriptors, and never locks out a fresh request.
            flood = [
                socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS + 50)
            ]
            held += flood
            assert request(broker.admin_url + "/healthz", timeout=10).status == 200
            for sock in held[:40]:
                sock.settimeout(10)
                try:
                    while sock.recv(1 << 20):  # a stalled scrape's answer, then EOF
                        pass
                except ConnectionResetError:
                    pass
            times += _produce_round_trips(broker.bootstrap_servers, topic, 50)
        finally:
            for sock in held:
                sock.close()
        slowest = max(times)
        print(
            f"produce round trips with stalled and flooding admin clients: max {slowest * 1000:.1f} ms, "
            f"median {sorted(times)[len(times) // 2] * 1000:.1f} ms"
        )
        assert slowest < DEADLINE_S, f"slowest produce round trip {slowest:.2f} s"
        # Once they are gone, the admin side answers again: as soon as the server has seen the
        # closed connections go (until then it still counts them against its cap: 503).
        deadline = time.monotonic() + 30
        while (status := request(broker.admin_url + "/healthz").status) != 200:
            assert status == 503 and time.monotonic() < deadline, status
            time.sleep(0.05)
        assert broker.stop() == 0
