"""Broker settings, named like Kafka's broker configs where Kafka has a name.

Sources, later ones winning: built-in defaults, a TOML file (flat Kafka-style keys, or nested
tables that flatten to dotted keys), then ``--set key=value`` overrides. Unknown keys are errors,
so a typo never silently does nothing.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice.errors import InvalidConfigError
from sluice.protocol.records import DEFAULT_MAX_UNCOMPRESSED
from sluice.storage.config import LogConfig

DEFAULT_PORT = 9092

# Broker-level defaults for topic configs, Kafka's names -> the topic config they default.
BROKER_TO_TOPIC: dict[str, str] = {
    "log.segment.bytes": "segment.bytes",
    "log.roll.ms": "segment.ms",
    "log.index.size.max.bytes": "segment.index.bytes",
    "log.index.interval.bytes": "index.interval.bytes",
    "log.retention.ms": "retention.ms",
    "log.retention.bytes": "retention.bytes",
    "message.max.bytes": "max.message.bytes",
    "log.flush.interval.messages": "flush.messages",
    "log.flush.interval.ms": "flush.ms",
    "sluice.log.append.mode": "sluice.append.mode",
    "sluice.log.append.ack": "sluice.append.ack",
    "sluice.log.writer.queue.bytes": "sluice.writer.queue.bytes",
    "log.cleanup.policy": "cleanup.policy",
    "compression.type": "compression.type",  # Kafka's broker and topic configs share the name
}


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_host_port(text: str, *, default_port: int = DEFAULT_PORT) -> Listener:
    """``HOST:PORT``, ``PLAINTEXT://HOST:PORT``, ``[::1]:PORT`` or ``:PORT``."""
    value = text.strip()
    if "://" in value:
        value = value.split("://", 1)[1]
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port_text = rest.lstrip(":")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep:
            host, port_text = value, ""
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise InvalidConfigError(f"bad port in {text!r}") from None
    if not 0 <= port <= 65535:
        raise InvalidConfigError(f"port out of range in {text!r}")
    return Listener(host or "0.0.0.0", port)


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    listen: Listener = field(default_factory=lambda: Listener("127.0.0.1", DEFAULT_PORT))
    advertised: Listener | None = None
    data_dir: Path = Path("sluice-data")
    node_id: int = 0
    cluster_id: str = "sluice-cluster"
    request_max_bytes: int = 100 * 1024 * 1024
    max_connections: int = 1000
    max_connections_per_ip: int | None = None
    """None: ``max.connections`` less a tenth (see :attr:`per_ip_limit`)."""
    max_connections_per_ip_overrides: tuple[tuple[str, int], ...] = ()
    idle_timeout_ms: int = 600_000
    queued_max_request_bytes: int = 256 * 1024 * 1024
    """-1: unbounded, as Kafka's default."""
    request_receive_timeout_ms: int = 30_000
    request_receive_min_rate: int = 256 * 1024
    fd_reserve: int = 256
    auto_create_topics: bool = True
    num_partitions: int = 1
    retention_check_ms: int = 300_000
    shutdown_grace_ms: int = 10_000
    group_min_session_timeout_ms: int = 6_000
    group_max_session_timeout_ms: int = 1_800_000
    group_initial_rebalance_delay_ms: int = 0
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096
    max_partitions_per_topic: int = 10_000
    max_broker_partitions: int = 20_000
    max_open_segment_files: int = 1000
    max_uncompressed_batch_bytes: int = DEFAULT_MAX_UNCOMPRESSED
    """``sluice.batch.uncompressed.max.bytes``: the most decompressed bytes of one batch the
    broker materialises (recompression, a raw snappy block) or needs to see (a compressed
    batch's record count); beyond it the batch is refused with INVALID_RECORD."""
    topic_defaults: LogConfig = field(default_factory=LogConfig)
    static_keys: frozenset[str] = frozenset()
    """The Kafka-named settings given explicitly (file, ``--set``, flags), aliases under their
    main name: DescribeConfigs reports these as STATIC_BROKER_CONFIG and the rest as
    DEFAULT_CONFIG, as Kafka does, whether or not a value equals the default."""

    @property
    def advertised_listener(self) -> Listener:
        """What clients are told to connect to: the advertised address, else the bound one."""
        if self.advertised is not None:
            return self.advertised
        host = self.listen.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return Listener(host, self.listen.port)

    @property
    def per_ip_limit(self) -> int:
        """``max.connections.per.ip``; unset, ``max.connections`` less a tenth (rounded down), so
        one address cannot take the slots that other addresses need to get in at all."""
        if self.max_connections_per_ip is not None:
            return self.max_connections_per_ip
        return self.max_connections - self.max_connections // 10

    def per_ip_limit_for(self, host: str) -> int:
        for address, count in self.max_connections_per_ip_overrides:
            if address == host:
                return count
        return self.per_ip_limit

    def receive_deadline_s(self, size: int) -> float:
        """Seconds a request of ``size`` bytes may take to arrive from its first byte: the
        timeout, plus its size at the slowest allowed rate (big requests on slow links)."""
        return self.request_receive_timeout_ms / 1000 + size / self.request_receive_min_rate

    @classmethod
    def load(
        cls,
        file: Path | None = None,
        overrides: Iterable[str] = (),
        **explicit: Any,
    ) -> BrokerConfig:
        """Defaults, then ``file``, then ``--set`` style ``key=value`` overrides, then keyword
        arguments (what the CLI's own flags set)."""
        values: dict[str, str] = {}
        if file is not None:
            try:
                raw = tomllib.loads(Path(file).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise InvalidConfigError(f"cannot read config file {file}: {exc}") from exc
            values.update(_flatten(raw))
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise InvalidConfigError(f"--set takes key=value, not {item!r}")
            values[key.strip()] = value.strip()
        return cls.from_settings(values, **explicit)

    @classmethod
    def from_settings(cls, values: Mapping[str, str], **explicit: Any) -> BrokerConfig:
        kwargs: dict[str, Any] = {}
        topic: dict[str, str] = {}
        for key, value in values.items():
            if key in BROKER_TO_TOPIC:
                topic[BROKER_TO_TOPIC[key]] = value
                continue
            setter = _SETTINGS.get(key)
            if setter is None:
                raise InvalidConfigError(f"unknown broker config {key!r}")
            attr, parse = setter
            try:
                kwargs[attr] = parse(value)
            except (ValueError, InvalidConfigError) as exc:
                raise InvalidConfigError(f"bad value for {key}: {value!r} ({exc})") from None
        kwargs["topic_defaults"] = LogConfig.from_dict(topic)
        given = {k: v for k, v in explicit.items() if v is not None}
        kwargs.update(given)
        kwargs["static_keys"] = frozenset(
            {_ALIASES.get(k, k) for k in values} | {_ATTR_KEYS[a] for a in given if a in _ATTR_KEYS}
        )
        config = cls(**kwargs)
        if config.num_partitions < 1:
            raise InvalidConfigError("num.partitions must be >= 1")
        if config.group_min_session_timeout_ms > config.group_max_session_timeout_ms:
            raise InvalidConfigError(
                "group.min.session.timeout.ms must be <= group.max.session.timeout.ms"
            )
        if config.max_uncompressed_batch_bytes < 1024 * 1024:
            raise InvalidConfigError("sluice.batch.uncompressed.max.bytes must be >= 1048576")
        if config.request_max_bytes < 1024:
            raise InvalidConfigError("socket.request.max.bytes must be >= 1024")
        if config.max_connections_per_ip == 0 and not config.max_connections_per_ip_overrides:
            raise InvalidConfigError(
                "max.connections.per.ip can be 0 only with max.connections.per.ip.overrides"
            )
        return config


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in table.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, full + "."))
        elif isinstance(value, bool):
            out[full] = "true" if value else "false"
        else:
            out[full] = str(value)
    return out


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _positive(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _at_least_one(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError("must be >= 1")
    return number


def _bytes_or_unbounded(value: str) -> int:
    number = int(value)
    if number < 1 and number != -1:
        raise ValueError("must be >= 1, or -1 for unbounded")
    return number


def canonical_host(host: str) -> str:
    """An address as connections are counted by: IPv4-mapped IPv6 (a dual-stack listener's view
    of an IPv4 peer) as plain IPv4, IPv6 in its compressed form."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _per_ip_overrides(value: str) -> tuple[tuple[str, int], ...]:
    """Kafka's ``host:count,host:count``; a host name stands for every address it resolves to
    (resolved once, at start, as Kafka does)."""
    out: dict[str, int] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, count_text = item.rpartition(":")
        host = host.strip().removeprefix("[").removesuffix("]")
        if not sep or not host:
            raise ValueError(f"expected host:count, not {item!r}")
        try:
            count = int(count_text)
        except ValueError:
            raise ValueError(f"bad count in {item!r}") from None
        if count < 0:
            raise ValueError(f"count must be >= 0 in {item!r}")
        for address in _addresses(host):
            out[address] = count
    return tuple(out.items())


def _addresses(host: str) -> list[str]:
    try:
        return [canonical_host(str(ipaddress.ip_address(host)))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from None
    return sorted({canonical_host(str(info[4][0])) for info in infos})


def _listener(value: str) -> Listener:
    return parse_host_port(value.split(",")[0])


_SETTINGS: dict[str, tuple[str, Any]] = {
    "listeners": ("listen", _listener),
    "advertised.listeners": ("advertised", _listener),
    "log.dirs": ("data_dir", lambda v: Path(v.split(",")[0])),
    "log.dir": ("data_dir", Path),
    "node.id": ("node_id", _positive),
    "broker.id": ("node_id", _positive),
    "cluster.id": ("cluster_id", str),
    "socket.request.max.bytes": ("request_max_bytes", _positive),
    "max.connections": ("max_connections", _positive),
    "max.connections.per.ip": ("max_connections_per_ip", _positive),
    "max.connections.per.ip.overrides": ("max_connections_per_ip_overrides", _per_ip_overrides),
    "connections.max.idle.ms": ("idle_timeout_ms", _positive),
    "queued.max.request.bytes": ("queued_max_request_bytes", _bytes_or_unbounded),
    "sluice.request.receive.timeout.ms": ("request_receive_timeout_ms", _at_least_one),
    "sluice.request.receive.min.bytes.per.sec": ("request_receive_min_rate", _at_least_one),
    "sluice.fd.reserve": ("fd_reserve", _positive),
    "auto.create.topics.enable": ("auto_create_topics", _bool),
    "num.partitions": ("num_partitions", _positive),
    "log.retention.check.interval.ms": ("retention_check_ms", _positive),
    "sluice.shutdown.grace.ms": ("shutdown_grace_ms", _positive),
    "group.min.session.timeout.ms": ("group_min_session_timeout_ms", _positive),
    "group.max.session.timeout.ms": ("group_max_session_timeout_ms", _positive),
    "group.initial.rebalance.delay.ms": ("group_initial_rebalance_delay_ms", _positive),
    "offsets.retention.minutes": ("offsets_retention_ms", lambda v: _positive(v) * 60_000),
    "offsets.retention.check.interval.ms": ("offsets_retention_check_interval_ms", _positive),
    "offset.metadata.max.bytes": ("offset_metadata_max_bytes", _positive),
    "sluice.max.partitions.per.topic": ("max_partitions_per_topic", _at_least_one),
    "max.broker.partitions": ("max_broker_partitions", _at_least_one),
    "sluice.max.open.segment.files": ("max_open_segment_files", _at_least_one),
    "sluice.batch.uncompressed.max.bytes": ("max_uncompressed_batch_bytes", _positive),
}

BROKER_CONFIG_KEYS = frozenset(_SETTINGS) | frozenset(BROKER_TO_TOPIC)

_ALIASES = {"log.dir": "log.dirs", "broker.id": "node.id"}
_ATTR_KEYS = {attr: key for key, (attr, _) in _SETTINGS.items() if key not in _ALIASES}
"""BrokerConfig attribute -> its Kafka key, for settings given as flags (``--listen``...)."""
