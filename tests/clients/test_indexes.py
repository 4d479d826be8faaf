"""Index files damaged while the broker was down, as consumers see them: a fetch or a lookup
by time starts at the right record, never after records an index entry hid."""

from __future__ import annotations

import struct
from pathlib import Path

from sluice.storage.manager import partition_dir
from sluice.testing import EmbeddedBroker
from tests.clients.adapters import ByTime, ConfluentClient, Record

BASE_TS = 1_700_000_000_000


def test_an_index_entry_naming_another_batch_does_not_make_consumers_skip_records(tmp_path: Path) -> None:
    records = [Record(b"k", f"value-{i}-".encode() * 8, (), 0, BASE_TS + 10 * i) for i in range(40)]
    client = ConfluentClient()
    with EmbeddedBroker(tmp_path / "data") as broker:
        broker.create_topic("t", configs={"segment.bytes": "4000", "index.interval.bytes": "300"})
        for i in range(0, 40, 2):  # a batch of two records each
            assert client.produce(broker.bootstrap_servers, "t", records[i : i + 2]) is not None
        broker.stop()
        first = sorted(partition_dir(tmp_path / "data", "t", 0).glob("*.index"))[0]
        raw = bytearray(first.read_bytes())
        offset, position = struct.unpack_from("<ii", raw, 8)  # the second entry
        struct.pack_into("<ii", raw, 8, offset - 2, position)  # in order, inside the file: wrong
        first.write_bytes(bytes(raw))
        timeindex = first.with_suffix(".timeindex")
        raw = bytearray(timeindex.read_bytes())
        stamp, last = struct.unpack_from("<qq", raw, 16)
        struct.pack_into("<qq", raw, 16, stamp, last + 2)  # names a later batch than its own
        timeindex.write_bytes(bytes(raw))
        broker.start()
        bootstrap = broker.bootstrap_servers
        asked = offset - 2
        got = client.consume(bootstrap, "t", 0, start=asked)
        assert [c.offset for c in got] == list(range(asked, 40))
        assert client.list_offset(bootstrap, "t", 0, ByTime(stamp + 1)) == last + 1
