"""``LogManager``: owns a data directory: its topics, their configuration and partition logs.

Layout (Kafka's, plus a metadata folder because sluice has no ZooKeeper or KRaft to hold it)::

    DATA/
      .topics/<topic>.json       name, partition count, topic id, config overrides (atomic writes)
      <topic>-<partition>/       one PartitionLog each
      <topic>-<partition>.<id>-delete/   a deleted partition on its way out

A topic exists exactly when its metadata file does: deletion removes that file first, so a crash
half-way through leaves orphan partition directories that the next open recognises and removes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sluice.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    SluiceError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from sluice.storage.config import TOPIC_CONFIG_KEYS, LogConfig
from sluice.storage.log import Clock, PartitionLog, _fsync_dir, _write_bytes_atomic, wall_clock_ms

log = logging.getLogger(__name__)

_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_PARTITION_DIR = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)$")
_META_DIR = ".topics"
MAX_PARTITIONS = 10_000


def validate_topic_name(name: str) -> None:
    """Kafka's rules: 1-249 of [a-zA-Z0-9._-], and not '.' or '..'."""
    if name in (".", "..") or not _TOPIC_NAME.match(name):
        raise InvalidTopicError(
            f"invalid topic name {name!r}: use 1-249 characters from [a-zA-Z0-9._-], not '.' or '..'"
        )


@dataclass(slots=True)
class Topic:
    name: str
    topic_id: uuid.UUID
    config_overrides: dict[str, str]
    config: LogConfig
    partitions: list[PartitionLog] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "topic_id": str(self.topic_id),
                "partitions": len(self.partitions),
                "configs": self.config_overrides,
            },
            sort_keys=True,
        ).encode()


