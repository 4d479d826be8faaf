"""What a fresh process that starts an embedded broker imports: only what serving needs. The
rest (the group and admin APIs' message classes, tempfile, shutil) is imported when first used,
so a test suite's start pays for none of it (docs/testing.md, "What it costs")."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = """
import sys
from sluice.testing import EmbeddedBroker

LATER = ("json", "tempfile", "shutil", "sluice.protocol.group_messages", "sluice.protocol.admin_messages")

def loaded():
    return sorted(name for name in LATER if name in sys.modules)

with EmbeddedBroker() as broker:
    print("started:", loaded())
    broker.produce("t", "a", "b")
    print("produced:", loaded())
    # librdkafka looks up a group coordinator for any consumer with a group.id, the kit's too
    assert [r.value for r in broker.consume_until("t", count=2)] == [b"a", b"b"]
    print("read back:", loaded())
    broker.delete_topics(["t"])
    print("deleted a topic:", loaded())
"""


def test_starting_a_broker_imports_only_what_serving_needs() -> None:
    """Without tempfile (the temporary data directory is made without it), shutil (until a topic
    is deleted), json (until a first topic or state file) and the group APIs' messages (until a
    client looks up a coordinator), about 10% of a fresh process's import-plus-ready; each is
    there, and works, once it is needed."""
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "started: []",
        "produced: ['json']",  # the topic's topic.json
        "read back: ['json', 'sluice.protocol.group_messages']",
        "deleted a topic: ['json', 'shutil', 'sluice.protocol.group_messages']",
    ]
