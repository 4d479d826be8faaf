"""``LogManager``: owns a data directory: its topics, their configuration and partition logs.

Layout (sluice has no ZooKeeper or KRaft, so each topic carries its own metadata)::

    DATA/
      .clean-shutdown              every partition's state, written by a clean stop only
      <name>.<topic id>/           one directory per topic *incarnation* (name cut to 200 chars)
        topic.json                 name, id, partition count, config overrides
        0/ 1/ ...                  one partition log each
      __consumer_offsets/          the group coordinator's private log (not the manager's)

A topic exists exactly when its ``topic.json`` does. Each lifecycle operation has one commit
point, writing or removing that file: a failure before it undoes everything (no directory, file or
descriptor is left behind), and a crash after it leaves only work the next open finishes (a topic
directory without ``topic.json`` is removed, and so are partition directories past the count).
Directories are named by topic id, so deleting a topic can never touch the files of a topic
re-created under the same name, however the two operations interleave; and operations on one name
(and on names that collide with it) run one at a time.

File work runs in worker threads, so creating thousands of partitions does not stall the event
loop, and a clean stop writes one state file for every partition after one filesystem sync, so
thousands of partitions stop and start again in about a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from sluice.config import TOPIC_CONFIG_KEYS, LogConfig
from sluice.dataclass import dataclass
from sluice.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    PolicyViolationError,
    SluiceError,
    StorageError,
    TopicAlreadyExistsError,
    UnknownTopicIdError,
    UnknownTopicOrPartitionError,
)
from sluice.plural import plural
from sluice.storage.cleaner import CleanerConfig, LogCleaner
from sluice.storage.clock import Clock, wall_clock_ms
from sluice.storage.fdcache import FdCache
from sluice.storage.files import (
    fsync_dir,
    load_json,
    read_json,
    remove_tree,
    sync_filesystem,
    write_json,
)
from sluice.storage.health import DiskHealth
from sluice.storage.latency import LatencyHistogram
from sluice.storage.loader import CleanState
from sluice.storage.log import PartitionLog
from sluice.storage.partition import Partition
from sluice.storage.reader import SliceReader

log = logging.getLogger(__name__)

T = TypeVar("T")

_TOPIC_NAME = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_TOPIC_DIR = re.compile(r"^(?P<name>.+)\.(?P<id>[0-9a-f]{32})$")
TOPIC_FILE = "topic.json"
CLEAN_SHUTDOWN_FILE = ".clean-shutdown"
_NAME_IN_DIR = 200
"""A topic directory is ``<name>.<32 hex digits>``; names are cut so that fits NAME_MAX (255)."""
_LEGACY_META_DIR = ".topics"
_LEGACY_PARTITION_DIR = re.compile(r"^(?P<topic>.+)-(?P<partition>\d+)$")
_HOUSEKEEPING_SLICE = 500
"""Logs handled per event-loop turn by housekeeping, so many partitions never stall the loop."""


def validate_topic_name(name: str) -> None:
    """Kafka's rules: 1-249 of [a-zA-Z0-9._-], and not '.' or '..'."""
    if name in (".", "..") or not _TOPIC_NAME.match(name):
        raise InvalidTopicError(
            f"invalid topic name {name!r}: use 1-249 characters from [a-zA-Z0-9._-], not '.' or '..'"
        )


def partition_dir(data_dir: Path, topic: str, partition: int) -> Path:
    """Where a live topic's partition is stored in ``data_dir`` (for tools and tests that read
    the files of a stopped or running broker); raises UnknownTopicOrPartitionError."""
    for candidate in Path(data_dir).glob(f"{topic[:_NAME_IN_DIR]}.*"):
        raw = read_json(candidate / TOPIC_FILE)
        if isinstance(raw, dict) and raw.get("name") == topic and _TOPIC_DIR.match(candidate.name):
            return candidate / str(partition)
    raise UnknownTopicOrPartitionError(f"no topic {topic!r} in {data_dir}")


