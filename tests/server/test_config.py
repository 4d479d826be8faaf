"""Broker configuration: built-in defaults < TOML file < ``--set key=value`` < the CLI's own flags,
Kafka's names, clear errors (exit code 2) for anything unknown or malformed, and the advertised
listener that Metadata hands to clients."""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from sluice.broker.config_apis import DEFAULT_CONFIG, STATIC_BROKER_CONFIG
from sluice.cli import main as cli_main
from sluice.config import (
    BROKER_CONFIG_KEYS,
    TOPIC_CONFIG_KEYS,
    BrokerConfig,
    Listener,
    parse_host_port,
)
from sluice.errors import ErrorCode, InvalidConfigError
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.messages import ConfigResourceType
from sluice.testing import EmbeddedBroker
from tests.server.conftest import MakeBroker
from tests.server.serve import ServeProcess, run_serve
from tests.server.wire import WireClient, create_topics_request, metadata

TOML = """
# flat Kafka names...
"num.partitions" = 2
"auto.create.topics.enable" = true
"advertised.listeners" = "PLAINTEXT://file.example:1111"
"node.id" = 3
listeners = "PLAINTEXT://127.0.0.1:{port}"

# ...and nested tables, which flatten to the same dotted names
[log]
retention.ms = 123456
segment.bytes = 2097152

[connections.max.idle]
ms = 5000
"""

ROOT = Path(__file__).resolve().parents[2]


def write_toml(path: Path, port: int = 0, extra: str = "", *, top: str = "") -> Path:
    """The sample file, with ``top`` before it (flat keys) and ``extra`` after its last table."""
    path.write_text(top + TOML.format(port=port) + extra)
    return path


def test_load_precedence(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "sluice.toml", port=19092)
    # The file alone, over the defaults.
    config = BrokerConfig.load(file)
    assert config.num_partitions == 2
    assert config.auto_create_topics is True
    assert config.advertised == Listener("file.example", 1111)
    assert config.listen == Listener("127.0.0.1", 19092)
    assert config.node_id == 3
    assert config.topic_defaults.retention_ms == 123456
    assert config.topic_defaults.segment_bytes == 2097152
    assert config.idle_timeout_ms == 5000
    assert config.max_connections == BrokerConfig().max_connections  # untouched: the default
    assert config.request_max_bytes == 100 * 1024 * 1024
    # --set beats the file; the last --set of a key wins.
    config = BrokerConfig.load(
        file,
        [
            "num.partitions=4",
            "log.retention.ms=1000",
            "advertised.listeners=set.example:2222",
            "max.connections=7",
            "max.connections=8",
            " socket.request.max.bytes = 4096 ",
        ],
    )
    assert config.num_partitions == 4
    assert config.topic_defaults.retention_ms == 1000
    assert config.topic_defaults.segment_bytes == 2097152  # from the file still
    assert config.advertised == Listener("set.example", 2222)
    assert config.max_connections == 8
    assert config.request_max_bytes == 4096
    assert config.node_id == 3
    # The CLI's flags beat both.
    config = BrokerConfig.load(
        file,
        ["advertised.listeners=set.example:2222", "log.dirs=/from/set"],
        listen=Listener("127.0.0.1", 0),
        advertised=Listener("flag.example", 3333),
        data_dir=Path("/from/flag"),
    )
    assert config.listen == Listener("127.0.0.1", 0)
    assert config.advertised == Listener("flag.example", 3333)
    assert config.data_dir == Path("/from/flag")
    # A flag left out (None) does not hide the file's or --set's value.
    config = BrokerConfig.load(
        file, ["log.dirs=/a,/b"], listen=None, advertised=None, data_dir=None
    )
    assert config.data_dir == Path("/a")
    assert config.advertised == Listener("file.example", 1111)


def test_static_keys_record_what_was_given() -> None:
    """DescribeConfigs reports these as STATIC_BROKER_CONFIG, so they are every key given, by
    its main name, even when the value equals the default."""
    config = BrokerConfig.load(
        None,
        ["broker.id=4", "log.dir=/x", "num.partitions=1", "log.retention.ms=5"],
        listen=Listener("127.0.0.1", 0),
        advertised=None,
    )
    assert config.static_keys == {"node.id", "log.dirs", "num.partitions", "log.retention.ms", "listeners"}
    assert BrokerConfig.load().static_keys == frozenset()


