"""Every setting of sluice, broker and topic alike, each described once.

A :class:`Setting` row holds a setting's Kafka name (or a ``sluice.*`` one where Kafka has none),
the attribute it sets, how a string becomes a value and back, its Kafka type and one line of
documentation; its default is the attribute's default in :class:`BrokerConfig` or
:class:`LogConfig`. Parsing (TOML file, ``--set``, the wire), DescribeConfigs (values, sources,
types, documentation) and the docs' tables all read these rows, so a setting is added in one
place, as uvicorn keeps one ``config.py``.

Values arrive as strings and are parsed once here: the server, the broker and the storage engine
only ever see typed values. Unknown names and bad values raise InvalidConfigError, so a typo never
silently does nothing.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import field
from enum import Enum, IntEnum, StrEnum
from pathlib import Path
from typing import Any

from sluice.dataclass import dataclass
from sluice.errors import InvalidConfigError
from sluice.protocol.records import DEFAULT_MAX_UNCOMPRESSED

DEFAULT_PORT = 9092
DEFAULT_ADMIN_PORT = 9644
"""The admin HTTP side (metrics, health, console): Redpanda's admin port."""
_INT_MAX = 2**31 - 1
"""Kafka's INT-typed configs stop here; segment files and index positions are 32-bit."""
_LONG_MAX = 2**63 - 1


class ConfigType(IntEnum):
    """Kafka's ConfigDef types, as DescribeConfigs (v3+) reports them."""

    UNKNOWN = 0
    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7
    CLASS = 8
    PASSWORD = 9


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    attr: str
    parse: Callable[[str], Any]
    """A string to the value; raises ValueError with a message saying what is wrong."""
    render: Callable[[Any], str]
    kind: ConfigType
    doc: str
    aliases: tuple[str, ...] = ()
    broker_name: str | None = None
    """For a topic setting: the broker setting that sets its default for every topic."""
    shown: str | None = None
    """The attribute whose value is reported, when it is not ``attr`` (a property giving the
    effective value of a setting whose default depends on another)."""


# -- parsing and rendering ---------------------------------------------------------------------


def _integer(minimum: int = 0, maximum: int = _LONG_MAX, *, minus_one: str | None = None) -> Callable[[str], int]:
    """An integer in [minimum, maximum]; ``minus_one`` names what -1 means, where it is allowed
    (Kafka's "no limit")."""

    def parse(text: str) -> int:
        try:
            value = int(str(text).strip())
        except ValueError:
            raise ValueError("must be an integer") from None
        if value < minimum and not (minus_one and value == -1):
            raise ValueError(f"must be >= {minimum}" + (f", or -1 for {minus_one}" if minus_one else ""))
        if value > maximum:
            raise ValueError(f"must be <= {maximum}")
        return value

    return parse


