"""Handler-level broker tests: a real Broker over real logs in a temporary directory, driven by
typed requests on a real event loop (the wire is covered by tests/server and tests/clients)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sluice.broker.broker import Broker, Client
from sluice.config import BrokerConfig
from sluice.protocol import ApiKey, Request, RequestBody
from sluice.protocol import messages as m
from sluice.protocol.records import build_batch

T = TypeVar("T")


class BrokerHarness:
    """Runs coroutines against one broker on one private loop."""

    def __init__(self, data_dir: Path, settings: dict[str, str]) -> None:
        self.loop = asyncio.new_event_loop()
        config = BrokerConfig.from_settings(settings, data_dir=data_dir)
        self.broker = Broker.open(config)
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.broker.start()

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def call(self, api_key: ApiKey, version: int, body: RequestBody) -> Any:
        request = Request(api_key, version, 1, "test", body)
        return self.run(self.broker.dispatch(request, Client("127.0.0.1")))

    def call_wire(self, api_key: ApiKey, version: int, body: RequestBody) -> Any:
        """As :meth:`call`, but the request and the answer go through the codec at ``version``:
        the answer is what a client of that version reads (fields it lacks at their defaults)."""
        from sluice.protocol.codec import (
            decode_request,
            decode_response,
            encode_request,
            encode_response_bytes,
        )

        request = decode_request(encode_request(api_key, version, 1, "test", body)[4:])
        answer = self.call(api_key, version, request.body)
        _, decoded = decode_response(encode_response_bytes(api_key, version, 1, answer)[4:], api_key, version)
        return decoded

    def produce(
        self, topic: str, partition: int, batch: bytes, acks: int = 1, timeout_ms: int = 30_000
    ) -> m.ProduceResponse | None:
        body = m.ProduceRequest(
            acks=acks,
            timeout_ms=timeout_ms,
            topic_data=[
                m.ProduceTopicData(
                    name=topic,
                    partition_data=[m.ProducePartitionData(index=partition, records=bytearray(batch))],
                )
            ],
        )
        result: m.ProduceResponse | None = self.call(ApiKey.PRODUCE, 9, body)
        return result

    def close(self) -> None:
        self.run(self.broker.close())
        self.loop.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., BrokerHarness]]:
    made: list[BrokerHarness] = []

    def make(**settings: str) -> BrokerHarness:
        h = BrokerHarness(tmp_path / f"data-{len(made)}", {k.replace("_", "."): v for k, v in settings.items()})
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def value(tag: str, i: int, size: int = 10) -> bytes:
    return f"{tag}{i}".encode().ljust(size, b".")


def batch(n: int, tag: str, *, size: int = 10, ts: int = 1_000) -> bytes:
    return build_batch([(f"k{i}".encode(), value(tag, i, size)) for i in range(n)], base_timestamp=ts)
