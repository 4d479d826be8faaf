"""ConsumerRecord as the consumer makes it: over confluent-kafka's own ``Message`` (built here
with its public constructor, the type ``consume()`` returns), reading key, value, headers and
timestamp from it when asked, and behaving like the plain record in every public attribute:
read, assigned by a deserializer, assigned by the application, pickled and copied."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import confluent_kafka as ck

from sluice.client import ConsumerRecord

HEADERS = [("trace", b"t-1"), ("empty", None)]


def message(**fields: Any) -> ck.Message:
    base: dict[str, Any] = {
        "topic": "orders", "partition": 3, "offset": 41, "key": b"k", "value": b"v" * 10,
        "headers": HEADERS, "timestamp": (ck.TIMESTAMP_CREATE_TIME, 1_700_000_000_123),
    }
    base.update(fields)
    return ck.Message(**base)


def fields(r: ConsumerRecord) -> tuple[object, ...]:
    return (r.topic, r.partition, r.offset, r.key, r.value, r.raw_key, r.raw_value, r.headers,
            r.timestamp, r.size)


def test_a_fetched_record_reads_every_field_from_its_message() -> None:
    r = ConsumerRecord.fetched(message(), 500)
    assert fields(r) == ("orders", 3, 41, b"k", b"v" * 10, b"k", b"v" * 10, HEADERS,
                         1_700_000_000_123, 500)
    plain = ConsumerRecord("orders", 3, 41, b"k", b"v" * 10, HEADERS, 1_700_000_000_123, 500)
    assert fields(plain) == fields(r)
    assert repr(plain) == repr(r)


def test_missing_key_value_headers_and_timestamp_read_as_none() -> None:
    r = ConsumerRecord.fetched(
        message(key=None, value=None, headers=None,
                timestamp=(ck.TIMESTAMP_NOT_AVAILABLE, -1)), 448)
    assert (r.key, r.value, r.raw_key, r.raw_value, r.headers, r.timestamp) == (None,) * 6


def test_a_deserializer_replaces_key_and_value_and_the_raw_bytes_stay() -> None:
    r = ConsumerRecord.fetched(message(), 500)
    r.value = {"decoded": True}
    r.key = "k"
    assert (r.value, r.key) == ({"decoded": True}, "k")
    assert (r.raw_value, r.raw_key) == (b"v" * 10, b"k")
    r.value = None  # a deserializer may make None of bytes: it stays None
    assert r.value is None and r.raw_value == b"v" * 10


def test_assigning_a_raw_field_keeps_the_others() -> None:
    r = ConsumerRecord.fetched(message(), 500)
    r.key = "decoded"
    r.headers = [("h", b"1")]
    r.raw_value = b"other"
    r.timestamp = None
    r.raw_key = b"k2"
    assert fields(r) == ("orders", 3, 41, "decoded", b"v" * 10, b"k2", b"other", [("h", b"1")],
                         None, 500)


def test_pickle_and_copy_keep_every_field_and_the_decoded_value() -> None:
    r = ConsumerRecord.fetched(message(), 500)
    r.value = {"decoded": 1}
    for again in (pickle.loads(pickle.dumps(r)), copy.copy(r), copy.deepcopy(r)):
        assert isinstance(again, ConsumerRecord)
        assert fields(again) == fields(r)


def test_no_headers_read_as_none_however_the_record_was_made() -> None:
    """``[]`` and None are the same record on the wire; the consumer says None for both,
    whether the record was fetched, made or assigned (docs/client.md)."""
    fetched = ConsumerRecord.fetched(message(headers=[]), 448)
    made = ConsumerRecord("orders", 3, 41, b"k", b"v", [], None, 448)
    assigned = ConsumerRecord.fetched(message(), 448)
    assigned.headers = []
    assert [r.headers for r in (fetched, made, assigned)] == [None, None, None]
