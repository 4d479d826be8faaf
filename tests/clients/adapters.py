"""One small, uniform face over each real Kafka client, so every behaviour is written once and run
against confluent-kafka (librdkafka), kafka-python, aiokafka and kcat.

``Client.produce`` sends records with ``acks=all`` and waits for every delivery report;
``Client.consume`` reads one partition (or all of them) by explicit assignment, never through a
consumer group, from a start position until the end of the log (or until ``count`` records), with
a deadline; ``Client.list_offset`` asks the broker (ListOffsets) through the client's own API.
``Admin`` does the same for the three admin clients. Every call opens its client and closes it
again, so no test leaks a connection into the next.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shutil
import subprocess
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import aiokafka  # type: ignore[import-untyped]
import confluent_kafka as ck
from aiokafka.admin import (  # type: ignore[import-untyped]
    AIOKafkaAdminClient,
    RecordsToDelete,
)
from aiokafka.admin import (
    NewPartitions as AioNewPartitions,
)
from aiokafka.admin import (
    NewTopic as AioNewTopic,
)
from aiokafka.admin.config_resource import (  # type: ignore[import-untyped]
    ConfigResource as AioConfigResource,
)
from aiokafka.admin.config_resource import (
    ConfigResourceType as AioConfigResourceType,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported without __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from sluice.errors import ErrorCode
from sluice.protocol.records import Compression

with warnings.catch_warnings():
    # kafka-python 3 reads its protocol schemas at import time with importlib.resources'
    # deprecated read_text: one DeprecationWarning per schema, over a hundred.
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka  # type: ignore[import-untyped]
    import kafka.errors  # type: ignore[import-untyped]
    from kafka.admin import (  # type: ignore[import-untyped]
        ConfigResource as KpConfigResource,
    )
    from kafka.admin import ConfigResourceType as KpConfigResourceType
    from kafka.admin import KafkaAdminClient
    from kafka.admin import OffsetSpec as KpOffsetSpec

TIMEOUT = 30.0
"""Upper bound of any single client operation; reached only when something is broken."""

CLIENT_MAX_MESSAGE = 2_000_000
"""Every producer's own size limit, set above the broker's so the broker's limit is what a test
meets."""

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
"""Every compression codec of record batch v2; all four clients support all of them here."""

Headers = tuple[tuple[str, bytes | None], ...]
T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    """What a test produces. ``partition=None`` leaves the choice to the client's partitioner;
    ``timestamp=None`` to the client's clock (CreateTime)."""

    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None
    timestamp: int | None = None

    def at(self, partition: int, offset: int) -> Consumed:
        """The record as a consumer should see it at that position."""
        return Consumed(partition, offset, self.key, self.value, self.headers, self.timestamp)


@dataclass(frozen=True)
class Consumed:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    timestamp: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Delivery:
    """One delivery report: where the broker stored the record, or the Kafka error code."""

    partition: int
    offset: int
    error: int = ErrorCode.NONE

    @classmethod
    def failed(cls, code: int) -> Delivery:
        return cls(-1, -1, code)


@dataclass(frozen=True)
class ByTime:
    """Start at the first record whose timestamp is at or after ``timestamp`` (offsets_for_times)."""

    timestamp: int


EARLIEST: Literal["earliest"] = "earliest"
LATEST: Literal["latest"] = "latest"
Position = Literal["earliest", "latest"] | ByTime
Start = Position | int


class Read(NamedTuple):
    """What ``Client.consume`` reads: one partition (None: every partition) from ``start``,
    ``limit`` records or (None) all up to the end of the log; ``when_positioned`` runs
    once the consumer knows its start offset, before it has read anything."""

    topic: str
    partition: int | None
    start: Start
    limit: int | None  # count: a name tuple already has
    when_positioned: Callable[[], object] | None


def expected_positions(
    records: Sequence[Record], already: dict[int, int] | None = None
) -> list[Consumed]:
    """Where records sent to explicit partitions land: each partition's next offsets, in order."""
    next_offset = dict(already or {})
    out = []
    for r in records:
        assert r.partition is not None, "only records with an explicit partition have known offsets"
        offset = next_offset.get(r.partition, 0)
        next_offset[r.partition] = offset + 1
        out.append(r.at(r.partition, offset))
    return out


