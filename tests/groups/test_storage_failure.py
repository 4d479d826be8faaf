"""The group store's disk fills, for real: the data directory on a small tmpfs filled to the
last byte. A deletion the store refuses must leave the group exactly as it was (listed,
describable, its offsets served, deletable again once space returns), because the store still
holds it and a restart would bring it back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.broker.groups import GroupConfig
from sluice.errors import ErrorCode, SluiceError
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from tests.disks import fill, small_tmpfs
from tests.groups.conftest import FakeClock, Harness
from tests.groups.test_membership import describe
from tests.groups.test_offsets import _delete, _offset_delete, commit, fetch, txn_commit_one

E = ErrorCode

PARTITIONS = 200
OFFSETS = {("t", p): 7 for p in range(PARTITIONS)}


@pytest.fixture
def disk_harness(tmp_path: Path, clock: FakeClock) -> Iterator[Harness]:
    """A coordinator whose data directory is on a 24 MiB tmpfs (mounting needs root, as the
    broker's full-disk test does), with topic ``t`` of many partitions: deleting its offsets is
    a write of several pages, which a full tmpfs must refuse (a few bytes could still land in
    the slack of the log's last page)."""
    with small_tmpfs(tmp_path / "disk") as mount_point:
        h = None
        try:
            h = Harness(mount_point / "data", clock, GroupConfig(offsets_retention_ms=60_000))
            h.run(h.logs.create_topic("t", PARTITIONS))
            yield h
        finally:
            (mount_point / "filler").unlink(missing_ok=True)
            if h is not None:
                h.close()


def _listed(h: Harness) -> set[str]:
    resp: m.ListGroupsResponse = h.call(ApiKey.LIST_GROUPS, 4, m.ListGroupsRequest())
    return {g.group_id for g in resp.groups}


def _assert_alive_with_its_offsets(h: Harness) -> None:
    assert describe(h, "idle").group_state == "Empty"
    assert "idle" in _listed(h)
    assert fetch(h, list(OFFSETS), group="idle") == {tp: (7, "meta") for tp in OFFSETS}


def test_a_refused_delete_groups_keeps_the_group(disk_harness: Harness) -> None:
    h = disk_harness
    assert set(commit(h, OFFSETS, group="idle").values()) == {E.NONE}
    disk = h.data_dir.parent
    fill(disk, leave=0)
    assert _delete(h, "idle") == {"idle": E.COORDINATOR_NOT_AVAILABLE}
    _assert_alive_with_its_offsets(h)
    (disk / "filler").unlink()
    assert _delete(h, "idle") == {"idle": E.NONE}  # a retry deletes it, rather than "not found"
    h.restart()
    assert describe(h, "idle").group_state == "Dead"
    assert fetch(h, list(OFFSETS), group="idle") == {}


def test_a_refused_offset_delete_of_the_last_offset_keeps_the_group(
    disk_harness: Harness,
) -> None:
    h = disk_harness
    assert set(commit(h, OFFSETS, group="idle").values()) == {E.NONE}
    disk = h.data_dir.parent
    fill(disk, leave=0)
    assert _offset_delete(h, "idle", list(OFFSETS)) == (
        E.NONE,
        dict.fromkeys(OFFSETS, E.COORDINATOR_NOT_AVAILABLE),
    )
    _assert_alive_with_its_offsets(h)
    (disk / "filler").unlink()
    assert _offset_delete(h, "idle", list(OFFSETS)) == (E.NONE, dict.fromkeys(OFFSETS, E.NONE))
    assert describe(h, "idle").group_state == "Dead"


def test_a_refused_expiry_keeps_the_group_and_expires_it_later(disk_harness: Harness) -> None:
    h = disk_harness
    assert set(commit(h, OFFSETS, group="idle").values()) == {E.NONE}
    h.clock.advance(61)
    disk = h.data_dir.parent
    fill(disk, leave=0)
    with pytest.raises(SluiceError):
        h.run(h.coordinator.expire_offsets())
    _assert_alive_with_its_offsets(h)
    (disk / "filler").unlink()
    assert h.run(h.coordinator.expire_offsets()) == PARTITIONS
    assert describe(h, "idle").group_state == "Dead"


def test_a_refused_commit_to_a_new_group_leaves_no_group(disk_harness: Harness) -> None:
    """The store holds nothing of a group whose first commit it refused, so neither does
    ListGroups (a restart would not bring it back either)."""
    h = disk_harness
    disk = h.data_dir.parent
    fill(disk, leave=0)
    assert set(commit(h, OFFSETS, group="fresh").values()) == {E.COORDINATOR_NOT_AVAILABLE}
    assert "fresh" not in _listed(h)
    assert describe(h, "fresh").group_state == "Dead"
    # A TxnOffsetCommit's too (it left an Empty group in ListGroups until the next expiry run)
    assert txn_commit_one(h, "fresh-txn") == E.COORDINATOR_NOT_AVAILABLE
    assert "fresh-txn" not in _listed(h)
    assert describe(h, "fresh-txn").group_state == "Dead"
    (disk / "filler").unlink()
    assert set(commit(h, OFFSETS, group="fresh").values()) == {E.NONE}
    assert "fresh" in _listed(h)
