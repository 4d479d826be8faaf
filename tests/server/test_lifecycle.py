"""The broker process's lifecycle: ``sluice serve`` starts quickly, stops cleanly on SIGTERM and
SIGINT (in-flight requests answered, clean-shutdown markers written, so the next start skips
recovery), and runs with no flags at all; the embedded broker starts, stops and restarts."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from sluice.config import BrokerConfig, Listener
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.storage.loader import CLEAN_SHUTDOWN_FILE
from sluice.storage.manager import CLEAN_SHUTDOWN_FILE as BROKER_CLEAN_SHUTDOWN_FILE
from sluice.testing import EmbeddedBroker
from tests.server.serve import ServeProcess, run_serve
from tests.server.wire import (
    WireClient,
    api_versions,
    batch,
    create_topic,
    fetch_all_values,
    fetch_partition,
    fetch_request,
    list_offset,
    metadata,
    produce,
)

TOPIC_PARTITIONS = 3


def _fill(client: WireClient) -> dict[int, list[bytes | None]]:
    create_topic(client, "t", partitions=TOPIC_PARTITIONS)
    written: dict[int, list[bytes | None]] = {}
    for p in range(TOPIC_PARTITIONS):
        values: list[bytes | None] = [f"p{p}-{i}".encode() for i in range(5)]
        assert produce(client, "t", p, batch([v for v in values if v is not None])).error_code == 0
        written[p] = values
    return written


def _partition_dirs(data_dir: Path) -> list[Path]:
    """The topics' partition directories, ``<topic>.<topic id>/<partition>`` (not the broker's
    internal ones, such as the coordinator's ``__consumer_offsets`` log)."""
    return sorted(
        p
        for topic in data_dir.iterdir()
        if topic.is_dir() and (topic / "topic.json").is_file()
        for p in topic.iterdir()
        if p.is_dir()
    )


def _partition_names(data_dir: Path) -> list[str]:
    """``<topic>-<partition>`` for every partition directory."""
    return [f"{d.parent.name.rsplit('.', 1)[0]}-{d.name}" for d in _partition_dirs(data_dir)]


def _clean_state_keys(data_dir: Path) -> set[str]:
    """The partitions the broker-wide clean-shutdown state file covers."""
    state = json.loads((data_dir / BROKER_CLEAN_SHUTDOWN_FILE).read_text())
    return set(state["partitions"])


def _log_dirs(data_dir: Path) -> list[Path]:
    """Every directory holding a partition log (segment files), internal ones included."""
    return sorted({p.parent for p in data_dir.rglob("*.log")})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    data_dir = tmp_path / "data"
    with ServeProcess(
        ["--listen", "127.0.0.1:0", "--data-dir", str(data_dir)], cwd=tmp_path
    ) as serve:
        ready = serve.wait_ready()
        print(f"sluice serve answered its first request {ready * 1000:.0f} ms after it was started")
        assert serve.host == "127.0.0.1" and serve.port > 0
        with serve.client() as client:
            written = _fill(client)
        idle = serve.client()
        poller = serve.client()
        try:
            assert api_versions(idle).error_code == 0
            # ApiVersions then a long poll in one write: once ApiVersions is answered, the broker
            # is already working on the fetch (a connection's requests run in order).
            _, first = poller.frame(ApiKey.API_VERSIONS, 3, m.ApiVersionsRequest())
            poll_id, poll = poller.frame(
                ApiKey.FETCH, 12, fetch_request("t", 0, 5, max_wait_ms=15_000)
            )
            poller.send_bytes(first + poll)
            poller.recv_frame()
            serve.signal(sig)
            # The in-flight request is answered (at once: shutdown ends long polls), then the
            # connection closes; so does the idle one.
            resp = poller.recv(ApiKey.FETCH, 12, poll_id, m.FetchResponse, timeout=5)
            part = fetch_partition(resp, "t", 0)
            assert (part.error_code, part.high_watermark) == (0, 5)
            assert poller.wait_closed() == b""
            assert idle.wait_closed() == b""
        finally:
            idle.close()
            poller.close()
        assert serve.wait(timeout=10) == 0
        assert "sluice stopped cleanly" in serve.output
        assert "Traceback" not in serve.output, serve.output
    # The clean-shutdown state covers every partition (one file for the broker), and the
    # coordinator's own log holds its marker...
    dirs = _partition_dirs(data_dir)
    assert _partition_names(data_dir) == [f"t-{p}" for p in range(TOPIC_PARTITIONS)]
    assert _clean_state_keys(data_dir) == {f"{d.parent.name}/{d.name}" for d in dirs}
    log_dirs = _log_dirs(data_dir)
    assert set(dirs) <= set(log_dirs)
    assert (data_dir / "__consumer_offsets" / CLEAN_SHUTDOWN_FILE).is_file()
    # ...so the next start trusts the logs as they are: no segment is recovered, and the
    # markers are consumed (a crash from now on must not look clean).
    with EmbeddedBroker(data_dir) as broker:
        assert broker.server is not None and broker.server.broker is not None
        logs = [p.log for p in broker.server.broker.logs.topics["t"].partitions]
        assert [(log.recovery.clean, log.recovery.segments_recovered) for log in logs] == [
            (True, 0)
        ] * TOPIC_PARTITIONS
        assert not any((d / CLEAN_SHUTDOWN_FILE).exists() for d in log_dirs)
        assert not (data_dir / BROKER_CLEAN_SHUTDOWN_FILE).exists()
        with WireClient.to(broker) as client:
            for p, values in written.items():
                assert fetch_all_values(client, "t", p) == values


