"""The console's JSON API without a browser: the message browser's modes and pages, names that
need escaping in a URL, and bad input answered with a clear error (never a traceback)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from sluice.protocol.compression import Compression
from sluice.protocol.crc import crc32c
from sluice.protocol.records import build_batch
from sluice.server.admin.browse import DECODE_LIMIT
from sluice.testing import EmbeddedBroker, create_topic
from tests.admin.http import request
from tests.server.wire import WireClient, produce
from tests.server.wire import create_topic as wire_create_topic


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("admin-api"), admin=True) as b:
        create_topic(b.bootstrap_servers, "pages", partitions=2)
        producer = Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 0})
        for i in range(50):
            # Distinct, increasing timestamps: newest first is then unambiguous.
            producer.produce(
                "pages", f"v{i}".encode(), partition=i % 2, timestamp=1_700_000_000_000 + i
            )
            producer.flush(30)
        yield b


def _values(page: dict) -> list[str]:  # type: ignore[type-arg]
    return [base64.b64decode(r["value"]["b64"]).decode() for r in page["records"]]


def test_newest_first_pages_back_through_every_partition(broker: EmbeddedBroker) -> None:
    url = broker.admin_url + "/api/topics/pages/records?mode=newest&limit=20"
    seen: list[str] = []
    page = request(url).json()
    for _ in range(5):  # 3 pages are enough: more means the cursor does not move
        seen += _values(page)
        if not page["more"]:
            break
        page = request(f"{url}&cursor={page['cursor']}").json()
    assert seen == [f"v{i}" for i in reversed(range(50))]


def test_from_a_time_and_from_an_offset(broker: EmbeddedBroker) -> None:
    base = broker.admin_url + "/api/topics/pages/records"
    by_time = request(f"{base}?mode=timestamp&timestamp={1_700_000_000_000 + 40}&limit=100").json()
    assert _values(by_time) == [f"v{i}" for i in range(40, 50)]
    assert by_time["more"] is False
    one = request(f"{base}?mode=offset&partition=1&offset=20&limit=3").json()
    assert [(r["partition"], r["offset"]) for r in one["records"]] == [(1, 20), (1, 21), (1, 22)]
    assert one["cursor"] == "1:23" and one["more"] is True
    nothing = request(f"{base}?mode=timestamp&timestamp={1_800_000_000_000}").json()
    assert nothing["records"] == [] and nothing["more"] is False


def test_names_that_need_escaping_in_a_url(broker: EmbeddedBroker) -> None:
    """Kafka group ids may hold any character, slashes and '?' included."""
    group = "team/a?b#c"
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition("pages", 0, 7)], asynchronous=False)
    finally:
        consumer.close()
    answer = request(f"{broker.admin_url}/api/groups/{quote(group, safe='')}")
    assert answer.status == 200, answer.body
    assert answer.json()["group_id"] == group
    assert [(o["partition"], o["committed"], o["lag"]) for o in answer.json()["offsets"]] == [
        (0, 7, 18)
    ]
    assert request(f"{broker.admin_url}/groups/{quote(group, safe='')}").status == 200  # the page


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "error"),
    [
        ("GET", "/api/topics/nope", None, 404, "NOT_FOUND"),
        ("GET", "/api/topics/nope/records", None, 404, "NOT_FOUND"),
        ("GET", "/api/topics/pages/records?mode=sideways", None, 400, "INVALID_REQUEST"),
        ("GET", "/api/topics/pages/records?partition=9", None, 400, "INVALID_REQUEST"),
        ("GET", "/api/topics/pages/records?cursor=garbage", None, 400, "INVALID_REQUEST"),
        ("GET", "/api/topics/pages/records?limit=many", None, 400, "BAD_REQUEST"),
        ("POST", "/api/topics", {"partitions": 1}, 400, "BAD_REQUEST"),
        ("POST", "/api/topics", {"name": "x", "partitions": 0}, 400, "INVALID_PARTITIONS"),
        ("POST", "/api/topics", {"name": "pages"}, 400, "TOPIC_ALREADY_EXISTS"),
        (
            "POST",
            "/api/topics",
            {"name": "y", "configs": {"retention.ms": "soon"}},
            400,
            "INVALID_CONFIG",
        ),
        ("POST", "/api/topics/pages/configs", {"set": {"no.such": "1"}}, 400, "INVALID_CONFIG"),
        (
            "POST",
            "/api/topics/pages/records",
            {"partition": 5, "value": "x"},
            400,
            "UNKNOWN_TOPIC_OR_PARTITION",
        ),
        ("POST", "/api/topics/pages/records", {"value": {"b64": "%%"}}, 400, "BAD_REQUEST"),
        ("POST", "/api/groups/none/reset", {"target": "earliest"}, 400, "INVALID_REQUEST"),
        (
            "POST",
            "/api/groups/none/reset",
            {"topic": "pages", "target": "sideways"},
            400,
            "INVALID_REQUEST",
        ),
        ("DELETE", "/api/groups/none", {}, 400, "GROUP_ID_NOT_FOUND"),
        ("POST", "/api/topics", {"name": "z1", "partitions": True}, 400, "BAD_REQUEST"),
        ("POST", "/api/topics", {"name": "z2", "partitions": 2.5}, 400, "BAD_REQUEST"),
        ("POST", "/api/topics", {"name": "z3", "partitions": float("inf")}, 400, "BAD_REQUEST"),
        (
            "POST",
            "/api/groups/none/reset",
            {"topic": "pages", "target": "offset", "value": 1.5},
            400,
            "BAD_REQUEST",
        ),
        ("DELETE", "/api/topics/nope", {}, 400, "UNKNOWN_TOPIC_OR_PARTITION"),
        # A header key is a string: not an object or a number written as its repr.
        ("POST", "/api/topics/pages/records", {"headers": [[{"a": 1}, "v"]]}, 400, "BAD_REQUEST"),
        ("POST", "/api/topics/pages/records", {"headers": [[7, "v"]]}, 400, "BAD_REQUEST"),
        ("POST", "/api/topics/pages/records", {"headers": "k=v"}, 400, "BAD_REQUEST"),
    ],
)
def test_bad_input_gets_a_clear_error(
    broker: EmbeddedBroker, method: str, path: str, body: object, status: int, error: str
) -> None:
    answer = request(broker.admin_url + path, method, body)
    assert (answer.status, answer.json()["error"]) == (status, error), answer.body
    assert answer.json()["message"]


def test_each_record_says_what_a_read_committed_consumer_makes_of_it(
    broker: EmbeddedBroker,
) -> None:
    """The browser reads up to the high watermark; a record of an aborted transaction, or one
    past the last stable offset (an open transaction's), is marked as such, not shown as any
    other record: the visible ones are exactly what a read_committed consumer reads."""
    create_topic(broker.bootstrap_servers, "txn-browse", partitions=1)
    tx = Producer({"bootstrap.servers": broker.bootstrap_servers, "transactional.id": "browse-tx"})
    tx.init_transactions(30)
    tx.begin_transaction()
    for i in range(2):
        tx.produce("txn-browse", f"aborted {i}".encode())
    assert tx.flush(30) == 0
    tx.abort_transaction(30)
    tx.begin_transaction()
    tx.produce("txn-browse", b"committed")
    tx.commit_transaction(30)
    plain = Producer({"bootstrap.servers": broker.bootstrap_servers})
    plain.produce("txn-browse", b"plain")
    assert plain.flush(30) == 0
    reader = Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "browse-reader",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    reader.assign([TopicPartition("txn-browse", 0, 0)])
    read: list[str] = []
    while len(read) < 2:
        msg = reader.poll(10)
        assert msg is not None, read
        assert msg.error() is None, msg.error()
        read.append(msg.value().decode())  # type: ignore[union-attr]
    reader.close()
    tx.begin_transaction()
    tx.produce("txn-browse", b"open")
    assert tx.flush(30) == 0
    try:
        page = request(
            broker.admin_url + "/api/topics/txn-browse/records?mode=offset&offset=0&limit=100"
        ).json()
        shown = [
            (v, r.get("transactional"), r.get("read_committed"))
            for v, r in zip(_values(page), page["records"], strict=True)
        ]
        assert shown == [
            ("aborted 0", True, "aborted"),
            ("aborted 1", True, "aborted"),
            ("committed", True, "visible"),
            ("plain", False, "visible"),
            ("open", True, "pending"),
        ]
        assert [v for v, _, seen in shown if seen == "visible"] == read == ["committed", "plain"]
    finally:
        tx.abort_transaction(30)


def test_a_body_nested_deeper_than_python_recurses_is_bad_input(broker: EmbeddedBroker) -> None:
    """Not a 500: json.loads raises RecursionError, not ValueError, on it."""
    depth = 100_000
    answer = request(
        broker.admin_url + "/api/topics",
        "POST",
        raw=b"[" * depth + b"]" * depth,
    )
    assert (answer.status, answer.json()["error"]) == (400, "BAD_REQUEST"), answer.body


def test_a_header_key_that_is_not_utf8_is_shown_as_kafka_clients_decode_it(
    broker: EmbeddedBroker,
) -> None:
    """The broker stores a header key that is not UTF-8 (as Kafka's does); the browser shows
    it with U+FFFD for the bad byte, as Java's clients decode it, instead of failing every page
    that holds the record (500)."""
    batch = bytearray(
        build_batch([(b"k", b"the value")], headers=[[("\x01ok", b"hv")]], base_timestamp=1)
    )
    at = batch.index(b"\x01ok")
    batch[at] = 0xFF
    batch[17:21] = crc32c(bytes(batch[21:])).to_bytes(4, "big")  # the CRC covers from byte 21
    host, port = broker.bootstrap_servers.rsplit(":", 1)
    client = WireClient(host, int(port))
    try:
        wire_create_topic(client, "raw-header-keys")
        assert produce(client, "raw-header-keys", 0, bytes(batch)).error_code == 0
    finally:
        client.close()
    for query in ("mode=newest", "mode=offset&offset=0"):
        answer = request(f"{broker.admin_url}/api/topics/raw-header-keys/records?{query}")
        assert answer.status == 200, answer.body
        (record,) = answer.json()["records"]
        assert base64.b64decode(record["value"]["b64"]) == b"the value"
        ((key, value),) = record["headers"]
        assert key == "\ufffdok"
        assert base64.b64decode(value["b64"]) == b"hv"


def test_a_batch_too_big_to_decode_is_one_entry_not_a_failed_page(broker: EmbeddedBroker) -> None:
    """A 2 KB zstd batch holding 65 MiB (past what the browser inflates) between ordinary
    records: every page holding it failed (400), the newest page the console opens a topic on
    included. It is now one entry saying why, and paging moves past it both ways."""
    host, port = broker.bootstrap_servers.rsplit(":", 1)
    bomb = build_batch(
        [(None, b"\0" * (DECODE_LIMIT + (1 << 20)))],
        base_timestamp=2,
        compression=Compression.ZSTD,
    )
    before = build_batch([(None, b"before")], base_timestamp=1)
    after = build_batch([(None, b"after")], base_timestamp=3)
    client = WireClient(host, int(port))
    try:
        wire_create_topic(client, "too-big")
        for records in (before, bomb, after):
            assert produce(client, "too-big", 0, records).error_code == 0
    finally:
        client.close()
    base = f"{broker.admin_url}/api/topics/too-big/records"

    def shown(page: dict) -> list[object]:  # type: ignore[type-arg]
        return [
            r.get("unreadable", "")[:28] or base64.b64decode(r["value"]["b64"]).decode()
            for r in page["records"]
        ]

    newest = request(f"{base}?mode=newest").json()
    assert shown(newest) == ["after", "a batch of 1 records the bro", "before"]
    assert newest["records"][1]["offset"] == newest["records"][1]["last_offset"] == 1
    forward: list[object] = []
    page = request(f"{base}?mode=offset&offset=0&limit=1").json()
    for _ in range(5):
        forward += shown(page)
        if not page["more"]:
            break
        page = request(f"{base}?mode=offset&limit=1&cursor={page['cursor']}").json()
    assert forward == ["before", "a batch of 1 records the bro", "after"]
    backward: list[object] = []
    page = request(f"{base}?mode=newest&limit=1").json()
    for _ in range(5):
        backward += shown(page)
        if not page["more"]:
            break
        page = request(f"{base}?mode=newest&limit=1&cursor={page['cursor']}").json()
    assert backward == list(reversed(forward))
