"""LogManager: topics, their durable configuration, and the partition logs of a data directory."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sluice.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    PolicyViolationError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from sluice.storage import Limits, LogManager, PartitionLog, Topic

from .conftest import all_records, make_batch

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def create(manager: LogManager, name: str, partitions: int = 1, configs: dict[str, str] | None = None, **kw: Any) -> Topic:
    return run(manager.create_topic(name, partitions, configs, **kw))


def topic_dirs(data: Path) -> list[str]:
    """Topic directory names (``<name>.<id hex>``), as the layout has them."""
    return sorted(p.name for p in data.iterdir() if p.is_dir() and p.name != "__consumer_offsets")


def test_topics_and_configs_survive_a_restart(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    create(manager, "orders", 3, {"retention.ms": "60000", "sluice.append.ack": "fsynced"})
    create(manager, "audit.log_v2", 1)
    manager.get_log("orders", 2).append(make_batch(4))
    manager.close_sync()

    again = LogManager.open(tmp_path)
    assert again.list_topics() == ["audit.log_v2", "orders"]
    orders = again.topic("orders")
    assert len(orders.partitions) == 3
    assert orders.config.retention_ms == 60000 and orders.config.append_ack.value == "fsynced"
    assert orders.config_overrides == {"retention.ms": "60000", "sluice.append.ack": "fsynced"}
    assert again.get_log("orders", 2).log_end_offset == 4
    assert again.get_log("orders", 2).recovery.clean
    assert again.topic("orders").topic_id == orders.topic_id
    again.close_sync()


def _manager_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sluice.storage.manager"]


def test_opening_logs_a_summary_and_each_repaired_partition_in_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What an operator reads at start: how much was opened and how, and per partition what
    recovery cut, with counts in the right number ("1 partition", "1 byte")."""
    manager = LogManager.open(tmp_path)
    topic = create(manager, "orders", 1)
    manager.get_log("orders", 0).append(make_batch(3))
    manager.close_sync()
    caplog.set_level("INFO", logger="sluice.storage.manager")

    again = LogManager.open(tmp_path)
    [summary] = _manager_lines(caplog)
    assert summary.startswith("opened 1 topic with 1 partition in "), summary
    assert summary.endswith(
        " s: 1 from the clean-shutdown state, 0 recovered after an unclean stop (0 bytes truncated)"
    ), summary
    for partition_log in again.all_logs():
        partition_log.abandon()  # crash: no clean-shutdown state
    with (topic.directory / "0" / "00000000000000000000.log").open("ab") as f:
        f.write(b"\xff")  # a torn write: one byte of a batch that never completed
    caplog.clear()

    LogManager.open(tmp_path).close_sync()
    recovery, summary = _manager_lines(caplog)
    assert recovery == (
        "recovered orders-0 after an unclean stop: checked 1 segment, truncated 1 byte of "
        "invalid data, dropped 0 segments past it"
    )
    assert summary.startswith("opened 1 topic with 1 partition in "), summary
    assert summary.endswith(
        " s: 0 from the clean-shutdown state, 1 recovered after an unclean stop (1 byte truncated)"
    ), summary


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "has space", "slash/y", "ünï"])
def test_invalid_topic_names_are_refused(tmp_path: Path, name: str) -> None:
    manager = LogManager.open(tmp_path)
    with pytest.raises(InvalidTopicError) as info:
        create(manager, name)
    assert info.value.code == 17
    assert manager.list_topics() == []
    manager.close_sync()


