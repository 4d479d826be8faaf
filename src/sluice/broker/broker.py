"""The broker: decodes each request frame, runs the API's handler, encodes the answer.

Handlers live one API (or one family of APIs) per module and are plain coroutines of the broker,
the typed request and the :class:`Client`. :data:`HANDLERS` registers each with the versions it
serves, and that table *is* what ApiVersions advertises (as franz-go's kfake registers its
keys): an API nobody registered is never advertised, whatever the codec can decode.

This module also owns the lifecycle (open in a worker thread, start on the loop, close cleanly)
and the failure policy, the same for every API: an ApiVersions request at an unknown version
gets Kafka's v0 fallback answer; anything else the codec cannot read (unknown API, unsupported
version, malformed bytes) closes that one connection, as Kafka does; and a handler that fails
unexpectedly (a bug) is logged with its traceback and closes that connection too, so the client
reconnects and retries while every other connection goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sluice.broker import (
    admin,
    cluster,
    config_apis,
    describe_producers,
    fetch,
    list_offsets,
    metadata,
    produce,
    txn_markers,
)
from sluice.broker.context import FetchWaiters, HeavyRequests, UnsentAnswers
from sluice.broker.groups import GroupConfig, GroupCoordinator
from sluice.broker.producer_ids import ProducerIds, init_producer_id
from sluice.broker.stats import BrokerStats
from sluice.broker.transactions import TransactionConfig, TransactionCoordinator
from sluice.config import BrokerConfig
from sluice.dataclass import dataclass
from sluice.errors import CloseConnection, ErrorCode
from sluice.protocol import (
    SUPPORTED,
    ApiKey,
    ProtocolError,
    Request,
    ResponseBody,
    UnsupportedVersionError,
    decode_request,
    encode_response,
    encode_unsupported_api_versions,
)
from sluice.protocol import messages as m
from sluice.protocol.primitives import Buffer, TooManyElementsError
from sluice.storage.cleaner import CleanerConfig
from sluice.storage.manager import Limits, LogManager

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Client:
    """What a handler may know of the peer (never the connection itself)."""

    host: str
    principal: str | None = None
    """The authenticated principal, once SASL exists; None is anonymous."""


Handler = Callable[["Broker", Request, Client], Awaitable[ResponseBody | None]]


class Interceptor(Protocol):
    """Scripted faults around every request (``sluice.testing``'s ``broker.faults``); a broker
    has none unless a test installs one, and then costs one attribute check per request."""

    async def before(self, request: Request) -> ResponseBody | None:
        """An answer in place of the handler's (an error), or None to run the handler. May
        wait (a delay) or raise CloseConnection (a dropped connection)."""
        ...

    async def after(self, request: Request) -> None:
        """The handler ran: may wait before the answer is sent, or raise CloseConnection so it
        never is."""
        ...


@dataclass(frozen=True, slots=True)
class Registration:
    handler: Handler
    min_version: int
    max_version: int


def _groups(method: str) -> Handler:
    """A group API: the coordinator's coroutine of the same name."""

    async def handle(broker: Broker, request: Request, client: Client) -> ResponseBody:
        api: Callable[[Request, str], Awaitable[ResponseBody]] = getattr(broker.groups, method)
        return await api(request, client.host)

    return handle


def _transactions(method: str) -> Handler:
    """A transaction API: the transaction coordinator's coroutine of the same name."""

    async def handle(broker: Broker, request: Request, client: Client) -> ResponseBody:
        api: Callable[[Request], Awaitable[ResponseBody]] = getattr(broker.transactions, method)
        return await api(request)

    return handle


async def _init_producer_id(broker: Broker, request: Request, client: Client) -> ResponseBody:
    """Idempotent producers get their id here; transactional ones from the coordinator."""
    body = request.body
    assert isinstance(body, m.InitProducerIdRequest)
    if body.transactional_id is None:
        return await init_producer_id(broker, request)
    return await broker.transactions.init_producer_id(request)


CONSUMER_PROTOCOL_REFUSAL = (
    "sluice serves only the classic consumer group protocol (JoinGroup/SyncGroup), not KIP-848's "
    "consumer protocol: set group.protocol=classic"
)


async def _consumer_group_heartbeat(broker: Broker, request: Request, client: Client) -> ResponseBody:
    """KIP-848's consumer protocol is not served. Kafka answers UNSUPPORTED_VERSION to this API
    when the protocol is off (``group.coordinator.rebalance.protocols`` without ``consumer``);
    advertising the API so the refusal can be said turns librdkafka's silent retry loop (a
    consumer that never joins, never errs, when the API is missing from ApiVersions) into a
    fatal error the application sees at once."""
    return m.ConsumerGroupHeartbeatResponse(
        error_code=ErrorCode.UNSUPPORTED_VERSION, error_message=CONSUMER_PROTOCOL_REFUSAL
    )


def _plain(fn: Callable[[Broker, Request], Awaitable[Any]]) -> Handler:
    """A handler that needs nothing of the client."""

    async def handle(broker: Broker, request: Request, client: Client) -> Any:
        return await fn(broker, request)

    handle.__name__ = fn.__name__
    return handle


def _register(api: ApiKey, handler: Handler, versions: tuple[int, int] | None = None) -> tuple[ApiKey, Registration]:
    """``versions`` default to all the codec speaks; they may only narrow it."""
    lo, hi = versions or SUPPORTED[api]
    codec_lo, codec_hi = SUPPORTED[api]
    if not codec_lo <= lo <= hi <= codec_hi:
        raise ValueError(f"{api.name} {lo}-{hi} is outside what the codec speaks ({codec_lo}-{codec_hi})")
    return api, Registration(handler, lo, hi)


HANDLERS: dict[int, Registration] = dict(
    [
        _register(ApiKey.API_VERSIONS, _plain(metadata.api_versions)),
        _register(ApiKey.METADATA, _plain(metadata.metadata)),
        _register(ApiKey.PRODUCE, _plain(produce.produce)),
        _register(ApiKey.FETCH, _plain(fetch.fetch)),
        _register(ApiKey.LIST_OFFSETS, _plain(list_offsets.list_offsets)),
        _register(ApiKey.CREATE_TOPICS, _plain(admin.create_topics)),
        _register(ApiKey.DELETE_TOPICS, _plain(admin.delete_topics)),
        _register(ApiKey.CREATE_PARTITIONS, _plain(admin.create_partitions)),
        _register(ApiKey.DELETE_RECORDS, _plain(admin.delete_records)),
        _register(ApiKey.DESCRIBE_CONFIGS, _plain(config_apis.describe_configs)),
        _register(ApiKey.ALTER_CONFIGS, _plain(config_apis.alter_configs)),
        _register(ApiKey.INCREMENTAL_ALTER_CONFIGS, _plain(config_apis.incremental_alter_configs)),
        _register(ApiKey.DESCRIBE_CLUSTER, _plain(cluster.describe_cluster)),
        _register(ApiKey.DESCRIBE_LOG_DIRS, _plain(cluster.describe_log_dirs)),
        _register(ApiKey.ELECT_LEADERS, _plain(cluster.elect_leaders)),
        _register(ApiKey.LIST_PARTITION_REASSIGNMENTS, _plain(cluster.list_partition_reassignments)),
        _register(ApiKey.ALTER_PARTITION_REASSIGNMENTS, _plain(cluster.alter_partition_reassignments)),
        _register(ApiKey.WRITE_TXN_MARKERS, _plain(txn_markers.write_txn_markers)),
        _register(ApiKey.DESCRIBE_PRODUCERS, _plain(describe_producers.describe_producers)),
        _register(ApiKey.INIT_PRODUCER_ID, _init_producer_id),
        _register(ApiKey.ADD_PARTITIONS_TO_TXN, _transactions("add_partitions_to_txn")),
        _register(ApiKey.ADD_OFFSETS_TO_TXN, _transactions("add_offsets_to_txn")),
        _register(ApiKey.END_TXN, _transactions("end_txn")),
        _register(ApiKey.TXN_OFFSET_COMMIT, _groups("txn_offset_commit")),
        _register(ApiKey.DESCRIBE_TRANSACTIONS, _transactions("describe_transactions")),
        _register(ApiKey.LIST_TRANSACTIONS, _transactions("list_transactions")),
        _register(ApiKey.FIND_COORDINATOR, _groups("find_coordinator")),
        _register(ApiKey.JOIN_GROUP, _groups("join_group")),
        _register(ApiKey.SYNC_GROUP, _groups("sync_group")),
        _register(ApiKey.HEARTBEAT, _groups("heartbeat")),
        _register(ApiKey.LEAVE_GROUP, _groups("leave_group")),
        _register(ApiKey.OFFSET_COMMIT, _groups("offset_commit")),
        _register(ApiKey.OFFSET_FETCH, _groups("offset_fetch")),
        _register(ApiKey.DESCRIBE_GROUPS, _groups("describe_groups")),
        _register(ApiKey.LIST_GROUPS, _groups("list_groups")),
        _register(ApiKey.DELETE_GROUPS, _groups("delete_groups")),
        _register(ApiKey.OFFSET_DELETE, _groups("offset_delete")),
        _register(ApiKey.CONSUMER_GROUP_HEARTBEAT, _consumer_group_heartbeat),
    ]
)
"""Every API the broker serves, with its versions: the version table ApiVersions advertises."""

ADVERTISED: dict[int, tuple[int, int]] = {
    api: (r.min_version, r.max_version) for api, r in HANDLERS.items()
}


T = TypeVar("T")

INLINE_ELEMENTS = 4096
"""Array elements a request may hold to be decoded and answered on the event loop. Decoding and
encoding cost about 2.5 µs per element: the 200,000 a request may hold
(``sluice.request.max.array.elements``) held the loop, every other client's requests with it,
for over a second on each side of the handler. A request past this is decoded again, and
answered, on the codec thread, whose interpreter lock the loop takes back every few
milliseconds (``sys.getswitchinterval``); the wasted inline part costs about 10 ms."""


PARKED_APIS = frozenset({ApiKey.JOIN_GROUP, ApiKey.SYNC_GROUP})
"""APIs whose requests wait on other clients for as long as a rebalance may take (minutes):
past :data:`INLINE_ELEMENTS` (a JoinGroup of 5,000 protocols) they do not take the turn of
:class:`~sluice.broker.context.HeavyRequests`, which they would hold all that time."""


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
            verify_txn=self._verify_txn_offset_commit,
        )
        self.fetch_waiters = FetchWaiters()
        self.advertised = ADVERTISED
        """What ApiVersions lists: the registrations' versions."""
        self.producer_ids = ProducerIds(logs.data_dir)
        self.stats: BrokerStats | None = None
        """Request and traffic counters, kept only while something reads them (the server's
        metrics): None costs the hot path one attribute test."""
        self.unsent = UnsentAnswers(config.unsent_response_max_bytes)
        """Answers held before their clients take them (the server's connections count theirs)."""
        self.heavy = HeavyRequests()
        """Requests past :data:`INLINE_ELEMENTS` go one at a time (their memory, see there)."""
        self.faults: Interceptor | None = None
        """Set by tests only (:class:`Interceptor`)."""
        self._codec: ThreadPoolExecutor | None = None
        """Decodes and encodes the requests past :data:`INLINE_ELEMENTS`, one at a time (made
        at the first)."""
        self.transactions = TransactionCoordinator(
            logs,
            lambda: self.producer_ids.allocate(remember=False),
            self.write_txn_markers,
            self.groups.end_transaction,
            config=TransactionConfig(
                max_timeout_ms=config.transaction_max_timeout_ms,
                id_expiration_ms=config.transactional_id_expiration_ms,
                abort_interval_ms=config.transaction_abort_interval_ms,
                expiration_check_interval_ms=config.transaction_expiration_check_interval_ms,
                partition_verification=config.transaction_partition_verification,
            ),
        )

    def verify_produce(
        self, txn_id: str | None, producer_id: int, epoch: int, topic: str, partition: int
    ) -> tuple[ErrorCode, str] | None:
        return self.transactions.verify_produce(txn_id, producer_id, epoch, (topic, partition))

    def current_epochs(self, producer_ids: Collection[int]) -> dict[int, int]:
        return self.transactions.current_epochs(producer_ids)

    def _verify_txn_offset_commit(
        self, txn_id: str, producer_id: int, epoch: int, group: str
    ) -> ErrorCode | None:
        return self.transactions.verify_offset_commit(txn_id, producer_id, epoch, group)

    @classmethod
    def open(cls, config: BrokerConfig) -> Broker:
        """Open (and, after a crash, recover) every log. Blocking: the server runs it in a thread."""
        limits = Limits(
            max_partitions_per_topic=config.max_partitions_per_topic,
            max_broker_partitions=config.max_broker_partitions,
            open_segment_files=_segment_file_budget(config.max_open_segment_files),
            producer_id_expiration_ms=config.producer_id_expiration_ms,
        )
        cleaner = CleanerConfig(
            enable=config.cleaner_enable,
            threads=config.cleaner_threads,
            dedupe_buffer_size=config.cleaner_dedupe_buffer_size,
            io_max_bytes_per_second=config.cleaner_io_max_bytes_per_second,
            io_buffer_size=config.cleaner_io_buffer_size,
            backoff_ms=config.cleaner_backoff_ms,
            max_batch_bytes=config.max_uncompressed_batch_bytes,
            worker=config.cleaner_worker.value,
        )
        logs = LogManager.open(config.data_dir, config.topic_defaults, limits=limits, cleaner=cleaner)
        return cls(config, logs)

    def node_endpoint(self) -> tuple[int, str, int]:
        listener = self.config.advertised_listener
        return self.config.node_id, listener.host, listener.port

    async def write_txn_markers(
        self,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int | None,
        commit: bool,
        partitions: Iterable[tuple[str, int]],
    ) -> dict[tuple[str, int], ErrorCode]:
        """Markers on every partition (concurrently); per partition NONE or the error
        (UNKNOWN_TOPIC_OR_PARTITION for a partition that no longer exists, INVALID_PRODUCER_EPOCH,
        KAFKA_STORAGE_ERROR ...)."""
        return await txn_markers.write_markers(
            self.logs, producer_id, producer_epoch, coordinator_epoch, commit, partitions
        )

    def start(self) -> None:
        """Background work on the running loop: retention, time-based flushes, group timers."""
        self.logs.start(
            self.config.retention_check_ms,
            producer_expiration_check_ms=self.config.producer_id_expiration_check_interval_ms,
        )
        self.groups.start()
        self.transactions.start()

    def begin_shutdown(self) -> None:
        """Answer what is parked now (long polls with what they have, pending joins with
        NOT_COORDINATOR) so a draining server does not wait out max_wait_ms or a rebalance."""
        self.fetch_waiters.wake_all()
        self.transactions.begin_shutdown()
        self.groups.begin_shutdown()

    async def close(self) -> None:
        """Wake long polls, stop the coordinators (transactions first: ending one writes to the
        group store and to partitions), then drain, fsync and mark every log clean. The logs
        are closed even if a coordinator's store fails to."""
        self.fetch_waiters.wake_all()
        try:
            try:
                await self.transactions.close()
            finally:
                await self.groups.close()
        finally:
            try:
                await self.logs.close()
            finally:
                if self._codec is not None:
                    self._codec.shutdown(wait=False)

    async def handle(self, frame: bytearray, client: Client) -> Sequence[Buffer] | None:
        """Answer one request frame (without its size prefix); None sends nothing (acks=0).
        Raises CloseConnection when that connection must go (see the module's policy).
        With :attr:`stats` kept, each request is counted, and timed from decoding to its
        encoded answer."""
        started = time.perf_counter()
        limit = self.config.request_max_array_elements
        try:
            request = decode_request(frame, max_elements=min(limit, INLINE_ELEMENTS))
        except TooManyElementsError as exc:
            if limit <= INLINE_ELEMENTS:
                return self._undecodable(exc)
            api = int.from_bytes(frame[:2], "big", signed=True)
            unsent = None if api == ApiKey.FETCH else self.unsent  # Fetch sizes its answer
            async with contextlib.nullcontext() if api in PARKED_APIS else self.heavy.turn(unsent):
                try:
                    request = await self._on_codec_thread(
                        lambda: decode_request(frame, max_elements=limit)
                    )
                except ProtocolError as exc:
                    return self._undecodable(exc)
                return await self._answer(request, client, started, heavy=True)
        except ProtocolError as exc:
            return self._undecodable(exc)
        return await self._answer(request, client, started, heavy=False)

    def _undecodable(self, exc: ProtocolError) -> list[Buffer]:
        """ApiVersions' answer to a version it does not know; else CloseConnection."""
        if isinstance(exc, UnsupportedVersionError):
            if exc.api_key == ApiKey.API_VERSIONS and exc.correlation_id is not None:
                return [encode_unsupported_api_versions(exc.correlation_id, ADVERTISED)]
            raise CloseConnection(str(exc)) from None
        if isinstance(exc, TooManyElementsError):
            raise CloseConnection(
                f"request refused: {exc} (sluice.request.max.array.elements="
                f"{self.config.request_max_array_elements})"
            ) from None
        raise CloseConnection(f"malformed request: {exc}") from None

    async def _answer(
        self, request: Request, client: Client, started: float, *, heavy: bool
    ) -> Sequence[Buffer] | None:
        stats = self.stats
        try:
            body = await self.dispatch(request, client)
        except CloseConnection:
            if stats is not None:
                stats.closed(request.api_key, time.perf_counter() - started)
            raise
        if body is None:  # acks=0 produce: no response at all
            if stats is not None:
                stats.answered(request.api_key, time.perf_counter() - started, None)
            return None
        if heavy:
            # A Fetch answer's records stay counted as unsent while it is encoded
            held = fetch.records_bytes(body) if isinstance(body, m.FetchResponse) else 0
            self.unsent.held += held
            try:
                answer = await self._on_codec_thread(
                    lambda: encode_response(
                        request.api_key, request.api_version, request.correlation_id, body
                    )
                )
            finally:
                self.unsent.release(held)
        else:
            answer = encode_response(
                request.api_key, request.api_version, request.correlation_id, body
            )
        if stats is not None:
            stats.answered(request.api_key, time.perf_counter() - started, body)
        return answer

    async def _on_codec_thread(self, call: Callable[[], T]) -> T:
        if self._codec is None:
            self._codec = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-codec")
        return await asyncio.get_running_loop().run_in_executor(self._codec, call)

    async def dispatch(self, request: Request, client: Client) -> ResponseBody | None:
        """Run a decoded request's handler: the typed answer, or CloseConnection."""
        registration = HANDLERS.get(request.api_key)
        if registration is None or not (
            registration.min_version <= request.api_version <= registration.max_version
        ):
            # decodable but not served (the codec knows more than the broker serves)
            raise CloseConnection(f"API {request.api_key} v{request.api_version} is not served")
        if self.faults is not None:
            return await self._dispatch_with_faults(self.faults, registration, request, client)
        try:
            return await registration.handler(self, request, client)
        except CloseConnection:
            raise
        except Exception as exc:
            raise _handler_failed(request, client, exc) from exc

    async def _dispatch_with_faults(
        self, faults: Interceptor, registration: Registration, request: Request, client: Client
    ) -> ResponseBody | None:
        scripted = await faults.before(request)
        if scripted is not None:
            return scripted
        try:
            body = await registration.handler(self, request, client)
        except CloseConnection:
            raise
        except Exception as exc:
            raise _handler_failed(request, client, exc) from exc
        await faults.after(request)
        return body


def _handler_failed(request: Request, client: Client, exc: Exception) -> CloseConnection:
    """A handler failed unexpectedly (a bug): log it with its traceback, close that connection."""
    log.error(
        "%s v%d from %s failed; closing that connection",
        ApiKey(request.api_key).name,
        request.api_version,
        client.host,
        exc_info=exc,
    )
    return CloseConnection(f"internal error: {exc!r}")


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
