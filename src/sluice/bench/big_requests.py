"""How long one big legal request holds the broker's event loop: a ``sluice serve`` child gets
requests holding ``--elements`` array elements each (the default, 199,990, is just under
``sluice.request.max.array.elements``), one kind at a time, while another connection sends
ApiVersions in a loop; the table shows how long the big request took and the longest that
ApiVersions waited meanwhile (every other client waits as long). The numbers in
docs/broker.md::

    python -m sluice.bench.big_requests
    python -m sluice.bench.big_requests --elements 50000 --kinds produce,metadata

Kinds (``KINDS``): ``produce`` (acks=1, partitions of an unknown topic), ``metadata``
(unknown topic names, no auto-creation), ``list_offsets``, ``fetch``, ``offset_commit``,
``offset_fetch``, ``offset_delete``, ``delete_records``, ``describe_producers``,
``elect_leaders`` and ``describe_log_dirs`` (partitions of a 4-partition topic, most unknown),
``describe_configs``, ``alter_configs`` (validate only), ``delete_topics`` (unknown topic
names), ``create_topics`` (new names, validate only), ``describe_groups``, ``delete_groups``
and ``describe_transactions`` (unknown ids).
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sluice.bench.partitions import Serve
from sluice.broker.broker import ADVERTISED
from sluice.protocol import ApiKey, RequestBody, encode_request
from sluice.protocol import messages as m
from sluice.roundtrip import round_trip
from sluice.testing import create_topic

TOPIC = "bench-big"
GROUP = "bench-big-group"


def _partitions(n: int) -> list[int]:
    return list(range(n))


def _produce(n: int) -> RequestBody:
    return m.ProduceRequest(
        transactional_id=None,
        acks=1,
        timeout_ms=30_000,
        topic_data=[
            m.ProduceTopicData(
                name="bench-none",
                partition_data=[m.ProducePartitionData(index=i, records=None) for i in range(n)],
            )
        ],
    )


def _metadata(n: int) -> RequestBody:
    return m.MetadataRequest(
        topics=[m.MetadataRequestTopic(name=f"bench-none-{i}") for i in range(n)],
        allow_auto_topic_creation=False,
    )


def _list_offsets(n: int) -> RequestBody:
    return m.ListOffsetsRequest(
        replica_id=-1,
        isolation_level=0,
        topics=[
            m.ListOffsetsTopic(
                name=TOPIC,
                partitions=[m.ListOffsetsPartition(partition_index=i, timestamp=-1) for i in range(n)],
            )
        ],
    )


def _fetch(n: int) -> RequestBody:
    return m.FetchRequest(
        replica_id=-1,
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            m.FetchTopic(
                topic=TOPIC,
                partitions=[
                    m.FetchPartition(partition=i, fetch_offset=0, partition_max_bytes=1024)
                    for i in range(n)
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
    )


def _offset_commit(n: int) -> RequestBody:
    return m.OffsetCommitRequest(
        group_id=GROUP,
        generation_id_or_member_epoch=-1,
        member_id="",
        topics=[
            m.OffsetCommitRequestTopic(
                name=TOPIC,
                partitions=[
                    m.OffsetCommitRequestPartition(
                        partition_index=i, committed_offset=0, committed_metadata=None
                    )
                    for i in range(n)
                ],
            )
        ],
    )


def _offset_fetch(n: int) -> RequestBody:
    topics = [m.OffsetFetchRequestTopic(name=TOPIC, partition_indexes=_partitions(n))]
    return m.OffsetFetchRequest(
        group_id=GROUP,
        topics=topics,
        groups=[m.OffsetFetchRequestGroup(group_id=GROUP, topics=topics)],
    )


def _delete_records(n: int) -> RequestBody:
    return m.DeleteRecordsRequest(
        topics=[
            m.DeleteRecordsTopic(
                name=TOPIC,
                partitions=[m.DeleteRecordsPartition(partition_index=i, offset=0) for i in range(n)],
            )
        ],
        timeout_ms=30_000,
    )


def _describe_configs(n: int) -> RequestBody:
    return m.DescribeConfigsRequest(
        resources=[
            m.DescribeConfigsResource(
                resource_type=2, resource_name=f"bench-none-{i}", configuration_keys=None
            )
            for i in range(n)
        ]
    )


def _create_topics(n: int) -> RequestBody:
    return m.CreateTopicsRequest(
        topics=[
            m.CreatableTopic(
                name=f"bench-new-{i}", num_partitions=1, replication_factor=1, assignments=[],
                configs=[],
            )
            for i in range(n)
        ],
        timeout_ms=30_000,
        validate_only=True,
    )


def _delete_topics(n: int) -> RequestBody:
    names = [f"bench-none-{i}" for i in range(n)]
    return m.DeleteTopicsRequest(
        topics=[m.DeleteTopicState(name=name, topic_id=uuid.UUID(int=0)) for name in names],
        topic_names=names,
        timeout_ms=30_000,
    )


def _describe_groups(n: int) -> RequestBody:
    return m.DescribeGroupsRequest(
        groups=[f"bench-none-{i}" for i in range(n)], include_authorized_operations=False
    )


def _delete_groups(n: int) -> RequestBody:
    return m.DeleteGroupsRequest(groups_names=[f"bench-none-{i}" for i in range(n)])


def _offset_delete(n: int) -> RequestBody:
    return m.OffsetDeleteRequest(
        group_id=GROUP,
        topics=[
            m.OffsetDeleteRequestTopic(
                name=TOPIC,
                partitions=[m.OffsetDeleteRequestPartition(partition_index=i) for i in range(n)],
            )
        ],
    )


def _describe_producers(n: int) -> RequestBody:
    return m.DescribeProducersRequest(
        topics=[m.DescribeProducersTopicRequest(name=TOPIC, partition_indexes=_partitions(n))]
    )


def _elect_leaders(n: int) -> RequestBody:
    return m.ElectLeadersRequest(
        election_type=0,
        topic_partitions=[m.ElectLeadersTopic(topic=TOPIC, partitions=_partitions(n))],
        timeout_ms=30_000,
    )


def _describe_log_dirs(n: int) -> RequestBody:
    return m.DescribeLogDirsRequest(
        topics=[m.DescribableLogDirTopic(topic=TOPIC, partitions=_partitions(n))]
    )


def _alter_configs(n: int) -> RequestBody:
    return m.AlterConfigsRequest(
        resources=[
            m.AlterConfigsResource(resource_type=2, resource_name=f"bench-none-{i}", configs=[])
            for i in range(n)
        ],
        validate_only=True,
    )


def _describe_transactions(n: int) -> RequestBody:
    return m.DescribeTransactionsRequest(transactional_ids=[f"bench-none-{i}" for i in range(n)])


REQUESTS: dict[str, tuple[ApiKey, Callable[[int], RequestBody]]] = {
    "produce": (ApiKey.PRODUCE, _produce),
    "metadata": (ApiKey.METADATA, _metadata),
    "list_offsets": (ApiKey.LIST_OFFSETS, _list_offsets),
    "fetch": (ApiKey.FETCH, _fetch),
    "offset_commit": (ApiKey.OFFSET_COMMIT, _offset_commit),
    "offset_fetch": (ApiKey.OFFSET_FETCH, _offset_fetch),
    "offset_delete": (ApiKey.OFFSET_DELETE, _offset_delete),
    "delete_records": (ApiKey.DELETE_RECORDS, _delete_records),
    "describe_configs": (ApiKey.DESCRIBE_CONFIGS, _describe_configs),
    "alter_configs": (ApiKey.ALTER_CONFIGS, _alter_configs),
    "create_topics": (ApiKey.CREATE_TOPICS, _create_topics),
    "delete_topics": (ApiKey.DELETE_TOPICS, _delete_topics),
    "describe_groups": (ApiKey.DESCRIBE_GROUPS, _describe_groups),
    "delete_groups": (ApiKey.DELETE_GROUPS, _delete_groups),
    "describe_producers": (ApiKey.DESCRIBE_PRODUCERS, _describe_producers),
    "elect_leaders": (ApiKey.ELECT_LEADERS, _elect_leaders),
    "describe_log_dirs": (ApiKey.DESCRIBE_LOG_DIRS, _describe_log_dirs),
    "describe_transactions": (ApiKey.DESCRIBE_TRANSACTIONS, _describe_transactions),
}
"""Each kind: the API and the request body (sent at the newest version the broker serves)."""
KINDS = tuple(REQUESTS)


def _request(kind: str, n: int) -> tuple[ApiKey, int, RequestBody]:
    api, build = REQUESTS[kind]
    return api, ADVERTISED[api][1], build(n)


def _skip_answer(sock: socket.socket) -> int:
    """Read one answer frame whole without decoding it (some are hundreds of MB: only the
    broker's time is measured); its size."""
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        if not chunk:
            raise ConnectionError("the broker closed the connection instead of answering")
        head += chunk
    size = left = int.from_bytes(head, "big", signed=True)
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the broker closed the connection in the middle of its answer")
        left -= len(chunk)
    return size


def measure(port: int, kind: str, elements: int) -> tuple[float, float, int, int]:
    """(seconds the big request took, longest ApiVersions wait meanwhile, ApiVersions answered
    meanwhile, the answer's bytes)."""
    api, version, body = _request(kind, elements)
    frame = encode_request(api, version, 1, "bench", body)  # before the clock: client work
    ping = encode_request(ApiKey.API_VERSIONS, 3, 1, "ping", m.ApiVersionsRequest(
        client_software_name="bench", client_software_version="1"))
    worst = 0.0
    answered = 0
    done = threading.Event()

    def pinger() -> None:
        nonlocal worst, answered
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            while not done.is_set():
                started = time.monotonic()
                round_trip(sock, ping, ApiKey.API_VERSIONS, 3, 1, started + 120)
                worst = max(worst, time.monotonic() - started)
                answered += 1

    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        thread = threading.Thread(target=pinger, daemon=True)
        thread.start()
        while not answered:  # the pinger is connected and served before the big request
            time.sleep(0.001)
        worst, answered = 0.0, 0
        started = time.monotonic()
        sock.sendall(frame)
        size = _skip_answer(sock)
        took = time.monotonic() - started
        done.set()
        thread.join()
    return took, worst, answered, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice.bench.big_requests",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--elements", type=int, default=199_990)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",")]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"no kind {', '.join(sorted(unknown))}; the kinds: {', '.join(KINDS)}")
    with tempfile.TemporaryDirectory(prefix="sluice-bench-big-") as tmp:
        serve = Serve(Path(tmp) / "data", Path(tmp) / "serve.log")
        serve.start()
        try:
            create_topic(serve.bootstrap, TOPIC, 4)
            print(f"| request ({args.elements:,} elements) | took s | longest other wait s "
                  "| other requests answered meanwhile | answer MB |")
            print("| --- | ---: | ---: | ---: | ---: |")
            for kind in kinds:
                took, worst, answered, size = measure(serve.port, kind, args.elements)
                print(f"| {kind} | {took:.2f} | {worst:.2f} | {answered} | {size / 1e6:.1f} |",
                      flush=True)
        finally:
            serve.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