def _deadline_passed(deadline: float, what: str, got: Sequence[object]) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(
            f"{what}: gave up after {TIMEOUT}s with {len(got)} records: {got[-3:]!r}"
        )


class Client(ABC):
    name: ClassVar[str]
    """Keys, values and headers must be text lines (kcat reads lines and prints JSON); such a
    client also cannot tell an empty key or value from a null one."""
    null_header_values: ClassVar[bool] = True
    null_key_and_value: ClassVar[bool] = True
    """Whether the client sends a record whose key and value are both null."""

    def stored_codec(self, codec: str) -> int:
        """The codec the client's batches carry when it is asked for ``codec``."""
        return CODEC_IDS[codec]

    def produce(
        self, bootstrap: str, topic: str, records: Sequence[Record], *, compression: str = "none"
    ) -> list[Delivery] | None:
        """Send with acks=all, wait for every report; None when the client reports no offsets."""
        return self._produce(bootstrap, topic, records, compression)

    def consume(
        self,
        bootstrap: str,
        topic: str,
        partition: int | None = 0,
        *,
        start: Start = EARLIEST,
        count: int | None = None,
        when_positioned: Callable[[], object] | None = None,
    ) -> list[Consumed]:
        """See ``Read``."""
        return self._consume(bootstrap, Read(topic, partition, start, count, when_positioned))

    @abstractmethod
    def _produce(
        self, bootstrap: str, topic: str, records: Sequence[Record], compression: str
    ) -> list[Delivery] | None: ...

    @abstractmethod
    def _consume(self, bootstrap: str, read: Read) -> list[Consumed]: ...

    @abstractmethod
    def list_offset(self, bootstrap: str, topic: str, partition: int, spec: Position) -> int | None:
        """ListOffsets through the client's API; None when no record is at or after a time."""


# ---------------------------------------------------------------------------------------------
# confluent-kafka (librdkafka)


CODEC_IDS = {
    "none": Compression.NONE,
    "gzip": Compression.GZIP,
    "snappy": Compression.SNAPPY,
    "lz4": Compression.LZ4,
    "zstd": Compression.ZSTD,
}


def librdkafka_stored_codec(version: str, codec: str) -> int:
    """librdkafka before 2.11.1 compresses with gzip, snappy or lz4 only when the broker
    advertises Produce v0 (rd_kafka_msgset_writer_select_MsgVersion asks whether Produce is
    supported in [0, 0]; fixed by "Fix feature version ranges", librdkafka #5130). sluice
    advertises Produce 3-9, record batch v2 only, so such a client sends those batches
    uncompressed; zstd is gated on Produce 7 and Fetch 10, which sluice has."""
    if tuple(int(x) for x in version.split(".")[:3]) < (2, 11, 1) and codec in (
        "gzip",
        "snappy",
        "lz4",
    ):
        return Compression.NONE
    return CODEC_IDS[codec]


def confluent_config(bootstrap: str, **extra: object) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "log.connection.close": False, **extra}


def confluent_consumer(bootstrap: str, **extra: object) -> ck.Consumer:
    # librdkafka insists on a group.id even for assign(); nothing here joins or commits.
    return ck.Consumer(
        confluent_config(
            bootstrap,
            **{
                "group.id": "sluice-compat",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            },
            **extra,
        )
    )


def confluent_headers(msg: ck.Message) -> Headers:
    found = msg.headers() or []
    pairs = found.items() if isinstance(found, dict) else found
    return tuple((k, v if v is None or isinstance(v, bytes) else v.encode()) for k, v in pairs)


