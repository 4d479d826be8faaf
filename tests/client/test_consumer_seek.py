"""``seek`` at the edges of a consumer's life: before ``start`` and after ``close`` it raises
at once, saying so, and a seek in flight when ``close`` comes ends (it hung forever:
nothing answered it once the fetch thread was let go)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sluice.client import Consumer, ConsumerClosedError, ConsumerError
from tests.client.conftest import DEADLINE, Target
from tests.client.test_consumer import produce, run

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