def _folded(name: str) -> str:
    """Kafka's collision rule: metric names replace '.' with '_', so 'a.b' and 'a_b' collide."""
    return name.replace(".", "_")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what clients may create (broker settings)."""

    max_partitions_per_topic: int = 10_000
    """``sluice.max.partitions.per.topic``."""
    max_broker_partitions: int = 20_000
    """``max.broker.partitions`` (the name KIP-578 proposed): every topic's partitions together."""
    open_segment_files: int = 1000
    """``sluice.max.open.segment.files``: descriptors of inactive segments kept open (LRU)."""
    producer_id_expiration_ms: int = 86_400_000
    """``producer.id.expiration.ms``: an idempotent producer idle this long is forgotten."""


@dataclass(slots=True)
class Topic:
    name: str
    topic_id: uuid.UUID
    config_overrides: dict[str, str]
    config: LogConfig
    directory: Path
    partitions: list[Partition] = field(default_factory=list)

    def metadata(self, partitions: int | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "topic_id": str(self.topic_id),
            "partitions": len(self.partitions) if partitions is None else partitions,
            "configs": self.config_overrides,
        }


class _NameLocks:
    """One asyncio lock per folded topic name, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __call__(self, name: str) -> _NameLock:
        return _NameLock(self, _folded(name))


class _NameLock:
    def __init__(self, owner: _NameLocks, key: str) -> None:
        self._owner, self._key = owner, key

    async def __aenter__(self) -> None:
        lock, users = self._owner._locks.get(self._key, (asyncio.Lock(), 0))
        self._owner._locks[self._key] = (lock, users + 1)
        try:
            await lock.acquire()
        except BaseException:
            self._release_user()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._owner._locks[self._key][0].release()
        self._release_user()

    def _release_user(self) -> None:
        lock, users = self._owner._locks[self._key]
        if users <= 1:
            del self._owner._locks[self._key]
        else:
            self._owner._locks[self._key] = (lock, users - 1)


class LogManager:
    def __init__(
        self,
        data_dir: Path,
        default_config: LogConfig | None = None,
        clock: Clock = wall_clock_ms,
        io_threads: int = 4,
        limits: Limits | None = None,
        cleaner: CleanerConfig | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.default_config = default_config or LogConfig()
        self.clock = clock
        self.limits = limits or Limits()
        self.executor = ThreadPoolExecutor(max_workers=io_threads, thread_name_prefix="sluice-io")
        self.reader = SliceReader()
        """Reads the byte ranges Fetch answers with (big ones off the event loop)."""
        self.files = FdCache(self.limits.open_segment_files)
        self.disk = DiskHealth()
        self.fsync_times = LatencyHistogram()
        """How long every log's group commits and flushes took to fsync."""
        self.topics: dict[str, Topic] = {}
        self._folded_names: dict[str, str] = {}
        """Each topic's name by its folded form (``_folded``), kept with :attr:`topics`: the
        collision check looked at every topic's, so creating many topics took quadratic time."""
        self._partition_total = 0
        """The partitions of :attr:`topics`, kept with it (summed on every creation, likewise)."""
        self._locks = _NameLocks()
        self._reserved_partitions = 0
        """Partitions of creations in progress, counted against ``max.broker.partitions``."""
        self._housekeeping: asyncio.Task[None] | None = None
        self.cleaner = LogCleaner(cleaner or CleanerConfig(), self.all_logs, clock)
        """The log cleaner of compacted topics (started by :meth:`start` if enabled)."""

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        default_config: LogConfig | None = None,
        clock: Clock = wall_clock_ms,
        io_threads: int = 4,
        limits: Limits | None = None,
        cleaner: CleanerConfig | None = None,
    ) -> LogManager:
        """Open every topic: cleanly stopped partitions from the state file without reading
        their files, the others recovered in parallel (recovery is I/O and CRC bound). Blocking."""
        manager = cls(Path(data_dir), default_config, clock, io_threads, limits, cleaner)
        manager._load()
        return manager

    # -- opening ---------------------------------------------------------------------------------

    def _load(self) -> None:
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._migrate_legacy_layout()
        topics: list[tuple[Topic, int]] = []
        interrupted: list[Path] = []
        for child in sorted(self.data_dir.iterdir()):
            match = _TOPIC_DIR.match(child.name)
            if match is None or not child.is_dir():
                continue
            found = self._read_topic(child, match.group("id"))
            if found is None:
                interrupted.append(child)
                continue
            topics.append(found)
        by_name: dict[str, Topic] = {}
        for topic, _ in topics:
            other = by_name.setdefault(_folded(topic.name), topic)
            if other is not topic:
                raise SluiceError(
                    f"two topic directories claim the name {topic.name!r} ({other.directory.name}, "
                    f"{topic.directory.name}); move one out of {self.data_dir} and start again"
                )
        # Only now, when no topic makes the start refuse: a refused start removes nothing, and
        # leaves the state for the start after the fix (which then recovers nothing).
        for child in interrupted:
            log.warning("removing %s: a topic whose creation or deletion was interrupted", child)
            remove_tree(child)
        states = self._take_clean_states()
        opened: dict[tuple[str, int], Partition] = {}
        jobs: list[tuple[Topic, int]] = []
        for topic, count in topics:
            self._remove_extra_partitions(topic.directory, count)
            for p in range(count):
                state = states.pop(f"{topic.directory.name}/{p}", None)
                if state is not None:
                    opened[topic.name, p] = self._open_log(topic, p, state)
                else:
                    jobs.append((topic, p))
        recovered = list(self.executor.map(lambda job: self._open_log(job[0], job[1], None), jobs))
        truncated = 0
        for (topic, p), partition in zip(jobs, recovered, strict=True):
            opened[topic.name, p] = partition
            report = partition.log.recovery
            truncated += report.bytes_truncated
            if report.bytes_truncated or report.segments_dropped:
                log.warning(
                    "recovered %s-%d after an unclean stop: checked %s, truncated %s of invalid "
                    "data, dropped %s past it",
                    topic.name,
                    p,
                    plural(report.segments_recovered, "segment"),
                    plural(report.bytes_truncated, "byte"),
                    plural(report.segments_dropped, "segment"),
                )
        for topic, count in topics:
            topic.partitions = [opened[topic.name, p] for p in range(count)]
        for topic, _ in topics:
            self.topics[topic.name] = topic
            self._folded_names[_folded(topic.name)] = topic.name
        partitions = self._partition_total = sum(len(t.partitions) for t in self.topics.values())
        log.info(
            "opened %s with %s in %.2f s: %d from the clean-shutdown state, %d recovered after an "
            "unclean stop (%s truncated)",
            plural(len(self.topics), "topic"),
            plural(partitions, "partition"),
            time.monotonic() - started,
            partitions - len(jobs),
            len(jobs),
            plural(truncated, "byte"),
        )

    def _take_clean_states(self) -> dict[str, CleanState]:
        """Read and remove the clean-shutdown state file: from now on a crash means recovery."""
        path = self.data_dir / CLEAN_SHUTDOWN_FILE
        raw = read_json(path)
        if not path.exists():
            return {}
        path.unlink()
        fsync_dir(self.data_dir)
        states: dict[str, CleanState] = {}
        entries = raw.get("partitions") if isinstance(raw, dict) else None
        if not isinstance(entries, dict):
            log.warning("ignoring an unreadable %s: every partition is recovered", path)
            return {}
        for key, value in entries.items():
            state = CleanState.from_json(value)
            if state is not None:
                states[str(key)] = state
        return states

    def _read_topic(self, directory: Path, id_hex: str) -> tuple[Topic, int] | None:
        path = directory / TOPIC_FILE
        if not path.exists():
            return None
        try:
            raw = load_json(path)
            overrides = {str(k): str(v) for k, v in raw["configs"].items()}
            topic = Topic(
                str(raw["name"]),
                uuid.UUID(raw["topic_id"]),
                overrides,
                LogConfig.from_dict(overrides, self.default_config),
                directory,
            )
            count = int(raw["partitions"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SluiceError) as exc:
            raise SluiceError(f"topic metadata {path} is unreadable: {exc}") from exc
        if topic.topic_id.hex != id_hex:
            raise SluiceError(f"topic metadata {path} names topic id {topic.topic_id}, not its directory's")
        try:
            validate_topic_name(topic.name)
        except InvalidTopicError as exc:
            # Kafka refuses to load a log directory it cannot name a topic from. Skipping the
            # topic would hide its data, and a client could then create the name again; serving
            # it would hand clients a name they cannot use. Nothing is removed: fix the name
            # (or move the directory away) and start again.
            raise SluiceError(
                f"topic metadata {path} names an invalid topic: {exc}; correct \"name\" there, or "
                f"move {directory.name} out of {self.data_dir}, and start again"
            ) from exc
        return topic, count

    def _remove_extra_partitions(self, directory: Path, count: int) -> None:
        """Partition directories past the count: a partition increase that did not commit."""
        for name in os.listdir(directory):
            if name.isdigit() and int(name) >= count and (directory / name).is_dir():
                log.warning("removing %s: a partition whose creation was interrupted", directory / name)
                remove_tree(directory / name)

    def _open_log(self, topic: Topic, partition: int, state: CleanState | None) -> Partition:
        plog = PartitionLog.open(
            topic.directory / str(partition), topic.config, self.clock, state=state, files=self.files
        )
        return self._adopt(plog, topic, partition)

    def _adopt(self, plog: PartitionLog, topic: Topic, partition: int) -> Partition:
        plog.name = f"{topic.name}-{partition}"
        plog.disk = self.disk
        plog.fsync_times = self.fsync_times
        plog.producer_expiration_ms = self.limits.producer_id_expiration_ms
        return Partition(plog, self.executor)

    def _topic_dir(self, name: str, topic_id: uuid.UUID) -> Path:
        return self.data_dir / f"{name[:_NAME_IN_DIR]}.{topic_id.hex}"

    # -- the layout of sluice 0.1 ---------------------------------------------------------------

    def _migrate_legacy_layout(self) -> None:
        """Move topics from sluice 0.1's layout (``.topics/<name>.json`` and ``<name>-<p>/``)
        into topic directories. Each topic moves with ``topic.json`` as the commit point and the
        old metadata file removed last, so a crash part-way is finished by the next open."""
        meta_dir = self.data_dir / _LEGACY_META_DIR
        if not meta_dir.is_dir():
            return
        for stray in meta_dir.glob("*.tmp"):
            stray.unlink()
        for path in sorted(meta_dir.glob("*.json")):
            try:
                raw = load_json(path)
                name, topic_id, count = str(raw["name"]), uuid.UUID(raw["topic_id"]), int(raw["partitions"])
                configs = {str(k): str(v) for k, v in raw["configs"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SluiceError(f"topic metadata {path} is unreadable: {exc}") from exc
            target = self._topic_dir(name, topic_id)
            target.mkdir(exist_ok=True)
            for p in range(count):
                old, new = self.data_dir / f"{name}-{p}", target / str(p)
                if old.is_dir() and not new.exists():
                    os.rename(old, new)
            fsync_dir(target)
            fsync_dir(self.data_dir)
            meta = {"name": name, "topic_id": str(topic_id), "partitions": count, "configs": configs}
            write_json(target / TOPIC_FILE, meta)
            path.unlink()
            fsync_dir(meta_dir)
            log.info("moved topic %r into %s (the data layout changed in sluice 0.2)", name, target.name)
        for child in self.data_dir.iterdir():
            legacy = child.name.endswith("-delete") or _LEGACY_PARTITION_DIR.match(child.name)
            if child.is_dir() and legacy and not _TOPIC_DIR.match(child.name):
                log.warning("removing %s: it belongs to no topic (deleted before a crash)", child)
                remove_tree(child)
        remove_tree(meta_dir)
        fsync_dir(self.data_dir)

    # -- lookups ---------------------------------------------------------------------------------

    def topic(self, name: str) -> Topic:
        try:
            return self.topics[name]
        except KeyError:
            raise UnknownTopicOrPartitionError(f"unknown topic {name!r}") from None

    def get_partition(self, topic: str, partition: int) -> Partition:
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            raise UnknownTopicOrPartitionError(f"unknown topic-partition {topic}-{partition}")
        return t.partitions[partition]

    def get_log(self, topic: str, partition: int) -> PartitionLog:
        """A partition's log, for reads (appends go through :meth:`get_partition`)."""
        return self.get_partition(topic, partition).log

    def list_topics(self) -> list[str]:
        return sorted(self.topics)

    def all_partitions(self) -> list[Partition]:
        return [p for t in self.topics.values() for p in t.partitions]

    def all_logs(self) -> list[PartitionLog]:
        return [p.log for t in self.topics.values() for p in t.partitions]

    @property
    def partition_count(self) -> int:
        return self._partition_total

    # -- topic lifecycle -------------------------------------------------------------------------

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _check_partitions(self, name: str, count: int, adding: int) -> None:
        limit = self.limits.max_partitions_per_topic
        if not 1 <= count <= limit:
            raise InvalidPartitionsError(
                f"topic {name!r}: partition count must be 1..{limit} "
                f"(sluice.max.partitions.per.topic), not {count}"
            )
        total = self.partition_count + self._reserved_partitions + adding
        if total > self.limits.max_broker_partitions:
            raise PolicyViolationError(
                f"topic {name!r}: {adding} more partitions would make {total}, over this broker's "
                f"max.broker.partitions={self.limits.max_broker_partitions}"
            )

    def _check_new_name(self, name: str) -> None:
        if name in self.topics:
            raise TopicAlreadyExistsError(f"topic {name!r} already exists")
        other = self._folded_names.get(_folded(name))
        if other is not None:
            raise InvalidTopicError(f"topic {name!r} collides with existing topic {other!r}")

    async def create_topic(
        self,
        name: str,
        partitions: int = 1,
        configs: Mapping[str, str] | None = None,
        *,
        validate_only: bool = False,
    ) -> Topic:
        validate_topic_name(name)
        overrides = {str(k): str(v) for k, v in (configs or {}).items()}
        config = LogConfig.from_dict(overrides, self.default_config)
        topic_id = uuid.uuid4()
        topic = Topic(name, topic_id, overrides, config, self._topic_dir(name, topic_id))
        async with self._locks(name):
            self._check_new_name(name)
            self._check_partitions(name, partitions, partitions)
            if validate_only:
                return topic
            self._reserved_partitions += partitions
            try:
                topic.partitions = await self._io(self._create_files, topic, partitions)
            finally:
                self._reserved_partitions -= partitions
            self.topics[name] = topic
            self._folded_names[_folded(name)] = name
            self._partition_total += partitions
        return topic

    def _create_files(self, topic: Topic, count: int) -> list[Partition]:
        """Worker thread: every directory first, ``topic.json`` last (the commit point)."""
        directory = topic.directory
        try:
            directory.mkdir()
            for p in range(count):
                (directory / str(p)).mkdir()
            write_json(directory / TOPIC_FILE, topic.metadata(count))  # fsyncs the directory
            fsync_dir(self.data_dir)
        except OSError as exc:
            remove_tree(directory)
            self.disk.failed(exc, f"creating topic {topic.name!r}")
            raise StorageError(f"cannot create topic {topic.name!r}: {exc}") from exc
        logs = []
        for p in range(count):
            plog = PartitionLog.create(directory / str(p), topic.config, self.clock, files=self.files)
            logs.append(self._adopt(plog, topic, p))
        return logs

    async def add_partitions(self, name: str, total: int, *, validate_only: bool = False) -> Topic:
        async with self._locks(name):
            topic = self.topic(name)
            current = len(topic.partitions)
            if total <= current:
                raise InvalidPartitionsError(
                    f"topic {name!r} has {current} partitions; the new count must be larger, not {total}"
                )
            self._check_partitions(name, total, total - current)
            if validate_only:
                return topic
            self._reserved_partitions += total - current
            try:
                added = await self._io(self._add_files, topic, current, total)
            finally:
                self._reserved_partitions -= total - current
            topic.partitions.extend(added)
            self._partition_total += len(added)
        return topic

    def _add_files(self, topic: Topic, current: int, total: int) -> list[Partition]:
        directory = topic.directory
        try:
            for p in range(current, total):
                (directory / str(p)).mkdir()
            write_json(directory / TOPIC_FILE, topic.metadata(total))
        except OSError as exc:
            for p in range(current, total):
                remove_tree(directory / str(p))
            self.disk.failed(exc, f"adding partitions to {topic.name!r}")
            raise StorageError(f"cannot add partitions to {topic.name!r}: {exc}") from exc
        logs = []
        for p in range(current, total):
            plog = PartitionLog.create(directory / str(p), topic.config, self.clock, files=self.files)
            logs.append(self._adopt(plog, topic, p))
        return logs

    async def alter_topic_config(
        self,
        name: str,
        set_configs: Mapping[str, str] | None = None,
        delete_configs: Iterable[str] = (),
        *,
        derive_configs: Mapping[str, Callable[[str], str]] | None = None,
        replace: bool = False,
        validate_only: bool = False,
    ) -> Topic:
        """Change overrides: ``replace`` swaps the whole set (AlterConfigs), otherwise set and
        delete individual keys (IncrementalAlterConfigs). ``derive_configs`` sets keys from
        their current values (APPEND, SUBTRACT), read under the topic's lock: read before it,
        a change committed meanwhile was lost. Validated before anything changes."""
        async with self._locks(name):
            topic = self.topic(name)
            overrides = {} if replace else dict(topic.config_overrides)
            for key in delete_configs:
                if key not in TOPIC_CONFIG_KEYS:
                    raise InvalidConfigError(f"unknown topic config {key!r}")
                overrides.pop(key, None)
            overrides.update({str(k): str(v) for k, v in (set_configs or {}).items()})
            if derive_configs:
                current = topic.config.to_dict()
                for key, derive in derive_configs.items():
                    if key not in current:
                        raise InvalidConfigError(f"unknown topic config {key!r}")
                    overrides[key] = derive(current[key])
            config = LogConfig.from_dict(overrides, self.default_config)
            if validate_only:
                return topic
            meta = topic.metadata()
            meta["configs"] = overrides
            try:
                await self._io(write_json, topic.directory / TOPIC_FILE, meta)
            except OSError as exc:
                self.disk.failed(exc, f"changing the configs of {name!r}")
                raise StorageError(f"cannot save the configs of {name!r}: {exc}") from exc
            topic.config_overrides = overrides
            topic.config = config
            for partition in topic.partitions:
                partition.log.update_config(config)
        return topic

    async def delete_topic(self, name: str, topic_id: uuid.UUID | None = None) -> Topic:
        """Delete ``name`` (only if its id is ``topic_id``, when given). Committed by removing
        ``topic.json``; then appends in flight drain, descriptors close and the files go."""
        async with self._locks(name):
            topic = self.topic(name)
            if topic_id is not None and topic.topic_id != topic_id:
                raise UnknownTopicIdError(f"topic {name!r} has id {topic.topic_id}, not {topic_id}")
            try:
                await self._io(self._uncommit, topic)
            except OSError as exc:
                raise StorageError(f"cannot delete topic {name!r}: {exc}") from exc
            del self.topics[name]
            del self._folded_names[_folded(name)]
            self._partition_total -= len(topic.partitions)
            for partition in topic.partitions:
                partition.log.wake_listeners()
            await self.cleaner.abort(p.log for p in topic.partitions)
            await asyncio.gather(*(p.drain() for p in topic.partitions))
            for partition in topic.partitions:
                partition.abandon()
            # Best effort: what cannot be removed now is an orphan the next open removes.
            await self._io(remove_tree, topic.directory)
        return topic

    @staticmethod
    def _uncommit(topic: Topic) -> None:
        (topic.directory / TOPIC_FILE).unlink()
        fsync_dir(topic.directory)

    # -- background work ---------------------------------------------------------------------------

    async def apply_retention(self) -> int:
        """Retention over every log, a slice of logs per event-loop turn."""
        deleted = 0
        logs = self.all_logs()
        for i in range(0, len(logs), _HOUSEKEEPING_SLICE):
            for partition_log in logs[i : i + _HOUSEKEEPING_SLICE]:
                if partition_log.closed:
                    continue
                try:
                    deleted += partition_log.apply_retention()
                except OSError as exc:
                    self.disk.failed(exc, f"retention of {partition_log.name}")
                    log.warning("retention of %s failed: %s", partition_log.name, exc)
            await asyncio.sleep(0)
        return deleted

    def start(
        self,
        retention_check_ms: int = 300_000,
        flush_check_ms: int = 1000,
        producer_expiration_check_ms: int = 600_000,
    ) -> None:
        """Start housekeeping on the running loop: retention, ``flush.ms`` for inline logs
        (writer-task logs honour ``flush.ms`` in their sync task), idle producers, and the log
        cleaner (``log.cleaner.enable``)."""
        self._housekeeping = asyncio.get_running_loop().create_task(
            self._housekeep(retention_check_ms, flush_check_ms, producer_expiration_check_ms),
            name="log-housekeeping",
        )
        if self.cleaner.config.enable:
            self.cleaner.start()

    async def expire_producers(self) -> int:
        """Forget idle idempotent producers in every log, a slice of logs per event-loop turn."""
        now = self.clock()
        forgotten = 0
        logs = self.all_logs()
        for i in range(0, len(logs), _HOUSEKEEPING_SLICE):
            for partition_log in logs[i : i + _HOUSEKEEPING_SLICE]:
                if not partition_log.closed:
                    forgotten += partition_log.expire_producers(now)
            await asyncio.sleep(0)
        return forgotten

    async def _housekeep(
        self, retention_check_ms: int, flush_check_ms: int, producer_expiration_check_ms: int
    ) -> None:
        since_retention = 0
        since_expiry = 0
        while True:
            await asyncio.sleep(flush_check_ms / 1000)
            since_retention += flush_check_ms
            since_expiry += flush_check_ms
            if since_expiry >= producer_expiration_check_ms:
                since_expiry = 0
                forgotten = await self.expire_producers()
                if forgotten:
                    log.info("forgot %s", plural(forgotten, "idle producer id"))
            partitions = self.all_partitions()
            for i in range(0, len(partitions), _HOUSEKEEPING_SLICE):
                for partition in partitions[i : i + _HOUSEKEEPING_SLICE]:
                    partition_log = partition.log
                    if (
                        partition.writer is None  # a writer's sync task flushes its own log
                        and not partition_log.closed
                        and partition_log.flush_due()
                    ):
                        try:
                            partition_log.flush()
                        except SluiceError as exc:
                            log.error("scheduled flush failed, retried at the next check: %s", exc)
                await asyncio.sleep(0)
            if since_retention >= retention_check_ms:
                since_retention = 0
                deleted = await self.apply_retention()
                if deleted:
                    log.info("retention deleted %s", plural(deleted, "segment"))

    async def close(self) -> None:
        """Clean shutdown: drain every writer, save what changed, sync the filesystem once, then
        write the state file that lets the next start skip recovery.

        Raises StorageError if data could not be made durable. A state file that cannot be
        written (a full disk) only costs the next start a recovery, so it is logged, not raised.
        """
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
        await self.cleaner.stop()
        await asyncio.gather(*(p.drain() for p in self.all_partitions()))
        logs = [(t, p, part.log) for t in self.topics.values() for p, part in enumerate(t.partitions)]
        try:
            await self._io(self._close_files, logs)
        finally:
            self.reader.close()
            self.executor.shutdown(wait=True)

    def _close_files(self, logs: list[tuple[Topic, int, PartitionLog]]) -> None:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="sluice-close") as pool:
            results = list(pool.map(lambda item: _close_quietly(item[2]), logs))
        states = {
            f"{topic.directory.name}/{p}": state.to_json()
            for (topic, p, _), state in zip(logs, results, strict=True)
            if state is not None
        }
        try:
            sync_filesystem(self.data_dir)
        except OSError as exc:
            raise StorageError(f"syncing {self.data_dir} at shutdown failed: {exc}") from exc
        try:
            write_json(self.data_dir / CLEAN_SHUTDOWN_FILE, {"version": 1, "partitions": states})
        except OSError as exc:
            (self.data_dir / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)
            log.warning(
                "could not write the clean-shutdown state (%s): nothing is lost, but the next "
                "start recovers every partition",
                exc,
            )
        if len(states) < len(logs):
            log.warning(
                "%s did not close cleanly and will be recovered at the next start",
                plural(len(logs) - len(states), "partition"),
            )

    def close_sync(self) -> None:
        """Clean shutdown without an event loop (only for logs never written through a writer)."""
        logs = [(t, p, part.log) for t in self.topics.values() for p, part in enumerate(t.partitions)]
        self.cleaner.close_sync()
        try:
            self._close_files(logs)
        finally:
            self.reader.close()
            self.executor.shutdown(wait=True)


def _close_quietly(plog: PartitionLog) -> CleanState | None:
    """Close one log without fsync (the caller syncs the filesystem once for all); None if it
    failed, so it is recovered next time rather than trusted."""
    try:
        return plog.close(marker=False, sync=False)
    except (OSError, SluiceError) as exc:
        log.warning("closing %s failed: %s", plog.name, exc)
        return None