class ConfluentClient(Client):
    name = "confluent-kafka"

    def stored_codec(self, codec: str) -> int:
        return librdkafka_stored_codec(ck.libversion()[0], codec)

    def _produce(
        self, bootstrap: str, topic: str, records: Sequence[Record], compression: str
    ) -> list[Delivery]:
        producer = ck.Producer(
            confluent_config(
                bootstrap,
                **{"acks": "all", "compression.type": compression, "linger.ms": 5},
                **{"message.max.bytes": CLIENT_MAX_MESSAGE},
            )
        )
        reports: dict[int, Delivery] = {}

        def reporter(i: int) -> Callable[[ck.KafkaError | None, ck.Message], None]:
            def report(err: ck.KafkaError | None, msg: ck.Message) -> None:
                reports[i] = (
                    Delivery.failed(err.code())
                    if err
                    else Delivery(msg.partition() or 0, msg.offset() or 0)
                )

            return report

        for i, r in enumerate(records):
            producer.produce(
                topic,
                value=r.value,
                key=r.key,
                partition=-1 if r.partition is None else r.partition,
                headers=list(r.headers) or None,
                timestamp=r.timestamp or 0,
                on_delivery=reporter(i),
            )
        assert producer.flush(TIMEOUT) == 0, "confluent producer: deliveries still pending"
        return [reports[i] for i in range(len(records))]

    def _consume(self, bootstrap: str, read: Read) -> list[Consumed]:
        topic, partition, start, count, when_positioned = read
        # A short long-poll so the end of the partition is reported soon after the last record.
        consumer = confluent_consumer(
            bootstrap, **{"enable.partition.eof": True, "fetch.wait.max.ms": 100}
        )
        try:
            if partition is None:
                admin = ConfluentAdmin(bootstrap)
                partitions = list(range(admin.partition_count(topic) or 0))
                admin.close()
            else:
                partitions = [partition]
            consumer.assign(self._start(consumer, topic, partitions, start))
            out: list[Consumed] = []
            at_end: set[int] = set()
            deadline = time.monotonic() + TIMEOUT
            while len(out) < count if count is not None else at_end != set(partitions):
                _deadline_passed(deadline, "confluent consumer", out)
                msg = consumer.poll(0.05)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    assert err.code() == ck.KafkaError._PARTITION_EOF, f"consumer error: {err}"
                    at_end.add(msg.partition() or 0)
                    if when_positioned is not None and at_end == set(partitions):
                        when_positioned()
                        when_positioned = None
                    continue
                out.append(
                    Consumed(
                        msg.partition() or 0,
                        msg.offset() or 0,
                        msg.key(),
                        msg.value(),
                        confluent_headers(msg),
                        msg.timestamp()[1],
                    )
                )
            return out
        finally:
            consumer.close()

    @staticmethod
    def _start(
        consumer: ck.Consumer, topic: str, partitions: list[int], start: Start
    ) -> list[ck.TopicPartition]:
        if isinstance(start, ByTime):
            found = consumer.offsets_for_times(
                [ck.TopicPartition(topic, p, start.timestamp) for p in partitions], timeout=TIMEOUT
            )
            # -1: nothing at or after that time, so start at the end.
            return [
                ck.TopicPartition(
                    topic, tp.partition, tp.offset if tp.offset >= 0 else ck.OFFSET_END
                )
                for tp in found
            ]
        if start == EARLIEST:
            offset = ck.OFFSET_BEGINNING
        elif start == LATEST:
            offset = ck.OFFSET_END
        else:
            offset = start
        return [ck.TopicPartition(topic, p, offset) for p in partitions]

    def list_offset(self, bootstrap: str, topic: str, partition: int, spec: Position) -> int | None:
        consumer = confluent_consumer(bootstrap)
        try:
            if isinstance(spec, ByTime):
                (found,) = consumer.offsets_for_times(
                    [ck.TopicPartition(topic, partition, spec.timestamp)], timeout=TIMEOUT
                )
                assert found.error is None, found.error
                return found.offset if found.offset >= 0 else None
            low, high = consumer.get_watermark_offsets(
                ck.TopicPartition(topic, partition), timeout=TIMEOUT, cached=False
            )
            return int(low if spec == EARLIEST else high)
        finally:
            consumer.close()


# ---------------------------------------------------------------------------------------------
# kafka-python


def send_arguments(r: Record) -> dict[str, Any]:
    """``send`` arguments of kafka-python and aiokafka (the same API)."""
    return {
        "key": r.key,
        "value": r.value,
        "headers": list(r.headers),
        "partition": r.partition,
        "timestamp_ms": r.timestamp,
    }


def from_consumer_record(r: Any) -> Consumed:
    """A kafka-python or aiokafka ``ConsumerRecord``."""
    return Consumed(r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp)


def kafka_python_producer(bootstrap: str, **extra: object) -> Any:
    # kafka-python 3 turns idempotence on by default for any broker >= 0.11 and then needs
    # InitProducerId, which sluice does not serve (and so does not advertise): without this
    # the producer fails fatally on its first send.
    return kafka.KafkaProducer(bootstrap_servers=bootstrap, **extra)


