"""The broker process fixes glibc's mmap threshold (sluice.server.malloc) so that a freed big
request buffer leaves its resident memory, whatever buffers were freed before it. Each case runs
in a fresh interpreter: the setting is process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

_SCRIPT = """
import sys
from sluice.server.malloc import map_big_buffers_apart

def resident():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmRSS")

if sys.argv[1] == "fixed":
    assert map_big_buffers_apart()
base = resident()
for _ in range(3):  # glibc raises its threshold to a freed mapping's size: the next comes from the heap
    buffer = bytearray(6 * 1024 * 1024)
    del buffer
print(resident() - base)
"""


def _left_resident(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and needs glibc")
def test_freed_big_buffers_leave_the_resident_set() -> None:
    mib = 1 << 20
    # Without the fix the freed buffer stays in the heap, resident, below the trim threshold.
    assert _left_resident("default") >= 5 * mib
    assert _left_resident("fixed") < 1 * mib
