"""SliceReader on real files: the bytes of every range, small reads on the caller's thread and big
ones in the worker, and descriptors leased across the hop (a log deleted meanwhile is still read;
a request cancelled meanwhile leaks no descriptor)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from sluice.storage import FileSlice, PartitionLog
from sluice.storage.reader import SliceReader

from .conftest import make_batch

OpenLog = Callable[..., PartitionLog]


class BlockableWorker:
    """One worker thread the test can hold busy, to see what waits for it and what does not."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1)
        self._go = threading.Event()

    def hold(self) -> None:
        self._go.clear()
        self.executor.submit(self._go.wait)

    def release_and_drain(self) -> None:
        self._go.set()
        self.executor.submit(lambda: None).result(10)  # everything queued before it has run


@pytest.fixture
def worker() -> Iterator[BlockableWorker]:
    w = BlockableWorker()
    yield w
    w.release_and_drain()
    w.executor.shutdown()


def _slices(log: PartitionLog) -> list[FileSlice]:
    """One range per segment, each from its first batch to its end."""
    out = []
    offset = log.log_start_offset
    while offset < log.high_watermark:
        found = log.read(offset, 1 << 30)
        assert found is not None
        out.append(found)
        offset = found.segment.next_offset
    return out


def _fds_open_on(paths: set[str]) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.removesuffix(" (deleted)") in paths:
            count += 1
    return count


def _filled(open_log: OpenLog) -> PartitionLog:
    log = open_log(segment_bytes=64 * 1024)
    for i in range(60):
        log.append(make_batch(10, tag=f"b{i}", size=500))
    assert len(log.segments) > 3
    return log


@pytest.mark.parametrize("inline_max_bytes", [0, 1 << 30])
def test_every_range_is_read_whole_in_order(open_log: OpenLog, inline_max_bytes: int) -> None:
    log = _filled(open_log)
    slices = _slices(log)
    reader = SliceReader(inline_max_bytes)
    try:
        got = asyncio.run(reader.read(slices))
    finally:
        reader.close()
    assert got == [s.segment.pread(s.position, s.length) for s in slices]
    assert sum(map(len, got)) == sum(seg.size for seg in log.segments)


def test_small_reads_stay_on_the_callers_thread_big_ones_go_to_the_worker(
    open_log: OpenLog, worker: BlockableWorker
) -> None:
    log = _filled(open_log)
    slices = _slices(log)
    total = sum(s.length for s in slices)
    reader = SliceReader(inline_max_bytes=total, worker=worker.executor)

    async def run() -> None:
        worker.hold()
        # Within the limit: read at once, although the worker is busy.
        assert len(await reader.read(slices)) == len(slices)
        # One byte more: it waits for the worker.
        big = [*slices, slices[0]]
        task = asyncio.ensure_future(reader.read(big))
        await asyncio.sleep(0.05)
        assert not task.done()
        await asyncio.get_running_loop().run_in_executor(None, worker.release_and_drain)
        assert await task == [s.read() for s in big]

    asyncio.run(run())


def test_a_log_deleted_during_a_read_is_still_read_then_its_files_are_closed(
    open_log: OpenLog, worker: BlockableWorker
) -> None:
    log = _filled(open_log)
    slices = _slices(log)
    expected = [s.read() for s in slices]
    paths = {str(seg.log_path) for seg in log.segments}
    reader = SliceReader(inline_max_bytes=0, worker=worker.executor)

    async def run() -> list[bytes]:
        worker.hold()
        task = asyncio.ensure_future(reader.read(slices))
        await asyncio.sleep(0)  # the read has leased its descriptors and waits for the worker
        log.delete()
        assert not any(os.path.exists(p) for p in paths)
        assert _fds_open_on(paths) == len(paths)  # leased: not closed under the read
        await asyncio.get_running_loop().run_in_executor(None, worker.release_and_drain)
        return await task

    assert asyncio.run(run()) == expected
    assert _fds_open_on(paths) == 0


def test_a_read_cancelled_before_the_worker_took_it_gives_its_descriptors_back(
    open_log: OpenLog, worker: BlockableWorker
) -> None:
    """(One cancelled while the worker reads gives them back when it is done: a running job
    cannot be cancelled, and the lease is returned by its done-callback.)"""
    log = _filled(open_log)
    slices = _slices(log)
    paths = {str(seg.log_path) for seg in log.segments}
    reader = SliceReader(inline_max_bytes=0, worker=worker.executor)

    async def run() -> None:
        worker.hold()
        task = asyncio.ensure_future(reader.read(slices))
        await asyncio.sleep(0)
        log.delete()
        assert _fds_open_on(paths) == len(paths)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _fds_open_on(paths) == 0

    asyncio.run(run())