class KafkaPythonClient(Client):
    name = "kafka-python"
    null_header_values = False  # the producer refuses (str, None) headers
    null_key_and_value = False  # "Need at least one: key or value"

    def _produce(
        self, bootstrap: str, topic: str, records: Sequence[Record], compression: str
    ) -> list[Delivery]:
        producer = kafka_python_producer(
            bootstrap,
            acks="all",
            compression_type=None if compression == "none" else compression,
            linger_ms=5,
            max_request_size=CLIENT_MAX_MESSAGE,
        )
        try:
            futures = [producer.send(topic, **send_arguments(r)) for r in records]
            producer.flush(TIMEOUT)
            out = []
            for f in futures:
                try:
                    md = f.get(TIMEOUT)
                    out.append(Delivery(md.partition, md.offset))
                except kafka.errors.KafkaError as exc:
                    out.append(Delivery.failed(exc.errno))
            return out
        finally:
            producer.close(TIMEOUT)

    def _consume(self, bootstrap: str, read: Read) -> list[Consumed]:
        topic, partition, start, count, when_positioned = read
        consumer = kafka.KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        try:
            if partition is None:
                partitions = sorted(consumer.partitions_for_topic(topic))
            else:
                partitions = [partition]
            tps = [kafka.TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            if isinstance(start, ByTime):
                found = consumer.offsets_for_times({tp: start.timestamp for tp in tps})
                for tp in tps:
                    if found[tp] is None:
                        consumer.seek_to_end(tp)
                    else:
                        consumer.seek(tp, found[tp].offset)
            elif start == EARLIEST:
                consumer.seek_to_beginning(*tps)
            elif start == LATEST:
                consumer.seek_to_end(*tps)
            else:
                for tp in tps:
                    consumer.seek(tp, start)
            for tp in tps:
                consumer.position(tp)  # resolves the start (a ListOffsets) before anything is read
            ends = consumer.end_offsets(tps)
            if when_positioned is not None:
                when_positioned()
            out: list[Consumed] = []
            deadline = time.monotonic() + TIMEOUT

            def done() -> bool:
                if count is not None:
                    return len(out) >= count
                return all(consumer.position(tp) >= ends[tp] for tp in tps)

            while not done():
                _deadline_passed(deadline, "kafka-python consumer", out)
                for batch in consumer.poll(timeout_ms=50).values():
                    out.extend(map(from_consumer_record, batch))
            return out
        finally:
            consumer.close()

    def list_offset(self, bootstrap: str, topic: str, partition: int, spec: Position) -> int | None:
        consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        tp = kafka.TopicPartition(topic, partition)
        try:
            if isinstance(spec, ByTime):
                found = consumer.offsets_for_times({tp: spec.timestamp})[tp]
                return None if found is None else int(found.offset)
            lookup = consumer.beginning_offsets if spec == EARLIEST else consumer.end_offsets
            return int(lookup([tp])[tp])
        finally:
            consumer.close()


# ---------------------------------------------------------------------------------------------
# aiokafka


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT + 5))


