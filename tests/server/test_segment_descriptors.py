"""File descriptors: a broker's descriptors stay bounded however many segments its logs have,
and running out of them fails requests with error codes, never half-creates or half-deletes a
topic or leaks descriptors or directories."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from sluice.errors import ErrorCode
from sluice.protocol import ApiKey
from sluice.protocol import messages as m
from sluice.testing import BrokerProcess
from tests.server.wire import (
    WireClient,
    batch,
    create_topic,
    create_topics,
    fetch_all_values,
    produce,
)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def topic_dirs(data: Path) -> list[str]:
    return sorted(p.name.rsplit(".", 1)[0] for p in data.iterdir() if (p / "topic.json").exists())


def test_segments_do_not_each_keep_a_descriptor(tmp_path: Path) -> None:
    """segment.bytes at its minimum rolls a segment for every batch: 300 segments, read back in
    full, cost no more descriptors than the cache holds."""
    log = tmp_path / "serve.log"
    with BrokerProcess(
        tmp_path / "data", log, settings={"sluice.max.open.segment.files": "16"}
    ) as broker:
        broker.start()
        assert broker.proc is not None
        pid = broker.proc.pid
        with WireClient("127.0.0.1", broker.port) as client:
            resp = client.call(
                ApiKey.CREATE_TOPICS,
                7,
                m.CreateTopicsRequest(
                    topics=[
                        m.CreatableTopic(
                            name="tiny",
                            num_partitions=1,
                            replication_factor=1,
                            configs=[m.CreatableTopicConfig(name="segment.bytes", value="14")],
                        )
                    ],
                    timeout_ms=10_000,
                ),
                m.CreateTopicsResponse,
            )
            assert resp.topics[0].error_code == 0
            before = open_fds(pid)
            values = [f"v{i}".encode() for i in range(300)]
            for value in values:
                assert produce(client, "tiny", 0, batch([value])).error_code == 0
            assert fetch_all_values(client, "tiny", 0) == values
            after = open_fds(pid)
        segments = list((tmp_path / "data").glob("tiny.*/0/*.log"))
        assert len(segments) == 300
        # the active segment plus at most 16 cached inactive ones
        assert after - before <= 17, (before, after)
        assert broker.stop() == 0


def test_running_out_of_descriptors_fails_requests_cleanly(tmp_path: Path) -> None:
    """With a descriptor limit far below what the load needs, appends to many partitions fail
    with KAFKA_STORAGE_ERROR; creating and deleting topics still work or fail whole; nothing
    leaks; and everything acknowledged is there after a restart."""
    log = tmp_path / "serve.log"
    data = tmp_path / "data"
    with BrokerProcess(data, log) as broker:
        broker.start()
        assert broker.proc is not None
        pid = broker.proc.pid
        with WireClient("127.0.0.1", broker.port) as client:
            create_topic(client, "many", partitions=400)  # creating opens no descriptor at all
            used = open_fds(pid)
            soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (used + 100, hard))
            acknowledged: dict[int, bytes] = {}
            refused = 0
            for p in range(400):
                part = produce(client, "many", p, batch([f"p{p}".encode()]))
                if part.error_code == 0:
                    acknowledged[p] = f"p{p}".encode()
                else:
                    assert part.error_code == ErrorCode.KAFKA_STORAGE_ERROR, part
                    refused += 1
            assert refused > 0 and len(acknowledged) >= 50, (refused, len(acknowledged))
            # A create either happens whole or not at all; a delete of a topic works.
            codes = create_topics(client, ["other"], partitions=50)
            assert codes["other"] in (0, ErrorCode.KAFKA_STORAGE_ERROR)
            resp = client.call(
                ApiKey.DELETE_TOPICS,
                4,
                m.DeleteTopicsRequest(topic_names=["other"], timeout_ms=10_000),
                m.DeleteTopicsResponse,
            )
            assert [r.error_code for r in resp.responses] in (
                [0],
                [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION],
            )
            assert topic_dirs(data) == ["many"]
            # The connection and the broker still work.
            assert produce(client, "many", next(iter(acknowledged)), batch([b"again"])).error_code == 0
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert broker.stop() == 0
        broker.start()
        with WireClient("127.0.0.1", broker.port) as client:
            for p, value in acknowledged.items():
                assert fetch_all_values(client, "many", p)[0] == value
        assert broker.stop() == 0
    assert "Traceback" not in log.read_text()
