"""Connection floods: a thousand connections trickling requests, the receive deadline that ends
them (and its allowance for big requests on slow links), max.connections.per.ip with its
overrides and the reserve its default keeps for other addresses, and the log line for every
refused or closed connection.

Every client here comes from loopback; Linux routes all of 127/8 to it, so binding a client to
127.0.0.2 makes it a different address to a broker on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import logging
import re
import resource
import selectors
import socket
import statistics
import threading
import time

import pytest

from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.testing import EmbeddedBroker
from tests.server.conftest import MakeBroker
from tests.server.wire import (
    I32,
    ConnectionClosed,
    WireClient,
    api_versions,
    batch,
    connections_settle,
    create_topic,
    fetch_all_values,
    produce_request,
)

CONNECTIONS_LOG = "sluice.server.connections"


def _log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == CONNECTIONS_LOG]


def _accounted(lines: list[str], one: str, cause: str) -> tuple[int, int]:
    """(lines matching ``one``, connections summed up for ``cause`` when lines were capped)."""
    single = sum(1 for line in lines if re.search(one, line))
    summed = sum(
        int(m.group(1))
        for line in lines
        if (m := re.match(rf"{re.escape(cause)}: (\d+) more connections in", line))
    )
    return single, summed


def _fd_budget() -> int:
    """Descriptors this process may use once the embedded broker has raised its soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(soft, hard if hard != resource.RLIM_INFINITY else soft)


