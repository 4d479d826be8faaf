"""The message browser's memory, measured on a broker in its own process (VmHWM, the peak of
its resident set): a page of highly compressible records holds their previews, not the
records. Each batch here is about 1 KB on the wire and on disk and inflates to 32 MiB; the
newest page (what the console opens a topic on) held every record whole, 24 of them 768 MiB,
so a page of 500 such records (a few hundred kilobytes stored) was enough to have the broker
killed for memory."""

from __future__ import annotations

import base64
from pathlib import Path

from sluice.protocol.compression import Compression
from sluice.protocol.records import build_batch
from sluice.server.admin.browse import PREVIEW_BYTES
from sluice.testing import BrokerProcess
from tests.admin.http import request
from tests.server.wire import WireClient, create_topic, produce

RECORDS = 24
VALUE_BYTES = 16 * 1024 * 1024
ALLOWED_GROWTH = 256 * 1024 * 1024
"""Measured +146 MiB: one batch inflated, the copies decoding makes of its value and header,
the answer's previews. Every record kept whole is 768 MiB more."""


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_a_page_of_inflating_records_holds_previews_not_records(tmp_path: Path) -> None:
    bomb = build_batch(
        [(b"key", b"\0" * VALUE_BYTES)],
        headers=[[("h", b"\1" * VALUE_BYTES)]],
        compression=Compression.ZSTD,
    )
    assert len(bomb) < 16 * 1024
    with BrokerProcess(tmp_path / "data", tmp_path / "serve.log", admin=True) as broker:
        broker.start()
        assert broker.proc is not None
        pid = broker.proc.pid
        with WireClient("127.0.0.1", broker.port, timeout=60) as client:
            create_topic(client, "inflating")
            for _ in range(RECORDS):
                assert produce(client, "inflating", 0, bomb).error_code == 0
        before = _vm_hwm(pid)
        answer = request(
            broker.admin_url + "/api/topics/inflating/records?mode=newest&limit=500", timeout=120
        )
        grown = _vm_hwm(pid) - before
        print(
            f"newest page of {RECORDS} records of 2 x {VALUE_BYTES >> 20} MiB "
            f"({len(bomb)} bytes each stored): peak RSS +{grown >> 20} MiB"
        )
        assert answer.status == 200, answer.body
        records = answer.json()["records"]
        assert len(records) == RECORDS
        for record in records:
            assert record["value"]["size"] == VALUE_BYTES and record["value"]["truncated"]
            assert base64.b64decode(record["value"]["b64"]) == b"\0" * PREVIEW_BYTES
            ((name, header),) = record["headers"]
            assert (name, header["size"]) == ("h", VALUE_BYTES)
            assert base64.b64decode(header["b64"]) == b"\1" * PREVIEW_BYTES
            assert base64.b64decode(record["key"]["b64"]) == b"key"
        assert grown < ALLOWED_GROWTH, f"peak RSS grew {grown >> 20} MiB"
        assert broker.stop() == 0
