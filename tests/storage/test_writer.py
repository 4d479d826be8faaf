"""The writer task: ordering, acknowledgement levels, group commit, backpressure, I/O errors."""

from __future__ import annotations

import asyncio
import gc
import resource
import signal
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from sluice.errors import CorruptRecordError, LogClosedError, StorageError
from sluice.storage import AckLevel, LogConfig, PartitionLog
from sluice.storage.partition import Partition
from sluice.storage.segment import LogSegment

from .conftest import all_records, make_batch

OpenLog = Callable[..., PartitionLog]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def test_concurrent_appenders_each_keep_their_order(open_log: OpenLog) -> None:
    log = open_log()
    part = Partition(log)

    async def appender(name: str) -> list[int]:
        return [await part.append(make_batch(2, tag=f"{name}:{i}")) for i in range(30)]

    async def main() -> list[list[int]]:
        results = await asyncio.gather(*(appender(f"a{j}") for j in range(8)))
        await part.close()
        return results

    results = run(main())
    assert sorted(o for r in results for o in r) == list(range(0, 480, 2))
    again = open_log()
    values = dict(all_records(again))
    for j, offsets in enumerate(results):
        assert offsets == sorted(offsets)
        for i, offset in enumerate(offsets):
            value = values[offset]
            assert value is not None and value.startswith(f"a{j}:{i}-".encode())


@pytest.mark.parametrize("ack", list(AckLevel))
def test_every_ack_level_ends_with_everything_stored(open_log: OpenLog, ack: AckLevel) -> None:
    log = open_log(sluice_append_ack=ack.value)
    part = Partition(log)

    async def main() -> list[int]:
        offsets = await asyncio.gather(*(part.append(make_batch(3)) for _ in range(40)))
        await part.close()
        return list(offsets)

    assert sorted(run(main())) == list(range(0, 120, 3))
    assert [o for o, _ in all_records(open_log())] == list(range(120))


class _Frame(bytearray):
    """A request buffer that can be weakly referenced (a plain bytearray cannot)."""


@pytest.mark.parametrize("ack", [AckLevel.WRITTEN, AckLevel.FSYNCED])
def test_an_idle_writer_holds_no_request_buffer(open_log: OpenLog, ack: AckLevel) -> None:
    """The broker appends memoryviews of request frames; once acknowledged, the writer must
    let go of them, or every idle partition pins its last request (up to 1 MiB each)."""
    log = open_log(sluice_append_ack=ack.value)
    part = Partition(log)

    async def main() -> weakref.ref[_Frame]:
        frame = _Frame(make_batch(5))
        ref = weakref.ref(frame)
        assert await part.append(memoryview(frame)) == 0
        del frame
        for _ in range(3):  # let the writer and sync tasks get back to waiting
            await asyncio.sleep(0)
        gc.collect()
        return ref

    async def scenario() -> None:
        ref = await main()
        assert ref() is None, gc.get_referrers(ref())
        await part.close()

    run(scenario())


def test_fsynced_acks_share_fsyncs_group_commit(open_log: OpenLog) -> None:
    log = open_log(sluice_append_ack="fsynced")
    part = Partition(log)

    async def main() -> None:
        await asyncio.gather(*(part.append(make_batch(1)) for _ in range(200)))
        assert log.flushed_offset == 200
        await part.close()

    run(main())
    assert 1 <= log.flush_count < 200 / 4  # one fsync covered many appends


def test_fsynced_mode_hides_data_until_it_is_durable(open_log: OpenLog) -> None:
    log = open_log(sluice_append_ack="fsynced")
    log.write_inline([log.reserve(make_batch(2))])  # written, not yet fsynced
    assert log.log_end_offset == 2
    assert log.high_watermark == 0 and log.read(0, 100) is None
    log.flush()
    assert log.high_watermark == 2 and log.read(0, 100) is not None
    log.update_config(LogConfig.from_dict({"sluice.append.ack": "written"}))
    log.write_inline([log.reserve(make_batch(1))])
    assert log.high_watermark == 3  # written mode: visible once written


def test_queued_acks_return_offsets_at_once_and_the_queue_stays_bounded(open_log: OpenLog) -> None:
    batch = make_batch(10, size=500)
    log = open_log(sluice_append_ack="queued", sluice_writer_queue_bytes=len(batch) * 4)
    part = Partition(log)
    seen: list[int] = []

    async def main() -> list[int]:
        offsets = []
        for _ in range(100):
            offsets.append(await part.append(batch))
            seen.append(part.writer.queued_bytes if part.writer else 0)
        await part.close()
        return offsets

    assert run(main()) == list(range(0, 1000, 10))
    assert max(seen) <= len(batch) * 5  # the bound, plus the one append that was admitted
    assert log.log_end_offset == 1000


def test_admission_is_fifo_under_backpressure(open_log: OpenLog) -> None:
    batch = make_batch(1, size=2000)
    log = open_log(sluice_append_ack="queued", sluice_writer_queue_bytes=len(batch))
    part = Partition(log)

    async def main() -> list[int]:
        tasks = [asyncio.ensure_future(part.append(make_batch(1, tag=f"n{i}"))) for i in range(50)]
        offsets = [await t for t in tasks]
        await part.close()
        return offsets

    assert run(main()) == list(range(50))  # arrival order is offset order


def test_invalid_batch_fails_only_its_caller(open_log: OpenLog) -> None:
    log = open_log()
    part = Partition(log)
    bad = bytearray(make_batch(2))
    bad[-1] ^= 1

    async def main() -> list[Any]:
        results = await asyncio.gather(
            part.append(make_batch(2)), part.append(bytes(bad)), part.append(make_batch(2)), return_exceptions=True
        )
        await part.close()
        return list(results)

    first, second, third = run(main())
    assert first == 0 and isinstance(second, CorruptRecordError) and third == 2


