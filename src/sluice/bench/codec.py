"""sluice's codec against kio (PyPI: generated from Kafka's JSON, a native reader, a Python
writer), for the numbers in docs/protocol.md ("kio or our own codec").

kio is not a dependency of sluice; install it next to sluice to run this::

    pip install kio==0.6.5
    python -m sluice.bench.codec              # timings, best of 5, microseconds per call
    python -m sluice.bench.codec --interop    # random messages: sluice encodes, kio decodes
                                              # and re-encodes, the bytes must be identical
"""

from __future__ import annotations

import argparse
import importlib
import io
import random
import sys
import timeit
from collections.abc import Callable
from typing import Any

from sluice.protocol import messages as m
from sluice.protocol.api_versions import SUPPORTED
from sluice.protocol.codec import encode_response
from sluice.protocol.fast import decode_fetch_request, decode_produce_request
from sluice.protocol.messages import APIS, ApiKey
from sluice.protocol.primitives import Reader
from sluice.protocol.samples import sample
from sluice.protocol.schema import decode_struct, encode_struct

MIB = 1 << 20
KIO_VERSION = "0.6.5"
"""The kio the numbers in docs/protocol.md were measured with."""


def best(fn: Callable[[], Any], number: int) -> float:
    """Best of 5 runs, in microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def kio_encode(cls: Any, obj: Any) -> bytes:
    from kio.serial import entity_writer

    buf = io.BytesIO()
    entity_writer(cls)(buf, obj)
    return buf.getvalue()


def timings() -> None:
    from kio.schema.fetch.v12.request import FetchRequest as KFetchRequest
    from kio.schema.fetch.v12.response import FetchResponse as KFetchResponse
    from kio.schema.join_group.v7.request import JoinGroupRequest as KJoinGroupRequest
    from kio.schema.metadata.v12.response import MetadataResponse as KMetadataResponse
    from kio.schema.produce.v9.request import ProduceRequest as KProduceRequest
    from kio.serial import entity_reader

    rows: list[tuple[str, float, float]] = []

    # Produce v9 request, one partition carrying a 1 MiB record set.
    produce = m.ProduceRequest(
        acks=-1,
        timeout_ms=30000,
        topic_data=[
            m.ProduceTopicData(
                name="bench",
                partition_data=[m.ProducePartitionData(index=0, records=bytes(MIB))],
            )
        ],
    )
    body = bytes(encode_struct(produce, 9, True))
    kread = entity_reader(KProduceRequest)
    rows.append(
        (
            "Produce v9 request decode, 1 MiB records (fast)",
            best(lambda: decode_produce_request(Reader(body), 9), 2000),
            best(lambda: kread(body, 0), 200),
        )
    )
    rows.append(
        (
            "  (sluice generic codec, same message)",
            best(lambda: decode_struct(m.ProduceRequest, body, 9, True), 2000),
            float("nan"),
        )
    )
    assert decode_produce_request(Reader(body), 9) == produce

    # Fetch v12 response, one partition with a 1 MiB record set.
    fetch = m.FetchResponse(
        responses=[
            m.FetchableTopicResponse(
                topic="bench",
                partitions=[
                    m.FetchPartitionData(partition_index=0, high_watermark=1000, records=bytes(MIB))
                ],
            )
        ]
    )
    kfetch, _ = entity_reader(KFetchResponse)(bytes(encode_struct(fetch, 12, True)), 0)
    rows.append(
        (
            "Fetch v12 response encode, 1 MiB records (fast)",
            best(lambda: encode_response(1, 12, 1, fetch), 2000),
            best(lambda: kio_encode(KFetchResponse, kfetch), 200),
        )
    )
    rows.append(
        (
            "  (sluice generic codec, same message)",
            best(lambda: encode_struct(fetch, 12, True), 200),
            float("nan"),
        )
    )

    # Metadata v12 response: 3 brokers, 50 topics x 3 partitions.
    meta = m.MetadataResponse(
        brokers=[
            m.MetadataResponseBroker(node_id=i, host="localhost", port=9092) for i in range(3)
        ],
        cluster_id="sluice",
        controller_id=0,
        topics=[
            m.MetadataResponseTopic(
                name=f"topic-{t}",
                partitions=[
                    m.MetadataResponsePartition(
                        partition_index=p, leader_id=0, replica_nodes=[0], isr_nodes=[0]
                    )
                    for p in range(3)
                ],
            )
            for t in range(50)
        ],
    )
    mbytes = bytes(encode_struct(meta, 12, True))
    kmeta, _ = entity_reader(KMetadataResponse)(mbytes, 0)
    assert kio_encode(KMetadataResponse, kmeta) == mbytes
    rows.append(
        (
            "Metadata v12 response encode (50 topics x 3)",
            best(lambda: encode_struct(meta, 12, True), 500),
            best(lambda: kio_encode(KMetadataResponse, kmeta), 500),
        )
    )
    kmread = entity_reader(KMetadataResponse)
    rows.append(
        (
            "Metadata v12 response decode (50 topics x 3)",
            best(lambda: decode_struct(m.MetadataResponse, mbytes, 12, True), 500),
            best(lambda: kmread(mbytes, 0), 500),
        )
    )

    # JoinGroup v7 request, two protocols with 100-byte metadata.
    join = m.JoinGroupRequest(
        group_id="group",
        session_timeout_ms=10000,
        rebalance_timeout_ms=30000,
        member_id="rdkafka-1234",
        protocol_type="consumer",
        protocols=[
            m.JoinGroupRequestProtocol(name=n, metadata=bytes(100)) for n in ("range", "roundrobin")
        ],
    )
    jbytes = bytes(encode_struct(join, 7, True))
    kjoin, _ = entity_reader(KJoinGroupRequest)(jbytes, 0)
    kjread = entity_reader(KJoinGroupRequest)
    rows.append(
        (
            "JoinGroup v7 request decode",
            best(lambda: decode_struct(m.JoinGroupRequest, jbytes, 7, True), 20000),
            best(lambda: kjread(jbytes, 0), 20000),
        )
    )
    rows.append(
        (
            "JoinGroup v7 request encode",
            best(lambda: encode_struct(join, 7, True), 20000),
            best(lambda: kio_encode(KJoinGroupRequest, kjoin), 20000),
        )
    )

    # Fetch v12 request, one topic, 8 partitions: what every consumer poll costs the broker.
    freq = m.FetchRequest(
        max_wait_ms=500,
        min_bytes=1,
        max_bytes=52428800,
        session_epoch=-1,
        topics=[
            m.FetchTopic(
                topic="bench",
                partitions=[
                    m.FetchPartition(partition=p, fetch_offset=1000, partition_max_bytes=MIB)
                    for p in range(8)
                ],
            )
        ],
    )
    fbytes = bytes(encode_struct(freq, 12, True))
    kfread = entity_reader(KFetchRequest)
    rows.append(
        (
            "Fetch v12 request decode, 1 topic x 8 (fast)",
            best(lambda: decode_fetch_request(Reader(fbytes), 12), 5000),
            best(lambda: kfread(fbytes, 0), 5000),
        )
    )
    rows.append(
        (
            "  (sluice generic codec, same message)",
            best(lambda: decode_struct(m.FetchRequest, fbytes, 12, True), 5000),
            float("nan"),
        )
    )

    print(f"{'case':48} {'sluice us':>10} {'kio us':>10}")
    for name, ours, theirs in rows:
        print(f"{name:48} {ours:10.1f} {theirs:10.1f}")


def _kio_class(key: int, version: int, kind: str) -> Any:
    """kio's class for one message, e.g. ``kio.schema.join_group.v7.request.JoinGroupRequest``."""
    api = ApiKey(key).name.lower()
    name = "".join(w.capitalize() for w in api.split("_")) + kind.capitalize()
    module = importlib.import_module(f"kio.schema.{api}.v{version}.{kind}")
    return getattr(module, name)


