"""Topic lifecycle under interleaving and crashes: create, delete, add partitions, alter configs
and appends, in any order and cut off at any file-system step, never lose an acknowledged record
of a live topic and never leave a topic half there.

Crashes are simulated faithfully: the operation is stopped dead at its k-th file-system mutation
(an exception no cleanup code catches), every descriptor is dropped without a clean close, and
the data directory is opened again from what is on disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sluice.errors import SluiceError, TopicAlreadyExistsError, UnknownTopicOrPartitionError
from sluice.storage import LogManager

from .conftest import all_records, make_batch


class Crash(BaseException):
    """The process died here: no except clause in the storage code runs for it."""


def crash(manager: LogManager) -> None:
    """What a SIGKILL leaves: files as they are, descriptors dropped, no clean-shutdown state."""
    for plog in manager.all_logs():
        plog.abandon()
    manager.executor.shutdown(wait=True)


def values(manager: LogManager, topic: str) -> list[list[bytes | None]]:
    return [[v for _, v in all_records(p.log)] for p in manager.topic(topic).partitions]


def leftovers(data_dir: Path) -> list[str]:
    """Anything in the data directory that is not a live topic's directory or a known file."""
    live = []
    for child in data_dir.iterdir():
        if child.name.startswith(".") and child.is_file():
            continue
        if not (child / "topic.json").is_file():
            live.append(child.name)
    return live


