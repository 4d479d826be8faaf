"""InitProducerId for idempotent producers, and the producer ids every producer gets.

Ids are never handed out twice, across restarts and crashes: a block of ids is reserved in
``DATA/producer-ids`` (written atomically and fsynced) before any id of it is given to a client,
so a crash loses at most the rest of a block, never reuses one.

A producer that asks again with the id and epoch it holds (KIP-360: after an error it could not
otherwise recover from) keeps its id with the next epoch, which fences its older epoch on every
partition; an older epoch than the current one is refused. An InitProducerId naming a
transactional id is the transaction coordinator's (:mod:`sluice.broker.transactions`), which
takes its producer ids from here too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from pathlib import Path

from sluice.broker.context import BrokerContext
from sluice.errors import ErrorCode
from sluice.protocol import Request
from sluice.protocol import messages as m
from sluice.storage.files import load_json, write_json

log = logging.getLogger(__name__)

FILE_NAME = "producer-ids"
BLOCK = 1000
EPOCH_MAX = 32767
_REMEMBERED = 100_000
"""Ids whose current epoch is remembered for KIP-360 bumps (oldest forgotten first: a forgotten
id asking for a bump simply gets a new id, which clients accept)."""


class ProducerIds:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._next = self._end = self._read()
        self._lock = asyncio.Lock()
        self._epochs: OrderedDict[int, int] = OrderedDict()

    def _read(self) -> int:
        try:
            return int(load_json(self.path)["next_block"])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OSError(f"{self.path} is unreadable: {exc}") from exc

    async def allocate(self, *, remember: bool = True) -> int:
        """A producer id never handed out before (a new block is reserved durably first).
        ``remember``: keep its epoch for idempotent KIP-360 bumps (the transaction
        coordinator keeps its producers' epochs itself)."""
        async with self._lock:
            if self._next == self._end:
                end = self._end + BLOCK
                block = {"next_block": end}
                await asyncio.get_running_loop().run_in_executor(None, write_json, self.path, block)
                self._end = end
            pid = self._next
            self._next += 1
        if remember:
            self._remember(pid, 0)
        return pid

    def _remember(self, pid: int, epoch: int) -> None:
        self._epochs[pid] = epoch
        self._epochs.move_to_end(pid)
        while len(self._epochs) > _REMEMBERED:
            self._epochs.popitem(last=False)

    async def init(self, pid: int, epoch: int, version: int) -> tuple[ErrorCode, int, int]:
        """(error, producer id, epoch) for an idempotent producer: a new id, or, when it names
        the id and epoch it holds, the same id with the next epoch."""
        if pid < 0:
            return ErrorCode.NONE, await self.allocate(), 0
        current = self._epochs.get(pid)
        if current is None:
            return ErrorCode.NONE, await self.allocate(), 0  # not ours, or forgotten: start over
        if epoch != current:
            fenced = ErrorCode.PRODUCER_FENCED if version >= 4 else ErrorCode.INVALID_PRODUCER_EPOCH
            return fenced, -1, -1
        if current + 1 >= EPOCH_MAX:
            return ErrorCode.NONE, await self.allocate(), 0  # epochs exhausted: a new id
        self._remember(pid, current + 1)
        return ErrorCode.NONE, pid, current + 1


async def init_producer_id(broker: BrokerContext, request: Request) -> m.InitProducerIdResponse:
    """An idempotent producer's InitProducerId (no transactional id)."""
    body = request.body
    assert isinstance(body, m.InitProducerIdRequest) and body.transactional_id is None
    try:
        error, pid, epoch = await broker.producer_ids.init(
            body.producer_id, body.producer_epoch, request.api_version
        )
    except OSError as exc:
        log.error("cannot reserve producer ids: %s", exc)
        error, pid, epoch = ErrorCode.KAFKA_STORAGE_ERROR, -1, -1
    return m.InitProducerIdResponse(
        throttle_time_ms=0, error_code=error, producer_id=pid, producer_epoch=epoch
    )
