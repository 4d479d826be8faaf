"""A NaN or negative ``timeout`` given to a wait of the producer or consumer means "do not wait"
(as the consumer's ``close`` read it already): asyncio would schedule a timer that never fires,
so the wait had no limit at all, and uvloop raised a bare ValueError."""

from __future__ import annotations

import asyncio
import math

import pytest
import uvloop

from sluice.client import ConsumerError, Producer, UndeliveredError
from tests.client.conftest import DEADLINE, Target
from tests.client.test_consumer import consumer

NAN = math.nan
SHORT = 10.0
"""Far beyond 'do not wait', far below 'never'."""


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_producer_flush_and_close_with_nan_do_not_wait(loop: str) -> None:
    async def main() -> None:
        # nothing listens on port 1: the record stays in librdkafka's hands
        p = Producer("127.0.0.1:1", metrics_registry=None, config={"message.timeout.ms": 60000})
        await p.start()
        p.send_nowait("t", b"x")
        assert await asyncio.wait_for(p.flush(NAN), SHORT) == 1
        assert await asyncio.wait_for(p.flush(-1.0), SHORT) == 1
        with pytest.raises(UndeliveredError):
            await asyncio.wait_for(p.close(NAN), SHORT)
        assert p.closed

    (uvloop.run if loop == "uvloop" else asyncio.run)(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_consumer_getmany_and_commit_with_nan_do_not_wait(target: Target, loop: str) -> None:
    topic, _ = target.topic(f"c-nan-timeout-{loop}")

    async def main() -> None:
        async with consumer(target, topic) as c:
            assert await asyncio.wait_for(c.getmany(10, NAN), SHORT) == []
            with pytest.raises(ConsumerError, match=r"not confirmed within 0\.0 s"):
                await asyncio.wait_for(c.commit({(topic, 0): 0}, timeout=NAN), SHORT)

    (uvloop.run if loop == "uvloop" else asyncio.run)(asyncio.wait_for(main(), DEADLINE))