def test_defaults() -> None:
    config = BrokerConfig.load()
    assert config == BrokerConfig()
    assert config.listen == Listener("127.0.0.1", 9092)
    assert config.data_dir == Path("sluice-data")
    assert config.auto_create_topics is True
    assert config.num_partitions == 1
    assert config.request_max_bytes == 100 * 1024 * 1024
    assert config.advertised is None
    # A wildcard bind advertises loopback rather than an address no client can dial.
    assert BrokerConfig(listen=Listener("0.0.0.0", 9093)).advertised_listener == Listener(
        "127.0.0.1", 9093
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PLAINTEXT://kafka.example:9093", Listener("kafka.example", 9093)),
        ("host:1", Listener("host", 1)),
        ("[::1]:9094", Listener("::1", 9094)),
        (":9095", Listener("0.0.0.0", 9095)),
        ("justahost", Listener("justahost", 9092)),
    ],
)
def test_listener_forms(text: str, expected: Listener) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    ("overrides", "file_extra", "message"),
    [
        (["no.such.key=1"], "", "unknown broker config 'no.such.key'"),
        ([], "[no.such]\nfile.key = 1\n", "unknown broker config 'no.such.file.key'"),
        ([], "[bogus]\nnested = 1\n", "unknown broker config 'bogus.nested'"),
        (["num.partitions"], "", "--set takes key=value"),
        (["=3"], "", "--set takes key=value"),
        (["num.partitions=many"], "", "bad value for num.partitions"),
        (["num.partitions=0"], "", "num.partitions must be >= 1"),
        (["max.connections=-1"], "", "bad value for max.connections"),
        (["auto.create.topics.enable=maybe"], "", "bad value for auto.create.topics.enable"),
        (["socket.request.max.bytes=10"], "", "socket.request.max.bytes must be >= 1024"),
        (["listeners=host:99999"], "", "bad value for listeners"),
        (["log.retention.ms=soon"], "", "retention"),
        (["max.connections.per.ip=-1"], "", "bad value for max.connections.per.ip: '-1'"),
        (
            ["max.connections.per.ip=0"],
            "",
            "max.connections.per.ip can be 0 only with max.connections.per.ip.overrides",
        ),
        (
            ["max.connections.per.ip.overrides=10.0.0.1"],
            "",
            "bad value for max.connections.per.ip.overrides: '10.0.0.1' (expected host:count",
        ),
        (
            ["max.connections.per.ip.overrides=10.0.0.1:many"],
            "",
            "bad count in '10.0.0.1:many'",
        ),
        (
            ["max.connections.per.ip.overrides=10.0.0.1:-3"],
            "",
            "count must be >= 0 in '10.0.0.1:-3'",
        ),
        (
            ["max.connections.per.ip.overrides=no-such-host.invalid:3"],
            "",
            "cannot resolve 'no-such-host.invalid'",
        ),
        (
            ["queued.max.request.bytes=0"],
            "",
            "bad value for queued.max.request.bytes: '0' (must be >= 1, or -1 for unbounded)",
        ),
        (["queued.max.request.bytes=-2"], "", "or -1 for unbounded"),
        (
            ["sluice.request.receive.timeout.ms=0"],
            "",
            "bad value for sluice.request.receive.timeout.ms: '0' (must be >= 1)",
        ),
        (
            ["sluice.request.receive.min.bytes.per.sec=0"],
            "",
            "bad value for sluice.request.receive.min.bytes.per.sec: '0' (must be >= 1)",
        ),
        (["sluice.fd.reserve=-1"], "", "bad value for sluice.fd.reserve: '-1' (must be >= 0)"),
    ],
)
def test_invalid_settings_are_errors(
    tmp_path: Path, overrides: list[str], file_extra: str, message: str
) -> None:
    file = write_toml(tmp_path / "sluice.toml", extra=file_extra)
    with pytest.raises(InvalidConfigError) as raised:
        BrokerConfig.load(file, overrides)
    assert message in str(raised.value)


