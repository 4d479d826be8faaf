"""``TransactionCoordinator``: every transactional id of this node, and the rules of Kafka's
transaction coordinator (``kafka.coordinator.transaction.TransactionCoordinator``) for them.

The state of each id and its transitions are :mod:`~.state`'s; what is durable is
:class:`~.store.TransactionStore`'s (Kafka's TransactionStateManager keeps the same split). This
module decides: InitProducerId with a transactional id (fencing the previous incarnation,
KIP-360 bumps, new producer ids when epochs run out), AddPartitionsToTxn, AddOffsetsToTxn,
EndTxn, the check TxnOffsetCommit makes (Kafka's transaction verification), the timeout of
transactions, the expiry of idle ids, DescribeTransactions and ListTransactions.

**Ending a transaction.** EndTxn first makes the decision durable (PrepareCommit or
PrepareAbort in the transaction log); from then on the outcome is fixed, across crashes. Then
the markers are written to every partition of the transaction through the broker's
``write_txn_markers`` (concurrently, each fsynced), the groups' pending offsets are made
committed or dropped (the group coordinator's :meth:`end_transaction`), and CompleteCommit or
CompleteAbort is logged. Kafka answers EndTxn as soon as the decision is logged and writes
markers afterwards, from another broker's point of view asynchronously; sluice answers after
the markers and the Complete record. On one node the markers are local appends that cost about
one fsync round, and answering after them means the producer's next transaction is never
refused with CONCURRENT_TRANSACTIONS while the previous one completes (its first
AddPartitionsToTxn would otherwise race the markers and back off), and that what a committed
transaction wrote is readable by a read_committed consumer when commit returns. If a marker
cannot be written (a full disk), EndTxn still answers success, as Kafka does once the decision
is durable, and the markers are retried in the background until they are written; a restart
completes every transaction it finds decided (the markers are idempotent).

Fencing an ongoing transaction (a new incarnation's InitProducerId, or its timeout) writes
PrepareAbort with the next epoch, so its markers carry that epoch and fence the old producer on
every partition; InitProducerId then bumps the epoch again for the new incarnation, and answers
with it in the same request (Kafka makes the client retry for the second step). Requests for an
id whose state is being written wait for nothing: they are answered CONCURRENT_TRANSACTIONS,
which clients retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable

from sluice.broker.background import BackgroundTasks
from sluice.broker.context import turn_after
from sluice.broker.transactions import responses
from sluice.broker.transactions.config import TransactionConfig
from sluice.broker.transactions.state import (
    ENDED,
    NO_EPOCH,
    PREPARED,
    TopicPartition,
    Transaction,
    TxnRecord,
    TxnState,
    add,
    bump_epoch,
    complete,
    epoch_exhausted,
    fence,
    prepare_end,
    rotate_producer_id,
    valid_producer_id,
)
from sluice.broker.transactions.store import DIR_NAME, TransactionStore
from sluice.errors import ErrorCode, SluiceError
from sluice.plural import plural
from sluice.protocol import Request, ResponseBody
from sluice.protocol import messages as m
from sluice.storage.clock import wall_clock_ms
from sluice.storage.manager import LogManager

log = logging.getLogger(__name__)

OWN_COORDINATOR_EPOCH = None
"""Kafka's is the transaction log partition's leader epoch; one node never changes leader, and
its coordinator is the only one: None makes its markers carry the producer's last coordinator
epoch on each partition (0 unless a WriteTxnMarkers request wrote a higher one), so no marker
written by hand (an operator's abort) can fence it and leave its transaction decided forever."""

MarkerWriter = Callable[
    [int, int, int | None, bool, Iterable[TopicPartition]],
    Awaitable[dict[TopicPartition, ErrorCode]],
]
"""The broker's ``write_txn_markers``: (producer id, epoch, coordinator epoch, commit,
partitions) -> each partition's result."""

GroupTxnEnd = Callable[[int, Collection[str], bool], Awaitable[None]]
"""The group coordinator's ``end_transaction``: (producer id, groups, commit)."""

_MARKER_DONE = frozenset(
    {ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, ErrorCode.INVALID_PRODUCER_EPOCH}
)
"""A marker written, or not needed: the topic was deleted (its data is gone with it), or the
partition already saw a newer epoch of the producer (Kafka gives up on such a marker too)."""
_MARKER_RETRY_MAX_MS = 10_000


class TransactionCoordinator:
    """All methods run on the broker's event loop, except the constructor (which replays the
    transaction log in the broker's opening thread)."""

    def __init__(
        self,
        logs: LogManager,
        allocate_producer_id: Callable[[], Awaitable[int]],
        write_markers: MarkerWriter,
        end_group_transaction: GroupTxnEnd,
        *,
        config: TransactionConfig | None = None,
        wall_clock: Callable[[], int] = wall_clock_ms,
        clock: Callable[[], float] = lambda: asyncio.get_running_loop().time(),
        store_compact_min_records: int = 10_000,
    ) -> None:
        self.logs = logs
        self.config = config or TransactionConfig()
        self.wall_clock = wall_clock
        self.clock = clock
        self._allocate = allocate_producer_id
        self._write_markers = write_markers
        self._end_group_transaction = end_group_transaction
        self.store = TransactionStore.open(
            logs.data_dir / DIR_NAME,
            logs.executor,
            wall_clock,
            compact_min_records=store_compact_min_records,
        )
        self._tasks = BackgroundTasks("transaction coordinator", log)
        self._retrying: set[str] = set()
        self._closed = False

    @property
    def transactions(self) -> dict[str, Transaction]:
        return self.store.transactions

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the timers, and complete every transaction the log left decided (a crash
        between PrepareCommit/PrepareAbort and CompleteCommit/CompleteAbort)."""
        self._tasks.start_timers(
            "txn-timers",
            [
                (self.config.abort_interval_ms / 1000, self.abort_timed_out),
                (self.config.expiration_check_interval_ms / 1000, self.expire_transactional_ids),
            ],
            self.clock,
        )
        for txn in list(self.transactions.values()):
            if txn.state in PREPARED:
                txn.unmarked = set(txn.record.partitions)
                log.info(
                    "transactional id %s was left %s: writing its markers again",
                    txn.transactional_id,
                    txn.state.value,
                )
                self._tasks.spawn(self._finish(txn), f"txn-recover-{txn.transactional_id}")

    def begin_shutdown(self) -> None:
        """Stop looking for timed-out transactions and stop retrying markers; what is in
        flight finishes, and a restart completes what stays decided."""
        self._tasks.stop.set()

    async def close(self) -> None:
        if self._closed:
            return
        self.begin_shutdown()
        self._closed = True
        await self._tasks.close()
        await self.store.close()

    def _refusal(self, request: Request) -> ResponseBody | None:
        if self._closed:
            return responses.error_response(request, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        return None

    # -- writing transitions ----------------------------------------------------------------------

    async def _write(self, txn: Transaction, target: TxnRecord, pending: TxnState) -> ErrorCode:
        """Log ``target`` as ``txn``'s state (others answered CONCURRENT_TRANSACTIONS meanwhile).
        A log that refuses the write (a full disk) leaves the state as it was; the client is
        told COORDINATOR_NOT_AVAILABLE, which it retries."""
        txn.pending = pending
        try:
            await self.store.write([(txn.transactional_id, target)])
        except SluiceError as exc:
            log.warning(
                "transactional id %s: could not log %s: %s",
                txn.transactional_id,
                target.state.value,
                exc,
            )
            return ErrorCode.COORDINATOR_NOT_AVAILABLE
        finally:
            txn.pending = None
        return ErrorCode.NONE

    async def _decide(self, txn: Transaction, target: TxnRecord, pending: TxnState) -> ErrorCode:
        """Log the outcome (PrepareCommit/PrepareAbort), then write it out (:meth:`_finish`).
        NONE once the outcome is durable, whether or not the markers are all written yet."""
        error = await self._write(txn, target, pending)
        if error is ErrorCode.NONE:
            txn.unmarked = set(target.partitions)
            await self._finish(txn)
        return error

    async def _finish(self, txn: Transaction) -> bool:
        """Write a decided transaction's markers and group offsets, then its Complete state;
        on failure, retry in the background. True if it completed now."""
        if await self._complete(txn):
            return True
        if txn.transactional_id not in self._retrying and not self._tasks.stop.is_set():
            self._retrying.add(txn.transactional_id)
            self._tasks.spawn(self._retry(txn), f"txn-markers-{txn.transactional_id}")
        return False

    async def _complete(self, txn: Transaction) -> bool:
        if txn.pending is not None or txn.state not in PREPARED:
            return txn.state not in PREPARED
        record = txn.record
        commit = record.state is TxnState.PREPARE_COMMIT
        txn.pending = TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT
        try:
            if txn.unmarked:
                results = await self._write_markers(
                    record.producer_id,
                    record.producer_epoch,
                    OWN_COORDINATOR_EPOCH,
                    commit,
                    sorted(txn.unmarked),
                )
                for tp, error in results.items():
                    if error in _MARKER_DONE:
                        if error is not ErrorCode.NONE:
                            log.info(
                                "transactional id %s: no marker on %s[%d]: %s",
                                txn.transactional_id,
                                tp[0],
                                tp[1],
                                error.name,
                            )
                        txn.unmarked.discard(tp)
                    else:
                        log.warning(
                            "transactional id %s: the %s marker on %s[%d] failed (%s); retrying",
                            txn.transactional_id,
                            "commit" if commit else "abort",
                            tp[0],
                            tp[1],
                            error.name,
                        )
            groups_done = True
            if record.groups:
                try:
                    await self._end_group_transaction(record.producer_id, record.groups, commit)
                except SluiceError as exc:
                    groups_done = False
                    log.warning(
                        "transactional id %s: the offsets of %s could not be %s (%s); retrying",
                        txn.transactional_id,
                        ", ".join(sorted(record.groups)),
                        "committed" if commit else "dropped",
                        exc,
                    )
            if txn.unmarked or not groups_done:
                return False
            try:
                await self.store.write(
                    [(txn.transactional_id, complete(record, self.wall_clock()))]
                )
            except SluiceError as exc:
                log.warning(
                    "transactional id %s: could not log its completion: %s",
                    txn.transactional_id,
                    exc,
                )
                return False
            return True
        finally:
            txn.pending = None

    async def _retry(self, txn: Transaction) -> None:
        delay = self.config.marker_retry_ms
        try:
            while not self._tasks.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._tasks.stop.wait(), delay / 1000)
                if self._tasks.stop.is_set() or self.transactions.get(txn.transactional_id) is not txn:
                    return
                if await self._complete(txn):
                    log.info(
                        "transactional id %s: markers written, transaction complete",
                        txn.transactional_id,
                    )
                    return
                delay = min(delay * 2, _MARKER_RETRY_MAX_MS)
        finally:
            self._retrying.discard(txn.transactional_id)

    # -- InitProducerId -----------------------------------------------------------------------------

    async def init_producer_id(self, request: Request) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.InitProducerIdRequest) and body.transactional_id is not None
        version = request.api_version
        expected: tuple[int, int] | None = None
        if version >= 3 and (body.producer_id, body.producer_epoch) != (-1, NO_EPOCH):
            if body.producer_id < 0 or body.producer_epoch < 0:
                return responses.init_producer_id_response(version, ErrorCode.INVALID_REQUEST)
            expected = (body.producer_id, body.producer_epoch)
        error, pid, epoch = await self._init(
            body.transactional_id, body.transaction_timeout_ms, expected
        )
        return responses.init_producer_id_response(version, error, pid, epoch)

    async def _init(
        self, txn_id: str, timeout_ms: int, expected: tuple[int, int] | None
    ) -> tuple[ErrorCode, int, int]:
        if txn_id == "":
            return ErrorCode.INVALID_REQUEST, -1, -1
        if not 0 < timeout_ms <= self.config.max_timeout_ms:
            return ErrorCode.INVALID_TRANSACTION_TIMEOUT, -1, -1
        txn = self.transactions.get(txn_id)
        created = False
        if txn is None:
            try:
                pid = await self._allocate()
            except OSError as exc:
                log.error("cannot reserve producer ids: %s", exc)
                return ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, -1
            txn = self.transactions.get(txn_id)
            if txn is None:
                # Kafka's new metadata at epoch -1: visible at once (a second InitProducerId
                # for the id waits for this one), durable with its first bump below.
                txn = Transaction(
                    txn_id,
                    TxnRecord(
                        pid,
                        NO_EPOCH,
                        timeout_ms,
                        TxnState.EMPTY,
                        last_update_timestamp=self.wall_clock(),
                    ),
                )
                self.transactions[txn_id] = txn
                created = True
        try:
            return await self._init_existing(txn, timeout_ms, expected)
        finally:
            if (
                created
                and txn.record.producer_epoch == NO_EPOCH
                and self.transactions.get(txn_id) is txn
            ):
                del self.transactions[txn_id]  # its first record was never written

    async def _init_existing(
        self, txn: Transaction, timeout_ms: int, expected: tuple[int, int] | None
    ) -> tuple[ErrorCode, int, int]:
        for _ in range(4):  # fencing an ongoing transaction first, a rotation's allocation
            if txn.pending is not None:
                return ErrorCode.CONCURRENT_TRANSACTIONS, -1, -1
            record = txn.record
            if expected is not None and not valid_producer_id(record, *expected):
                return ErrorCode.PRODUCER_FENCED, -1, -1
            if record.state in PREPARED:
                return ErrorCode.CONCURRENT_TRANSACTIONS, -1, -1
            if record.state is TxnState.ONGOING:
                log.info(
                    "transactional id %s: a new producer fences epoch %d and aborts its transaction",
                    txn.transactional_id,
                    record.producer_epoch,
                )
                error = await self._decide(
                    txn, fence(record, self.wall_clock()), TxnState.PREPARE_EPOCH_FENCE
                )
                if error is not ErrorCode.NONE:
                    return error, -1, -1
                if txn.state in PREPARED:
                    return ErrorCode.CONCURRENT_TRANSACTIONS, -1, -1  # markers being retried
                continue
            target: TxnRecord | ErrorCode
            if epoch_exhausted(record.producer_epoch) and (
                expected is None or expected[1] == record.producer_epoch
            ):
                try:
                    pid = await self._allocate()
                except OSError as exc:
                    log.error("cannot reserve producer ids: %s", exc)
                    return ErrorCode.COORDINATOR_NOT_AVAILABLE, -1, -1
                if txn.record is not record or txn.pending is not None:
                    continue  # changed while the id was reserved: decide again
                target = rotate_producer_id(
                    record, pid, timeout_ms, self.wall_clock(), expected is not None
                )
            else:
                target = bump_epoch(
                    record, timeout_ms, None if expected is None else expected[1], self.wall_clock()
                )
            if isinstance(target, ErrorCode):
                return target, -1, -1
            error = await self._write(txn, target, TxnState.EMPTY)
            if error is not ErrorCode.NONE:
                return error, -1, -1
            log.info(
                "transactional id %s: producer id %d, epoch %d",
                txn.transactional_id,
                txn.record.producer_id,
                txn.record.producer_epoch,
            )
            return ErrorCode.NONE, txn.record.producer_id, txn.record.producer_epoch
        return ErrorCode.CONCURRENT_TRANSACTIONS, -1, -1

    # -- AddPartitionsToTxn, AddOffsetsToTxn ----------------------------------------------------------

    def _check_producer(self, txn_id: str, producer_id: int, epoch: int) -> Transaction | ErrorCode:
        """The id's transaction if the request comes from its current producer."""
        if txn_id == "":
            return ErrorCode.INVALID_REQUEST
        txn = self.transactions.get(txn_id)
        if txn is None or txn.record.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING
        if txn.record.producer_epoch != epoch:
            return ErrorCode.PRODUCER_FENCED
        return txn

    async def _add(
        self,
        txn_id: str,
        producer_id: int,
        epoch: int,
        partitions: frozenset[TopicPartition],
        groups: frozenset[str],
    ) -> ErrorCode:
        """Kafka's handleAddPartitionsToTransaction (AddOffsetsToTxn adds a group)."""
        txn = self._check_producer(txn_id, producer_id, epoch)
        if isinstance(txn, ErrorCode):
            return txn
        if txn.pending is not None or txn.state in PREPARED:
            return ErrorCode.CONCURRENT_TRANSACTIONS
        record = txn.record
        if (
            record.state is TxnState.ONGOING
            and partitions <= record.partitions
            and groups <= record.groups
        ):
            return ErrorCode.NONE
        return await self._write(
            txn, add(record, partitions, groups, self.wall_clock()), TxnState.ONGOING
        )

    def _partition_exists(self, topic: str, partition: int) -> bool:
        t = self.logs.topics.get(topic)
        return t is not None and 0 <= partition < len(t.partitions)

    async def add_partitions_to_txn(self, request: Request) -> ResponseBody:
        """Any unknown partition fails the whole request: UNKNOWN_TOPIC_OR_PARTITION for it,
        OPERATION_NOT_ATTEMPTED for the others (none is added), as Kafka answers."""
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.AddPartitionsToTxnRequest)
        wanted = [(t.name, p) for t in body.v3_and_below_topics for p in t.partitions]
        unknown = {tp for tp in wanted if not self._partition_exists(*tp)}
        results: dict[TopicPartition, ErrorCode]
        if unknown:
            results = {
                tp: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                if tp in unknown
                else ErrorCode.OPERATION_NOT_ATTEMPTED
                for tp in wanted
            }
        else:
            error = await self._add(
                body.v3_and_below_transactional_id,
                body.v3_and_below_producer_id,
                body.v3_and_below_producer_epoch,
                frozenset(wanted),
                frozenset(),
            )
            results = dict.fromkeys(wanted, error)
        return responses.add_partitions_response(request.api_version, body, results)

    async def add_offsets_to_txn(self, request: Request) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.AddOffsetsToTxnRequest)
        error = await self._add(
            body.transactional_id,
            body.producer_id,
            body.producer_epoch,
            frozenset(),
            frozenset({body.group_id}),
        )
        return responses.add_offsets_response(request.api_version, error)

    def verify_offset_commit(
        self, txn_id: str, producer_id: int, epoch: int, group: str
    ) -> ErrorCode | None:
        """For TxnOffsetCommit (the group coordinator asks): None if the producer's ongoing
        transaction includes ``group`` (AddOffsetsToTxn), else the error to answer. Kafka's
        transaction verification, which answers a fenced producer INVALID_PRODUCER_EPOCH."""
        txn = self._check_producer(txn_id, producer_id, epoch)
        if txn is ErrorCode.PRODUCER_FENCED:
            return ErrorCode.INVALID_PRODUCER_EPOCH
        if isinstance(txn, ErrorCode):
            return txn
        ongoing = txn.state is TxnState.ONGOING
        if txn.state in PREPARED or (txn.pending is not None and not ongoing):
            return ErrorCode.CONCURRENT_TRANSACTIONS
        if txn.pending is not None and txn.pending is not TxnState.ONGOING:
            return ErrorCode.CONCURRENT_TRANSACTIONS  # being ended or fenced
        if ongoing and group in txn.record.groups:
            # Also while partitions are being added to it (an Ongoing -> Ongoing write):
            # librdkafka sends TxnOffsetCommit while its AddPartitionsToTxn for records
            # produced just before is in flight, and would back off 500 ms on a retry.
            return None
        if txn.pending is TxnState.ONGOING:
            return ErrorCode.CONCURRENT_TRANSACTIONS  # the group may be what is being added
        return ErrorCode.INVALID_TXN_STATE

    def verify_produce(
        self, txn_id: str | None, producer_id: int, epoch: int, tp: TopicPartition
    ) -> tuple[ErrorCode, str] | None:
        """For a transactional batch about to be given offsets on ``tp``: None if its producer
        is the id's current one with a transaction Ongoing that includes ``tp``, else the error
        and message to answer (Kafka's transaction verification, KIP-890 part 1).

        Without it a batch that arrives after its transaction ended (a retry or a late request
        from before a commit, abort or timeout), or from a fenced producer to a partition its
        transaction never added, opens a transaction on the partition that no coordinator will
        ever end: the last stable offset stays there and read_committed consumers stop, or a
        later marker of the id's new incarnation commits the fenced producer's records."""
        if txn_id is None:
            return (
                ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                "a transactional batch needs the transactional_id of its producer in the Produce request",
            )
        if not self.config.partition_verification:
            return None
        txn = self.transactions.get(txn_id)
        if txn is None or txn.record.producer_id != producer_id:
            return (
                ErrorCode.INVALID_PRODUCER_ID_MAPPING,
                f"producer {producer_id} is not transactional id {txn_id!r}'s current producer",
            )
        record = txn.record
        if epoch != record.producer_epoch:
            return (
                ErrorCode.INVALID_PRODUCER_EPOCH,
                f"producer {producer_id} epoch {epoch} is not transactional id {txn_id!r}'s "
                f"current epoch {record.producer_epoch} (fenced)",
            )
        if txn.pending is TxnState.PREPARE_EPOCH_FENCE:
            return (
                ErrorCode.INVALID_PRODUCER_EPOCH,
                f"producer {producer_id} epoch {epoch} is being fenced (a new incarnation of "
                f"transactional id {txn_id!r}, or its transaction timed out)",
            )
        if (
            record.state is TxnState.ONGOING
            and txn.pending in (None, TxnState.ONGOING)
            and tp in record.partitions
        ):
            return None
        return (
            ErrorCode.INVALID_TXN_STATE,
            f"{tp[0]}-{tp[1]} is not in an ongoing transaction of transactional id {txn_id!r} "
            f"(state {(txn.pending or record.state).value}): AddPartitionsToTxn must add it first",
        )

    def current_epochs(self, producer_ids: Collection[int]) -> dict[int, int]:
        """For a WriteTxnMarkers request: the epoch of each of ``producer_ids`` that is a
        transactional id's current producer. A marker at an epoch past it (one this coordinator
        never gave) would raise the producer's epoch on the partition past every epoch its next
        incarnations get, fencing them there one after another. One pass over the ids for the
        whole request: a pass per marker made a 1 MiB request of 40,000 markers hold the event
        loop 1.3 s per 1,000 transactional ids."""
        epochs: dict[int, int] = {}
        for txn in self.transactions.values():
            record = txn.record
            pid = record.producer_id
            if pid in producer_ids and record.producer_epoch != NO_EPOCH and pid not in epochs:
                epochs[pid] = record.producer_epoch
        return epochs

    # -- EndTxn ----------------------------------------------------------------------------------------

    async def end_txn(self, request: Request) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.EndTxnRequest)
        error = await self._end(
            body.transactional_id, body.producer_id, body.producer_epoch, body.committed
        )
        return responses.end_txn_response(request.api_version, error)

    async def _end(self, txn_id: str, producer_id: int, epoch: int, commit: bool) -> ErrorCode:
        """Kafka's endTransaction from a client: a retry of an EndTxn that already completed
        is answered NONE again; one still being completed CONCURRENT_TRANSACTIONS; the other
        outcome, or no transaction at all, INVALID_TXN_STATE."""
        txn = self._check_producer(txn_id, producer_id, epoch)
        if isinstance(txn, ErrorCode):
            return txn
        if txn.pending is not None:
            return ErrorCode.CONCURRENT_TRANSACTIONS
        state = txn.state
        if state is TxnState.ONGOING:
            return await self._decide(
                txn,
                prepare_end(txn.record, commit, self.wall_clock()),
                TxnState.PREPARE_COMMIT if commit else TxnState.PREPARE_ABORT,
            )
        same = (state in (TxnState.COMPLETE_COMMIT, TxnState.PREPARE_COMMIT)) == commit
        if state in (TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT) and same:
            return ErrorCode.NONE
        if state in PREPARED and same:
            return ErrorCode.CONCURRENT_TRANSACTIONS
        return ErrorCode.INVALID_TXN_STATE

    # -- timeouts and expiry -----------------------------------------------------------------------------

    async def abort_timed_out(self) -> int:
        """Kafka's abortTimedOutTransactions: every ongoing transaction older than its timeout
        is aborted with the epoch bumped, so its producer is fenced. Returns how many."""
        now = self.wall_clock()
        victims = [
            txn
            for txn in self.transactions.values()
            if txn.pending is None
            and txn.state is TxnState.ONGOING
            and txn.record.start_timestamp + txn.record.timeout_ms < now
        ]
        results = await asyncio.gather(*(self._abort_timed_out(txn) for txn in victims))
        return sum(results)

    async def _abort_timed_out(self, txn: Transaction) -> bool:
        record = txn.record
        if txn.pending is not None or record.state is not TxnState.ONGOING:
            return False
        log.info(
            "transactional id %s: aborting its transaction (producer id %d, epoch %d), older than "
            "its timeout of %d ms",
            txn.transactional_id,
            record.producer_id,
            record.producer_epoch,
            record.timeout_ms,
        )
        error = await self._decide(
            txn, fence(record, self.wall_clock()), TxnState.PREPARE_EPOCH_FENCE
        )
        return error is ErrorCode.NONE

    async def expire_transactional_ids(self) -> int:
        """Kafka's removeExpiredTransactionalIds: ids with no transaction in progress whose
        last transition is older than transactional.id.expiration.ms are forgotten (one write
        of tombstones). Returns how many."""
        horizon = self.wall_clock() - self.config.id_expiration_ms
        expired = [
            txn
            for txn in self.transactions.values()
            if txn.pending is None
            and txn.state in ENDED
            and txn.record.producer_epoch != NO_EPOCH
            and txn.record.last_update_timestamp <= horizon
        ]
        if not expired:
            return 0
        for txn in expired:
            txn.pending = TxnState.DEAD
        try:
            await self.store.write([(txn.transactional_id, None) for txn in expired])
        except SluiceError as exc:
            log.warning("expiring transactional ids failed in storage (retried later): %s", exc)
            return 0
        finally:
            for txn in expired:
                txn.pending = None
        log.info("expired %s", plural(len(expired), "transactional id"))
        return len(expired)

    # -- DescribeTransactions, ListTransactions ------------------------------------------------------------

    async def describe_transactions(self, request: Request) -> ResponseBody:
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.DescribeTransactionsRequest)
        states = []
        # Each id once, however often it is named: an answer lists every partition of the
        # transaction, so repeats made a small request an answer of any size.
        for done, txn_id in enumerate(dict.fromkeys(body.transactional_ids), 1):
            await turn_after(done)
            txn = self.transactions.get(txn_id)
            if txn_id == "":
                states.append(responses.described(txn_id, ErrorCode.INVALID_REQUEST, None))
            elif txn is None or txn.state is TxnState.DEAD:
                states.append(
                    responses.described(txn_id, ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, None)
                )
            else:
                states.append(responses.described(txn_id, ErrorCode.NONE, txn))
        return m.DescribeTransactionsResponse(throttle_time_ms=0, transaction_states=states)

    async def list_transactions(self, request: Request) -> ResponseBody:
        """Kafka's listTransactionStates: state names are matched exactly (unknown ones are
        reported back), producer ids exactly, and the duration filter (v1) keeps transactions
        running for longer than it."""
        if (refused := self._refusal(request)) is not None:
            return refused
        body = request.body
        assert isinstance(body, m.ListTransactionsRequest)
        states = {name: TxnState.named(name) for name in body.state_filters}
        wanted = {s for s in states.values() if s is not None}
        unknown = [name for name, s in states.items() if s is None]
        producer_ids = set(body.producer_id_filters)
        duration = body.duration_filter if request.api_version >= 1 else -1
        now = self.wall_clock()
        listed = [
            txn
            for txn in self.transactions.values()
            if txn.state is not TxnState.DEAD
            and (not producer_ids or txn.record.producer_id in producer_ids)
            and (not states or txn.state in wanted)
            and (duration < 0 or now - txn.record.start_timestamp > duration)
        ]
        return responses.list_transactions_response(unknown, listed)
