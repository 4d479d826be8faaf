"""A flood of partly sent requests against a ``sluice serve`` child: how much the broker's peak
resident size (VmHWM, from /proc) grows, with ``queued.max.request.bytes`` at a bound or
unbounded (-1). The numbers in docs/broker.md::

    python -m sluice.bench.request_memory --bound-mib 32
    python -m sluice.bench.request_memory --bound-mib -1

Each of ``--connections`` connections announces a 100 MiB request and sends up to
``--quota-mib`` of it without blocking, until every one has sent its quota or none has taken a
byte for two seconds (the broker stopped reading and the kernel's buffers are full).
tests/server/test_request_memory.py checks the bound itself.
"""

from __future__ import annotations

import argparse
import select
import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path

from sluice.bench.partitions import Serve

MIB = 1 << 20


def _status_bytes(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def flood(port: int, connections: int, quota: int, stall: float = 2.0) -> int:
    """Returns the bytes sent in all."""
    socks = []
    try:
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
            s.sendall(struct.pack(">i", 100 * MIB))
            s.setblocking(False)
            socks.append(s)
        sent = dict.fromkeys(socks, 0)
        chunk = b"\x00" * (256 * 1024)
        last_progress = time.monotonic()
        while time.monotonic() - last_progress <= stall:
            pending = [s for s in socks if sent[s] < quota]
            if not pending:
                break
            _, writable, _ = select.select([], pending, [], 0.2)
            for s in writable:
                try:
                    sent[s] += s.send(chunk[: quota - sent[s]])
                except BlockingIOError:
                    continue
                last_progress = time.monotonic()
        return sum(sent.values())
    finally:
        for s in socks:
            s.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sluice.bench.request_memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--bound-mib", type=int, default=32, help="queued.max.request.bytes; -1: unbounded"
    )
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument(
        "--quota-mib", type=int, default=24, help="bytes each connection tries to send"
    )
    args = parser.parse_args(argv)
    bound = "-1" if args.bound_mib < 0 else str(args.bound_mib * MIB)
    root = Path(tempfile.mkdtemp(prefix="sluice-bench-memory-"))
    serve = Serve(root / "data", root / "serve.log", {"queued.max.request.bytes": bound})
    try:
        serve.start()
        before = _status_bytes(serve.pid, "VmRSS")
        sent = flood(serve.port, args.connections, args.quota_mib * MIB)
        peak = _status_bytes(serve.pid, "VmHWM")
        label = "unbounded" if bound == "-1" else f"{args.bound_mib} MiB"
        print(
            f"{args.connections} connections sent {sent / MIB:.0f} MiB toward 100 MiB requests "
            f"(at most {args.quota_mib} MiB each); queued.max.request.bytes {label}: broker "
            f"resident {before / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB "
            f"(+{(peak - before) / MIB:.0f} MiB)"
        )
        serve.stop()
    finally:
        serve.kill()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
