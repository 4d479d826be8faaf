"""What the broker counts as it works: requests, their error codes and latencies by API, and
bytes and records sent to consumers by topic (what producers appended, each partition log
counts itself: ``PartitionLog.appended_records``).

Plain integers on the event loop's thread, bumped once per request (or per partition of a
fetch answer), never per record: record counts are the batch headers' ``recordsCount``.
Nothing here knows Prometheus: the server's metrics collector reads these counters when it is
scraped and shapes them into metric families.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections.abc import Callable, Container
from typing import Any

from sluice.protocol.messages import FetchResponse, ProduceResponse
from sluice.protocol.records import Bytes, count_records
from sluice.protocol.schema import Array

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Upper bounds in seconds of the request latency histogram (an unbounded bucket follows).
Long polls and parked joins count their wait, as in Kafka's TotalTimeMs."""

CONNECTION_CLOSED = -1000
"""Not a Kafka error code: the request was answered by closing its connection (a failed acks=0
produce, a handler's unexpected failure)."""


class ApiStats:
    __slots__ = ("buckets", "errors", "requests", "seconds")

    def __init__(self) -> None:
        self.requests = 0
        self.errors: dict[int, int] = {}
        """Error code -> how many times an answer carried it (every partition or resource that
        failed counts, as Kafka's ErrorsPerSec does)."""
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0


class TopicTraffic:
    __slots__ = ("bytes_out", "records_out")

    def __init__(self) -> None:
        self.bytes_out = 0
        self.records_out = 0


class BrokerStats:
    def __init__(self) -> None:
        self.apis: dict[int, ApiStats] = {}
        self.topics: dict[str, TopicTraffic] = {}

    def answered(self, api_key: int, seconds: float, body: Any) -> None:
        """A request was answered with ``body`` (None: an acks=0 produce) after ``seconds``."""
        stats = self._api(api_key, seconds)
        if body is None:
            return
        kind = type(body)
        if kind is ProduceResponse:  # the hot ones, walked without the generic machinery
            errors = stats.errors
            for topic in body.responses:
                for part in topic.partition_responses:
                    if part.error_code:
                        errors[part.error_code] = errors.get(part.error_code, 0) + 1
        elif kind is FetchResponse:
            errors = stats.errors
            if body.error_code:
                errors[body.error_code] = errors.get(body.error_code, 0) + 1
            for answer in body.responses:
                for data in answer.partitions:
                    if data.error_code:
                        errors[data.error_code] = errors.get(data.error_code, 0) + 1
        else:
            count_errors(body, stats.errors)

    def closed(self, api_key: int, seconds: float) -> None:
        """A request's answer was to close its connection."""
        errors = self._api(api_key, seconds).errors
        errors[CONNECTION_CLOSED] = errors.get(CONNECTION_CLOSED, 0) + 1

    def _api(self, api_key: int, seconds: float) -> ApiStats:
        stats = self.apis.get(api_key)
        if stats is None:
            stats = self.apis[api_key] = ApiStats()
        stats.requests += 1
        stats.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        stats.seconds += seconds
        return stats

    def fetched(self, topic: str, records: Bytes) -> None:
        """Batches of ``topic`` were sent in a Fetch answer (a partial last batch is not
        counted as records, but its bytes are: they were sent)."""
        traffic = self.topics.get(topic)
        if traffic is None:
            traffic = self.topics[topic] = TopicTraffic()
        traffic.bytes_out += len(records)
        traffic.records_out += count_records(records)

    def forget_topics_except(self, existing: Container[str]) -> None:
        """Drop the traffic of deleted topics (a topic created again starts from zero, which
        Prometheus reads as a counter reset)."""
        for name in [n for n in self.topics if n not in existing]:
            del self.topics[name]


# -- error codes of any answer ------------------------------------------------------------------

Counter = Callable[[Any, dict[int, int]], None]
"""Adds the non-zero error codes of one message (and of the structs it holds) to a tally."""

_COUNTERS: dict[type, Counter | None] = {}


def count_errors(body: Any, errors: dict[int, int]) -> None:
    """Add every non-zero error code of an answer, at every level (request, topic, partition,
    resource), to ``errors``."""
    counter = _counter(type(body))
    if counter is not None:
        counter(body, errors)


def _counter(cls: type) -> Counter | None:
    """A function walking only the fields of ``cls`` that hold error codes or structs holding
    them (None when there are none), built once per class: an answer costs a few attribute
    reads per level, not a walk over every field."""
    if cls in _COUNTERS:
        return _COUNTERS[cls]
    _COUNTERS[cls] = None  # a struct holding itself is walked once, not forever
    codes: list[str] = []
    lists: list[tuple[str, Counter]] = []
    structs: list[tuple[str, Counter]] = []
    for fld in dataclasses.fields(cls):
        ftype = getattr(fld.metadata.get("kafka"), "type", None)
        if fld.name.endswith("error_code"):
            codes.append(fld.name)
        elif isinstance(ftype, Array) and isinstance(ftype.of, type):
            if (inner := _counter(ftype.of)) is not None:
                lists.append((fld.name, inner))
        elif isinstance(ftype, type) and (inner := _counter(ftype)) is not None:
            structs.append((fld.name, inner))
    if not (codes or lists or structs):
        return None

    def count(body: Any, errors: dict[int, int]) -> None:
        for name in codes:
            code = getattr(body, name)
            if code:
                errors[code] = errors.get(code, 0) + 1
        for name, inner in lists:
            for item in getattr(body, name) or ():
                inner(item, errors)
        for name, inner in structs:
            item = getattr(body, name)
            if item is not None:
                inner(item, errors)

    _COUNTERS[cls] = count
    return count
