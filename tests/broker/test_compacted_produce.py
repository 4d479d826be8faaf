"""Produce to compacted topics at the handler level: a record without a key is refused with
Kafka's answer (INVALID_RECORD, each keyless record named in ``record_errors``), whether the
batch is small (checked on the loop) or big or compressed (in the executor), and nothing of the
request's partition is stored; tombstones are keyed records with null values and are taken;
other topics take keyless records as before; the policy follows AlterConfigs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sluice.broker.ingest import KEY_CHECK_INLINE_BYTES, RECORD_ERRORS_LISTED
from sluice.broker.produce import MESSAGE_TEXT_BUDGET
from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.compression import Compression
from sluice.protocol.messages import ConfigResourceType
from sluice.protocol.records import build_batch
from tests.broker.conftest import BrokerHarness
from tests.broker.test_ingest import part_of


@pytest.fixture
def h(harness: Callable[..., BrokerHarness]) -> BrokerHarness:
    made = harness()
    made.run(made.broker.logs.create_topic("c", 1, {"cleanup.policy": "compact"}))
    made.run(made.broker.logs.create_topic("d", 1))
    return made


def end(h: BrokerHarness, topic: str) -> int:
    return h.broker.logs.get_log(topic, 0).log_end_offset


@pytest.mark.parametrize(
    ("records", "codec"),
    [
        (3, Compression.NONE),  # checked on the loop
        (3, Compression.GZIP),
        (2_000, Compression.NONE),  # past KEY_CHECK_INLINE_BYTES: in the executor
        (2_000, Compression.ZSTD),
    ],
)
def test_keyless_records_are_refused_with_their_indexes(h: BrokerHarness, records: int, codec: int) -> None:
    pairs: list[tuple[bytes | None, bytes | None]] = [(f"k{i}".encode(), b"v" * 20) for i in range(records)]
    pairs[1] = (None, b"no key")
    pairs[-1] = (None, b"nor here")
    batch = build_batch(pairs, compression=codec)
    if records > 3:
        assert len(batch) * (8 if codec else 1) > KEY_CHECK_INLINE_BYTES
    part = part_of(h.produce("c", 0, batch))
    assert part.error_code == ErrorCode.INVALID_RECORD
    assert [e.batch_index for e in part.record_errors] == [1, records - 1]
    assert all("without key" in (e.batch_index_error_message or "") for e in part.record_errors)
    assert "c-0" in (part.error_message or "")
    assert end(h, "c") == 0  # nothing stored
    # the same records on a delete-policy topic are taken as they are
    assert part_of(h.produce("d", 0, batch)).error_code == ErrorCode.NONE


def test_a_batch_of_many_keyless_records_is_answered_in_proportion(h: BrokerHarness) -> None:
    """Each keyless record was listed with its own copy of the message: a 0.8 MB zstd batch of
    a million keyless records was answered with 79 MB, built and encoded on the event loop
    (2.5 s every other client waited). The answer lists the first RECORD_ERRORS_LISTED, with
    messages within the answer's MESSAGE_TEXT_BUDGET; the top-level message counts them all."""
    count = 3 * RECORD_ERRORS_LISTED
    batch = build_batch([(None, b"")] * count, compression=Compression.ZSTD)
    part = part_of(h.produce("c", 0, batch))
    assert part.error_code == ErrorCode.INVALID_RECORD
    assert [e.batch_index for e in part.record_errors] == list(range(RECORD_ERRORS_LISTED))
    texts = [e.batch_index_error_message for e in part.record_errors]
    assert "without key" in (texts[0] or "")
    assert sum(len(t or "") for t in texts) + len(part.error_message or "") <= MESSAGE_TEXT_BUDGET
    assert f"due to {count} record errors" in (part.error_message or "")
    assert end(h, "c") == 0


def test_keyed_records_and_tombstones_are_taken(h: BrokerHarness) -> None:
    batch = build_batch([(b"a", b"1"), (b"b", None), (b"", b"an empty key is a key")])
    part = part_of(h.produce("c", 0, batch))
    assert part.error_code == ErrorCode.NONE and part.base_offset == 0
    assert end(h, "c") == 3


def test_a_corrupt_batch_is_corrupt_before_its_keys_are_read(h: BrokerHarness) -> None:
    batch = bytearray(build_batch([(None, b"x")]))
    batch[-1] ^= 0xFF
    assert part_of(h.produce("c", 0, bytes(batch))).error_code == ErrorCode.CORRUPT_MESSAGE


def test_the_policy_follows_alter_configs(h: BrokerHarness) -> None:
    keyless = build_batch([(None, b"x")])

    def alter(policy: str) -> None:
        body = m.IncrementalAlterConfigsRequest(
            resources=[
                m.IncrementalAlterConfigsResource(
                    resource_type=ConfigResourceType.TOPIC,
                    resource_name="d",
                    configs=[m.IncrementalAlterableConfig(name="cleanup.policy", config_operation=0, value=policy)],
                )
            ],
            validate_only=False,
        )
        (res,) = h.call(ApiKey.INCREMENTAL_ALTER_CONFIGS, 1, body).responses
        assert res.error_code == 0, res.error_message

    alter("compact,delete")
    assert part_of(h.produce("d", 0, keyless)).error_code == ErrorCode.INVALID_RECORD
    alter("delete")
    assert part_of(h.produce("d", 0, keyless)).error_code == ErrorCode.NONE