def interop(seeds: int) -> int:
    """Every API at every supported version kio has, requests and responses, ``seeds`` random
    messages each (tame values: kio rejects error codes it does not know): encoded by sluice,
    decoded by kio, re-encoded by kio. Prints the count, the versions kio lacks and each
    mismatch; returns the number of mismatches."""
    from kio.serial import entity_reader

    checked = failed = 0
    missing: list[str] = []
    for key, (lo, hi) in sorted(SUPPORTED.items()):
        spec = APIS[key]
        for version in range(lo, hi + 1):
            flexible = spec.flexible(version)
            for kind, cls in (("request", spec.request), ("response", spec.response)):
                try:
                    kcls = _kio_class(key, version, kind)
                except ImportError:  # kio is generated from Kafka 4, which dropped some versions
                    missing.append(f"{ApiKey(key).name} v{version} {kind}")
                    continue
                read = entity_reader(kcls)
                for seed in range(seeds):
                    body = sample(cls, version, random.Random(seed), tame=True)
                    ours = bytes(encode_struct(body, version, flexible))
                    checked += 1
                    try:
                        obj, size = read(ours, 0)
                        same = size == len(ours) and kio_encode(kcls, obj) == ours
                        problem = "" if same else "re-encoded bytes differ"
                    except Exception as exc:  # kio's own errors are not ours to name
                        problem = f"{type(exc).__name__}: {exc}"
                    if problem:
                        failed += 1
                        print(f"{ApiKey(key).name} v{version} {kind} seed {seed}: {problem}")
    if missing:
        print(f"not in kio, not checked: {', '.join(missing)}")
    print(
        f"{checked} random messages ({len(SUPPORTED)} APIs, every supported version kio has, "
        f"requests and responses, {seeds} each) encoded by sluice: {checked - failed} decoded by "
        f"kio and re-encoded to identical bytes, {failed} did not"
    )
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice.bench.codec",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--interop", action="store_true", help="check round trips through kio instead of timing"
    )
    parser.add_argument(
        "--seeds", type=int, default=8, help="random messages per API, version and direction"
    )
    args = parser.parse_args(argv)
    try:
        kio = importlib.import_module("kio")
    except ImportError:
        print(
            f"this benchmark needs kio, which sluice does not depend on: pip install kio=={KIO_VERSION}",
            file=sys.stderr,
        )
        return 2
    version = getattr(kio, "__version__", "?")
    print(f"kio {version} (the numbers in docs/protocol.md are from kio {KIO_VERSION})")
    if args.interop:
        return 1 if interop(args.seeds) else 0
    timings()
    return 0


if __name__ == "__main__":
    sys.exit(main())