class AiokafkaClient(Client):
    name = "aiokafka"
    null_key_and_value = False  # the producer asserts "Need at least one: key or value"

    def _produce(
        self, bootstrap: str, topic: str, records: Sequence[Record], compression: str
    ) -> list[Delivery]:
        return run_async(self._produce_async(bootstrap, topic, records, compression))

    @staticmethod
    async def _produce_async(
        bootstrap: str, topic: str, records: Sequence[Record], compression: str
    ) -> list[Delivery]:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            compression_type=None if compression == "none" else compression,
            linger_ms=5,
            max_request_size=CLIENT_MAX_MESSAGE,
        )
        await producer.start()
        try:
            futures = [await producer.send(topic, **send_arguments(r)) for r in records]
            out = []
            for f in futures:
                try:
                    md = await f
                    out.append(Delivery(md.partition, md.offset))
                except aiokafka.errors.KafkaError as exc:
                    out.append(Delivery.failed(exc.errno))
            return out
        finally:
            await producer.stop()

    def _consume(self, bootstrap: str, read: Read) -> list[Consumed]:
        return run_async(self._consume_async(bootstrap, *read))

    @staticmethod
    async def _consume_async(
        bootstrap: str,
        topic: str,
        partition: int | None,
        start: Start,
        count: int | None,
        when_positioned: Callable[[], object] | None,
    ) -> list[Consumed]:
        consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            if partition is None:
                # The consumer has no public "partitions of this topic" that loads metadata.
                cluster = await consumer._client.fetch_all_metadata()
                partitions = sorted(cluster.partitions_for_topic(topic))
            else:
                partitions = [partition]
            tps = [aiokafka.TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            if isinstance(start, ByTime):
                found = await consumer.offsets_for_times({tp: start.timestamp for tp in tps})
                for tp in tps:
                    if found[tp] is None:
                        await consumer.seek_to_end(tp)
                    else:
                        consumer.seek(tp, found[tp].offset)
            elif start == EARLIEST:
                await consumer.seek_to_beginning(*tps)
            elif start == LATEST:
                await consumer.seek_to_end(*tps)
            else:
                for tp in tps:
                    consumer.seek(tp, start)
            for tp in tps:
                await consumer.position(tp)
            ends = await consumer.end_offsets(tps)
            if when_positioned is not None:
                await asyncio.to_thread(when_positioned)
            out: list[Consumed] = []
            deadline = time.monotonic() + TIMEOUT

            async def done() -> bool:
                if count is not None:
                    return len(out) >= count
                return all([await consumer.position(tp) >= ends[tp] for tp in tps])

            while not await done():
                _deadline_passed(deadline, "aiokafka consumer", out)
                for batch in (await consumer.getmany(*tps, timeout_ms=50)).values():
                    out.extend(map(from_consumer_record, batch))
            return out
        finally:
            await consumer.stop()

    def list_offset(self, bootstrap: str, topic: str, partition: int, spec: Position) -> int | None:
        return run_async(self._list_offset(bootstrap, topic, partition, spec))

    @staticmethod
    async def _list_offset(
        bootstrap: str, topic: str, partition: int, spec: Position
    ) -> int | None:
        consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await consumer.start()
        tp = aiokafka.TopicPartition(topic, partition)
        try:
            if isinstance(spec, ByTime):
                found = (await consumer.offsets_for_times({tp: spec.timestamp}))[tp]
                return None if found is None else int(found.offset)
            lookup = consumer.beginning_offsets if spec == EARLIEST else consumer.end_offsets
            return int((await lookup([tp]))[tp])
        finally:
            await consumer.stop()


# ---------------------------------------------------------------------------------------------
# kcat (librdkafka's command-line client, a separate process)

KCAT_KEY_SEPARATOR = "\t"
_LIBRDKAFKA_ERRORS = {ck.KafkaError(code).str(): int(code) for code in ErrorCode}
"""librdkafka's text for each broker error (kcat prints only the text)."""


def kcat(*args: str) -> list[str]:
    exe = shutil.which("kcat")
    if exe is None:
        raise RuntimeError(
            "kcat is not installed: ./scripts/test installs it (Debian package kcat)"
        )
    return [exe, *args]


class KcatClient(Client):
    name = "kcat"

    def stored_codec(self, codec: str) -> int:
        version = subprocess.run(kcat("-V"), capture_output=True, text=True, check=True).stdout
        found = re.search(r"librdkafka (\d+\.\d+\.\d+)", version)
        assert found is not None, version
        return librdkafka_stored_codec(found.group(1), codec)

    def _produce(
        self, bootstrap: str, topic: str, records: Sequence[Record], compression: str
    ) -> list[Delivery] | None:
        """One kcat run per stretch of records sharing a partition and headers (kcat's -p and -H
        hold for a whole run). Delivery reports name no message, so offsets are known only when
        a run targets one partition (reports of one partition come in offset order)."""
        out: list[Delivery] | None = []
        for (partition, headers), run in groupby(records, key=lambda r: (r.partition, r.headers)):
            reports = self._produce_run(
                bootstrap, topic, list(run), partition, headers, compression
            )
            out = None if out is None or reports is None else out + reports
        return out

    @staticmethod
    def _produce_run(
        bootstrap: str,
        topic: str,
        run: list[Record],
        partition: int | None,
        headers: Headers,
        compression: str,
    ) -> list[Delivery] | None:
        assert all(r.timestamp is None for r in run), "kcat cannot set a record's timestamp"
        lines = []
        for r in run:
            key, value = r.key or b"", r.value or b""
            assert b"\n" not in key + value and KCAT_KEY_SEPARATOR.encode() not in key, r
            assert (r.key is None) == (key == b"") and (r.value is None) == (value == b""), (
                "kcat -Z sends an empty key or value as null, so it cannot send an empty one"
            )
            lines.append(key + KCAT_KEY_SEPARATOR.encode() + value + b"\n")
        args = [
            "-b",
            bootstrap,
            "-P",
            "-t",
            topic,
            "-K",
            KCAT_KEY_SEPARATOR,
            "-Z",
            "-z",
            compression,
        ]
        args += [
            "-X",
            "acks=all",
            "-X",
            f"message.max.bytes={CLIENT_MAX_MESSAGE}",
            "-v",
            "-v",
            "-v",
        ]
        if partition is not None:
            args += ["-p", str(partition)]
        for name, header in headers:
            args += ["-H", name if header is None else f"{name}={header.decode()}"]
        done = subprocess.run(
            kcat(*args), input=b"".join(lines), capture_output=True, timeout=TIMEOUT
        )
        reports = []
        for line in done.stderr.decode().splitlines():
            if line.startswith("% Message delivered to partition "):
                p, _, o = line.removeprefix("% Message delivered to partition ").split()[:3]
                reports.append(Delivery(int(p), int(o.rstrip(")"))))
            elif line.startswith("% Delivery failed for message: "):
                reports.append(Delivery.failed(_LIBRDKAFKA_ERRORS[line.split(": ", 1)[1]]))
        assert len(reports) == len(run), (
            f"kcat reported {len(reports)} of {len(run)}: {done.stderr!r}"
        )
        assert done.returncode == (1 if any(r.error for r in reports) else 0), done.stderr
        return reports if partition is not None else None

    def _consume(self, bootstrap: str, read: Read) -> list[Consumed]:
        topic, partition, start, count, when_positioned = read
        if isinstance(start, ByTime):
            offset = f"s@{start.timestamp}"
        else:
            offset = {EARLIEST: "beginning", LATEST: "end"}.get(str(start), str(start))
        args = ["-b", bootstrap, "-C", "-t", topic, "-o", offset, "-J"]
        args += ["-e"] if count is None else ["-c", str(count)]
        if partition is not None:
            args += ["-p", str(partition)]
        with subprocess.Popen(kcat(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            try:
                stderr = b""
                if when_positioned is not None:
                    assert partition is not None, "kcat: when_positioned needs one partition"
                    stderr = _read_until(proc, b"% Reached end of topic ")
                    when_positioned()
                stdout, rest = proc.communicate(timeout=TIMEOUT)
            finally:
                if proc.poll() is None:
                    proc.kill()
            assert proc.returncode == 0, (stderr + rest).decode()
        return [self._record(json.loads(line)) for line in stdout.decode().splitlines()]

    @staticmethod
    def _record(m: dict[str, Any]) -> Consumed:
        pairs = m.get("headers") or []

        def text(s: str | None) -> bytes | None:
            return None if s is None else s.encode()

        headers = tuple((pairs[i], text(pairs[i + 1])) for i in range(0, len(pairs), 2))
        return Consumed(
            m["partition"], m["offset"], text(m["key"]), text(m["payload"]), headers, m["ts"]
        )

    def list_offset(self, bootstrap: str, topic: str, partition: int, spec: Position) -> int | None:
        ts = spec.timestamp if isinstance(spec, ByTime) else {EARLIEST: -2, LATEST: -1}[spec]
        done = subprocess.run(
            kcat("-b", bootstrap, "-Q", "-t", f"{topic}:{partition}:{ts}"),
            capture_output=True,
            timeout=TIMEOUT,
            check=True,
        )
        # "<topic> [<partition>] offset <n>"
        offset = int(done.stdout.decode().split()[-1])
        return None if offset < 0 else offset


def _read_until(proc: subprocess.Popen[bytes], marker: bytes) -> bytes:
    """Read a child's stderr until ``marker`` shows up (a readiness line), with the deadline."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + TIMEOUT
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise TimeoutError(f"never saw {marker!r} on stderr: {seen!r}")
        ready, _, _ = select.select([proc.stderr], [], [], left)
        if ready:
            seen += os.read(proc.stderr.fileno(), 65536)
    return seen


CLIENTS: tuple[Client, ...] = (
    ConfluentClient(),
    KafkaPythonClient(),
    AiokafkaClient(),
    KcatClient(),
)


# ---------------------------------------------------------------------------------------------
# Admin clients


class Admin(ABC):
    """Topic administration through one admin client. Operations answer a Kafka error code."""

    name: ClassVar[str]

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def close(self) -> None:  # noqa: B027 (only some clients hold a connection)
        pass

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication: int = 1,
        configs: dict[str, str] | None = None,
    ) -> int:
        return self._create(name, partitions, replication, configs or {})

    @abstractmethod
    def _create(
        self, name: str, partitions: int, replication: int, configs: dict[str, str]
    ) -> int: ...

    @abstractmethod
    def delete_topic(self, name: str) -> int: ...

    @abstractmethod
    def create_partitions(self, name: str, total: int) -> int: ...

    @abstractmethod
    def describe_config(self, name: str) -> dict[str, str | None]: ...

    @abstractmethod
    def set_config(self, name: str, key: str, value: str) -> int: ...

    @abstractmethod
    def delete_records(self, topic: str, partition: int, before: int) -> int:
        """Returns the partition's new low watermark."""

    @abstractmethod
    def partition_count(self, name: str) -> int | None:
        """Partitions of the topic in a metadata answer; None when the topic does not exist."""


def _code_of(call: Callable[[], object]) -> int:
    """The Kafka error code an admin call raised, or 0."""
    try:
        call()
    except ck.KafkaException as exc:
        return int(exc.args[0].code())
    except (kafka.errors.KafkaError, aiokafka.errors.KafkaError) as exc:
        return int(exc.errno)
    return ErrorCode.NONE


class ConfluentAdmin(Admin):
    name = "confluent-kafka"

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap)
        self.admin = AdminClient(confluent_config(bootstrap))

    def close(self) -> None:
        del self.admin  # librdkafka's handle is destroyed with its last reference

    def _create(self, name: str, partitions: int, replication: int, configs: dict[str, str]) -> int:
        new = NewTopic(name, partitions, replication, config=configs)
        return _code_of(lambda: self.admin.create_topics([new])[name].result(TIMEOUT))

    def delete_topic(self, name: str) -> int:
        return _code_of(lambda: self.admin.delete_topics([name])[name].result(TIMEOUT))

    def create_partitions(self, name: str, total: int) -> int:
        new = NewPartitions(name, total)
        return _code_of(lambda: self.admin.create_partitions([new])[name].result(TIMEOUT))

    def describe_config(self, name: str) -> dict[str, str | None]:
        resource = ConfigResource(ResourceType.TOPIC, name)
        entries = self.admin.describe_configs([resource])[resource].result(TIMEOUT)
        return {k: v.value for k, v in entries.items()}

    def set_config(self, name: str, key: str, value: str) -> int:
        entry = ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
        resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[entry])
        return _code_of(
            lambda: self.admin.incremental_alter_configs([resource])[resource].result(TIMEOUT)
        )

    def delete_records(self, topic: str, partition: int, before: int) -> int:
        tp = ck.TopicPartition(topic, partition, before)
        return int(self.admin.delete_records([tp])[tp].result(TIMEOUT).low_watermark)

    def partition_count(self, name: str) -> int | None:
        topic = self.admin.list_topics(timeout=TIMEOUT).topics.get(name)
        return None if topic is None else len(topic.partitions)


class KafkaPythonAdmin(Admin):
    name = "kafka-python"

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap)
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)

    def close(self) -> None:
        self.admin.close()

    def _create(self, name: str, partitions: int, replication: int, configs: dict[str, str]) -> int:
        new = {
            "num_partitions": partitions,
            "replication_factor": replication,
            "configs": configs,
        }
        return _code_of(lambda: self.admin.create_topics({name: new}))

    def delete_topic(self, name: str) -> int:
        return _code_of(lambda: self.admin.delete_topics([name]))

    def create_partitions(self, name: str, total: int) -> int:
        return _code_of(lambda: self.admin.create_partitions({name: total}))

    def describe_config(self, name: str) -> dict[str, str | None]:
        resource = KpConfigResource(KpConfigResourceType.TOPIC, name)
        found = self.admin.describe_configs([resource], config_filter="all")
        return {k: v["value"] for k, v in found["topic"][name].items()}

    def set_config(self, name: str, key: str, value: str) -> int:
        resource = KpConfigResource(KpConfigResourceType.TOPIC, name, configs={key: value})
        result = self.admin.alter_configs([resource])["topic"][name]
        if result == "OK":
            return ErrorCode.NONE
        error = re.match(r"\[Error (-?\d+)\]", result)  # the answer is the error's text
        assert error is not None, result
        return int(error.group(1))

    def delete_records(self, topic: str, partition: int, before: int) -> int:
        tp = kafka.TopicPartition(topic, partition)
        return int(self.admin.delete_records({tp: before})[tp]["low_watermark"])

    def partition_count(self, name: str) -> int | None:
        found = [t for t in self.admin.describe_topics() if t["name"] == name]
        return len(found[0]["partitions"]) if found else None


