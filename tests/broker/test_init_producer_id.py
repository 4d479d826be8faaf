"""InitProducerId at every served version for idempotent producers: unique ids that are never
handed out twice (across clean restarts and crashes), and KIP-360 epoch bumps that fence the
older epoch on every partition. Transactional ids are the transaction coordinator's
(tests/transactions)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.records import build_batch
from tests.broker.conftest import BrokerHarness

VERSIONS = range(0, 6)


def init(h: BrokerHarness, version: int, pid: int = -1, epoch: int = -1, txn: str | None = None) -> m.InitProducerIdResponse:
    body = m.InitProducerIdRequest(
        transactional_id=txn, transaction_timeout_ms=60_000, producer_id=pid, producer_epoch=epoch
    )
    resp: m.InitProducerIdResponse = h.call_wire(ApiKey.INIT_PRODUCER_ID, version, body)
    return resp


@pytest.mark.parametrize("version", VERSIONS)
def test_each_producer_gets_a_new_id_at_epoch_zero(harness: Callable[..., BrokerHarness], version: int) -> None:
    h = harness()
    answers = [init(h, version) for _ in range(5)]
    assert [(a.error_code, a.producer_epoch) for a in answers] == [(0, 0)] * 5
    ids = [a.producer_id for a in answers]
    assert ids == sorted(set(ids)) and ids[0] >= 0


def test_ids_are_never_reused_after_a_restart_or_a_crash(harness: Callable[..., BrokerHarness], tmp_path: object) -> None:
    first = harness()
    before = {init(first, 4).producer_id for _ in range(3)}
    # A second broker on the same directory sees only what the first made durable: as after a
    # crash, the rest of the first's block is never handed out.
    crashed = BrokerHarness(first.broker.logs.data_dir, {})
    try:
        after = {init(crashed, 4).producer_id for _ in range(3)}
    finally:
        crashed.close()
    assert not before & after
    assert min(after) > max(before)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_a_producer_re_initialising_with_its_id_and_epoch_gets_the_next_epoch(
    harness: Callable[..., BrokerHarness], version: int
) -> None:
    h = harness()
    h.run(h.broker.logs.create_topic("t", 1))
    first = init(h, version)
    pid = first.producer_id
    batch = build_batch([(None, b"a")], producer_id=pid, producer_epoch=0, base_sequence=0)
    assert h.produce("t", 0, batch, acks=-1).responses[0].partition_responses[0].error_code == 0  # type: ignore[union-attr]
    bumped = init(h, version, pid, 0)
    assert (bumped.error_code, bumped.producer_id, bumped.producer_epoch) == (0, pid, 1)
    # once the partition has seen the new epoch, the old one is fenced there
    fresh = build_batch([(None, b"new")], producer_id=pid, producer_epoch=1, base_sequence=0)
    assert h.produce("t", 0, fresh, acks=-1).responses[0].partition_responses[0].error_code == 0  # type: ignore[union-attr]
    stale = build_batch([(None, b"b")], producer_id=pid, producer_epoch=0, base_sequence=1)
    part = h.produce("t", 0, stale, acks=-1).responses[0].partition_responses[0]  # type: ignore[union-attr]
    assert part.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
    # and asking again with it is refused as Kafka answers that version
    again = init(h, version, pid, 0)
    fenced = ErrorCode.PRODUCER_FENCED if version >= 4 else ErrorCode.INVALID_PRODUCER_EPOCH
    assert (again.error_code, again.producer_id) == (fenced, -1)
    # an id this broker never gave out starts over with a new one
    stranger = init(h, version, 10**12, 3)
    assert stranger.error_code == 0 and stranger.producer_id not in (pid, 10**12)