@pytest.fixture
def mutations(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int | None], list[str]]]:
    """Counts the file-system mutations under a data directory and raises Crash at the k-th."""
    steps: list[str] = []
    crash_at: list[int | None] = [None]

    def wrap(name: str) -> None:
        real = getattr(os, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            steps.append(f"{name} {args[0]}")
            if crash_at[0] is not None and len(steps) == crash_at[0]:
                raise Crash(steps[-1])
            return real(*args, **kwargs)

        monkeypatch.setattr(os, name, counted)

    for name in ("mkdir", "replace", "rename", "unlink", "rmdir", "fsync"):
        wrap(name)

    def arm(k: int | None) -> list[str]:
        steps.clear()
        crash_at[0] = k
        return steps

    yield arm


OPS: dict[str, Callable[[LogManager], Coroutine[Any, Any, Any]]] = {
    "create": lambda m: m.create_topic("t", 3, {"retention.ms": "60000"}),
    "delete": lambda m: m.delete_topic("old"),
    "add_partitions": lambda m: m.add_partitions("old", 4),
    "alter": lambda m: m.alter_topic_config("old", {"retention.ms": "1234"}),
    "recreate": lambda m: _recreate(m),
}


async def _recreate(manager: LogManager) -> None:
    await manager.delete_topic("old")
    await manager.create_topic("old", 1)


@pytest.mark.parametrize("op", list(OPS))
def test_a_crash_at_any_step_of_a_lifecycle_operation_leaves_before_or_after(
    tmp_path: Path, mutations: Callable[[int | None], list[str]], op: str
) -> None:
    def prepare() -> Path:
        data = tmp_path / f"data-{len(list(tmp_path.iterdir()))}"
        manager = LogManager.open(data)

        async def fill() -> None:
            await manager.create_topic("old", 2)
            for p in (0, 1):
                await manager.get_partition("old", p).append(make_batch(3, tag=f"old{p}"))
            await manager.close()

        asyncio.run(fill())
        return data

    # How many mutations the operation makes when nothing goes wrong.
    data = prepare()
    manager = LogManager.open(data)
    steps = mutations(None)
    asyncio.run(OPS[op](manager))
    total = len(steps)
    mutations(None)
    crash(manager)
    assert total >= 2, steps
    before_values = [[f"old{p}-{i}-".encode() for i in range(3)] for p in (0, 1)]

    for k in range(1, total + 1):
        data = prepare()
        manager = LogManager.open(data)
        mutations(k)
        with pytest.raises(Crash):
            asyncio.run(OPS[op](manager))
        mutations(None)
        crash(manager)
        again = LogManager.open(data)
        try:
            topics = again.list_topics()
            assert leftovers(data) == [], (op, k)
            if op == "create":
                assert topics in (["old"], ["old", "t"]), (k, topics)
                if "t" in topics:
                    assert [len(v) for v in values(again, "t")] == [0, 0, 0]
                    assert again.topic("t").config.retention_ms == 60000
            elif op == "delete":
                assert topics in ([], ["old"]), (k, topics)
            elif op == "recreate":
                # deleted or not, re-created or not: never the old data under a new topic
                assert topics in ([], ["old"]), (k, topics)
                if topics:
                    kept = [[v[:5] if v else v for v in p] for p in values(again, "old")]
                    assert kept in ([[]], [[b"old0-"] * 3, [b"old1-"] * 3]), (k, kept)
            elif op == "add_partitions":
                assert len(again.topic("old").partitions) in (2, 4), k
            elif op == "alter":
                assert again.topic("old").config.retention_ms in (604800000, 1234), k
            if op in ("add_partitions", "alter") or (op in ("delete", "create") and "old" in topics):
                got = values(again, "old")
                assert [[(v or b"")[:5] for v in p] for p in got[:2]] == [
                    [v[:5] for v in p] for p in before_values
                ], k
        finally:
            again.close_sync()
        shutil.rmtree(data)


class LifecycleMachine(RuleBasedStateMachine):
    """Random interleavings of lifecycle operations, appends, clean restarts and crashes against
    a model of what was acknowledged; concurrent operations on one name are raced on purpose."""

    NAMES = ("a", "b", "a_b")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="sluice-lifecycle-"))
        self.loop = asyncio.new_event_loop()
        self.manager = LogManager.open(self.root)
        self.model: dict[str, list[list[bytes]]] = {}
        self.serial = 0

    def teardown(self) -> None:
        self.crash()
        self.loop.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def crash(self) -> None:
        """The process dies: every task (writers included) stops where it is."""
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        crash(self.manager)

    def _live(self, name: str) -> str | None:
        """The live topic that ``name`` collides with (Kafka's '.'/'_' rule), if any."""
        for other in self.model:
            if other.replace(".", "_") == name.replace(".", "_"):
                return other
        return None

    @rule(name=st.sampled_from(NAMES), partitions=st.integers(1, 3))
    def create(self, name: str, partitions: int) -> None:
        clash = self._live(name)
        try:
            self.run(self.manager.create_topic(name, partitions))
        except TopicAlreadyExistsError:
            assert clash == name
            return
        except SluiceError:
            assert clash is not None
            return
        assert clash is None
        self.model[name] = [[] for _ in range(partitions)]

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        try:
            self.run(self.manager.delete_topic(name))
        except UnknownTopicOrPartitionError:
            assert name not in self.model
            return
        del self.model[name]

    @rule(name=st.sampled_from(NAMES), partition=st.integers(0, 2), count=st.integers(1, 3))
    def produce(self, name: str, partition: int, count: int) -> None:
        if name not in self.model or partition >= len(self.model[name]):
            with pytest.raises(UnknownTopicOrPartitionError):
                self.manager.get_log(name, partition)
            return
        self.serial += 1
        tag = f"s{self.serial}"

        async def append() -> None:
            await self.manager.get_partition(name, partition).append(make_batch(count, tag=tag))

        self.run(append())
        self.model[name][partition].extend(f"{tag}-{i}-".encode() for i in range(count))

    @rule(name=st.sampled_from(NAMES), partitions=st.integers(1, 3))
    def race_delete_and_recreate(self, name: str, partitions: int) -> None:
        """The reported loss: a delete and a re-create of one name, overlapping, then appends to
        the re-created topic. Whatever the order, the re-created topic keeps its records."""
        if name not in self.model:
            return
        self.serial += 1
        tag = f"s{self.serial}"

        async def race() -> None:
            deleting = asyncio.ensure_future(self.manager.delete_topic(name))
            creating = asyncio.ensure_future(self.manager.create_topic(name, partitions))
            await asyncio.gather(deleting, creating)
            await self.manager.get_partition(name, 0).append(make_batch(2, tag=tag))

        self.run(race())
        self.model[name] = [[] for _ in range(partitions)]
        self.model[name][0].extend(f"{tag}-{i}-".encode() for i in range(2))

    @rule(name=st.sampled_from(NAMES), more=st.integers(1, 2))
    def add_partitions(self, name: str, more: int) -> None:
        if name not in self.model:
            return
        total = len(self.model[name]) + more
        self.run(self.manager.add_partitions(name, total))
        self.model[name].extend([] for _ in range(more))

    @rule()
    def restart_cleanly(self) -> None:
        self.run(self.manager.close())
        self.manager = LogManager.open(self.root)
        assert all(p.recovery.clean for p in self.manager.all_logs())

    @rule()
    def restart_after_a_crash(self) -> None:
        self.crash()
        self.manager = LogManager.open(self.root)

    @invariant()
    def matches_the_model(self) -> None:
        assert self.manager.list_topics() == sorted(self.model)
        for name, expected in self.model.items():
            got = values(self.manager, name)
            assert [len(p) for p in got] == [len(p) for p in expected], name
            for stored, wanted in zip(got, expected, strict=True):
                # make_batch repeats each record's tag to fill the value
                assert [(v or b"")[: len(w)] for v, w in zip(stored, wanted, strict=True)] == wanted

    @invariant()
    def nothing_left_behind(self) -> None:
        assert leftovers(self.root) == []


TestLifecycle = LifecycleMachine.TestCase
TestLifecycle.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_stale_write_cannot_resurrect_a_deleted_topic(tmp_path: Path) -> None:
    """An atomic replace of topic.json racing a delete (the config change waits for the delete
    and then finds no topic) must not bring the topic back."""

    async def main() -> None:
        manager = LogManager.open(tmp_path)
        await manager.create_topic("t", 1)
        deleting = asyncio.ensure_future(manager.delete_topic("t"))
        altering = asyncio.ensure_future(manager.alter_topic_config("t", {"retention.ms": "5"}))
        results = await asyncio.gather(deleting, altering, return_exceptions=True)
        assert isinstance(results[1], UnknownTopicOrPartitionError)
        await manager.close()

    asyncio.run(main())
    again = LogManager.open(tmp_path)
    assert again.list_topics() == []
    again.close_sync()