class AiokafkaAdmin(Admin):
    """aiokafka's admin client speaks the older APIs: AlterConfigs (it replaces a topic's whole
    override set) rather than IncrementalAlterConfigs."""

    name = "aiokafka"

    def _run(self, op: Callable[[Any], Awaitable[T]]) -> T:
        async def go() -> T:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                return await op(admin)
            finally:
                await admin.close()

        return run_async(go())

    @staticmethod
    def _codes(response: Any) -> int:
        """The one topic's error code in a CreateTopics/DeleteTopics/AlterConfigs answer."""
        (entries,) = [v for v in response.to_object().values() if isinstance(v, list)]
        (entry,) = entries
        return int(entry["error_code"])

    def _create(self, name: str, partitions: int, replication: int, configs: dict[str, str]) -> int:
        new = AioNewTopic(name, partitions, replication, topic_configs=configs)
        return self._codes(self._run(lambda a: a.create_topics([new])))

    def delete_topic(self, name: str) -> int:
        return self._codes(self._run(lambda a: a.delete_topics([name])))

    def create_partitions(self, name: str, total: int) -> int:
        return _code_of(
            lambda: self._run(lambda a: a.create_partitions({name: AioNewPartitions(total)}))
        )

    def describe_config(self, name: str) -> dict[str, str | None]:
        resource = AioConfigResource(AioConfigResourceType.TOPIC, name)
        (response,) = self._run(lambda a: a.describe_configs([resource]))
        (result,) = response.to_object()["resources"]
        assert result["error_code"] == 0, result
        return {e["config_names"]: e["config_value"] for e in result["config_entries"]}

    def set_config(self, name: str, key: str, value: str) -> int:
        resource = AioConfigResource(AioConfigResourceType.TOPIC, name, configs={key: value})
        (response,) = self._run(lambda a: a.alter_configs([resource]))
        return self._codes(response)

    def delete_records(self, topic: str, partition: int, before: int) -> int:
        tp = aiokafka.TopicPartition(topic, partition)
        found = self._run(lambda a: a.delete_records({tp: RecordsToDelete(before)}))
        return int(found[tp])

    def partition_count(self, name: str) -> int | None:
        # All topics: a Metadata request naming a missing topic would auto-create it.
        found = [t for t in self._run(lambda a: a.describe_topics()) if t["topic"] == name]
        return len(found[0]["partitions"]) if found else None