def test_connection_limit_settings() -> None:
    """The defaults, and what each setting parses to (Kafka's names where Kafka has one)."""
    config = BrokerConfig()
    assert config.per_ip_limit == 900  # max.connections less a tenth: a reserve for others
    assert config.queued_max_request_bytes == 256 * 2**20
    assert config.request_receive_timeout_ms == 30_000
    assert config.request_receive_min_rate == 256 * 1024
    assert config.fd_reserve == 256
    assert config.receive_deadline_s(100 * 2**20) == 30 + 400  # 100 MiB at 256 KiB/s
    assert BrokerConfig(max_connections=5).per_ip_limit == 5  # a tenth of 5 rounds to nothing
    config = BrokerConfig.from_settings(
        {
            "max.connections": "50",
            "max.connections.per.ip": "0",
            "max.connections.per.ip.overrides": " 10.0.0.1:4 , [::1]:2,::ffff:10.0.0.2:3,,",
            "queued.max.request.bytes": "-1",
            "sluice.request.receive.timeout.ms": "1000",
            "sluice.request.receive.min.bytes.per.sec": "1000",
            "sluice.fd.reserve": "0",
        }
    )
    assert config.per_ip_limit == 0
    assert config.per_ip_limit_for("10.0.0.1") == 4
    assert config.per_ip_limit_for("::1") == 2
    assert config.per_ip_limit_for("10.0.0.2") == 3  # an IPv4-mapped address is the IPv4 one
    assert config.per_ip_limit_for("10.0.0.3") == 0
    assert config.queued_max_request_bytes == -1
    assert config.receive_deadline_s(3000) == 4.0
    assert config.fd_reserve == 0


def _describe_broker(host: str, port: int) -> dict[str, tuple[str | None, int, bool]]:
    with WireClient(host, port) as client:
        body = m.DescribeConfigsRequest(
            resources=[
                m.DescribeConfigsResource(
                    resource_type=ConfigResourceType.BROKER,
                    resource_name="0",
                    configuration_keys=None,
                )
            ],
            include_synonyms=False,
        )
        (result,) = client.call(ApiKey.DESCRIBE_CONFIGS, 4, body, m.DescribeConfigsResponse).results
        assert result.error_code == 0
        return {c.name: (c.value, c.config_source, c.read_only) for c in result.configs}


CONNECTION_LIMITS = {
    "max.connections.per.ip": "77",
    "max.connections.per.ip.overrides": "10.0.0.1:5,[::1]:6",
    "queued.max.request.bytes": str(64 << 20),
    "sluice.request.receive.timeout.ms": "12000",
    "sluice.request.receive.min.bytes.per.sec": "65536",
    "sluice.fd.reserve": "64",
}


def test_connection_limits_by_serve_set_are_described(tmp_path: Path) -> None:
    """``sluice serve --set`` takes every connection limit, and DescribeConfigs for the broker
    reports each as set; a broker left at the defaults reports them as defaults."""
    args = ["--listen", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")]
    for key, value in CONNECTION_LIMITS.items():
        args += ["--set", f"{key}={value}"]
    with ServeProcess(args, cwd=tmp_path) as serve:
        serve.wait_ready()
        described = _describe_broker(serve.host, serve.port)
        serve.signal(signal.SIGTERM)
        assert serve.wait() == 0
    for key, value in CONNECTION_LIMITS.items():
        assert described[key] == (value, STATIC_BROKER_CONFIG, True), key
    with EmbeddedBroker(tmp_path / "e") as broker:
        described = _describe_broker("127.0.0.1", broker.port)
    assert described["max.connections.per.ip"] == ("900", DEFAULT_CONFIG, True)
    assert described["max.connections.per.ip.overrides"] == ("", DEFAULT_CONFIG, True)
    assert described["queued.max.request.bytes"] == (str(256 << 20), DEFAULT_CONFIG, True)
    assert described["sluice.request.receive.timeout.ms"] == ("30000", DEFAULT_CONFIG, True)
    assert described["sluice.request.receive.min.bytes.per.sec"] == ("262144", DEFAULT_CONFIG, True)
    assert described["sluice.fd.reserve"] == ("256", DEFAULT_CONFIG, True)


def test_bad_connection_limits_stop_serve_with_exit_2(tmp_path: Path) -> None:
    result = run_serve(
        ["--data-dir", str(tmp_path / "d"), "--set", "max.connections.per.ip.overrides=x:y"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "sluice serve: bad value for max.connections.per.ip.overrides: 'x:y' (bad count in 'x:y')"
    )
    assert not (tmp_path / "d").exists()


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="cannot read config file"):
        BrokerConfig.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("num.partitions = = 3\n")
    with pytest.raises(InvalidConfigError, match="cannot read config file"):
        BrokerConfig.load(bad)


def _documented_keys(doc: str, heading: str) -> set[str]:
    """The setting names in the first column of the table under ``heading`` in ``docs/<doc>``."""
    text = (ROOT / "docs" / doc).read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    keys: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) > 2 and "`" in cells[1]:
            keys.update(k for k in re.findall(r"`([a-z0-9.]+)`", cells[1]))
    return keys