def test_serve_killed_leaves_no_markers_and_recovers(tmp_path: Path) -> None:
    """The contrast: after SIGKILL there are no markers and the next start does recover (and
    every acknowledged record survives)."""
    data_dir = tmp_path / "data"
    with ServeProcess(
        ["--listen", "127.0.0.1:0", "--data-dir", str(data_dir)], cwd=tmp_path
    ) as serve:
        serve.wait_ready()
        with serve.client() as client:
            written = _fill(client)
        serve.signal(signal.SIGKILL)
        assert serve.wait() == -signal.SIGKILL
    assert len(_partition_dirs(data_dir)) == TOPIC_PARTITIONS
    assert not any((d / CLEAN_SHUTDOWN_FILE).exists() for d in _log_dirs(data_dir))
    assert not (data_dir / BROKER_CLEAN_SHUTDOWN_FILE).exists()
    with EmbeddedBroker(data_dir) as broker:
        assert broker.server is not None and broker.server.broker is not None
        logs = [p.log for p in broker.server.broker.logs.topics["t"].partitions]
        assert [log.recovery.clean for log in logs] == [False] * TOPIC_PARTITIONS
        with WireClient.to(broker) as client:
            for p, values in written.items():
                assert fetch_all_values(client, "t", p) == values


def test_serve_shutdown_with_many_connections(tmp_path: Path) -> None:
    with ServeProcess(
        ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "data")], cwd=tmp_path
    ) as serve:
        serve.wait_ready()
        clients = [serve.client() for _ in range(50)]
        try:
            for c in clients[::5]:
                assert api_versions(c).error_code == 0
            serve.signal(signal.SIGTERM)
            for c in clients:
                assert c.wait_closed() == b""
            assert serve.wait(timeout=10) == 0
        finally:
            for c in clients:
                c.close()


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_serve_defaults(tmp_path: Path) -> None:
    """With no flags: 127.0.0.1:9092, data in ./sluice-data. If 9092 is taken here, the listen
    default is checked on the configuration instead and the process runs on a free port (the
    data directory default is checked by the process either way)."""
    defaults = BrokerConfig()
    assert defaults.listen == Listener("127.0.0.1", 9092)
    assert defaults.advertised_listener == Listener("127.0.0.1", 9092)
    assert defaults.data_dir == Path("sluice-data")
    args = [] if _port_is_free(9092) else ["--listen", "127.0.0.1:0"]
    print(
        "9092 is free: running with no flags"
        if not args
        else "9092 is taken: running with --listen only"
    )
    with ServeProcess(args, cwd=tmp_path) as serve:
        serve.wait_ready()
        if not args:
            assert (serve.host, serve.port, serve.advertised) == (
                "127.0.0.1",
                9092,
                "127.0.0.1:9092",
            )
        with serve.client() as client:
            resp = metadata(client, ["auto"])  # auto-created, under the default data directory
            assert [(t.name, t.error_code, len(t.partitions)) for t in resp.topics] == [
                ("auto", 0, 1)
            ]
            assert [(b.host, b.port) for b in resp.brokers] == [(serve.host, serve.port)]
            assert produce(client, "auto", 0, batch([b"default"])).error_code == 0
        serve.signal(signal.SIGTERM)
        assert serve.wait() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sluice-data"]
    assert _partition_names(tmp_path / "sluice-data") == ["auto-0"]
    assert len(_clean_state_keys(tmp_path / "sluice-data")) == 1


