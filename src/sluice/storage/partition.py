"""``Partition``: one partition as the rest of the broker holds it, after Kafka's ``UnifiedLog``
over ``LocalLog``: the log (segments, offsets, reads, retention) and the one way appends reach it.

Control runs one way, Partition -> PartitionWriter -> PartitionLog -> LogSegment: the partition
composes the log and, when ``sluice.append.mode`` is ``writer``, a writer task over it; the log
knows nothing of writers. An append goes inline (:meth:`PartitionLog.append`, the only inline
path) or through the writer, never both at once: while the writer still holds appends, later ones
queue behind them even after the mode changes to ``inline``, so a mode change never reorders.
"""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING

from sluice.config import AckLevel, AppendMode, LogConfig
from sluice.storage.clock import Clock, wall_clock_ms
from sluice.storage.fdcache import DEFAULT_CACHE, FdCache
from sluice.storage.loader import CleanState
from sluice.storage.log import PartitionLog, TxnCheck
from sluice.storage.writer import PartitionWriter

if TYPE_CHECKING:
    import asyncio


class Partition:
    def __init__(self, log: PartitionLog, executor: Executor | None = None) -> None:
        self.log = log
        self.executor = executor
        """Where the writer runs file I/O (the loop's default executor if None)."""
        self._writer: PartitionWriter | None = None
        self.append_gate: asyncio.Event | None = None
        """Tests only (``sluice.testing``'s paused appends): while set to an unset event, every
        append waits for it, in arrival order."""

    @classmethod
    def open(
        cls,
        directory: Path,
        config: LogConfig | None = None,
        clock: Clock = wall_clock_ms,
        *,
        state: CleanState | None = None,
        files: FdCache = DEFAULT_CACHE,
        executor: Executor | None = None,
    ) -> Partition:
        """Open the log in ``directory`` (see :meth:`PartitionLog.open`)."""
        return cls(PartitionLog.open(directory, config, clock, state=state, files=files), executor)

    @classmethod
    def create(
        cls,
        directory: Path,
        config: LogConfig,
        clock: Clock = wall_clock_ms,
        *,
        files: FdCache = DEFAULT_CACHE,
        executor: Executor | None = None,
    ) -> Partition:
        """A new, empty partition in an existing directory, without any I/O."""
        return cls(PartitionLog.create(directory, config, clock, files=files), executor)

    @property
    def name(self) -> str:
        return self.log.name

    @property
    def writer(self) -> PartitionWriter | None:
        """The writer task, once the first append in writer mode started it."""
        return self._writer

    async def append(
        self,
        data: bytes | bytearray | memoryview,
        ack: AckLevel | None = None,
        txn_check: TxnCheck | None = None,
    ) -> int:
        """Append one or more whole batches; returns the first offset once the append is
        acknowledged at ``ack`` (default: the topic's ``sluice.append.ack``). A transactional
        batch is put to ``txn_check`` when it is given its offsets (see :data:`TxnCheck`)."""
        if self.append_gate is not None:
            await self.append_gate.wait()
        writer = self._writer
        if self.log.config.append_mode is AppendMode.WRITER or (writer is not None and not writer.idle):
            if writer is None:
                self.log.check_open()
                writer = self._writer = PartitionWriter(self.log, self.executor)
            return await writer.submit(data, ack, txn_check)
        return self.log.append(data, ack, txn_check)

    async def write_txn_marker(
        self, producer_id: int, producer_epoch: int, coordinator_epoch: int | None, commit: bool
    ) -> int:
        """Append a COMMIT (commit=True) or ABORT control batch ending ``producer_id``'s
        transaction on this partition; returns its offset once it is durable (fsynced, whatever
        the topic's sluice.append.ack). Raises sluice.errors.InvalidProducerEpochError if
        producer_epoch is older than the producer's epoch on this partition (and
        TransactionCoordinatorFencedError for an older coordinator epoch than its last marker's).
        Writing a marker for a producer with no ongoing transaction here is allowed and harmless
        (Kafka writes it too). It goes the way appends go (inline or through the writer), so it
        lands after every append accepted before it."""
        writer = self._writer
        if self.log.config.append_mode is AppendMode.WRITER or (writer is not None and not writer.idle):
            if writer is None:
                self.log.check_open()
                writer = self._writer = PartitionWriter(self.log, self.executor)
            return await writer.submit_marker(producer_id, producer_epoch, coordinator_epoch, commit)
        return self.log.append_marker(producer_id, producer_epoch, coordinator_epoch, commit)

    async def drain(self) -> None:
        """Stop the writer once everything it accepted is written (and synced if asked)."""
        if self._writer is not None:
            await self._writer.close()

    async def close(self, *, marker: bool = True) -> CleanState:
        """Drain the writer, then close the log cleanly (see :meth:`PartitionLog.close`)."""
        await self.drain()
        return self.log.close(marker=marker)

    def abandon(self) -> None:
        """Close descriptors without a clean close: what a crash leaves (tests), or a deleted
        topic's partition whose files are about to go."""
        self.log.abandon()