def _sample(key: str) -> str:
    """A valid value for ``key`` that differs from its default."""
    special = {
        "listeners": "127.0.0.1:1",
        "advertised.listeners": "h:2",
        "log.dirs": "/d",
        "log.dir": "/d",
        "cluster.id": "c",
        "auto.create.topics.enable": "false",
        "sluice.log.append.ack": "fsynced",
        "sluice.log.append.mode": "inline",
        "compression.type": "zstd",
        "max.connections.per.ip.overrides": "127.0.0.1:5,[::1]:6",
        "log.segment.bytes": "1048576",
        "sluice.batch.uncompressed.max.bytes": "2097152",
        "offsets.retention.minutes": "60",
        "log.cleanup.policy": "compact",
        "log.cleaner.enable": "false",
        "sluice.log.cleaner.worker": "thread",
        "log.cleaner.min.cleanable.ratio": "0.75",
        "log.cleaner.io.max.bytes.per.second": "1000000.0",
        "log.cleaner.max.compaction.lag.ms": "3600000",
        "log.message.timestamp.type": "LogAppendTime",
        "log.message.timestamp.before.max.ms": "86400000",
        "log.message.timestamp.after.max.ms": "3600000",
        "sluice.admin.listen": "off",
        "sluice.admin.read.only": "true",
        "sluice.produce.validate.records": "true",
        "transaction.partition.verification.enable": "false",
        "log.retention.minutes": "1",
        "log.retention.hours": "1",
        "log.roll.hours": "1",
        "unclean.leader.election.enable": "true",
        "log.preallocate": "true",
        "compression.gzip.level": "5",
    }
    if key in special:
        return special[key]
    default = BrokerConfig().settings()[CANONICAL.get(key, key)]
    return str(int(default) + 1) if int(default) >= 0 else "1000"


CANONICAL = {
    "log.dir": "log.dirs",
    "broker.id": "node.id",
    "log.retention.minutes": "log.retention.ms",
    "log.retention.hours": "log.retention.ms",
    "log.roll.hours": "log.roll.ms",
}


@pytest.mark.parametrize(
    ("given", "retention_ms", "roll_ms"),
    [
        ({"log.retention.hours": "168"}, 604_800_000, 604_800_000),
        ({"log.retention.hours": "1", "log.retention.minutes": "5"}, 300_000, 604_800_000),
        ({"log.retention.hours": "1", "log.retention.ms": "42"}, 42, 604_800_000),
        ({"log.retention.minutes": "-7"}, -1, 604_800_000),
        ({"log.retention.hours": "0"}, 0, 604_800_000),
        ({"log.roll.hours": "2"}, 604_800_000, 7_200_000),
        ({"log.roll.hours": "2", "log.roll.ms": "5000"}, 604_800_000, 5000),
    ],
)
def test_coarse_unit_settings_as_kafka_reads_them(
    given: dict[str, str], retention_ms: int, roll_ms: int
) -> None:
    """Kafka's server.properties sets log.retention.hours=168: the hours and minutes forms are
    taken, the finer one winning, and reported as the millisecond settings they set."""
    config = BrokerConfig.from_settings(given)
    assert config.topic_defaults.retention_ms == retention_ms
    assert config.topic_defaults.segment_ms == roll_ms
    assert config.settings()["log.retention.ms"] == str(retention_ms)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"log.retention.hours": "a week"}, "bad value for log.retention.hours: 'a week'"),
        ({"log.retention.hours": "2147483648"}, "must be <= 2147483647"),
        ({"log.roll.hours": "0"}, "bad value for log.roll.hours: '0' (must be >= 1)"),
        # checked even when the finer setting wins, as Kafka validates every setting given
        ({"log.roll.hours": "-1", "log.roll.ms": "5"}, "log.roll.hours"),
    ],
)
def test_bad_coarse_unit_settings_are_errors(given: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=re.escape(message)):
        BrokerConfig.from_settings(given)


