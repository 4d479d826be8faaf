"""``seek`` at the edges of a consumer's life: before ``start`` and after ``close`` it raises
at once, saying so, and a seek in flight when ``close`` comes ends (it hung forever:
nothing answered it once the fetch thread was let go)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sluice.client import Consumer, ConsumerClosedError, ConsumerError, ConsumerRecord
from tests.client.conftest import DEADLINE, Target
from tests.client.test_consumer import committed, consumer, produce, run

SHORT = 5.0
"""Far beyond what each of these takes; a hang fails the test instead of stalling it."""


def _assigned(target: Target, topic: str) -> Consumer:
    return Consumer(target.bootstrap, assign=[(topic, 0)], metrics_registry=None,
                    **{"auto.offset.reset": "earliest", **target.client})


def test_seek_before_start_says_so(target: Target) -> None:
    """It failed an internal assertion (a bare AssertionError)."""
    topic, _ = target.topic("c-seek-first")

    async def go() -> None:
        c = _assigned(target, topic)
        with pytest.raises(ConsumerError, match=r"before the consumer started"):
            await asyncio.wait_for(c.seek(topic, 0, 2), SHORT)
        await c.close()

    run(go())


def test_seek_after_close_raises_at_once(target: Target) -> None:
    topic, _ = target.topic("c-seek-closed")

    async def go() -> None:
        c = _assigned(target, topic)
        await c.start()
        await c.close()
        with pytest.raises(ConsumerClosedError):
            await asyncio.wait_for(c.seek(topic, 0, 0), SHORT)

    run(go())


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
def test_a_seek_in_flight_when_close_comes_ends(target: Target, turns: int) -> None:
    """Done, or ConsumerClosedError: whichever way the race went, never a hang."""
    topic, _ = target.topic("c-seek-racing-close")
    produce(target, topic, [b"a"])

    async def go() -> None:
        c = _assigned(target, topic)
        await c.start()
        await c.getmany(1, DEADLINE)
        seeking = asyncio.create_task(c.seek(topic, 0, 0))
        for _ in range(turns):
            await asyncio.sleep(0)
        await c.close()
        with contextlib.suppress(ConsumerClosedError):
            await asyncio.wait_for(seeking, SHORT)

    run(go())


def test_a_commit_after_a_seek_back_is_compared_with_what_is_committed(target: Target) -> None:
    """Committed 10, sought back to 5, committed 7 (the replay's progress): the broker has 7.
    The cache of what is committed kept the highest (10), so committing 10 again after the
    replay was skipped as "already committed", and a restart read 7..9 again although the
    application had finished them. Failed every time before the fix."""
    topic, _ = target.topic("c-seek-commit", 1)
    produce(target, topic, [str(i).encode() for i in range(10)], partition=0)
    group = f"g-{topic}"

    async def upto(c: Consumer, first: int, last: int) -> list[int]:
        got: list[int] = []
        while len(got) < last + 1 - first:
            got += [r.offset for r in await c.getmany(last + 1 - first - len(got), DEADLINE)]
        return got

    async def go() -> list[dict[tuple[str, int], int]]:
        async with consumer(target, topic, group) as c:
            said = []
            assert await upto(c, 0, 9) == list(range(10))
            said.append(await c.commit())
            await c.seek(topic, 0, 5)
            assert await upto(c, 5, 6) == [5, 6]
            said.append(await c.commit())
            assert await upto(c, 7, 9) == [7, 8, 9]
            said.append(await c.commit())
            return said

    said = run(go())
    assert said == [{(topic, 0): 10}, {(topic, 0): 7}, {(topic, 0): 10}]
    assert committed(target, group, topic, 1)[0] == 10


def test_runs_last_commit_after_a_seek_back_is_made(target: Target) -> None:
    """The same through ``run``: the first run commits 10 as it returns; the consumer seeks
    back to 5; the second run's handler commits 7 on its way, and its last commit, 10, was
    skipped as equal to the highest committed before the seek."""
    topic, _ = target.topic("c-seek-run-commit", 1)
    produce(target, topic, [str(i).encode() for i in range(10)], partition=0)
    group = f"g-{topic}"
    seen: list[int] = []

    async def go() -> None:
        async with consumer(target, topic, group, commit_interval=60.0) as c:

            async def handler(r: ConsumerRecord) -> None:
                seen.append(r.offset)
                if r.offset == 7 and seen.count(7) == 2:
                    assert await c.commit() == {(topic, 0): 7}  # the watermark: 5 and 6 done
                if r.offset == 9:
                    c.stop()

            await c.run(handler)
            await c.seek(topic, 0, 5)
            await c.run(handler)

    run(go())
    assert seen == [*range(10), *range(5, 10)]
    assert committed(target, group, topic, 1)[0] == 10


def test_seek_to_the_log_start_or_end_by_name(target: Target) -> None:
    """``OFFSET_BEGINNING`` and ``OFFSET_END`` (confluent-kafka's names, which ``assign=``
    takes too) are the log's start and end when the seek is made: ``position()`` is that
    offset, and a record written after a seek to the end is the next one read. The argument
    check refused them as negative offsets (before it, the position became -1 or -2)."""
    import confluent_kafka as ck

    topic, _ = target.topic("c-seek-ends")
    produce(target, topic, [b"0", b"1", b"2"])

    async def go() -> tuple[list[int | None], list[int], dict[tuple[str, int], int]]:
        async with consumer(target, topic) as c:
            read = [(await asyncio.wait_for(c.__anext__(), DEADLINE)).offset for _ in range(3)]
            await c.seek(topic, 0, ck.OFFSET_BEGINNING)
            positions = [c.position(topic, 0)]
            read.append((await asyncio.wait_for(c.__anext__(), DEADLINE)).offset)
            await c.seek(topic, 0, ck.OFFSET_END)
            positions.append(c.position(topic, 0))
            produce(target, topic, [b"3"])
            read.append((await asyncio.wait_for(c.__anext__(), DEADLINE)).offset)
            return positions, read, await c.commit()

    positions, read, commit = run(go())
    assert positions == [0, 3]
    assert read == [0, 1, 2, 0, 3]
    assert commit == {(topic, 0): 4}