def test_serve_port_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(
            ["--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d")], cwd=tmp_path
        )
    assert result.returncode == 1, result.stderr
    assert "sluice serve: cannot start" in result.stderr
    assert "Traceback" not in result.stderr
    # The port is bound before the logs are opened: nothing was recovered or created for nothing.
    assert [p.name for p in (tmp_path / "d").iterdir()] == [".lock"]


@pytest.mark.parametrize("data_dir", ["data", "data/sub"])
def test_a_data_dir_that_is_a_file_is_refused_naming_it(tmp_path: Path, data_dir: str) -> None:
    """Python's error named only the path (`cannot start: [Errno 17] File exists: 'data'`)."""
    (tmp_path / "data").write_bytes(b"not a directory")
    result = run_serve(["--listen", "127.0.0.1:0", "--data-dir", data_dir], cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert (
        f"sluice serve: cannot start: data directory {data_dir} is not a directory "
        "(it, or a parent, is a file)"
    ) in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "data").read_bytes() == b"not a directory"


def test_a_second_broker_on_the_same_data_dir_refuses_to_start(tmp_path: Path) -> None:
    """Two brokers on one directory would hand out the same offsets and lose acknowledged
    records: the second exits 1 without touching anything, and the first keeps serving."""
    data_dir = tmp_path / "data"
    with EmbeddedBroker(data_dir) as first, WireClient.to(first) as client:
        create_topic(client, "t", partitions=1)
        assert produce(client, "t", 0, batch([b"one"])).base_offset == 0
        before = sorted((p, p.stat().st_mtime_ns) for p in data_dir.rglob("*") if p.is_file())
        result = run_serve(["--listen", "127.0.0.1:0", "--data-dir", str(data_dir)], cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        assert "is in use by another sluice process" in result.stderr
        assert "Traceback" not in result.stderr
        after = sorted((p, p.stat().st_mtime_ns) for p in data_dir.rglob("*") if p.is_file())
        assert after == before
        assert produce(client, "t", 0, batch([b"two"])).base_offset == 1
        assert fetch_all_values(client, "t", 0) == [b"one", b"two"]
    # The lock goes with the broker: the directory opens again at once.
    with EmbeddedBroker(data_dir) as again, WireClient.to(again) as client:
        assert fetch_all_values(client, "t", 0) == [b"one", b"two"]


def test_embedded_broker_start_stop_restart(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "data")
    broker.start()
    try:
        port = broker.port
        assert broker.bootstrap_servers == f"127.0.0.1:{port}"
        with WireClient.to(broker) as client:
            create_topic(client, "t")
            produce(client, "t", 0, batch([b"before"]))
        broker.restart()  # same port, same data
        assert broker.port == port
        with WireClient.to(broker) as client:
            assert produce(client, "t", 0, batch([b"after"])).base_offset == 1
            assert fetch_all_values(client, "t") == [b"before", b"after"]
    finally:
        broker.stop()
    broker.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        WireClient("127.0.0.1", port, timeout=2)
    # The context manager form, on the same data.
    with EmbeddedBroker(tmp_path / "data") as again, WireClient.to(again) as client:
        assert list_offset(client, "t", 0) == (0, 2)


def test_sluice_fresh_broker_fixture(sluice_fresh_broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The pytest plugin's fixture: a started broker with its data under this test's tmp_path."""
    assert sluice_fresh_broker.data_dir == tmp_path / "sluice-data"
    with WireClient.to(sluice_fresh_broker) as client:
        assert api_versions(client).error_code == 0
