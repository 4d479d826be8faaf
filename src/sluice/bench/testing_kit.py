"""What the testing kit costs a test suite, for the numbers in docs/testing.md::

    python -m sluice.bench.testing_kit            # median (p10-p90) of 20 runs each
    python -m sluice.bench.testing_kit --runs 5   # quicker, rougher

In fresh interpreters: ``from sluice.testing import EmbeddedBroker`` (import), ``start()``
until the broker accepts connections (start-to-ready), both together, the whole child process
(interpreter start to exit), the first produce and consume of one record by new librdkafka
clients, and the resident memory of an idle embedded broker. Then the wall time of one pytest
run of a 20-test module (each test: a topic, 10 records produced, read back by a consumer
group) three ways: sluice's session broker (``sluice_broker``), a sluice broker per test
(``sluice_fresh_broker``), and librdkafka's mock cluster (``test.mock.num.brokers=1``, a
cluster per test; it has no CreateTopics, so topics are created by the first produce).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = """
import time
t0 = time.perf_counter()
from sluice.testing import EmbeddedBroker
t1 = time.perf_counter()
broker = EmbeddedBroker()
broker.start()
t2 = time.perf_counter()

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

idle = rss_kib()
import confluent_kafka as ck
t3 = time.perf_counter()
producer = ck.Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
producer.produce("first", b"x", partition=0)
assert producer.flush(30) == 0
consumer = ck.Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "g",
                        "enable.auto.commit": False})
consumer.assign([ck.TopicPartition("first", 0, 0)])
msg = None
while msg is None:
    msg = consumer.poll(10)
assert msg.error() is None and msg.value() == b"x"
t4 = time.perf_counter()
consumer.close()
del producer
broker.stop()
broker.cleanup()
import json
print(json.dumps({"import": t1 - t0, "ready": t2 - t1, "import_ready": t2 - t0,
                  "round_trip": t4 - t3, "idle_rss_mib": idle / 1024}))
"""

_MOCK_CHILD = """
import time
t0 = time.perf_counter()
import confluent_kafka as ck
t1 = time.perf_counter()
producer = ck.Producer({"bootstrap.servers": "", "test.mock.num.brokers": 1, "linger.ms": 0,
                        "log_level": 0})
broker = next(iter(producer.list_topics(timeout=10).brokers.values()))
bootstrap = f"{broker.host}:{broker.port}"
t2 = time.perf_counter()
producer.produce("first", b"x", partition=0)
assert producer.flush(30) == 0
consumer = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": "g",
                        "enable.auto.commit": False})
consumer.assign([ck.TopicPartition("first", 0, 0)])
msg = None
while msg is None:
    msg = consumer.poll(10)
assert msg.error() is None and msg.value() == b"x"
t3 = time.perf_counter()
consumer.close()
import json
print(json.dumps({"import": t1 - t0, "ready": t2 - t1, "round_trip": t3 - t2}))
"""

_BARE = """
import json
def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
print(json.dumps({"bare_rss_mib": rss_kib() / 1024}))
"""

_MODULES = {
    "sluice, session broker": '''
import pytest
from confluent_kafka import Consumer, Producer

@pytest.mark.parametrize("n", range(20))
def test_round_trip(sluice_broker, sluice_topic, n):
    bootstrap = sluice_broker.bootstrap_servers
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(10):
        producer.produce(sluice_topic, b"%d" % i)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": sluice_topic,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([sluice_topic])
    got = []
    while len(got) < 10:
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None
        got.append(msg.value())
    consumer.close()
    assert sorted(got) == [b"%d" % i for i in range(10)]
''',
    "sluice, broker per test": '''
import pytest
from confluent_kafka import Consumer, Producer

@pytest.mark.parametrize("n", range(20))
def test_round_trip(sluice_fresh_broker, n):
    bootstrap = sluice_fresh_broker.bootstrap_servers
    topic = sluice_fresh_broker.create_topic()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for i in range(10):
        producer.produce(topic, b"%d" % i)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    while len(got) < 10:
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None
        got.append(msg.value())
    consumer.close()
    assert sorted(got) == [b"%d" % i for i in range(10)]
''',
    "librdkafka mock cluster": '''
import pytest
from confluent_kafka import Consumer, Producer

@pytest.fixture
def mock_cluster():
    """A mock cluster lives in the client that asked for it: its brokers' address, from that
    client's metadata, is how other clients reach it."""
    owner = Producer({"bootstrap.servers": "", "test.mock.num.brokers": 1})
    broker = next(iter(owner.list_topics(timeout=10).brokers.values()))
    yield owner, f"{broker.host}:{broker.port}"