def test_create_refuses_duplicates_bad_counts_and_bad_configs(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    create(manager, "t")
    with pytest.raises(TopicAlreadyExistsError):
        create(manager, "t")
    with pytest.raises(InvalidPartitionsError):
        create(manager, "u", 0)
    with pytest.raises(InvalidConfigError):
        create(manager, "u", 1, {"retention.ms": "soon"})
    assert manager.list_topics() == ["t"]
    create(manager, "v", 2, validate_only=True)
    assert "v" not in manager.topics
    assert [d.split(".")[0] for d in topic_dirs(tmp_path)] == ["t"]
    manager.close_sync()


def test_alter_configs_full_and_incremental(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    create(manager, "t", 1, {"retention.ms": "1000"})
    run(manager.alter_topic_config("t", {"segment.bytes": "4096"}))
    assert manager.topic("t").config_overrides == {"retention.ms": "1000", "segment.bytes": "4096"}
    run(manager.alter_topic_config("t", delete_configs=["retention.ms"]))
    assert manager.topic("t").config_overrides == {"segment.bytes": "4096"}
    run(manager.alter_topic_config("t", {"flush.messages": "5"}, replace=True))
    assert manager.topic("t").config_overrides == {"flush.messages": "5"}
    assert manager.get_log("t", 0).config.flush_messages == 5
    with pytest.raises(InvalidConfigError):
        run(manager.alter_topic_config("t", {"flush.messages": "0"}))
    assert manager.topic("t").config.flush_messages == 5  # unchanged after a refused change
    manager.close_sync()
    assert LogManager.open(tmp_path).topic("t").config.flush_messages == 5


def test_add_partitions_only_grows(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    create(manager, "t", 2)
    run(manager.add_partitions("t", 5))
    assert len(manager.topic("t").partitions) == 5
    with pytest.raises(InvalidPartitionsError):
        run(manager.add_partitions("t", 3))
    manager.close_sync()
    assert len(LogManager.open(tmp_path).topic("t").partitions) == 5


def test_delete_topic_removes_data_and_a_recreated_topic_starts_empty(tmp_path: Path) -> None:
    async def main() -> None:
        manager = LogManager.open(tmp_path)
        await manager.create_topic("t", 2)
        await manager.get_partition("t", 0).append(make_batch(3))
        await manager.delete_topic("t")
        assert manager.list_topics() == []
        assert topic_dirs(tmp_path) == []
        with pytest.raises(UnknownTopicOrPartitionError):
            manager.get_log("t", 0)
        await manager.create_topic("t", 1)
        assert manager.get_log("t", 0).log_end_offset == 0
        await manager.close()

    asyncio.run(main())


def test_the_longest_topic_names_survive_delete_recreate_and_orphan_cleanup(tmp_path: Path) -> None:
    """A 249-character name still makes a topic directory within NAME_MAX (the name is cut;
    the topic id makes it unique); delete, re-create and start-up cleanup all work."""
    long, orphan = "d" * 249, "o" * 249

    async def main() -> None:
        manager = LogManager.open(tmp_path)
        await manager.create_topic(long, 3)
        await manager.create_topic(orphan, 1)
        await manager.get_partition(long, 2).append(make_batch(3))
        await manager.delete_topic(long)
        await manager.create_topic(long, 1)
        assert manager.get_log(long, 0).log_end_offset == 0
        await manager.close()

    run(main())
    orphan_dir = next(tmp_path.glob("o*"))
    (orphan_dir / "topic.json").unlink()  # as if its creation had not committed
    again = LogManager.open(tmp_path)
    assert again.list_topics() == [long]
    assert [d[:200] for d in topic_dirs(tmp_path)] == ["d" * 200]
    assert all(len(d) <= 255 for d in topic_dirs(tmp_path))
    again.close_sync()


def test_names_that_differ_only_by_dot_and_underscore_collide(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    create(manager, "orders.eu", 1)
    with pytest.raises(InvalidTopicError, match="collides"):
        create(manager, "orders_eu", 1)
    manager.close_sync()


def test_collisions_and_the_partition_bound_follow_creates_deletes_and_reopens(
    tmp_path: Path,
) -> None:
    """The folded names and the partition total are kept beside the topics (looking at every
    topic on each creation made creating many topics quadratic): a deleted name frees its
    collision, added partitions count, and a reopened manager knows both."""
    limits = Limits(max_broker_partitions=6)
    manager = LogManager.open(tmp_path, limits=limits)
    create(manager, "orders.eu", 2)
    create(manager, "other", 1)
    run(manager.add_partitions("other", 3))
    with pytest.raises(PolicyViolationError, match="would make 7"):
        create(manager, "third", 2)
    run(manager.delete_topic("orders.eu"))
    create(manager, "orders_eu", 2)  # free again
    with pytest.raises(InvalidTopicError, match="collides with existing topic 'orders_eu'"):
        create(manager, "orders.eu", 1)
    manager.close_sync()
    again = LogManager.open(tmp_path, limits=limits)
    with pytest.raises(InvalidTopicError, match="collides with existing topic 'orders_eu'"):
        create(again, "orders.eu", 1)
    with pytest.raises(PolicyViolationError, match="would make 7"):  # 2 + 3 + 2
        create(again, "x", 2)
    run(again.delete_topic("other"))
    create(again, "x", 3)
    again.close_sync()


def test_a_topic_whose_delete_was_interrupted_is_removed_at_open(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    topic = create(manager, "t", 2)
    manager.get_log("t", 1).append(make_batch(3))
    manager.close_sync()
    (topic.directory / "topic.json").unlink()  # crash right after the commit point of a delete
    again = LogManager.open(tmp_path)
    assert again.list_topics() == []
    assert topic_dirs(tmp_path) == []
    again.close_sync()


def test_partitions_past_the_count_are_removed_at_open(tmp_path: Path) -> None:
    """A partition increase that crashed before ``topic.json`` was rewritten."""
    manager = LogManager.open(tmp_path)
    topic = create(manager, "t", 2)
    manager.close_sync()
    (topic.directory / "2").mkdir()
    (topic.directory / "2" / "00000000000000000000.log").write_bytes(b"")
    again = LogManager.open(tmp_path)
    assert len(again.topic("t").partitions) == 2
    assert sorted(p.name for p in topic.directory.iterdir()) == ["0", "1", "topic.json"]
    again.close_sync()


def test_unreadable_metadata_refuses_to_open_rather_than_guess(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    topic = create(manager, "t")
    manager.close_sync()
    (topic.directory / "topic.json").write_text(json.dumps({"name": "t"}))
    with pytest.raises(Exception, match="unreadable"):
        LogManager.open(tmp_path)


def test_a_topic_file_naming_an_invalid_topic_refuses_to_open_and_removes_nothing(tmp_path: Path) -> None:
    """Kafka refuses a log directory it cannot name a topic from. A topic.json whose name is
    not a valid topic name ("bad name", edited by hand) used to be served in Metadata. Now the
    start is refused, naming the file, before anything is removed or consumed: once the name is
    fixed, the next start opens everything from the clean-shutdown state."""
    manager = LogManager.open(tmp_path)
    topic = create(manager, "t")
    manager.get_log("t", 0).append(make_batch(3))
    create(manager, "other")
    manager.close_sync()
    interrupted = tmp_path / f"gone.{'0' * 32}"  # a creation a crash interrupted
    interrupted.mkdir()
    meta_path = topic.directory / "topic.json"
    good = meta_path.read_text()
    meta_path.write_text(json.dumps({**json.loads(good), "name": "bad name"}))
    files_before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(Exception, match="invalid topic") as refused:
        LogManager.open(tmp_path)
    assert str(meta_path) in str(refused.value)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == files_before
    meta_path.write_text(good)
    again = LogManager.open(tmp_path)
    assert again.list_topics() == ["other", "t"]
    assert again.get_log("t", 0).recovery.clean and again.get_log("t", 0).log_end_offset == 3
    assert not interrupted.exists()
    again.close_sync()


def test_many_partitions_open_in_parallel_and_recover(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    create(manager, "many", 24)
    for p in range(24):
        manager.get_log("many", p).append(make_batch(p + 1))
    for partition_log in manager.all_logs():
        partition_log.abandon()  # crash: no clean-shutdown markers
    again = LogManager.open(tmp_path)
    assert [again.get_log("many", p).log_end_offset for p in range(24)] == [p + 1 for p in range(24)]
    assert not any(again.get_log("many", p).recovery.clean for p in range(24))
    assert len(all_records(again.get_log("many", 23))) == 24
    again.close_sync()


def _legacy_layout(data: Path) -> str:
    """A data directory as sluice 0.1 left it: ``.topics/t.json``, ``t-<p>/`` partition
    directories (one with 0.1's clean-shutdown marker), a delete in progress and an orphan."""
    topic_id = "5f1c0c2a-2d3e-4a4b-9c5d-6e7f8091a2b3"
    (data / ".topics").mkdir(parents=True)
    (data / ".topics" / "t.json").write_text(
        json.dumps({"name": "t", "topic_id": topic_id, "partitions": 2, "configs": {"retention.ms": "60000"}})
    )
    for p in range(2):
        log = PartitionLog.open(data / f"t-{p}")
        log.append(make_batch(2, tag=f"legacy{p}"))
        log.close()
    marker = data / "t-1" / ".clean-shutdown"
    size = (data / "t-1" / "00000000000000000000.log").stat().st_size
    marker.write_text(json.dumps({"active_base": 0, "active_size": size, "log_end_offset": 2}))
    (data / "gone-0.0123abc-delete").mkdir()
    (data / "orphan-3").mkdir()
    return topic_id


def test_the_layout_of_sluice_0_1_is_moved_at_open(tmp_path: Path) -> None:
    topic_id = _legacy_layout(tmp_path)
    manager = LogManager.open(tmp_path)
    assert manager.list_topics() == ["t"]
    topic = manager.topic("t")
    assert str(topic.topic_id) == topic_id and topic.config.retention_ms == 60000
    assert [[(v or b"")[:8] for _, v in all_records(p.log)] for p in topic.partitions] == [
        [b"legacy0-"] * 2,
        [b"legacy1-"] * 2,
    ]
    assert topic_dirs(tmp_path) == [f"t.{topic_id.replace('-', '')}"]
    assert not (tmp_path / ".topics").exists()
    manager.close_sync()


def test_an_interrupted_move_from_the_old_layout_is_finished(tmp_path: Path) -> None:
    topic_id = _legacy_layout(tmp_path)
    # Crash after the first partition moved, before topic.json was written.
    target = tmp_path / f"t.{topic_id.replace('-', '')}"
    target.mkdir()
    (tmp_path / "t-0").rename(target / "0")
    manager = LogManager.open(tmp_path)
    assert [len(all_records(p.log)) for p in manager.topic("t").partitions] == [2, 2]
    manager.close_sync()
    again = LogManager.open(tmp_path)
    assert [p.log.recovery.clean for p in again.topic("t").partitions] == [True, True]
    again.close_sync()


def test_a_clean_restart_opens_partitions_without_touching_their_files(tmp_path: Path) -> None:
    """The clean-shutdown state makes opening free of I/O per partition: no descriptor is opened,
    and the logs answer offsets at once; a crash after that start is recovered, not trusted."""

    async def fill() -> None:
        manager = LogManager.open(tmp_path)
        await manager.create_topic("t", 50)
        for p, plog in enumerate(manager.topic("t").partitions):
            await plog.append(make_batch(p % 3 + 1))
        await manager.close()

    run(fill())
    assert (tmp_path / ".clean-shutdown").is_file()
    before = len(os.listdir("/proc/self/fd"))
    manager = LogManager.open(tmp_path)
    assert len(os.listdir("/proc/self/fd")) - before <= 2  # the executor's, not one per partition
    assert not (tmp_path / ".clean-shutdown").exists()
    logs = [p.log for p in manager.topic("t").partitions]
    assert all(p.recovery.clean for p in logs)
    assert [p.log_end_offset for p in logs] == [p % 3 + 1 for p in range(50)]
    assert [len(all_records(p)) for p in logs] == [p % 3 + 1 for p in range(50)]
    for plog in manager.all_logs():
        plog.abandon()  # a crash
    manager.executor.shutdown()
    again = LogManager.open(tmp_path)
    assert not any(p.recovery.clean for p in again.all_logs())
    assert [p.log_end_offset for p in again.all_logs()] == [p % 3 + 1 for p in range(50)]
    again.close_sync()


def test_a_clean_stop_syncs_the_filesystem_with_libcs_syncfs(tmp_path: Path) -> None:
    """One syncfs makes a stop's writes durable: found among the process's own symbols (no
    ldconfig subprocess), and a directory that cannot be opened is an OSError, not a silent pass."""
    import sys

    from sluice.storage import files

    files.sync_filesystem(tmp_path)
    if sys.platform == "linux":
        assert getattr(files._libc, "syncfs", None) is not None
    with pytest.raises(OSError):
        files.sync_filesystem(tmp_path / "missing")
