"""What DescribeConfigs (v3+) says about a config besides its value: its type, as Kafka's
ConfigDef declares it (so INT and LONG are told apart as Kafka does, whatever the value looks
like), and one line of documentation for clients that ask for it.

Keys are topic config names and broker config names alike (the two never collide).
"""

from __future__ import annotations

from enum import IntEnum


class ConfigType(IntEnum):
    """Kafka's DescribeConfigsResponse.ConfigType."""

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


_B, _S, _I, _L, _LIST = ConfigType.BOOLEAN, ConfigType.STRING, ConfigType.INT, ConfigType.LONG, ConfigType.LIST

CATALOG: dict[str, tuple[ConfigType, str]] = {
    # topic configs (docs/storage.md)
    "segment.bytes": (_I, "Size at which a partition's active segment is rolled."),
    "segment.ms": (_L, "Age (from its first batch's timestamp) at which the active segment is rolled."),
    "segment.index.bytes": (_I, "Offset and time index capacity of a segment before it is rolled."),
    "index.interval.bytes": (_I, "Bytes of records between two sparse index entries."),
    "retention.ms": (_L, "Segments whose newest record is older than this are deleted; -1 keeps them forever."),
    "retention.bytes": (_L, "Per-partition size above which the oldest segments are deleted; -1 is no limit."),
    "max.message.bytes": (_I, "Largest record batch a partition accepts."),
    "flush.messages": (_L, "fsync after this many records; -1 leaves it to sluice.append.ack and flush.ms."),
    "flush.ms": (_L, "fsync when unflushed data is this old; -1 is off."),
    "cleanup.policy": (_LIST, "Only delete: sluice does not compact logs."),
    "sluice.append.mode": (_S, "writer: a per-partition writer task does the writes; inline: the request does."),
    "sluice.append.ack": (_S, "When acks=all is answered: queued, written (to the file) or fsynced."),
    "sluice.writer.queue.bytes": (_I, "Bound of a partition's writer queue; producers wait when it is full."),
    # broker configs (docs/broker.md)
    "listeners": (_S, "The address the broker binds."),
    "advertised.listeners": (_S, "The address Metadata and FindCoordinator give clients."),
    "log.dirs": (_S, "The data directory."),
    "node.id": (_I, "This node's id."),
    "cluster.id": (_S, "The cluster id reported to clients."),
    "socket.request.max.bytes": (_I, "Largest request frame accepted."),
    "max.connections": (_I, "Connections beyond this many are closed at once."),
    "connections.max.idle.ms": (_L, "Idle connections are closed after this long."),
    "auto.create.topics.enable": (_B, "Whether Metadata creates topics it is asked about."),
    "num.partitions": (_I, "Partitions of auto-created topics and of CreateTopics asking for -1."),
    "log.retention.check.interval.ms": (_L, "How often retention runs."),
    "sluice.shutdown.grace.ms": (_L, "How long shutdown waits for requests in flight."),
    "group.min.session.timeout.ms": (_I, "Shortest session timeout a JoinGroup may ask for."),
    "group.max.session.timeout.ms": (_I, "Longest session timeout a JoinGroup may ask for."),
    "group.initial.rebalance.delay.ms": (_I, "Wait for more members before a new group's first rebalance."),
    "offsets.retention.minutes": (_I, "Committed offsets of an empty group expire after this long."),
    "offsets.retention.check.interval.ms": (_L, "How often offset expiry runs."),
    "offset.metadata.max.bytes": (_I, "Longest metadata string an offset commit may carry."),
    "sluice.batch.uncompressed.max.bytes": (_I, "Most decompressed bytes of one batch the broker processes (verification, recompression)."),
    "compression.type": (_S, "Codec batches are stored with: producer (as sent), uncompressed, gzip, snappy, lz4 or zstd."),
    "max.connections.per.ip": (_I, "Most connections from one address (the rest of max.connections is kept for others)."),
    "max.connections.per.ip.overrides": (_S, "Per-address exceptions to max.connections.per.ip, as host:count,host:count."),
    "queued.max.request.bytes": (_L, "Bytes of requests being received or waiting, across all connections; -1 is unbounded."),
    "sluice.request.receive.timeout.ms": (_L, "How long a started request may take to arrive (plus its size at the minimum rate)."),
    "sluice.request.receive.min.bytes.per.sec": (_L, "The slowest arrival rate the receive deadline allows for."),
    "sluice.fd.reserve": (_I, "File descriptors connections never take, kept for the logs."),
    "sluice.max.partitions.per.topic": (_I, "Most partitions one topic may have (creation and increases)."),
    "max.broker.partitions": (_I, "Most partitions all topics together may have on this broker."),
    "sluice.max.open.segment.files": (_I, "Descriptors of inactive segments kept open (least recently used closed first)."),
    "log.segment.bytes": (_I, "Default segment.bytes of topics."),
    "log.roll.ms": (_L, "Default segment.ms of topics."),
    "log.index.size.max.bytes": (_I, "Default segment.index.bytes of topics."),
    "log.index.interval.bytes": (_I, "Default index.interval.bytes of topics."),
    "log.retention.ms": (_L, "Default retention.ms of topics."),
    "log.retention.bytes": (_L, "Default retention.bytes of topics."),
    "message.max.bytes": (_I, "Default max.message.bytes of topics."),
    "log.flush.interval.messages": (_L, "Default flush.messages of topics."),
    "log.flush.interval.ms": (_L, "Default flush.ms of topics."),
    "log.cleanup.policy": (_LIST, "Default cleanup.policy of topics."),
    "sluice.log.append.mode": (_S, "Default sluice.append.mode of topics."),
    "sluice.log.append.ack": (_S, "Default sluice.append.ack of topics."),
    "sluice.log.writer.queue.bytes": (_I, "Default sluice.writer.queue.bytes of topics."),
}


def config_type(name: str) -> ConfigType:
    return CATALOG[name][0] if name in CATALOG else ConfigType.UNKNOWN


def documentation(name: str) -> str | None:
    return CATALOG[name][1] if name in CATALOG else None