def test_every_documented_key_is_accepted_and_takes_effect() -> None:
    """The settings table in docs/broker.md and the keys ``sluice serve`` accepts are the same
    set, and each documented key, set to a value other than its default, changes what the broker
    reports for it (DescribeConfigs' values come from the same place)."""
    documented = _documented_keys("broker.md", "## Configuration")
    assert documented == set(BROKER_CONFIG_KEYS), documented ^ set(BROKER_CONFIG_KEYS)
    defaults = BrokerConfig().settings()
    for key in sorted(documented):
        config = BrokerConfig.from_settings({key: _sample(key)})
        name = CANONICAL.get(key, key)
        assert config.settings()[name] != defaults[name], key
        assert name in config.static_keys, key


def test_every_topic_config_is_documented() -> None:
    assert _documented_keys("storage.md", "## Topic configuration") == set(TOPIC_CONFIG_KEYS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "no.such.key=1"], "unknown broker config 'no.such.key'"),
        (["--set", "nokeyvalue"], "--set takes key=value"),
        (["--config", "missing.toml"], "cannot read config file"),
        (["--listen", "127.0.0.1:notaport"], "bad port"),
    ],
)
def test_cli_config_errors_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_main(["serve", "--data-dir", str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sluice serve: ") and message in err, err
    assert not (tmp_path / "d").exists()  # refused before touching anything


@pytest.mark.parametrize(
    ("overrides", "advertise", "message"),
    [
        ([], "0.0.0.0:9092", "advertised.listeners cannot use the meta-address '0.0.0.0'"),
        ([], ":9092", "advertised.listeners cannot use the meta-address '0.0.0.0'"),
        ([], "[::]:9092", "advertised.listeners cannot use the meta-address '::'"),
        ([], "[0:0::0]:9092", "advertised.listeners cannot use the meta-address '0:0::0'"),
        ([], "[0:0:0:0:0:0:0:0]:9092", "cannot use the meta-address '0:0:0:0:0:0:0:0'"),
        (["advertised.listeners=0.0.0.0:9092"], None, "cannot use the meta-address '0.0.0.0'"),
        ([], "broker.example:0", "advertised.listeners needs the port clients connect to, not 0"),
    ],
)
def test_an_advertised_address_no_client_can_reach_is_refused(
    overrides: list[str], advertise: str | None, message: str
) -> None:
    """As in Kafka: the broker started, and told every client an address it could not dial."""
    with pytest.raises(InvalidConfigError) as raised:
        BrokerConfig.load(
            None, overrides, advertised=parse_host_port(advertise) if advertise else None
        )
    assert message in str(raised.value)


def test_an_unreachable_advertised_address_stops_serve_with_exit_2(tmp_path: Path) -> None:
    result = run_serve(
        ["--listen", "127.0.0.1:0", "--advertise", "0.0.0.0:9092", "--data-dir", "d"], cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "sluice serve: advertised.listeners cannot use the meta-address" in result.stderr
    assert not (tmp_path / "d").exists()


def test_cli_unknown_key_exit_code_in_a_real_process(tmp_path: Path) -> None:
    file = write_toml(tmp_path / "sluice.toml", top='"log.retention.mz" = 5\n')
    result = run_serve(["--config", str(file), "--data-dir", str(tmp_path / "d")], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "sluice serve: unknown broker config 'log.retention.mz'"
    assert not (tmp_path / "d").exists()


def _held_port() -> socket.socket:
    """A listening socket on a free port: a config that names this port cannot be the one used."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_cli_file_then_set_then_flags(tmp_path: Path) -> None:
    """The same precedence in a real ``sluice serve``, observed on the wire: partitions of an
    auto-created topic (num.partitions) and the broker list in Metadata (advertised.listeners,
    node.id)."""
    # The file alone: its listener (ephemeral), its partitions, its advertised address.
    file = write_toml(tmp_path / "file-only.toml", port=0)
    with ServeProcess(
        ["--config", str(file), "--data-dir", str(tmp_path / "d1")], cwd=tmp_path
    ) as serve:
        serve.wait_ready()
        assert serve.advertised == "file.example:1111"
        with serve.client() as client:
            resp = metadata(client, ["auto"])
            assert [(b.node_id, b.host, b.port) for b in resp.brokers] == [
                (3, "file.example", 1111)
            ]
            assert [len(t.partitions) for t in resp.topics] == [2]
            assert [p.leader_id for p in resp.topics[0].partitions] == [3, 3]
        serve.signal(signal.SIGTERM)
        assert serve.wait() == 0
    # --set over the file, flags over --set: the file's listener is a port in use (so the flag
    # must win for the broker to start at all).
    with _held_port() as held:
        file = write_toml(tmp_path / "layered.toml", port=held.getsockname()[1])
        args = [
            "--config",
            str(file),
            "--set",
            "num.partitions=4",
            "--set",
            "node.id=5",
            "--set",
            "advertised.listeners=set.example:2222",
            "--set",
            "log.dirs=" + str(tmp_path / "from-set"),
            "--listen",
            "127.0.0.1:0",
            "--advertise",
            "flag.example:3333",
            "--data-dir",
            str(tmp_path / "d2"),
        ]
        with ServeProcess(args, cwd=tmp_path) as serve:
            serve.wait_ready()
            assert serve.port != held.getsockname()[1]
            with serve.client() as client:
                resp = metadata(client, ["auto"])
                assert [(b.node_id, b.host, b.port) for b in resp.brokers] == [
                    (5, "flag.example", 3333)
                ]
                assert resp.controller_id == 5
                assert [len(t.partitions) for t in resp.topics] == [4]
            serve.signal(signal.SIGTERM)
            assert serve.wait() == 0
    (auto_dir,) = (tmp_path / "d2").glob("auto.*")
    assert (auto_dir / "3").is_dir()
    assert not (tmp_path / "from-set").exists()


def test_advertised_listener_in_metadata(make_broker: MakeBroker) -> None:
    broker = make_broker(
        **{
            "advertised.listeners": "PLAINTEXT://kafka.example.com:19092",
            "node.id": "7",
            "cluster.id": "test-cluster",
        }
    )
    with WireClient.to(broker) as client:
        for version in (1, 4, 9, 12):
            resp = metadata(client, ["adv"], version=version)
            assert [(b.node_id, b.host, b.port) for b in resp.brokers] == [
                (7, "kafka.example.com", 19092)
            ]
            assert resp.controller_id == 7
            if version >= 2:
                assert resp.cluster_id == "test-cluster"
            (topic,) = resp.topics
            assert [(p.leader_id, p.replica_nodes, p.isr_nodes) for p in topic.partitions] == [
                (7, [7], [7])
            ]


def test_without_advertised_listeners_the_bound_address_is_advertised(
    sluice_fresh_broker: EmbeddedBroker,
) -> None:
    with WireClient.to(sluice_fresh_broker) as client:
        resp = metadata(client, None)
        assert [(b.node_id, b.host, b.port) for b in resp.brokers] == [
            (0, "127.0.0.1", sluice_fresh_broker.port)
        ]
    # and DescribeConfigs reports that address, not an unset value
    admin = AdminClient({"bootstrap.servers": sluice_fresh_broker.bootstrap_servers})
    (future,) = admin.describe_configs([ConfigResource("broker", "0")]).values()
    advertised = future.result(timeout=10)["advertised.listeners"].value
    assert advertised == f"PLAINTEXT://127.0.0.1:{sluice_fresh_broker.port}"


def test_settings_reach_the_broker(make_broker: MakeBroker) -> None:
    """num.partitions and auto.create.topics.enable as the wire sees them."""
    on = make_broker(**{"num.partitions": "3"})
    off = make_broker(**{"auto.create.topics.enable": "false"})
    with WireClient.to(on) as client:
        resp = metadata(client, ["made"])
        assert [(t.name, t.error_code, len(t.partitions)) for t in resp.topics] == [("made", 0, 3)]
        # Explicit creation with -1 partitions takes the broker default too.
        request = create_topics_request(["explicit"], partitions=-1)
        created = client.call(ApiKey.CREATE_TOPICS, 7, request, m.CreateTopicsResponse)
        assert [(t.error_code, t.num_partitions) for t in created.topics] == [(0, 3)]
    with WireClient.to(off) as client:
        resp = metadata(client, ["not-made"])
        assert [(t.name, t.error_code) for t in resp.topics] == [
            ("not-made", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        ]
        assert metadata(client, None).topics == []
