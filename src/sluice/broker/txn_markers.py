"""Transaction markers on partitions: :func:`write_markers` (what ``Broker.write_txn_markers``
does, for the transaction coordinator) and the WriteTxnMarkers API on top of it (key 27, which
Kafka's coordinator sends to partition leaders, and ``Admin.abortTransaction`` sends to abort a
hanging transaction).

Each marker is appended the way appends are (behind every append its partition accepted before
it) and answered once fsynced, whatever the topic's ``sluice.append.ack``: a coordinator that
forgets a transaction once its markers are acknowledged must never see one lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from sluice.broker.context import BrokerContext
from sluice.errors import ErrorCode, LogClosedError, SluiceError
from sluice.protocol import Request
from sluice.protocol import messages as m
from sluice.storage.manager import LogManager

log = logging.getLogger(__name__)

Target = tuple[str, int]


async def write_markers(
    logs: LogManager,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int | None,
    commit: bool,
    partitions: Iterable[Target],
) -> dict[Target, ErrorCode]:
    """A COMMIT or ABORT marker for ``producer_id`` on every partition, concurrently; per
    partition NONE or the error code. ``coordinator_epoch`` None: from this node's own
    transaction coordinator, which no marker can fence."""
    targets = list(dict.fromkeys(partitions))
    codes = await asyncio.gather(
        *(
            _write_one(logs, topic, index, producer_id, producer_epoch, coordinator_epoch, commit)
            for topic, index in targets
        )
    )
    return dict(zip(targets, codes, strict=True))


async def _write_one(
    logs: LogManager,
    topic: str,
    index: int,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int | None,
    commit: bool,
) -> ErrorCode:
    try:
        partition = logs.get_partition(topic, index)
    except SluiceError as exc:
        return exc.code
    try:
        await partition.write_txn_marker(producer_id, producer_epoch, coordinator_epoch, commit)
    except LogClosedError as exc:
        try:
            logs.get_partition(topic, index)
        except SluiceError:  # the topic was deleted meanwhile
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        return exc.code
    except SluiceError as exc:
        return exc.code
    return ErrorCode.NONE


async def write_txn_markers(broker: BrokerContext, request: Request) -> m.WriteTxnMarkersResponse:
    """A marker for the current producer of a transactional id at an epoch past the one the
    coordinator gave it (a typo in ``kafka-transactions.sh abort --producer-epoch``) is refused
    INVALID_PRODUCER_EPOCH on every partition: written, it would fence that id's producers on
    the partition until their epochs pass it (for good, near the epoch limit)."""
    body = request.body
    assert isinstance(body, m.WriteTxnMarkersRequest)
    epochs = broker.current_epochs({marker.producer_id for marker in body.markers})
    results = await asyncio.gather(
        *(_write_request_marker(broker, marker, epochs.get(marker.producer_id)) for marker in body.markers)
    )
    return m.WriteTxnMarkersResponse(
        markers=[
            m.WritableTxnMarkerResult(
                producer_id=marker.producer_id,
                topics=[
                    m.WritableTxnMarkerTopicResult(
                        name=topic.name,
                        partitions=[
                            m.WritableTxnMarkerPartitionResult(
                                partition_index=index, error_code=codes[topic.name, index]
                            )
                            for index in topic.partition_indexes
                        ],
                    )
                    for topic in marker.topics
                ],
            )
            for marker, codes in zip(body.markers, results, strict=True)
        ]
    )


async def _write_request_marker(
    broker: BrokerContext, marker: m.WritableTxnMarker, current: int | None
) -> dict[Target, ErrorCode]:
    """``current``: the epoch the coordinator gave the marker's producer (None: not one of its
    transactional ids' current producers)."""
    targets = [(topic.name, index) for topic in marker.topics for index in topic.partition_indexes]
    if current is not None and marker.producer_epoch > current:
        log.warning(
            "WriteTxnMarkers refused: producer %d epoch %d is past its transactional id's "
            "current epoch %d (it would fence that id's producers on %s)",
            marker.producer_id,
            marker.producer_epoch,
            current,
            ", ".join(f"{t}[{p}]" for t, p in dict.fromkeys(targets)),
        )
        return dict.fromkeys(targets, ErrorCode.INVALID_PRODUCER_EPOCH)
    return await broker.write_txn_markers(
        marker.producer_id,
        marker.producer_epoch,
        marker.coordinator_epoch,
        marker.transaction_result,
        targets,
    )