def _choice(kind: type[StrEnum]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind(str(text).strip().lower())
        except ValueError:
            allowed = ", ".join(m.value for m in kind)
            raise ValueError(f"must be one of {allowed}") from None

    return parse


def _ratio(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError("must be a number") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _double(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(str(text).strip())
        except ValueError:
            raise ValueError("must be a number") from None
        if not value >= minimum:  # also refuses NaN
            raise ValueError(f"must be >= {minimum}")
        return value

    return parse


def _boolean(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _render(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        # Java's Double.toString, as Kafka reports DOUBLE configs: 0.5, 1.7976931348623157E308
        return repr(value).replace("e+", "E").replace("e-", "E-")
    return str(value)


# -- topic settings ----------------------------------------------------------------------------


class TimestampType(StrEnum):
    """Which timestamp a topic's records carry (Kafka's ``message.timestamp.type``)."""

    CREATE_TIME = "CreateTime"
    """The producer's, as sent."""
    LOG_APPEND_TIME = "LogAppendTime"
    """The broker's clock when the batch is appended: it stamps each batch's header."""


def _timestamp_type(text: str) -> TimestampType:
    wanted = str(text).strip().lower()
    for kind in TimestampType:
        if kind.value.lower() == wanted:
            return kind
    raise ValueError("must be one of CreateTime, LogAppendTime")


class AppendMode(StrEnum):
    """Where an append's write happens."""

    WRITER = "writer"
    """A per-partition writer task fed by a bounded queue: the request path never blocks on a
    write or fsync."""
    INLINE = "inline"
    """The caller writes; kept so the benchmark can compare the two."""


class AckLevel(StrEnum):
    """When an append is acknowledged to its caller."""

    QUEUED = "queued"
    """Fire-and-forget: as soon as the batch is validated and enqueued (offsets are known)."""
    WRITTEN = "written"
    """After the bytes are in the file (the OS page cache): survives a process crash."""
    FSYNCED = "fsynced"
    """After an fsync covering the bytes (group commit): survives power loss."""


class CleanupPolicy(StrEnum):
    """Kafka's ``cleanup.policy``: what happens to old segments. ``delete`` removes whole
    segments by age and size (retention); ``compact`` keeps the latest record of every key (the
    log cleaner); ``compact,delete`` does both."""

    DELETE = "delete"
    COMPACT = "compact"
    COMPACT_DELETE = "compact,delete"

    @property
    def compact(self) -> bool:
        return self is not CleanupPolicy.DELETE

    @property
    def delete(self) -> bool:
        return self is not CleanupPolicy.COMPACT


def _cleanup_policy(text: str) -> CleanupPolicy:
    """Kafka's list form: ``delete``, ``compact``, or both in either order."""
    items = {item.strip().lower() for item in str(text).split(",")}
    if not items or not items <= {"delete", "compact"}:
        raise ValueError("must be delete, compact, or compact,delete")
    if items == {"delete", "compact"}:
        return CleanupPolicy.COMPACT_DELETE
    return CleanupPolicy(items.pop())


class CleanerWorker(StrEnum):
    """Where the log cleaner's file work runs."""

    PROCESS = "process"
    """Worker processes: parsing records never holds the interpreter lock the event loop needs."""
    THREAD = "thread"
    """Threads of the broker's process: no extra processes, but producers wait while it runs."""


class CompressionType(StrEnum):
    """Kafka's ``compression.type``: the codec a topic stores its batches with. ``producer``
    keeps each batch as the producer compressed it; any other value makes the broker
    recompress batches with a different codec before they are appended."""

    PRODUCER = "producer"
    UNCOMPRESSED = "uncompressed"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


@dataclass(frozen=True, slots=True)
class LogConfig:
    """A topic's settings (the storage engine's), defaults as Kafka's."""

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * 24 * 3600 * 1000
    segment_index_bytes: int = 10 * 1024 * 1024
    index_interval_bytes: int = 4096
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    max_message_bytes: int = 1048588
    flush_messages: int = -1
    flush_ms: int = -1
    append_mode: AppendMode = AppendMode.WRITER
    append_ack: AckLevel = AckLevel.WRITTEN
    writer_queue_bytes: int = 32 * 1024 * 1024
    cleanup_policy: CleanupPolicy = CleanupPolicy.DELETE
    compression_type: CompressionType = CompressionType.PRODUCER
    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = _LONG_MAX
    delete_retention_ms: int = 24 * 3600 * 1000
    message_timestamp_type: TimestampType = TimestampType.CREATE_TIME
    message_timestamp_before_max_ms: int = _LONG_MAX
    message_timestamp_after_max_ms: int = _LONG_MAX
    min_insync_replicas: int = 1
    # Kafka's topic configs that a single node with its logs on one disk has no use for: taken
    # and reported (tools that set them, even to their defaults, create topics), without effect.
    unclean_leader_election_enable: bool = False
    preallocate: bool = False
    segment_jitter_ms: int = 0
    file_delete_delay_ms: int = 60_000
    compression_gzip_level: int = -1
    compression_lz4_level: int = 9
    compression_zstd_level: int = 3
    leader_replication_throttled_replicas: str = ""
    follower_replication_throttled_replicas: str = ""
    local_retention_ms: int = -2
    local_retention_bytes: int = -2
    remote_storage_enable: bool = False

    def __post_init__(self) -> None:
        if self.min_compaction_lag_ms > self.max_compaction_lag_ms:
            raise InvalidConfigError(
                f"min.compaction.lag.ms ({self.min_compaction_lag_ms}) must not exceed "
                f"max.compaction.lag.ms ({self.max_compaction_lag_ms})"
            )

    @property
    def compact(self) -> bool:
        """Whether the log cleaner keeps only the latest record per key (and keys are required)."""
        return self.cleanup_policy.compact

    @property
    def roll_ms(self) -> int:
        """Age at which the active segment rolls: ``segment.ms``, or ``max.compaction.lag.ms``
        when sooner on a compacted topic, since only closed segments are cleaned (Kafka's rule)."""
        if self.compact:
            return min(self.segment_ms, self.max_compaction_lag_ms)
        return self.segment_ms

    @classmethod
    def from_dict(cls, values: Mapping[str, str | int], base: LogConfig | None = None) -> LogConfig:
        """Parse Kafka-named string settings; unknown keys and bad values raise InvalidConfigError."""
        changes: dict[str, Any] = {}
        for key, raw in values.items():
            setting = TOPIC_SETTINGS.get(key)
            if setting is None:
                raise InvalidConfigError(f"unknown topic config {key!r}")
            try:
                changes[setting.attr] = setting.parse(str(raw))
            except ValueError as exc:
                raise InvalidConfigError(f"{key} {exc}, not {raw!r}") from None
        if not changes and base is not None:
            return base  # frozen: shared (a copy per topic cost 30 µs of each creation)
        return dataclasses.replace(base or cls(), **changes)

    def to_dict(self) -> dict[str, str]:
        """Kafka-named string form, for persistence and DescribeConfigs."""
        return {name: s.render(getattr(self, s.attr)) for name, s in TOPIC_SETTINGS.items()}

    def diff(self, other: LogConfig | None = None) -> dict[str, str]:
        """Settings that differ from ``other`` (default: the defaults): what a topic overrides."""
        mine, theirs = self.to_dict(), (other or LogConfig()).to_dict()
        return {k: v for k, v in mine.items() if theirs[k] != v}


def _topic(
    name: str, attr: str, parse: Callable[[str], Any], kind: ConfigType, doc: str, broker: str | None
) -> Setting:
    return Setting(name, attr, parse, _render, kind, doc, broker_name=broker)


def _gzip_level(text: str) -> int:
    """Kafka's: 1 to 9, or -1 for the codec's default."""
    level = _integer(-1, 9)(text)
    if level == 0:
        raise ValueError("must be between 1 and 9, or -1 for the default")
    return level


def _replicas_list(text: str) -> str:
    """Kafka's throttled-replicas form: empty, ``*``, or ``partition:broker`` pairs."""
    value = str(text).strip()
    if value in ("", "*"):
        return value
    for item in value.split(","):
        partition, sep, broker = item.strip().partition(":")
        if not sep or not partition.strip().isdigit() or not broker.strip().isdigit():
            raise ValueError("must be empty, * or a list of partition:broker pairs, such as 0:1,1:1")
    return value


def _no_tiered_storage(text: str) -> bool:
    if _boolean(text):
        raise ValueError("cannot be true: sluice has no tiered storage (Kafka refuses it too "
                         "while its broker's remote.log.storage.system.enable is false)")
    return False


_I, _L, _S, _B, _LIST = ConfigType.INT, ConfigType.LONG, ConfigType.STRING, ConfigType.BOOLEAN, ConfigType.LIST
_D = ConfigType.DOUBLE

TOPIC_SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        _topic("segment.bytes", "segment_bytes", _integer(14, _INT_MAX), _I,
               "Size at which a partition's active segment is rolled.", "log.segment.bytes"),
        _topic("segment.ms", "segment_ms", _integer(1), _L,
               "Age (from its first batch's timestamp) at which the active segment is rolled.", "log.roll.ms"),
        _topic("segment.index.bytes", "segment_index_bytes", _integer(16, _INT_MAX), _I,
               "Offset and time index capacity of a segment before it is rolled.", "log.index.size.max.bytes"),
        _topic("index.interval.bytes", "index_interval_bytes", _integer(0, _INT_MAX), _I,
               "Bytes of records between two sparse index entries.", "log.index.interval.bytes"),
        _topic("retention.ms", "retention_ms", _integer(0, minus_one="no limit"), _L,
               "Segments whose newest record is older than this are deleted; -1 keeps them forever.",
               "log.retention.ms"),
        _topic("retention.bytes", "retention_bytes", _integer(0, minus_one="no limit"), _L,
               "Per-partition size above which the oldest segments are deleted; -1 is no limit.",
               "log.retention.bytes"),
        _topic("max.message.bytes", "max_message_bytes", _integer(0, _INT_MAX), _I,
               "Largest record batch a partition accepts.", "message.max.bytes"),
        _topic("flush.messages", "flush_messages", _integer(1, minus_one="no limit"), _L,
               "fsync after this many records; -1 leaves it to sluice.append.ack and flush.ms.",
               "log.flush.interval.messages"),
        _topic("flush.ms", "flush_ms", _integer(0, minus_one="no limit"), _L,
               "fsync when unflushed data is this old; -1 is off.", "log.flush.interval.ms"),
        _topic("sluice.append.mode", "append_mode", _choice(AppendMode), _S,
               "writer: a per-partition writer task does the writes; inline: the request does.",
               "sluice.log.append.mode"),
        _topic("sluice.append.ack", "append_ack", _choice(AckLevel), _S,
               "When acks=all is answered: queued, written (to the file) or fsynced.", "sluice.log.append.ack"),
        _topic("sluice.writer.queue.bytes", "writer_queue_bytes", _integer(1024, _INT_MAX), _I,
               "Bound of a partition's writer queue; producers wait when it is full.",
               "sluice.log.writer.queue.bytes"),
        _topic("cleanup.policy", "cleanup_policy", _cleanup_policy, _LIST,
               "delete (retention removes old segments), compact (the log cleaner keeps the latest "
               "record per key) or compact,delete.", "log.cleanup.policy"),
        _topic("compression.type", "compression_type", _choice(CompressionType), _S,
               "Codec batches are stored with: producer (as sent), uncompressed, gzip, snappy, lz4 or zstd.",
               "compression.type"),  # Kafka's broker and topic configs share this name
        _topic("min.cleanable.dirty.ratio", "min_cleanable_dirty_ratio", _ratio, _D,
               "A compacted log is cleaned once its dirty bytes are this share of its cleanable bytes.",
               "log.cleaner.min.cleanable.ratio"),
        _topic("min.compaction.lag.ms", "min_compaction_lag_ms", _integer(0), _L,
               "A record stays uncompacted at least this long (by its segment's newest timestamp).",
               "log.cleaner.min.compaction.lag.ms"),
        _topic("max.compaction.lag.ms", "max_compaction_lag_ms", _integer(1), _L,
               "A record is compacted at most this long after it was written, whatever the dirty ratio.",
               "log.cleaner.max.compaction.lag.ms"),
        _topic("delete.retention.ms", "delete_retention_ms", _integer(0), _L,
               "How long a tombstone (null value) is kept after the cleaner first saw it.",
               "log.cleaner.delete.retention.ms"),
        _topic("message.timestamp.type", "message_timestamp_type", _timestamp_type, _S,
               "CreateTime (the producer's timestamps) or LogAppendTime (the broker stamps each "
               "batch with its clock on append).", "log.message.timestamp.type"),
        _topic("message.timestamp.before.max.ms", "message_timestamp_before_max_ms", _integer(0), _L,
               "A CreateTime batch whose first timestamp is further than this in the past is "
               "refused (INVALID_TIMESTAMP).", "log.message.timestamp.before.max.ms"),
        _topic("message.timestamp.after.max.ms", "message_timestamp_after_max_ms", _integer(0), _L,
               "A CreateTime batch whose largest timestamp is further than this in the future is "
               "refused (INVALID_TIMESTAMP).", "log.message.timestamp.after.max.ms"),
        _topic("min.insync.replicas", "min_insync_replicas", _integer(1, _INT_MAX), _I,
               "Replicas that must have a batch for acks=all; one node has one: above 1, acks=all "
               "produce is answered NOT_ENOUGH_REPLICAS, as Kafka answers with too few in sync.",
               "min.insync.replicas"),
        _topic("unclean.leader.election.enable", "unclean_leader_election_enable", _boolean, _B,
               "Taken, without effect: one node has no other replica to elect.",
               "unclean.leader.election.enable"),
        _topic("preallocate", "preallocate", _boolean, _B,
               "Taken, without effect: segment files grow as they are written.", "log.preallocate"),
        _topic("segment.jitter.ms", "segment_jitter_ms", _integer(0), _L,
               "Taken, without effect: segments roll at segment.ms exactly.", "log.roll.jitter.ms"),
        _topic("file.delete.delay.ms", "file_delete_delay_ms", _integer(0), _L,
               "Taken, without effect: a deleted segment's files go at once (readers hold them open).",
               "log.segment.delete.delay.ms"),
        _topic("compression.gzip.level", "compression_gzip_level", _gzip_level, _I,
               "Taken, without effect: recompression uses the codec's default level.",
               "compression.gzip.level"),
        _topic("compression.lz4.level", "compression_lz4_level", _integer(1, 17), _I,
               "Taken, without effect: recompression uses the codec's default level.",
               "compression.lz4.level"),
        _topic("compression.zstd.level", "compression_zstd_level", _integer(-131072, 22), _I,
               "Taken, without effect: recompression uses the codec's default level.",
               "compression.zstd.level"),
        _topic("leader.replication.throttled.replicas", "leader_replication_throttled_replicas",
               _replicas_list, _LIST, "Taken, without effect: one node replicates nothing.", None),
        _topic("follower.replication.throttled.replicas", "follower_replication_throttled_replicas",
               _replicas_list, _LIST, "Taken, without effect: one node replicates nothing.", None),
        _topic("local.retention.ms", "local_retention_ms", _integer(-2), _L,
               "Taken, without effect: with no tiered storage every segment is local (retention.ms "
               "applies).", "log.local.retention.ms"),
        _topic("local.retention.bytes", "local_retention_bytes", _integer(-2), _L,
               "Taken, without effect: with no tiered storage every segment is local "
               "(retention.bytes applies).", "log.local.retention.bytes"),
        _topic("remote.storage.enable", "remote_storage_enable", _no_tiered_storage, _B,
               "false only: sluice has no tiered storage.", None),
    )
}

TOPIC_CONFIG_KEYS: frozenset[str] = frozenset(TOPIC_SETTINGS)

BROKER_TO_TOPIC: dict[str, str] = {
    s.broker_name: s.name for s in TOPIC_SETTINGS.values() if s.broker_name is not None
}
"""Broker-wide defaults of topic settings: the broker's Kafka name -> the topic setting."""

TOPIC_TO_BROKER: dict[str, str] = {topic: broker for broker, topic in BROKER_TO_TOPIC.items()}

COARSE_UNITS: dict[str, tuple[str, int, int]] = {
    "log.retention.minutes": ("log.retention.ms", 60_000, -1),
    "log.retention.hours": ("log.retention.ms", 3_600_000, -1),
    "log.roll.hours": ("log.roll.ms", 3_600_000, 1),
}
"""Kafka's broker settings that give a millisecond setting in a coarser unit: name -> (the
millisecond setting, milliseconds per unit, the least value; -1 means any negative is "no
limit", as Kafka reads it). Kafka's own server.properties sets ``log.retention.hours=168``. The
finer name wins when both are given (``.ms`` over ``.minutes`` over ``.hours``), as in Kafka."""


def _in_milliseconds(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` with each coarse-unit setting replaced by its millisecond setting's value,
    unless a finer one of the same setting is given too."""
    out = {k: v for k, v in values.items() if k not in COARSE_UNITS}
    for name, (target, unit, least) in COARSE_UNITS.items():  # finer units first
        if name not in values:
            continue
        text = values[name]
        try:  # an INT in Kafka
            count = max(-1, _integer(-_INT_MAX - 1 if least == -1 else least, _INT_MAX)(text))
        except ValueError as exc:
            raise InvalidConfigError(f"bad value for {name}: {text!r} ({exc})") from None
        if target not in out:
            out[target] = str(count if count == -1 else count * unit)
    return out


# -- broker settings -----------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    listen: Listener = field(default_factory=lambda: Listener("127.0.0.1", DEFAULT_PORT))
    advertised: Listener | None = None
    data_dir: Path = Path("sluice-data")
    node_id: int = 0
    cluster_id: str = "sluice-cluster"
    request_max_bytes: int = 100 * 1024 * 1024
    fetch_max_bytes: int = 55 * 1024 * 1024
    request_max_array_elements: int = 200_000
    """Kafka's ``fetch.max.bytes``: a Fetch answer's size, whatever the request's max_bytes."""
    max_connections: int = 1000
    max_connections_per_ip: int | None = None
    """None: ``max.connections`` less a tenth (see :attr:`per_ip_limit`)."""
    max_connections_per_ip_overrides: tuple[tuple[str, int], ...] = ()
    idle_timeout_ms: int = 600_000
    queued_max_request_bytes: int = 256 * 1024 * 1024
    unsent_response_max_bytes: int = 256 * 1024 * 1024
    """-1: unbounded."""
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
    producer_id_expiration_ms: int = 86_400_000
    producer_id_expiration_check_interval_ms: int = 600_000
    transaction_max_timeout_ms: int = 900_000
    transactional_id_expiration_ms: int = 7 * 24 * 3600 * 1000
    transaction_abort_interval_ms: int = 10_000
    transaction_expiration_check_interval_ms: int = 3_600_000
    transaction_partition_verification: bool = True
    cleaner_enable: bool = True
    cleaner_threads: int = 1
    cleaner_dedupe_buffer_size: int = 128 * 1024 * 1024
    cleaner_io_max_bytes_per_second: float = 1.7976931348623157e308
    cleaner_io_buffer_size: int = 512 * 1024
    cleaner_backoff_ms: int = 15_000
    cleaner_worker: CleanerWorker = CleanerWorker.PROCESS
    admin_listen: Listener | None = field(
        default_factory=lambda: Listener("127.0.0.1", DEFAULT_ADMIN_PORT)
    )
    """``sluice.admin.listen``: where the metrics, health endpoints and console are served;
    None is off."""
    admin_read_only: bool = False
    """``sluice.admin.read.only``: the console shows everything and changes nothing."""
    max_uncompressed_batch_bytes: int = DEFAULT_MAX_UNCOMPRESSED
    """``sluice.batch.uncompressed.max.bytes``: the most decompressed bytes of one batch the
    broker materialises (recompression, a raw snappy block) or needs to see (a compressed
    batch's record count); beyond it the batch is refused with INVALID_RECORD."""
    validate_records: bool = False
    """``sluice.produce.validate.records``: walk every produced batch's records (Kafka's
    LogValidator does), refusing a batch whose records are not what its header says."""
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

    def settings(self) -> dict[str, str]:
        """Every broker setting under its Kafka name, as this configuration resolved it (topic
        defaults under the broker's names): what DescribeConfigs reports for the broker."""
        values = {
            s.name: s.render(getattr(self, s.shown or s.attr)) for s in BROKER_SETTINGS.values()
        }
        topic_defaults = self.topic_defaults.to_dict()
        for broker_name, topic_name in BROKER_TO_TOPIC.items():
            values[broker_name] = topic_defaults[topic_name]
        return values

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
            import tomllib  # here, not at the top: 5-10 ms that an embedded broker never needs

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
        """Kafka-named string settings (broker settings, and broker-wide defaults of topic
        settings) plus attributes given directly (the CLI's flags, tests)."""
        kwargs: dict[str, Any] = {}
        topic: dict[str, str] = {}
        given: set[str] = set()
        for key, value in _in_milliseconds(values).items():
            if key in BROKER_TO_TOPIC:
                topic[BROKER_TO_TOPIC[key]] = value
                given.add(key)
                continue
            setting = _BY_NAME.get(key)
            if setting is None:
                raise InvalidConfigError(f"unknown broker config {key!r}")
            try:
                kwargs[setting.attr] = setting.parse(value)
            except (ValueError, InvalidConfigError) as exc:
                raise InvalidConfigError(f"bad value for {key}: {value!r} ({exc})") from None
            given.add(setting.name)
        try:
            kwargs["topic_defaults"] = LogConfig.from_dict(topic)
        except InvalidConfigError as exc:  # named as the settings were given, not the topic's
            import re

            said = str(exc)
            for name in topic:
                said = re.sub(rf"(?<![\w.]){re.escape(name)}(?![\w.])", TOPIC_TO_BROKER[name], said)
            raise InvalidConfigError(said) from None
        flags = {k: v for k, v in explicit.items() if v is not None}
        kwargs.update(flags)
        given |= {_BY_ATTR[a].name for a in flags if a in _BY_ATTR}
        kwargs["static_keys"] = frozenset(given)
        config = cls(**kwargs)
        _check(config)
        return config


def _check(config: BrokerConfig) -> None:
    """Rules between settings, or ones a single parser cannot state."""
    if config.num_partitions < 1:
        raise InvalidConfigError("num.partitions must be >= 1")
    advertised = config.advertised
    if advertised is not None:
        # As Kafka refuses it: a client told 0.0.0.0 (or ":PORT", read as 0.0.0.0) or port 0
        # cannot connect, and the broker would start and hand that out in every Metadata.
        if _unspecified(advertised.host):
            raise InvalidConfigError(
                f"advertised.listeners cannot use the meta-address {advertised.host!r}: give the "
                "host clients reach this broker at"
            )
        if advertised.port == 0:
            raise InvalidConfigError("advertised.listeners needs the port clients connect to, not 0")
    if config.group_min_session_timeout_ms > config.group_max_session_timeout_ms:
        raise InvalidConfigError("group.min.session.timeout.ms must be <= group.max.session.timeout.ms")
    if config.max_uncompressed_batch_bytes < 1024 * 1024:
        raise InvalidConfigError("sluice.batch.uncompressed.max.bytes must be >= 1048576")
    if config.request_max_bytes < 1024:
        raise InvalidConfigError("socket.request.max.bytes must be >= 1024")
    if config.fetch_max_bytes < 1024:
        raise InvalidConfigError("fetch.max.bytes must be >= 1024")
    if config.max_connections_per_ip == 0 and not config.max_connections_per_ip_overrides:
        raise InvalidConfigError("max.connections.per.ip can be 0 only with max.connections.per.ip.overrides")


def _unspecified(host: str) -> bool:
    """The meta-address in any spelling (``0.0.0.0``, ``::``, ``0:0::0``, bracketed or not), or
    none; a host name is not."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


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


def _render_overrides(overrides: tuple[tuple[str, int], ...]) -> str:
    return ",".join(f"[{h}]:{c}" if ":" in h else f"{h}:{c}" for h, c in overrides)


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
    """Empty is refused: it read as 0.0.0.0:9092, every interface (``:9092`` says that)."""
    if not value.split(",")[0].strip():
        raise InvalidConfigError("is empty: give HOST:PORT")
    return parse_host_port(value.split(",")[0])


def _data_dir(value: str) -> Path:
    """Empty is refused: it read as '.', so the logs went into whatever directory the broker
    was started from."""
    first = value.split(",")[0]
    if not first.strip():
        raise InvalidConfigError("is empty: give the data directory")
    return Path(first)


def _admin_listener(value: str) -> Listener | None:
    """``HOST:PORT`` (the port defaults to 9644), or ``off``. Empty is refused: it would read
    as every interface (as ``:9644`` does, Kafka's way), so an unset variable in
    ``--admin-listen "$ADMIN"`` would open the console, which can delete topics, to the network."""
    if value.strip().lower() == "off":
        return None
    if not value.strip():
        raise InvalidConfigError("is empty: give HOST:PORT (':PORT' for every interface) or off")
    return parse_host_port(value, default_port=DEFAULT_ADMIN_PORT)


def _render_admin_listener(value: Listener | None) -> str:
    return "off" if value is None else str(value)


_positive = _integer(0)
_at_least_one = _integer(1)


def _broker(
    name: str,
    attr: str,
    parse: Callable[[str], Any],
    kind: ConfigType,
    doc: str,
    *,
    render: Callable[[Any], str] = _render,
    aliases: tuple[str, ...] = (),
    shown: str | None = None,
) -> Setting:
    return Setting(name, attr, parse, render, kind, doc, aliases, shown=shown)


_BROKER_ROWS = (
    _broker("listeners", "listen", _listener, _S, "The address the broker binds.",
            render=lambda v: f"PLAINTEXT://{v}"),
    _broker("advertised.listeners", "advertised", _listener, _S,
            "The address Metadata and FindCoordinator give clients (default: the bound one).",
            render=lambda v: f"PLAINTEXT://{v}", shown="advertised_listener"),
    _broker("log.dirs", "data_dir", _data_dir, _S, "The data directory.",
            aliases=("log.dir",)),
    _broker("node.id", "node_id", _positive, _I, "This node's id.", aliases=("broker.id",)),
    _broker("cluster.id", "cluster_id", str, _S, "The cluster id reported to clients."),
    _broker("socket.request.max.bytes", "request_max_bytes", _positive, _I, "Largest request frame accepted."),
    _broker("sluice.request.max.array.elements", "request_max_array_elements", _at_least_one, _I,
            "Most array elements (partitions, topics, ...) one request may hold in all; more closes the connection."),
    _broker("fetch.max.bytes", "fetch_max_bytes", _positive, _I,
            "Most record bytes one Fetch answer carries (its first batch is always whole)."),
    _broker("max.connections", "max_connections", _positive, _I, "Connections beyond this many are closed at once."),
    _broker("max.connections.per.ip", "max_connections_per_ip", _positive, _I,
            "Most connections from one address (the rest of max.connections is kept for others).",
            shown="per_ip_limit"),
    _broker("max.connections.per.ip.overrides", "max_connections_per_ip_overrides", _per_ip_overrides, _S,
            "Per-address exceptions to max.connections.per.ip, as host:count,host:count.",
            render=_render_overrides),
    _broker("connections.max.idle.ms", "idle_timeout_ms", _positive, _L, "Idle connections are closed after this long."),
    _broker("queued.max.request.bytes", "queued_max_request_bytes", _integer(1, minus_one="unbounded"), _L,
            "Bytes of requests being received or waiting, across all connections; -1 is unbounded."),
    _broker("sluice.unsent.response.max.bytes", "unsent_response_max_bytes", _integer(1, minus_one="unbounded"), _L,
            "Bytes of answers written but not yet taken by their clients, all connections together; "
            "past it, Fetch answers carry no records and other requests past 4096 elements wait. "
            "-1 is unbounded."),
    _broker("sluice.request.receive.timeout.ms", "request_receive_timeout_ms", _at_least_one, _L,
            "How long a started request may take to arrive (plus its size at the minimum rate)."),
    _broker("sluice.request.receive.min.bytes.per.sec", "request_receive_min_rate", _at_least_one, _L,
            "The slowest arrival rate the receive deadline allows for."),
    _broker("sluice.fd.reserve", "fd_reserve", _positive, _I, "File descriptors connections never take, kept for the logs."),
    _broker("auto.create.topics.enable", "auto_create_topics", _boolean, _B, "Whether Metadata creates topics it is asked about."),
    _broker("num.partitions", "num_partitions", _positive, _I,
            "Partitions of auto-created topics and of CreateTopics asking for -1."),
    _broker("log.retention.check.interval.ms", "retention_check_ms", _positive, _L, "How often retention runs."),
    _broker("sluice.shutdown.grace.ms", "shutdown_grace_ms", _positive, _L, "How long shutdown waits for requests in flight."),
    _broker("group.min.session.timeout.ms", "group_min_session_timeout_ms", _positive, _I,
            "Shortest session timeout a JoinGroup may ask for."),
    _broker("group.max.session.timeout.ms", "group_max_session_timeout_ms", _positive, _I,
            "Longest session timeout a JoinGroup may ask for."),
    _broker("group.initial.rebalance.delay.ms", "group_initial_rebalance_delay_ms", _positive, _I,
            "Wait for more members before a new group's first rebalance."),
    _broker("offsets.retention.minutes", "offsets_retention_ms", lambda v: _positive(v) * 60_000, _I,
            "Committed offsets of an empty group expire after this long.", render=lambda v: str(v // 60_000)),
    _broker("offsets.retention.check.interval.ms", "offsets_retention_check_interval_ms", _positive, _L,
            "How often offset expiry runs."),
    _broker("offset.metadata.max.bytes", "offset_metadata_max_bytes", _positive, _I,
            "Longest metadata string an offset commit may carry, in characters (UTF-16 units, as Kafka)."),
    _broker("sluice.max.partitions.per.topic", "max_partitions_per_topic", _at_least_one, _I,
            "Most partitions one topic may have (creation and increases)."),
    _broker("max.broker.partitions", "max_broker_partitions", _at_least_one, _I,
            "Most partitions all topics together may have on this broker."),
    _broker("sluice.max.open.segment.files", "max_open_segment_files", _at_least_one, _I,
            "Descriptors of inactive segments kept open (least recently used closed first)."),
    _broker("producer.id.expiration.ms", "producer_id_expiration_ms", _at_least_one, _I,
            "An idempotent producer idle this long (by its last batch's timestamp) is forgotten."),
    _broker("producer.id.expiration.check.interval.ms", "producer_id_expiration_check_interval_ms",
            _at_least_one, _I, "How often idle producers are looked for."),
    _broker("sluice.admin.listen", "admin_listen", _admin_listener, _S,
            "HOST:PORT of the admin HTTP side (/metrics, /healthz, /readyz, the console), or off.",
            render=_render_admin_listener),
    _broker("sluice.admin.read.only", "admin_read_only", _boolean, _B,
            "The console changes nothing: topic, record and group writes are refused."),
    _broker("transaction.max.timeout.ms", "transaction_max_timeout_ms", _integer(1, _INT_MAX), _I,
            "Longest transaction timeout a producer may ask for (INVALID_TRANSACTION_TIMEOUT past it)."),
    _broker("transactional.id.expiration.ms", "transactional_id_expiration_ms", _integer(1, _INT_MAX), _I,
            "A transactional id with no transaction in progress and no request for this long is forgotten."),
    _broker("transaction.abort.timed.out.transaction.cleanup.interval.ms", "transaction_abort_interval_ms",
            _integer(1, _INT_MAX), _I, "How often transactions past their timeout are looked for (and aborted)."),
    _broker("transaction.remove.expired.transaction.cleanup.interval.ms",
            "transaction_expiration_check_interval_ms", _integer(1, _INT_MAX), _I,
            "How often expired transactional ids are looked for."),
    _broker("transaction.partition.verification.enable", "transaction_partition_verification", _boolean, _B,
            "A transactional batch is appended only to a partition its producer's ongoing transaction has added."),
    _broker("sluice.batch.uncompressed.max.bytes", "max_uncompressed_batch_bytes", _positive, _I,
            "Most decompressed bytes of one batch the broker processes (verification, recompression)."),
    _broker("sluice.produce.validate.records", "validate_records", _boolean, _B,
            "Walk every produced batch's records, reading every field, and refuse one they "
            "contradict (INVALID_RECORD); costs ~0.6-0.9 us a record."),
    _broker("log.cleaner.enable", "cleaner_enable", _boolean, _B,
            "Whether the log cleaner compacts topics whose cleanup.policy includes compact."),
    _broker("log.cleaner.threads", "cleaner_threads", _at_least_one, _I,
            "Logs cleaned at the same time (each in a worker thread)."),
    _broker("log.cleaner.dedupe.buffer.size", "cleaner_dedupe_buffer_size", _integer(1024 * 1024), _L,
            "Memory for the cleaners' key -> offset maps, all threads together."),
    _broker("log.cleaner.io.max.bytes.per.second", "cleaner_io_max_bytes_per_second", _double(1.0), _D,
            "The cleaners' read plus write rate, all threads together."),
    _broker("log.cleaner.io.buffer.size", "cleaner_io_buffer_size", _integer(4096, _INT_MAX), _I,
            "Bytes the cleaner reads from a segment at a time."),
    _broker("log.cleaner.backoff.ms", "cleaner_backoff_ms", _integer(0), _L,
            "How long the cleaner sleeps when no log needs cleaning."),
    _broker("sluice.log.cleaner.worker", "cleaner_worker", _choice(CleanerWorker), _S,
            "Where the cleaner's file work runs: process (default) or thread."),
)

BROKER_SETTINGS: dict[str, Setting] = {s.name: s for s in _BROKER_ROWS}
_BY_NAME: dict[str, Setting] = {n: s for s in _BROKER_ROWS for n in (s.name, *s.aliases)}
_BY_ATTR: dict[str, Setting] = {s.attr: s for s in _BROKER_ROWS}

BROKER_CONFIG_KEYS: frozenset[str] = (
    frozenset(_BY_NAME) | frozenset(BROKER_TO_TOPIC) | frozenset(COARSE_UNITS)
)
"""Every name ``sluice serve`` accepts (aliases, broker-wide topic defaults and their
coarse-unit forms included)."""


def describe(name: str) -> tuple[ConfigType, str | None]:
    """A setting's Kafka type and documentation, by broker or topic name (DescribeConfigs v3+)."""
    if name in TOPIC_SETTINGS:
        setting = TOPIC_SETTINGS[name]
        return setting.kind, setting.doc
    if name in BROKER_SETTINGS:
        setting = BROKER_SETTINGS[name]
        return setting.kind, setting.doc
    if name in BROKER_TO_TOPIC:
        setting = TOPIC_SETTINGS[BROKER_TO_TOPIC[name]]
        return setting.kind, f"Default {setting.name} of topics."
    return ConfigType.UNKNOWN, None