ADMINS: tuple[type[Admin], ...] = (ConfluentAdmin, KafkaPythonAdmin, AiokafkaAdmin)


def with_deliveries(
    records: Sequence[Record], deliveries: Sequence[Delivery] | None
) -> Iterator[Consumed]:
    """Each record where its delivery report says it was stored."""
    assert deliveries is not None, "this client reports no offsets"
    for r, d in zip(records, deliveries, strict=True):
        assert d.error == ErrorCode.NONE, d
        yield r.at(d.partition, d.offset)


def confluent_max_timestamp(bootstrap: str, topic: str) -> tuple[int, int]:
    """ListOffsets -3 (max timestamp) of partition 0 through confluent-kafka's admin client:
    (offset, timestamp)."""
    admin = ConfluentAdmin(bootstrap).admin
    tp = ck.TopicPartition(topic, 0)
    spec = OffsetSpec.max_timestamp()  # type: ignore[no-untyped-call]  # unannotated in the stubs
    found = admin.list_offsets({tp: spec})[tp].result(TIMEOUT)
    return found.offset, found.timestamp


def kafka_python_max_timestamp(bootstrap: str, topic: str) -> tuple[int, int]:
    """The same through kafka-python's admin client."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        tp = kafka.TopicPartition(topic, 0)
        found: Any = admin.list_partition_offsets({tp: KpOffsetSpec.MAX_TIMESTAMP})[tp]
        return found.offset, found.timestamp
    finally:
        admin.close()