def test_a_trickle_flood_locks_out_only_until_the_receive_deadline(
    make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A thousand connections (or as many as this process's descriptors allow, each costing a
    client and a broker descriptor here) each trickle a request one byte at a time. They hold
    every slot, so a new client is refused; but trickled bytes are not activity, and each
    request must arrive within sluice.request.receive.timeout.ms of its first byte, so all of
    them are closed by that deadline and new clients are served again."""
    caplog.set_level(logging.INFO, logger=CONNECTIONS_LOG)
    n = min(1000, (_fd_budget() - 300) // 2)
    assert n >= 300, f"only {n} connections fit this process's descriptor limit"
    deadline_ms = 500
    broker = make_broker(
        **{
            "max.connections": str(n),
            "max.connections.per.ip": str(n + 1),
            "sluice.request.receive.timeout.ms": str(deadline_ms),
        }
    )
    frame = I32.pack(100) + bytes(100)  # a request of 100 bytes: 1 byte per 100 ms never ends it
    socks = [socket.create_connection(("127.0.0.1", broker.port), timeout=10) for _ in range(n)]
    try:
        connections_settle(broker, n, timeout=30)
        # Every slot is taken: a new client is refused at once.
        with WireClient.to(broker) as locked_out:
            assert locked_out.wait_closed() == b""

        sel = selectors.DefaultSelector()
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, s)
        sent = dict.fromkeys(socks, 0)
        first_byte: dict[socket.socket, float] = {}
        closed: dict[socket.socket, float] = {}
        give_up = time.monotonic() + 60
        next_drip = 0.0
        while len(closed) < n and time.monotonic() < give_up:
            if time.monotonic() >= next_drip:  # the trickle: one more byte each, every 100 ms
                for s in socks:
                    if s in closed:
                        continue
                    if s not in first_byte:
                        first_byte[s] = time.monotonic()
                    with contextlib.suppress(OSError):  # closed by the broker: read below
                        sent[s] += s.send(frame[sent[s] : sent[s] + 1])
                next_drip = time.monotonic() + 0.1
            for key, _ in sel.select(timeout=max(0.0, next_drip - time.monotonic())):
                s = key.data
                try:
                    data = s.recv(1)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                assert data == b"", "the broker answered a request that never arrived"
                closed[s] = time.monotonic()
                sel.unregister(s)
        sel.close()
        assert len(closed) == n, f"{n - len(closed)} trickling connections still open after 60 s"
        lasted = sorted(closed[s] - first_byte[s] for s in socks)
        print(
            f"{n} trickling connections closed {lasted[0]:.2f} / {statistics.median(lasted):.2f}"
            f" / {lasted[-1]:.2f} s (min / median / max) after their first byte; "
            f"sluice.request.receive.timeout.ms={deadline_ms}; bytes sent each: "
            f"{min(sent.values())}..{max(sent.values())} of {len(frame)}"
        )
        assert lasted[0] >= deadline_ms / 1000  # not before the deadline
        assert lasted[-1] < deadline_ms / 1000 + 10
        # The slots are free again: new clients are served.
        connections_settle(broker, 0)
        with WireClient.to(broker) as client:
            assert api_versions(client).error_code == 0
    finally:
        for s in socks:
            s.close()
    broker.stop()  # sums up the log lines that were capped
    lines = _log_lines(caplog)
    assert any(
        re.fullmatch(
            rf"refused 127\.0\.0\.1:\d+: {n} connections are open \(max\.connections={n}\)", x
        )
        for x in lines
    ), lines
    single, summed = _accounted(
        lines,
        r"^closing 127\.0\.0\.1:\d+: [1-9]\d* of 104 request bytes arrived in [\d.]+ s, past its "
        r"deadline \(sluice\.request\.receive\.timeout\.ms=500 ",
        "closed: sluice.request.receive.timeout.ms",
    )
    print(f"log: {single} lines, one per closed connection, then {summed} summed up")
    assert single + summed == n  # every closed connection is accounted for, once
    assert single <= 20  # a flood does not flood the log


def test_the_receive_deadline_grows_with_the_request_size(make_broker: MakeBroker) -> None:
    """The deadline is sluice.request.receive.timeout.ms plus the request's size at
    sluice.request.receive.min.bytes.per.sec: a big request on a slow link that keeps to the
    rate is received and answered though it takes longer than the timeout; one that stalls is
    closed once its own, longer, deadline has passed."""
    timeout_ms, rate = 300, 4000
    broker = make_broker(
        **{
            "sluice.request.receive.timeout.ms": str(timeout_ms),
            "sluice.request.receive.min.bytes.per.sec": str(rate),
        }
    )
    with WireClient.to(broker) as setup:
        create_topic(setup, "slow")
    value = bytes(range(256)) * 24  # 6 KiB
    with WireClient.to(broker) as slow, WireClient.to(broker) as stalled:
        cid, frame = slow.frame(ApiKey.PRODUCE, 9, produce_request("slow", 0, batch([value])))
        allowed = timeout_ms / 1000 + (len(frame) - 4) / rate
        # The stalled one announces the same size and sends 10 bytes.
        stalled.send_bytes(frame[:10])
        stalled_from = time.monotonic()
        # The slow one keeps to twice the minimum rate: 800 bytes every 100 ms.
        started = time.monotonic()
        for at in range(0, len(frame), 800):
            slow.send_bytes(frame[at : at + 800])
            time.sleep(0.1)  # the link's pace, not a wait for the broker
        took = time.monotonic() - started
        resp = slow.recv(ApiKey.PRODUCE, 9, cid, m.ProduceResponse)
        assert resp.responses[0].partition_responses[0].error_code == 0
        assert stalled.wait_closed(timeout=allowed + 10) == b""
        stalled_for = time.monotonic() - stalled_from
        print(
            f"a {len(frame)}-byte request sent over {took:.2f} s was answered "
            f"(timeout {timeout_ms} ms, its deadline {allowed:.2f} s); the stalled one was "
            f"closed after {stalled_for:.2f} s"
        )
        assert took > timeout_ms / 1000  # the timeout alone would have closed it
        assert stalled_for >= allowed
    with WireClient.to(broker) as check:
        assert fetch_all_values(check, "slow") == [value]


def _round_trip_or_refused(broker: EmbeddedBroker, source: str) -> WireClient | None:
    """A new connection from ``source``: the client if the broker serves it, None if the broker
    closed it at once."""
    client = WireClient.to(broker, source=source)
    try:
        api_versions(client)
    except (ConnectionClosed, OSError):
        assert client.wait_closed() == b""
        client.close()
        return None
    return client


def test_max_connections_per_ip_and_overrides(
    make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=CONNECTIONS_LOG)
    broker = make_broker(
        **{
            "max.connections.per.ip": "3",
            "max.connections.per.ip.overrides": "127.0.0.3:5, [::1]:1",
        }
    )
    held: list[WireClient] = []
    try:
        for source, limit in (("127.0.0.1", 3), ("127.0.0.2", 3), ("127.0.0.3", 5)):
            for _ in range(limit):
                client = _round_trip_or_refused(broker, source)
                assert client is not None, f"connection {len(held)} from {source} refused"
                held.append(client)
            with WireClient.to(broker, source=source) as extra:  # one too many: closed at once
                assert extra.wait_closed() == b""
        connections_settle(broker, 11)
        # A freed slot is usable again, by that address.
        held.pop(0).close()
        connections_settle(broker, 10)
        again = _round_trip_or_refused(broker, "127.0.0.1")
        assert again is not None
        held.append(again)
        for client in held:
            assert api_versions(client).error_code == 0
    finally:
        for client in held:
            client.close()
    lines = _log_lines(caplog)
    for source, setting in (
        ("127.0.0.1", "max.connections.per.ip=3"),
        ("127.0.0.2", "max.connections.per.ip=3"),
        ("127.0.0.3", "max.connections.per.ip.overrides=5"),
    ):
        host = re.escape(source)
        count = setting[-1]
        pattern = (
            rf"refused {host}:\d+: {host} already has {count} connections \({re.escape(setting)}\)"
        )
        assert sum(1 for x in lines if re.fullmatch(pattern, x)) == 1, (pattern, lines)


def test_the_default_per_ip_limit_keeps_a_reserve_for_other_addresses(
    make_broker: MakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Unset, max.connections.per.ip is max.connections less a tenth: one address flooding the
    broker leaves that tenth to every other address."""
    caplog.set_level(logging.INFO, logger=CONNECTIONS_LOG)
    broker = make_broker(**{"max.connections": "20"})
    assert broker.config.per_ip_limit == 18
    held: list[WireClient] = []
    try:
        flood = [_round_trip_or_refused(broker, "127.0.0.1") for _ in range(25)]
        held.extend(c for c in flood if c is not None)
        assert len(held) == 18
        # Another address still gets in, up to max.connections...
        for source in ("127.0.0.2", "127.0.0.3"):
            other = _round_trip_or_refused(broker, source)
            assert other is not None, source
            held.append(other)
        # ...and no further.
        assert _round_trip_or_refused(broker, "127.0.0.4") is None
        for client in held:
            assert api_versions(client).error_code == 0
    finally:
        for client in held:
            client.close()
    lines = _log_lines(caplog)
    per_ip = [x for x in lines if "(max.connections.per.ip=18)" in x]
    assert len(per_ip) == 7 and all(x.startswith("refused 127.0.0.1:") for x in per_ip), lines
    assert [x for x in lines if "(max.connections=20)" in x] == [
        x for x in lines if x.startswith("refused 127.0.0.4:")
    ]
    assert len([x for x in lines if x.startswith("refused 127.0.0.4:")]) == 1


def test_many_big_requests_at_once_under_a_small_memory_bound(make_broker: MakeBroker) -> None:
    """queued.max.request.bytes far below what several big requests need together: partly
    received requests alone could hold all of the memory, each waiting for the others. They are
    let through one at a time instead, so all of them are answered (and a request bigger than
    the bound itself too)."""
    bound = 8 << 20
    broker = make_broker(
        **{
            "queued.max.request.bytes": str(bound),
            "socket.request.max.bytes": str(32 << 20),
            "message.max.bytes": str(32 << 20),
        }
    )
    with WireClient.to(broker) as setup:
        for i in range(6):
            create_topic(setup, f"big-{i}")
    values = [bytes([i]) * (6 << 20) for i in range(6)]
    errors: list[BaseException] = []
    answers: dict[int, int] = {}

    def send(i: int) -> None:
        try:
            with WireClient.to(broker, timeout=60) as client:
                request = produce_request(f"big-{i}", 0, batch([values[i]]))
                resp = client.call(ApiKey.PRODUCE, 9, request, m.ProduceResponse)
                answers[i] = resp.responses[0].partition_responses[0].error_code
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert answers == dict.fromkeys(range(6), 0)
    server = broker.server
    assert server is not None
    print(
        f"6 requests of 6 MiB at once under queued.max.request.bytes={bound >> 20} MiB: all "
        f"answered; peak held {server.memory.peak / 2**20:.1f} MiB"
    )
    # Over the bound by one frame at most (and what each connection had read already).
    assert server.memory.peak <= bound + len(values[0]) + 1024 + 6 * 256 * 1024
    with WireClient.to(broker) as check:
        for i in range(6):
            assert fetch_all_values(check, f"big-{i}") == [values[i]]
        huge = bytes([7]) * (20 << 20)  # bigger than the bound: receivable when alone
        resp = check.call(
            ApiKey.PRODUCE, 9, produce_request("big-0", 0, batch([huge])), m.ProduceResponse
        )
        assert resp.responses[0].partition_responses[0].error_code == 0
    assert server.memory.used == 0


def test_read_buffers_grow_with_traffic_and_shrink_when_quiet(make_broker: MakeBroker) -> None:
    """A connection's read buffer starts at 16 KiB (a thousand idle or trickling connections
    must not cost 256 KiB each) and grows, from the request memory, while pipelined requests
    keep filling it; once the connection is quiet the growth is given back, though it stays
    open."""
    broker = make_broker()
    server = broker.server
    assert server is not None
    with WireClient.to(broker) as client:
        create_topic(client, "t")
        pipelined = b"".join(
            client.frame(ApiKey.PRODUCE, 9, produce_request("t", 0, batch([bytes(900)])))[1]
            for _ in range(400)
        )  # 400 requests of about 1 KiB in one write
        client.send_bytes(pipelined)
        for _ in range(400):
            client.recv_frame()
        grown = server.memory.peak
        print(f"request memory peak while pipelining: {grown / 1024:.0f} KiB")
        assert grown > 16 * 1024  # the buffer grew (and the queued requests were held)
        deadline = time.monotonic() + 10
        while server.memory.used:
            assert time.monotonic() < deadline, f"{server.memory.used} bytes still held"
            time.sleep(0.05)  # polling the broker's state, bounded by the deadline
        assert api_versions(client).error_code == 0  # still open and served
        assert len(fetch_all_values(client, "t")) == 400