class LogManager:
    def __init__(
        self,
        data_dir: Path,
        default_config: LogConfig | None = None,
        clock: Clock = wall_clock_ms,
        io_threads: int = 4,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.default_config = default_config or LogConfig()
        self.clock = clock
        self.executor = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="sluice-io")
        self.topics: dict[str, Topic] = {}
        self._housekeeping: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        default_config: LogConfig | None = None,
        clock: Clock = wall_clock_ms,
        io_threads: int = 4,
    ) -> LogManager:
        """Open every topic's partitions, recovering in parallel (recovery is I/O and CRC bound)."""
        manager = cls(Path(data_dir), default_config, clock, io_threads)
        manager._load()
        return manager

    @property
    def meta_dir(self) -> Path:
        return self.data_dir / _META_DIR

    def _load(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.meta_dir.mkdir(exist_ok=True)
        for leftover in self.data_dir.glob("*-delete"):
            shutil.rmtree(leftover, ignore_errors=True)
        for stray in self.meta_dir.glob("*.tmp"):
            stray.unlink()
        metas: list[tuple[Topic, int]] = []
        for path in sorted(self.meta_dir.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                overrides = {str(k): str(v) for k, v in raw["configs"].items()}
                topic = Topic(
                    raw["name"],
                    uuid.UUID(raw["topic_id"]),
                    overrides,
                    LogConfig.from_dict(overrides, self.default_config),
                )
                count = int(raw["partitions"])
            except (OSError, ValueError, KeyError, TypeError, SluiceError) as exc:
                raise SluiceError(f"topic metadata {path} is unreadable: {exc}") from exc
            metas.append((topic, count))
        jobs = [(topic, p) for topic, count in metas for p in range(count)]
        opened = list(
            self.executor.map(lambda job: self._open_partition(job[0], job[1]), jobs)
        )
        for (topic, _), partition_log in zip(jobs, opened, strict=True):
            topic.partitions.append(partition_log)
        for topic, _ in metas:
            self.topics[topic.name] = topic
        known = {self._partition_dir(t.name, i).name for t in self.topics.values() for i in range(len(t.partitions))}
        for child in self.data_dir.iterdir():
            if child.is_dir() and _PARTITION_DIR.match(child.name) and child.name not in known:
                log.warning("removing %s: it belongs to no topic (deleted before a crash)", child)
                self._discard_dir(child)

    def _partition_dir(self, topic: str, partition: int) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    def _open_partition(self, topic: Topic, partition: int) -> PartitionLog:
        partition_log = PartitionLog.open(self._partition_dir(topic.name, partition), topic.config, self.clock)
        partition_log.executor = self.executor
        return partition_log

    def _discard_dir(self, path: Path) -> None:
        # Kafka's "<dir>.<uuid>-delete", with the name cut so the result fits NAME_MAX (255)
        # for the longest topic names.
        doomed = path.with_name(f"{path.name[:200]}.{uuid.uuid4().hex}-delete")
        os.rename(path, doomed)
        _fsync_dir(self.data_dir)
        shutil.rmtree(doomed, ignore_errors=True)

    def _save_meta(self, topic: Topic) -> None:
        _write_bytes_atomic(self.meta_dir / f"{topic.name}.json", topic.to_json())

    # -- topics ---------------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        configs: Mapping[str, str] | None = None,
        *,
        validate_only: bool = False,
    ) -> Topic:
        validate_topic_name(name)
        if name in self.topics:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        folded = name.replace(".", "_")
        for other in self.topics:
            if other.replace(".", "_") == folded:
                # Kafka's rule: metric names replace '.' with '_', so these would collide.
                raise InvalidTopicError(f"topic {name!r} collides with existing topic {other!r}")
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise InvalidPartitionsError(f"partition count must be 1..{MAX_PARTITIONS}, not {partitions}")
        overrides = {str(k): str(v) for k, v in (configs or {}).items()}
        config = LogConfig.from_dict(overrides, self.default_config)
        topic = Topic(name, uuid.uuid4(), overrides, config)
        if validate_only:
            return topic
        for i in range(partitions):
            if self._partition_dir(name, i).exists():
                self._discard_dir(self._partition_dir(name, i))
            topic.partitions.append(self._open_partition(topic, i))
        self._save_meta(topic)
        self.topics[name] = topic
        return topic

    def topic(self, name: str) -> Topic:
        try:
            return self.topics[name]
        except KeyError:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}") from None

    def get_log(self, topic: str, partition: int) -> PartitionLog:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            raise UnknownTopicOrPartitionError(f"unknown topic-partition {topic}-{partition}")
        return t.partitions[partition]

    def list_topics(self) -> list[str]:
        return sorted(self.topics)

    def add_partitions(self, name: str, total: int, *, validate_only: bool = False) -> Topic:
        topic = self.topic(name)
        if total <= len(topic.partitions):
            raise InvalidPartitionsError(
                f"topic {name!r} has {len(topic.partitions)} partitions; the new count must be larger, not {total}"
            )
        if total > MAX_PARTITIONS:
            raise InvalidPartitionsError(f"partition count must be at most {MAX_PARTITIONS}")
        if validate_only:
            return topic
        for i in range(len(topic.partitions), total):
            topic.partitions.append(self._open_partition(topic, i))
        self._save_meta(topic)
        return topic

    def alter_topic_config(
        self,
        name: str,
        set_configs: Mapping[str, str] | None = None,
        delete_configs: Iterable[str] = (),
        *,
        replace: bool = False,
        validate_only: bool = False,
    ) -> Topic:
        """Change overrides: ``replace`` swaps the whole set (AlterConfigs), otherwise set and
        delete individual keys (IncrementalAlterConfigs). Validated before anything changes."""
        topic = self.topic(name)
        overrides = {} if replace else dict(topic.config_overrides)
        for key in delete_configs:
            if key not in TOPIC_CONFIG_KEYS:
                raise InvalidConfigError(f"unknown topic config {key!r}")
            overrides.pop(key, None)
        overrides.update({str(k): str(v) for k, v in (set_configs or {}).items()})
        config = LogConfig.from_dict(overrides, self.default_config)
        if validate_only:
            return topic
        topic.config_overrides = overrides
        topic.config = config
        for partition_log in topic.partitions:
            partition_log.update_config(config)
        self._save_meta(topic)
        return topic

    async def delete_topic(self, name: str) -> None:
        topic = self.topic(name)
        del self.topics[name]
        (self.meta_dir / f"{name}.json").unlink()
        _fsync_dir(self.meta_dir)
        for i, partition_log in enumerate(topic.partitions):
            if partition_log._writer is not None:
                await partition_log._writer.close()
            partition_log.abandon()
            self._discard_dir(self._partition_dir(name, i))

    # -- background work ---------------------------------------------------------------------------

    def all_logs(self) -> list[PartitionLog]:
        return [p for t in self.topics.values() for p in t.partitions]

    def apply_retention(self) -> int:
        return sum(p.apply_retention() for p in self.all_logs() if not p.closed)

    def start(self, retention_check_ms: int = 300_000, flush_check_ms: int = 1000) -> None:
        """Start housekeeping on the running loop: retention, and ``flush.ms`` for inline logs
        (writer-task logs honour ``flush.ms`` in their sync task)."""
        self._housekeeping = asyncio.get_running_loop().create_task(
            self._housekeep(retention_check_ms, flush_check_ms), name="log-housekeeping"
        )

    async def _housekeep(self, retention_check_ms: int, flush_check_ms: int) -> None:
        since_retention = 0
        while True:
            await asyncio.sleep(flush_check_ms / 1000)
            since_retention += flush_check_ms
            for partition_log in self.all_logs():
                if partition_log._writer is None and partition_log.flush_due():
                    try:
                        partition_log.flush()
                    except SluiceError as exc:
                        log.error("%s", exc)
            if since_retention >= retention_check_ms:
                since_retention = 0
                deleted = self.apply_retention()
                if deleted:
                    log.info("retention deleted %d segments", deleted)

    async def close(self) -> None:
        """Clean shutdown of every log: drain writers, fsync, write clean-shutdown markers."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
        await asyncio.gather(*(p.aclose() for p in self.all_logs()))
        self.executor.shutdown(wait=True)

    def close_sync(self) -> None:
        """Clean shutdown without an event loop (only for logs never written through a writer)."""
        for partition_log in self.all_logs():
            partition_log.close()
        self.executor.shutdown(wait=True)
