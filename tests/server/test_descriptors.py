"""File descriptors, on ``sluice serve`` child processes started with a low RLIMIT_NOFILE: the
soft limit raised to the hard one at start; connections that would take the descriptors kept
for the logs (sluice.fd.reserve) refused; and when the process is out of descriptors anyway,
connections refused at once with one log line for the whole episode, and served again as soon
as descriptors are free."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from tests.server.serve import ServeProcess
from tests.server.wire import (
    ConnectionClosed,
    WireClient,
    api_versions,
    batch,
    create_topic,
    fetch_all_values,
    produce,
)


def _connect(serve: ServeProcess) -> WireClient | None:
    """A new connection: the client if it is served, None if the broker closed it at once."""
    client = WireClient(serve.host, serve.port, timeout=5)
    try:
        api_versions(client)
    except (ConnectionClosed, OSError):
        assert client.wait_closed() == b""
        client.close()
        return None
    return client


def _fill(serve: ServeProcess, most: int) -> list[WireClient]:
    """Connections until the broker refuses one (and at most ``most``)."""
    held: list[WireClient] = []
    while len(held) < most:
        client = _connect(serve)
        if client is None:
            return held
        held.append(client)
    raise AssertionError(f"{most} connections and none refused")


def test_out_of_descriptors_is_one_episode_and_ends_by_itself(tmp_path: Path) -> None:
    limit = 64
    args = ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")]
    args += ["--set", "sluice.fd.reserve=0"]  # no reserve: run out for real
    with ServeProcess(args, cwd=tmp_path, nofile=(limit, limit)) as serve:
        serve.wait_ready()
        held = _fill(serve, limit)
        refused = 1  # the one that ended _fill
        try:
            for _ in range(9):
                assert _connect(serve) is None
                refused += 1
            print(f"{len(held)} connections served with {limit} descriptors, {refused} refused")
            assert 20 < len(held) < limit
            for c in held[: len(held) // 2]:
                assert api_versions(c).error_code == 0  # the admitted ones are unaffected
        finally:
            for c in held:
                c.close()
        # Descriptors free up as the broker closes its side of those: it serves again, by
        # itself (retrying while it has not yet closed them all).
        deadline = time.monotonic() + 20
        while (client := _connect(serve)) is None:
            refused += 1
            assert time.monotonic() < deadline, "never served again"
        with client:
            create_topic(client, "after")
            assert produce(client, "after", 0, batch([b"ok"])).error_code == 0
            assert fetch_all_values(client, "after") == [b"ok"]
        started = serve.lines_matching(r"out of file descriptors")
        assert len(started) == 1, serve.output  # once for the episode, not once a connection
        assert re.search(
            rf"out of file descriptors \(EMFILE: Too many open files; this process may open "
            rf"{limit}\): new connections are closed as soon as they are accepted",
            started[0],
        ), started
        ended = serve.wait_for_line(
            re.compile(
                r"file descriptors available again: accepting connections after [\d.]+ s in "
                r"which (\d+) were refused for lack of descriptors \(EMFILE: Too many open "
                r"files; by address: 127\.0\.0\.1: (\d+)\)"
            )
        )
        assert int(ended.group(1)) == int(ended.group(2)) == refused
        print(ended.group(0))
        serve.signal(signal.SIGTERM)
        assert serve.wait() == 0
        assert "Traceback" not in serve.output, serve.output


def test_the_descriptor_reserve_keeps_the_logs_working(tmp_path: Path) -> None:
    """Connections never take the last sluice.fd.reserve descriptors, so with every other one
    taken the logs can still open files (a topic of many partitions is created and written);
    the soft limit was raised to the hard one at start, and both were logged."""
    soft, hard, reserve = 48, 128, 40
    args = ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")]
    args += ["--set", f"sluice.fd.reserve={reserve}"]
    with ServeProcess(args, cwd=tmp_path, nofile=(soft, hard)) as serve:
        serve.wait_ready()
        raised = serve.lines_matching(r"file descriptors: ")
        assert any(
            f"file descriptors: soft limit raised from {soft} to {hard} (the hard limit)" in line
            for line in raised
        ), raised
        limits = Path(f"/proc/{serve.proc.pid}/limits").read_text()
        assert re.search(rf"Max open files\s+{hard}\s+{hard}\s", limits), limits
        assert serve.lines_matching(
            rf"max\.connections=1000, but this process may open {hard} file descriptors and "
            rf"keeps {reserve} of them for the logs \(sluice\.fd\.reserve\): connections past "
            rf"descriptor {hard - reserve} will be refused"
        )
        held = _fill(serve, hard)
        try:
            print(f"{len(held)} connections served with {hard} descriptors, {reserve} reserved")
            serve.wait_for_line(re.compile(r"\(sluice\.fd\.reserve\)$"))
            refusals = serve.lines_matching(r"\(sluice\.fd\.reserve\)$")
            assert len(refusals) == 1, refusals
            assert re.search(
                rf"refused 127\.0\.0\.1:\d+: it would take file descriptor {hard - reserve} of "
                rf"the {hard} the process may open, and the last {reserve} are kept for the logs",
                refusals[0],
            ), refusals
            partitions = 12
            create_topic(held[0], "wide", partitions=partitions)
            for p in range(partitions):
                assert produce(held[0], "wide", p, batch([f"p{p}".encode()])).error_code == 0
            for p in range(partitions):
                assert fetch_all_values(held[1], "wide", p) == [f"p{p}".encode()]
        finally:
            for c in held:
                c.close()
        serve.signal(signal.SIGTERM)
        assert serve.wait() == 0
        assert "Traceback" not in serve.output and " ERROR " not in serve.output, serve.output