def test_submit_after_close_is_refused(open_log: OpenLog) -> None:
    log = open_log()
    part = Partition(log)

    async def main() -> None:
        await part.append(make_batch(1))
        await part.close()
        with pytest.raises(LogClosedError):
            await part.append(make_batch(1))

    run(main())


def test_flush_messages_triggers_background_fsync(open_log: OpenLog) -> None:
    log = open_log(flush_messages=10)
    part = Partition(log)

    async def main() -> None:
        for _ in range(4):
            await part.append(make_batch(5))
        while log.flush_count < 2:  # the sync task runs after the writer publishes
            await asyncio.sleep(0)
        assert log.flushed_offset >= 10
        await part.close()

    run(main())


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """A real kernel write failure (EFBIG) for every write past ``limit`` bytes of a file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.parametrize("mode", ["writer", "inline"])
def test_io_error_fails_the_append_keeps_the_log_consistent_and_recovers(open_log: OpenLog, mode: str) -> None:
    log = open_log(sluice_append_mode=mode)
    part = Partition(log)
    small, big = make_batch(2), make_batch(50, size=200)

    async def main() -> None:
        assert await part.append(small) == 0
        with file_size_limit(log.active_segment.size + len(small) + 10):
            assert await part.append(small) == 2
            results = await asyncio.gather(part.append(big), part.append(small), return_exceptions=True)
        # the big one hits the limit; the small one was queued behind it (writer) or no
        # longer fits (inline): both fail with KAFKA_STORAGE_ERROR, nothing is half-stored
        assert all(isinstance(r, StorageError) and r.code == 56 for r in results), results
        assert [o for o, _ in all_records(log)] == [0, 1, 2, 3]
        end = log.log_end_offset
        assert log.active_segment.file_size() == log.active_segment.size  # torn bytes removed
        assert await part.append(big) == end  # the cause is gone: appends work again
        await part.close()

    run(main())
    again = open_log()
    assert again.recovery.clean
    assert again.log_end_offset == log.log_end_offset


def test_an_internal_error_fails_appends_at_once_instead_of_hanging(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the write path (simulated: commit raises) must not kill the writer silently and
    leave producers waiting for acks that never come: the group fails with KAFKA_STORAGE_ERROR,
    later appends are refused at once, and the files recover on the next open."""
    log = open_log()
    part = Partition(log)

    def broken_commit(*_args: object) -> None:
        raise RuntimeError("simulated bug")

    async def main() -> None:
        assert await part.append(make_batch(2)) == 0
        monkeypatch.setattr(log, "commit", broken_commit)
        first = await asyncio.gather(part.append(make_batch(2)), return_exceptions=True)
        assert isinstance(first[0], StorageError) and first[0].code == 56, first
        with pytest.raises(StorageError, match="internal error"):
            await part.append(make_batch(1))
        monkeypatch.undo()
        await part.close()

    run(main())
    again = open_log()
    assert [o for o, _ in all_records(again)][:2] == [0, 1]


def test_a_group_commit_during_a_roll_syncs_the_rolled_segment_too(
    open_log: OpenLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A roll publishes the new segment before the rolled one's seal (its fsync) ends. A group
    commit that starts meanwhile syncs the new active segment; fsynced appends still waiting in
    the rolled one must not be acknowledged on that fsync alone (a slow disk, simulated: the
    first group commit and the seal are held until released)."""
    size = len(make_batch(3))
    log = open_log(sluice_append_ack="fsynced", segment_bytes=2 * size + 1)
    part = Partition(log)
    synced: list[int] = []  # base offsets of segments whose fsync completed
    sync_entered, release_sync = threading.Event(), threading.Event()
    seal_entered, release_seal = threading.Event(), threading.Event()
    real_fsync, real_seal = LogSegment.fsync, LogSegment.seal

    def fsync(segment: LogSegment) -> None:
        if not sync_entered.is_set():
            sync_entered.set()
            release_sync.wait(10)
        real_fsync(segment)
        synced.append(segment.base_offset)

    def seal(segment: LogSegment) -> None:
        seal_entered.set()
        release_seal.wait(10)
        real_seal(segment)

    monkeypatch.setattr(LogSegment, "fsync", fsync)
    monkeypatch.setattr(LogSegment, "seal", seal)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        first = asyncio.create_task(part.append(make_batch(3, tag="a1")))
        await loop.run_in_executor(None, sync_entered.wait, 10)  # a1's group commit is slow
        second = asyncio.create_task(part.append(make_batch(3, tag="a2")))  # into segment 0
        for _ in range(1000):
            if log.log_end_offset == 6:
                break
            await asyncio.sleep(0)
        assert log.log_end_offset == 6
        third = asyncio.create_task(part.append(make_batch(3, tag="a3")))  # rolls to segment 6
        await loop.run_in_executor(None, seal_entered.wait, 10)
        release_sync.set()
        assert await asyncio.wait_for(first, 10) == 0
        assert await asyncio.wait_for(second, 10) == 3
        # a2 lies in segment 0, whose seal is still held: its acknowledgement needs a sync of
        # segment 0 after a1's, not only of the new active segment.
        assert synced.count(0) >= 2, synced
        release_seal.set()
        assert await asyncio.wait_for(third, 10) == 6
        await part.close()

    try:
        run(main())
    finally:
        release_sync.set()
        release_seal.set()
