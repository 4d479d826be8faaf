"""LogManager: topics, their durable configuration, and the partition logs of a data directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from sluice.errors import (
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from sluice.storage import LogManager

from .conftest import all_records, make_batch


def test_topics_and_configs_survive_a_restart(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    manager.create_topic("orders", 3, {"retention.ms": "60000", "sluice.append.ack": "fsynced"})
    manager.create_topic("audit.log_v2", 1)
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


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "has space", "slash/y", "ünï"])
def test_invalid_topic_names_are_refused(tmp_path: Path, name: str) -> None:
    manager = LogManager.open(tmp_path)
    with pytest.raises(InvalidTopicError) as info:
        manager.create_topic(name)
    assert info.value.code == 17
    assert manager.list_topics() == []
    manager.close_sync()


def test_create_refuses_duplicates_bad_counts_and_bad_configs(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    manager.create_topic("t")
    with pytest.raises(TopicAlreadyExistsError):
        manager.create_topic("t")
    with pytest.raises(InvalidPartitionsError):
        manager.create_topic("u", 0)
    with pytest.raises(InvalidConfigError):
        manager.create_topic("u", 1, {"retention.ms": "soon"})
    assert manager.list_topics() == ["t"]
    assert not (tmp_path / "u-0").exists()
    manager.create_topic("v", 2, validate_only=True)
    assert "v" not in manager.topics and not (tmp_path / "v-0").exists()
    manager.close_sync()


def test_alter_configs_full_and_incremental(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    manager.create_topic("t", 1, {"retention.ms": "1000"})
    manager.alter_topic_config("t", {"segment.bytes": "4096"})
    assert manager.topic("t").config_overrides == {"retention.ms": "1000", "segment.bytes": "4096"}
    manager.alter_topic_config("t", delete_configs=["retention.ms"])
    assert manager.topic("t").config_overrides == {"segment.bytes": "4096"}
    manager.alter_topic_config("t", {"flush.messages": "5"}, replace=True)
    assert manager.topic("t").config_overrides == {"flush.messages": "5"}
    assert manager.get_log("t", 0).config.flush_messages == 5
    with pytest.raises(InvalidConfigError):
        manager.alter_topic_config("t", {"flush.messages": "0"})
    assert manager.topic("t").config.flush_messages == 5  # unchanged after a refused change
    manager.close_sync()
    assert LogManager.open(tmp_path).topic("t").config.flush_messages == 5


def test_add_partitions_only_grows(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    manager.create_topic("t", 2)
    manager.add_partitions("t", 5)
    assert len(manager.topic("t").partitions) == 5
    with pytest.raises(InvalidPartitionsError):
        manager.add_partitions("t", 3)
    manager.close_sync()
    assert len(LogManager.open(tmp_path).topic("t").partitions) == 5


def test_delete_topic_removes_data_and_a_recreated_topic_starts_empty(tmp_path: Path) -> None:
    async def main() -> None:
        manager = LogManager.open(tmp_path)
        manager.create_topic("t", 2)
        await manager.get_log("t", 0).submit(make_batch(3))
        await manager.delete_topic("t")
        assert manager.list_topics() == []
        assert not any(p.name.startswith("t-") for p in tmp_path.iterdir())
        with pytest.raises(UnknownTopicOrPartitionError):
            manager.get_log("t", 0)
        manager.create_topic("t", 1)
        assert manager.get_log("t", 0).log_end_offset == 0
        await manager.close()

    asyncio.run(main())


def test_the_longest_topic_names_survive_delete_recreate_and_orphan_cleanup(tmp_path: Path) -> None:
    """A 249-character name makes 255-character partition directories; renaming one for deletion
    must still fit NAME_MAX, or delete, re-create and start-up cleanup all fail."""
    long, orphan = "d" * 249, "o" * 249

    async def main() -> None:
        manager = LogManager.open(tmp_path)
        manager.create_topic(long, 3)
        manager.create_topic(orphan, 1)
        await manager.get_log(long, 2).submit(make_batch(3))
        await manager.delete_topic(long)
        manager.create_topic(long, 1)
        assert manager.get_log(long, 0).log_end_offset == 0
        await manager.close()

    asyncio.run(main())
    (tmp_path / ".topics" / f"{orphan}.json").unlink()  # its partition dir is now an orphan
    again = LogManager.open(tmp_path)
    assert again.list_topics() == [long]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".topics", f"{long}-0"]
    again.close_sync()


def test_names_that_differ_only_by_dot_and_underscore_collide(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    manager.create_topic("orders.eu", 1)
    with pytest.raises(InvalidTopicError, match="collides"):
        manager.create_topic("orders_eu", 1)
    manager.close_sync()


def test_orphan_partition_dirs_from_an_interrupted_delete_are_removed(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    manager.create_topic("t", 2)
    manager.get_log("t", 1).append(make_batch(3))
    manager.close_sync()
    (tmp_path / ".topics" / "t.json").unlink()  # crash right after the metadata went
    (tmp_path / "x-0.abc-delete").mkdir()  # and a rename that was never removed
    again = LogManager.open(tmp_path)
    assert again.list_topics() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".topics"]
    again.close_sync()


def test_unreadable_metadata_refuses_to_open_rather_than_guess(tmp_path: Path) -> None:
    LogManager.open(tmp_path).close_sync()
    (tmp_path / ".topics" / "t.json").write_text(json.dumps({"name": "t"}))
    with pytest.raises(Exception, match="unreadable"):
        LogManager.open(tmp_path)


def test_many_partitions_open_in_parallel_and_recover(tmp_path: Path) -> None:
    manager = LogManager.open(tmp_path)
    manager.create_topic("many", 24)
    for p in range(24):
        manager.get_log("many", p).append(make_batch(p + 1))
    for partition_log in manager.all_logs():
        partition_log.abandon()  # crash: no clean-shutdown markers
    again = LogManager.open(tmp_path)
    assert [again.get_log("many", p).log_end_offset for p in range(24)] == [p + 1 for p in range(24)]
    assert not any(again.get_log("many", p).recovery.clean for p in range(24))
    assert len(all_records(again.get_log("many", 23))) == 24
    again.close_sync()
