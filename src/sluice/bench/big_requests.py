"""How long one big legal request holds the broker's event loop: a ``sluice serve`` child gets
requests holding ``--elements`` array elements each (the default, 199,990, is just under
``sluice.request.max.array.elements``), one kind at a time, while another connection sends
ApiVersions in a loop; the table shows how long the big request took and the longest that
ApiVersions waited meanwhile (every other client waits as long). The numbers in
docs/broker.md::

    python -m sluice.bench.big_requests
    python -m sluice.bench.big_requests --elements 50000 --kinds produce,metadata

Kinds: ``produce`` (acks=1, partitions of an unknown topic), ``metadata`` (unknown topic
names, no auto-creation), ``list_offsets`` (partitions of a 4-partition topic, most unknown),
``fetch`` (likewise).
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from pathlib import Path

from sluice.bench.partitions import Serve
from sluice.protocol import ApiKey, RequestBody, encode_request
from sluice.protocol import messages as m
from sluice.roundtrip import round_trip
from sluice.testing import create_topic

KINDS = ("produce", "metadata", "list_offsets", "fetch")
TOPIC = "bench-big"


def _request(kind: str, n: int) -> tuple[ApiKey, int, RequestBody]:
    if kind == "produce":
        return ApiKey.PRODUCE, 9, m.ProduceRequest(
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
    if kind == "metadata":
        return ApiKey.METADATA, 9, m.MetadataRequest(
            topics=[m.MetadataRequestTopic(name=f"bench-none-{i}") for i in range(n)],
            allow_auto_topic_creation=False,
        )
    if kind == "list_offsets":
        return ApiKey.LIST_OFFSETS, 5, m.ListOffsetsRequest(
            replica_id=-1,
            isolation_level=0,
            topics=[
                m.ListOffsetsTopic(
                    name=TOPIC,
                    partitions=[
                        m.ListOffsetsPartition(partition_index=i, timestamp=-1) for i in range(n)
                    ],
                )
            ],
        )
    if kind == "fetch":
        return ApiKey.FETCH, 11, m.FetchRequest(
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
    raise ValueError(kind)


def measure(port: int, kind: str, elements: int) -> tuple[float, float, int]:
    """(seconds the big request took, longest ApiVersions wait meanwhile, ApiVersions answered
    meanwhile)."""
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
        round_trip(sock, frame, api, version, 1, started + 300)
        took = time.monotonic() - started
        done.set()
        thread.join()
    return took, worst, answered


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
                  "| other requests answered meanwhile |")
            print("| --- | ---: | ---: | ---: |")
            for kind in kinds:
                took, worst, answered = measure(serve.port, kind, args.elements)
                print(f"| {kind} | {took:.2f} | {worst:.2f} | {answered} |", flush=True)
        finally:
            serve.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
