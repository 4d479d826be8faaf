"""At least once through a crash: an application on ``run(concurrency=16, ordering="key")``
(tests/client/consumer_app.py, a child process) is SIGKILLed mid-run. The offsets its group
committed never pass a record it had not processed; restarted, it processes every record at
least once, and within each run each key's records are processed in production order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import confluent_kafka as ck

from tests.client.conftest import DEADLINE, Target

APP = Path(__file__).with_name("consumer_app.py")
ROOT = Path(__file__).resolve().parents[2]
TOTAL = 6000
KEYS = 50


def _lines(path: Path) -> list[tuple[int, int, str, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        p, o, k, v = line.split()
        out.append((int(p), int(o), k, int(v)))
    return out


def _start(target: Target, topic: str, group: str, out: Path, until: int = 0) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(APP), "--bootstrap", target.bootstrap, "--topic", topic,
           "--group", group, "--out", str(out), "--until", str(until)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _committed(target: Target, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = ck.Consumer({"bootstrap.servers": target.bootstrap, "group.id": group, **target.client})
    try:
        got = c.committed([ck.TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in got}
    finally:
        c.close()


def test_sigkill_mid_run_loses_nothing_and_commits_never_pass_unprocessed(
    target: Target, tmp_path: Path
) -> None:
    topic, n = target.topic("c-crash", 3)
    p = ck.Producer({"bootstrap.servers": target.bootstrap, "linger.ms": 5,
                     "partitioner": "murmur2_random", **target.client})
    for i in range(TOTAL):
        p.produce(topic, str(i).encode(), key=f"k{i % KEYS}".encode())
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(DEADLINE) == 0
    group = f"g-{topic}"
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"

    app = _start(target, topic, group, first)
    try:
        deadline = time.monotonic() + DEADLINE
        while len(_lines(first)) < TOTAL // 3:
            assert app.poll() is None, "the application exited"
            assert time.monotonic() < deadline, "the application processes nothing"
            time.sleep(0.02)  # polling the application's output file
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait()
    before = _lines(first)
    assert len(before) < TOTAL, "killed too late to show anything"
    processed = {(pp, o) for pp, o, _, _ in before}
    commits = _committed(target, group, topic, n)
    assert any(c > 0 for c in commits.values()), commits  # it had committed something
    for partition, offset in commits.items():
        # every record below the committed offset was processed
        missing = [o for o in range(max(offset, 0)) if (partition, o) not in processed]
        assert not missing, (partition, offset, missing[:10])

    remaining = TOTAL - len(processed)
    app = _start(target, topic, group, second)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            after = _lines(second)
            values = {v for _, _, _, v in before} | {v for _, _, _, v in after}
            if len(values) == TOTAL:
                break
            assert app.poll() is None, "the restarted application exited"
            assert time.monotonic() < deadline, f"{TOTAL - len(values)} records never processed"
            time.sleep(0.05)
    finally:
        app.send_signal(signal.SIGKILL)
        app.wait()
    print(f"killed after {len(before)}, committed {commits}; the restart processed {len(after)}")
    assert len(after) >= remaining
    for run in (before, after):  # per key, production order within each run
        by_key: dict[str, list[int]] = {}
        for _, _, k, v in run:
            by_key.setdefault(k, []).append(v)
        for k, vs in by_key.items():
            assert vs == sorted(vs), k