@pytest.mark.parametrize("n", range(20))
def test_round_trip(mock_cluster, n):
    producer, bootstrap = mock_cluster
    topic = f"t{n}"  # no CreateTopics: the first produce creates it
    for i in range(10):
        producer.produce(topic, b"%d" % i)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = []
    while len(got) < 10:
        msg = consumer.poll(10)
        assert msg is not None and msg.error() is None
        got.append(msg.value())
    consumer.close()
    assert sorted(got) == [b"%d" % i for i in range(10)]
''',
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed code runs: bytecode cached
    return env


def _child(code: str) -> tuple[dict[str, float], float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    wall = time.perf_counter() - started
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result, wall


def _pytest(path: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", str(path)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=path.parent,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"pytest failed on {path.name}:\n{done.stdout}\n{done.stderr}")
    return wall


def _summary(values: list[float], scale: float = 1.0, unit: str = "ms") -> str:
    if len(values) >= 3:
        # inclusive: the exclusive default extrapolates past the samples at small counts (a
        # p10 of -1.6 ms for 5 runs of 2 ms and 48 ms round trips)
        deciles = statistics.quantiles(values, n=10, method="inclusive")
        low, high = deciles[0], deciles[-1]
    else:
        low, high = min(values), max(values)
    median = statistics.median(values)
    return f"{median * scale:8.1f} {unit}  ({low * scale:.1f}-{high * scale:.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sluice.bench.testing_kit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs of each measurement (20)")
    parser.add_argument(
        "--module-runs", type=int, default=None, help="pytest runs of each 20-test module (--runs)"
    )
    parser.add_argument(
        "--only",
        choices=["interpreters", "pytest"],
        default=None,
        help="only the fresh-interpreter measurements, or only the pytest modules",
    )
    args = parser.parse_args(argv)

    if args.only != "pytest":
        _fresh_interpreters(args.runs)
    if args.only != "interpreters":
        _pytest_modules(args.module_runs or args.runs)
    return 0


def _fresh_interpreters(runs: int) -> None:
    _child(_CHILD)  # warm-up: bytecode written, files in the page cache
    children = [_child(_CHILD) for _ in range(runs)]
    mocks = [_child(_MOCK_CHILD)[0] for _ in range(runs)]
    bare = statistics.median(_child(_BARE)[0]["bare_rss_mib"] for _ in range(3))
    rows = [(key, [c[key] for c, _ in children]) for key in ("import", "ready", "import_ready")]
    print(f"fresh interpreters, median (p10-p90) of {runs}:")
    names = {
        "import": "from sluice.testing import EmbeddedBroker",
        "ready": "EmbeddedBroker().start() to ready",
        "import_ready": "import + ready",
    }
    for key, values in rows:
        print(f"  {names[key]:<44} {_summary(values, 1000)}")
    print(f"  {'whole child process (start to exit)':<44} {_summary([w for _, w in children], 1000)}")
    print(f"  {'first produce + consume, new librdkafka clients':<44} {_summary([c['round_trip'] for c, _ in children], 1000)}")
    print(f"  {'librdkafka mock cluster: import confluent_kafka':<44} {_summary([m['import'] for m in mocks], 1000)}")
    print(f"  {'librdkafka mock cluster: start to ready':<44} {_summary([m['ready'] for m in mocks], 1000)}")
    print(f"  {'librdkafka mock cluster: first produce+consume':<44} {_summary([m['round_trip'] for m in mocks], 1000)}")
    idle = statistics.median(c["idle_rss_mib"] for c, _ in children)
    print(f"  {'RSS of an idle embedded broker (process)':<44} {idle:8.1f} MiB  ({idle - bare:.1f} over a bare interpreter's {bare:.1f})")


def _pytest_modules(module_runs: int) -> None:
    print(
        "\npytest, a 20-test module (topic, 10 records, a consumer group), wall time, "
        f"median (p10-p90) of {module_runs}:"
    )
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        paths = {}
        for i, (name, source) in enumerate(_MODULES.items()):
            paths[name] = Path(tmp) / f"test_variant_{i}.py"
            paths[name].write_text(source)
        for path in paths.values():
            _pytest(path)  # warm-up
        walls: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(module_runs):
            for name, path in paths.items():  # interleaved: the same load for each
                walls[name].append(_pytest(path))
        for name, values in walls.items():
            print(f"  {name:<44} {_summary(values, 1.0, 's')}")


if __name__ == "__main__":
    sys.exit(main())
