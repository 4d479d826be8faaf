"""A transactional producer by hand, over the wire, for the tests of the partition side of
transactions (no coordinator: a test ends a transaction with WriteTxnMarkers, as Kafka's
coordinator and ``Admin.abortTransaction`` do), on a broker started with :data:`UNVERIFIED`.

It gets a producer id from InitProducerId (idempotent: the transactional form is the
coordinator's), and sends Produce v9 requests naming a transactional id, each holding one batch
with the transactional bit set and the producer's id, epoch and next sequence number for that
partition, exactly as librdkafka's transactional producer builds them.
"""

from __future__ import annotations

import time

from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.protocol.records import build_batch
from tests.server.wire import WireClient

TRANSACTIONAL_ID = "raw-txn"

UNVERIFIED = {"transaction.partition.verification.enable": "false"}
"""The broker settings its tests need: without a coordinator's transaction, the broker's
transaction verification (on by default, as in Kafka) refuses its batches (INVALID_PRODUCER_ID_MAPPING)."""


class RawTxnProducer:
    def __init__(self, client: WireClient, *, epoch: int | None = None) -> None:
        self.client = client
        init = client.call(
            ApiKey.INIT_PRODUCER_ID,
            4,
            m.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000, producer_id=-1, producer_epoch=-1),
            m.InitProducerIdResponse,
        )
        assert init.error_code == 0, init.error_code
        self.producer_id = init.producer_id
        self.epoch = init.producer_epoch if epoch is None else epoch
        self.sequences: dict[tuple[str, int], int] = {}

    def send(
        self,
        topic: str,
        partition: int,
        values: list[bytes],
        *,
        transactional: bool = True,
        timestamp: int | None = None,
    ) -> m.ProducePartitionResponse:
        """One batch of ``values`` (keys ``k<i>``, stamped now or at ``timestamp``), acks=all;
        the answer for its partition."""
        seq = self.sequences.get((topic, partition), 0)
        batch = build_batch(
            [(f"k{i}".encode(), v) for i, v in enumerate(values)],
            base_timestamp=int(time.time() * 1000) if timestamp is None else timestamp,
            producer_id=self.producer_id,
            producer_epoch=self.epoch,
            base_sequence=seq,
            transactional=transactional,
        )
        request = m.ProduceRequest(
            transactional_id=TRANSACTIONAL_ID if transactional else None,
            acks=-1,
            timeout_ms=10_000,
            topic_data=[
                m.ProduceTopicData(
                    name=topic,
                    partition_data=[m.ProducePartitionData(index=partition, records=bytearray(batch))],
                )
            ],
        )
        resp = self.client.call(ApiKey.PRODUCE, 9, request, m.ProduceResponse)
        (part,) = resp.responses[0].partition_responses
        if part.error_code == 0:
            self.sequences[topic, partition] = seq + len(values)
        return part

    def end(
        self,
        commit: bool,
        partitions: list[tuple[str, int]],
        *,
        coordinator_epoch: int = 0,
        epoch: int | None = None,
        version: int = 1,
    ) -> dict[tuple[str, int], int]:
        """A COMMIT or ABORT marker on ``partitions`` (WriteTxnMarkers): error code per partition."""
        return write_markers(
            self.client,
            self.producer_id,
            self.epoch if epoch is None else epoch,
            commit,
            partitions,
            coordinator_epoch=coordinator_epoch,
            version=version,
        )


def write_markers(
    client: WireClient,
    producer_id: int,
    epoch: int,
    commit: bool,
    partitions: list[tuple[str, int]],
    *,
    coordinator_epoch: int = 0,
    version: int = 1,
) -> dict[tuple[str, int], int]:
    topics: dict[str, list[int]] = {}
    for topic, partition in partitions:
        topics.setdefault(topic, []).append(partition)
    request = m.WriteTxnMarkersRequest(
        markers=[
            m.WritableTxnMarker(
                producer_id=producer_id,
                producer_epoch=epoch,
                transaction_result=commit,
                topics=[m.WritableTxnMarkerTopic(name=t, partition_indexes=p) for t, p in topics.items()],
                coordinator_epoch=coordinator_epoch,
            )
        ]
    )
    resp = client.call(ApiKey.WRITE_TXN_MARKERS, version, request, m.WriteTxnMarkersResponse)
    (marker,) = resp.markers
    assert marker.producer_id == producer_id
    return {(t.name, p.partition_index): p.error_code for t in marker.topics for p in t.partitions}
