"""Per-topic log configuration, named like Kafka's topic configs where Kafka has a name.

Values arrive as strings (from the wire, TOML files or the CLI) and are parsed once here, so the
log itself only ever sees typed values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from sluice.errors import InvalidConfigError


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
    """What happens to old segments. Only deletion: sluice does not compact logs, so a topic
    asking for ``compact`` is refused (INVALID_CONFIG) rather than silently never compacted."""

    DELETE = "delete"


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

    @classmethod
    def from_dict(cls, values: Mapping[str, str | int], base: LogConfig | None = None) -> LogConfig:
        """Parse Kafka-named string settings; unknown keys and bad values raise InvalidConfigError."""
        changes: dict[str, Any] = {}
        for key, raw in values.items():
            spec = _SPECS.get(key)
            if spec is None:
                raise InvalidConfigError(f"unknown topic config {key!r}")
            changes[spec.attr] = spec.parse(key, raw)
        return dataclasses.replace(base or cls(), **changes)

    def to_dict(self) -> dict[str, str]:
        """Kafka-named string form, for persistence and DescribeConfigs."""
        return {key: spec.render(getattr(self, spec.attr)) for key, spec in _SPECS.items()}

    def diff(self, other: LogConfig | None = None) -> dict[str, str]:
        """Settings that differ from ``other`` (default: the defaults): what a topic overrides."""
        mine, theirs = self.to_dict(), (other or LogConfig()).to_dict()
        return {k: v for k, v in mine.items() if theirs[k] != v}


@dataclass(frozen=True, slots=True)
class _Spec:
    attr: str
    kind: type
    minimum: int = 0
    maximum: int = 2**63 - 1

    def parse(self, key: str, raw: str | int) -> Any:
        if issubclass(self.kind, Enum):
            try:
                return self.kind(str(raw).strip().lower())
            except ValueError:
                allowed = ", ".join(m.value for m in self.kind)
                raise InvalidConfigError(f"{key} must be one of {allowed}, not {raw!r}") from None
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise InvalidConfigError(f"{key} must be an integer, not {raw!r}") from None
        if value < self.minimum and not (self.minimum >= 0 and value == -1 and key in _MINUS_ONE_OK):
            raise InvalidConfigError(f"{key} must be >= {self.minimum}, not {value}")
        if value > self.maximum:
            raise InvalidConfigError(f"{key} must be <= {self.maximum}, not {value}")
        return value

    def render(self, value: Any) -> str:
        return value.value if isinstance(value, Enum) else str(value)


_INT_MAX = 2**31 - 1
"""Kafka's INT-typed configs stop here; segment files and index positions are 32-bit."""

_MINUS_ONE_OK = {"retention.ms", "retention.bytes", "flush.messages", "flush.ms"}

_SPECS: dict[str, _Spec] = {
    "segment.bytes": _Spec("segment_bytes", int, 14, _INT_MAX),
    "segment.ms": _Spec("segment_ms", int, 1),
    "segment.index.bytes": _Spec("segment_index_bytes", int, 16, _INT_MAX),
    "index.interval.bytes": _Spec("index_interval_bytes", int, 0, _INT_MAX),
    "retention.ms": _Spec("retention_ms", int, 0),
    "retention.bytes": _Spec("retention_bytes", int, 0),
    "max.message.bytes": _Spec("max_message_bytes", int, 0, _INT_MAX),
    "flush.messages": _Spec("flush_messages", int, 1),
    "flush.ms": _Spec("flush_ms", int, 0),
    "sluice.append.mode": _Spec("append_mode", AppendMode),
    "sluice.append.ack": _Spec("append_ack", AckLevel),
    "sluice.writer.queue.bytes": _Spec("writer_queue_bytes", int, 1024, _INT_MAX),
    "cleanup.policy": _Spec("cleanup_policy", CleanupPolicy),
    "compression.type": _Spec("compression_type", CompressionType),
}

TOPIC_CONFIG_KEYS: frozenset[str] = frozenset(_SPECS)
