"""The broker: decodes each request frame, runs the API's handler, encodes the answer.

Handlers live one API (or one family of APIs) per module and are plain functions of the broker
and the typed request body; this module owns the dispatch table, the lifecycle (open in a worker
thread, start on the loop, close cleanly) and the protocol-level failure policy: an ApiVersions
request at an unknown version gets Kafka's v0 fallback answer, anything else the codec cannot read
(unknown API, unsupported version, malformed bytes) closes that one connection, as Kafka does.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from sluice.broker import admin, cluster, configs, fetch, metadata, offsets, produce
from sluice.broker.groups import GROUP_APIS, GroupConfig, GroupCoordinator
from sluice.protocol import (
    ApiKey,
    ProtocolError,
    Request,
    UnsupportedVersionError,
    decode_request,
    encode_response,
    encode_unsupported_api_versions,
)
from sluice.server.config import BrokerConfig
from sluice.server.connection import Buffer, CloseConnection
from sluice.storage.manager import Limits, LogManager

if TYPE_CHECKING:
    from sluice.server.connection import Connection

log = logging.getLogger(__name__)

Handler = Callable[["Broker", Request], Awaitable[Any]]

_HANDLERS: dict[int, Handler] = {
    ApiKey.API_VERSIONS: metadata.api_versions,
    ApiKey.METADATA: metadata.metadata,
    ApiKey.PRODUCE: produce.produce,
    ApiKey.FETCH: fetch.fetch,
    ApiKey.LIST_OFFSETS: offsets.list_offsets,
    ApiKey.CREATE_TOPICS: admin.create_topics,
    ApiKey.DELETE_TOPICS: admin.delete_topics,
    ApiKey.CREATE_PARTITIONS: admin.create_partitions,
    ApiKey.DELETE_RECORDS: admin.delete_records,
    ApiKey.DESCRIBE_CONFIGS: configs.describe_configs,
    ApiKey.ALTER_CONFIGS: configs.alter_configs,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: configs.incremental_alter_configs,
    ApiKey.DESCRIBE_CLUSTER: cluster.describe_cluster,
    ApiKey.DESCRIBE_LOG_DIRS: cluster.describe_log_dirs,
    ApiKey.ELECT_LEADERS: cluster.elect_leaders,
    ApiKey.LIST_PARTITION_REASSIGNMENTS: cluster.list_partition_reassignments,
    ApiKey.ALTER_PARTITION_REASSIGNMENTS: cluster.alter_partition_reassignments,
}


class Broker:
    def __init__(self, config: BrokerConfig, logs: LogManager) -> None:
        self.config = config
        self.logs = logs
        self.groups = GroupCoordinator(
            logs,
            self.node_endpoint,
            config=GroupConfig(
                min_session_timeout_ms=config.group_min_session_timeout_ms,
                max_session_timeout_ms=config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
                offsets_retention_ms=config.offsets_retention_ms,
                offsets_retention_check_interval_ms=config.offsets_retention_check_interval_ms,
                offset_metadata_max_bytes=config.offset_metadata_max_bytes,
            ),
        )
        self.fetch_waiters = fetch.FetchWaiters()

    @classmethod
    def open(cls, config: BrokerConfig) -> Broker:
        """Open (and, after a crash, recover) every log. Blocking: the server runs it in a thread."""
        limits = Limits(
            max_partitions_per_topic=config.max_partitions_per_topic,
            max_broker_partitions=config.max_broker_partitions,
            open_segment_files=_segment_file_budget(config.max_open_segment_files),
        )
        logs = LogManager.open(config.data_dir, config.topic_defaults, limits=limits)
        return cls(config, logs)

    def node_endpoint(self) -> tuple[int, str, int]:
        listener = self.config.advertised_listener
        return self.config.node_id, listener.host, listener.port

    def start(self) -> None:
        """Background work on the running loop: retention, time-based flushes, group timers."""
        self.logs.start(self.config.retention_check_ms)
        self.groups.start()

    def begin_shutdown(self) -> None:
        """Answer what is parked now (long polls with what they have, pending joins with
        NOT_COORDINATOR) so a draining server does not wait out max_wait_ms or a rebalance."""
        self.fetch_waiters.wake_all()
        self.groups.begin_shutdown()

    async def close(self) -> None:
        """Wake long polls, stop the coordinator, then drain, fsync and mark every log clean.
        The logs are closed even if the coordinator's store fails to."""
        self.fetch_waiters.wake_all()
        try:
            await self.groups.close()
        finally:
            await self.logs.close()

    async def handle(self, frame: bytearray, connection: Connection) -> Sequence[Buffer] | None:
        try:
            request = decode_request(frame)
        except UnsupportedVersionError as exc:
            if exc.api_key == ApiKey.API_VERSIONS and exc.correlation_id is not None:
                return [encode_unsupported_api_versions(exc.correlation_id)]
            raise CloseConnection(str(exc)) from None
        except ProtocolError as exc:
            raise CloseConnection(f"malformed request: {exc}") from None
        if request.api_key in GROUP_APIS:
            body = await self.groups.handle(request, connection.peer_host)
        else:
            handler = _HANDLERS.get(request.api_key)
            if handler is None:  # decodable but not served (the codec knows more than we serve)
                raise CloseConnection(f"API {request.api_key} is not served")
            body = await handler(self, request)
        if body is None:  # acks=0 produce: no response at all
            return None
        pieces = encode_response(request.api_key, request.api_version, request.correlation_id, body)
        return [p if isinstance(p, bytes | bytearray | memoryview) else p.read() for p in pieces]


def _segment_file_budget(configured: int) -> int:
    """``sluice.max.open.segment.files``, but never more than a quarter of the descriptors this
    process may open (the rest are for active segments, connections and the process itself)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or configured <= soft // 4:
        return configured
    budget = max(16, soft // 4)
    log.warning(
        "sluice.max.open.segment.files=%d is more than a quarter of this process's descriptor "
        "limit (%d): keeping at most %d inactive segment files open",
        configured,
        soft,
        budget,
    )
    return budget
