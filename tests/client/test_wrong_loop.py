"""A producer or consumer used off its own event loop (another loop, or a thread with no loop
running) raises WrongEventLoopError at every entry point, before it hands anything out."""

from __future__ import annotations

import asyncio

import pytest

from sluice.client import Consumer, Producer, RecordMetadata, WrongEventLoopError
from tests.client.conftest import DEADLINE, Target
from tests.client.test_consumer import committed, consumer, produce, run


def test_async_for_on_another_loop_raises_even_with_records_buffered(target: Target) -> None:
    """``async for`` (``__anext__``) served buffered records on another loop, moving positions
    and the budget from there, and raised only once the buffer ran dry."""
    topic, _ = target.topic("c-wrong-loop-anext")
    produce(target, topic, [b"a", b"b", b"c"])

    async def elsewhere(c: Consumer) -> None:
        with pytest.raises(WrongEventLoopError, match="belongs to the loop"):
            await c.__anext__()

    async def go() -> list[bytes | None]:
        async with consumer(target, topic) as c:
            got = await c.getmany(1, DEADLINE)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE
            while not c._buffer.ready and loop.time() < deadline:  # the other two fetched
                await asyncio.sleep(0.01)
            assert c._buffer.ready
            await asyncio.to_thread(asyncio.run, elsewhere(c))
            while len(got) < 3:
                got += await c.getmany(10, 1.0)
            return [r.value for r in got]

    assert run(go()) == [b"a", b"b", b"c"]


def test_sync_entry_points_off_the_loop_raise(target: Target) -> None:
    """From a thread with no loop running (an executor), ``send_nowait`` raised asyncio's bare
    'no running event loop'; pause and resume, from another loop, were taken."""
    topic, _ = target.topic("c-wrong-loop-sync")
    produce(target, topic, [b"a"])

    async def elsewhere(c: Consumer) -> None:
        with pytest.raises(WrongEventLoopError, match="belongs to the loop"):
            c.pause((topic, 0))
        with pytest.raises(WrongEventLoopError, match="belongs to the loop"):
            c.resume((topic, 0))

    async def go() -> None:
        async with Producer(target.bootstrap, metrics_registry=None, **target.options()) as p:
            await p.send(topic, b"b")
            with pytest.raises(WrongEventLoopError, match="event loop"):
                await asyncio.to_thread(p.send_nowait, topic, b"x")
        async with consumer(target, topic) as c:
            await c.getmany(1, DEADLINE)
            await asyncio.to_thread(asyncio.run, elsewhere(c))
            assert c.paused() == []

    run(go())


def test_the_right_loop_from_a_callback_is_fine(target: Target) -> None:
    """On its own loop, from a plain callback (call_soon), send_nowait is taken."""
    topic, _ = target.topic("c-right-loop-callback")

    async def go() -> int:
        async with Producer(target.bootstrap, metrics_registry=None, **target.options()) as p:
            loop = asyncio.get_running_loop()
            handed: asyncio.Future[asyncio.Future[RecordMetadata]] = loop.create_future()
            loop.call_soon(lambda: handed.set_result(p.send_nowait(topic, b"cb")))
            return (await (await handed)).offset

    assert run(go()) == 0



def test_an_ordered_window_iterated_on_another_loop_raises(target: Target) -> None:
    """A ``send_ordered`` window made on the producer's loop and iterated on another: its
    results are settled on the producer's loop, so a wait for one there never ended (and its
    submits ran off the loop). It raises at the first step that would submit or wait; the
    window still works on its own loop."""
    topic, _ = target.topic("wrong-loop-window")

    async def go() -> list[int]:
        async with Producer(target.bootstrap, metrics_registry=None, **target.options()) as p:
            window = p.send_ordered([{"topic": topic, "value": str(i)} for i in range(5)])

            async def elsewhere() -> None:
                with pytest.raises(WrongEventLoopError, match="belongs to the loop"):
                    await window.__anext__()

            await asyncio.wait_for(asyncio.to_thread(asyncio.run, elsewhere()), DEADLINE)
            return [r.offset async for r in window]

    assert run(go()) == [0, 1, 2, 3, 4]


def test_a_commit_on_another_loop_during_a_rebalance_callback_raises_and_commits_nothing(
    target: Target,
) -> None:
    """While ``on_assign`` runs, the thread waiting in it makes the loop's commits; a commit
    from another loop then skipped the loop check: it was made (the group's offset moved to
    3) while its caller got asyncio's 'attached to a different loop'. It raises
    WrongEventLoopError, as at any other time, and commits nothing (failed before the fix)."""
    topic, _ = target.topic("c-wrong-loop-rebalance")
    produce(target, topic, [str(i).encode() for i in range(5)])
    group = f"g-{topic}"
    raised: list[BaseException] = []

    async def elsewhere(c: Consumer) -> None:
        try:
            await c.commit({(topic, 0): 3})
        except BaseException as exc:
            raised.append(exc)

    async def go() -> int:
        async def on_assign(tps: list[tuple[str, int]]) -> None:
            if tps:
                await asyncio.to_thread(asyncio.run, elsewhere(c))

        async with consumer(target, topic, group, on_assign=on_assign) as c:
            got = await c.getmany(1, DEADLINE)
            return got[0].offset

    assert run(go()) == 0
    assert len(raised) == 1 and isinstance(raised[0], WrongEventLoopError), raised
    assert committed(target, group, topic, 1)[0] < 0  # nothing committed
