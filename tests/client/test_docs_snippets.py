"""Every Python snippet of README.md and docs/client.md is a whole program that runs as it is
shown, against a broker at the address it names (only that address is replaced, by a fresh
embedded broker's), and does what the text around it says: the producers send and print what
they say, the consumers handle records, and Ctrl-C (SIGINT) or SIGTERM stops them having
committed what they finished. Each snippet runs in a child process, as a reader would run it.

A new snippet must be a whole program too (imports, ``asyncio.run(main())``): a fragment does
not run when copied, and this module then names it until a test here runs it."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import confluent_kafka as ck
import pytest

from sluice.testing import EmbeddedBroker
from sluice.testing.process import free_port
from tests.client.conftest import DEADLINE, script_env

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "127.0.0.1:9092"
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def snippets(doc: str) -> list[str]:
    return _BLOCK.findall((ROOT / doc).read_text())


RUN_HERE = {"README.md": 2, "docs/client.md": 4}
"""How many snippets of each file the tests below run, in order."""


def test_every_snippet_is_a_whole_program_that_a_test_runs() -> None:
    for doc, tested in RUN_HERE.items():
        found = snippets(doc)
        for i, code in enumerate(found):
            compile(code, f"{doc} snippet {i}", "exec")
            end = code.rstrip().splitlines()[-1]
            assert end == "asyncio.run(main())" or end.startswith("web.run_app("), (
                f"{doc} snippet {i}: a fragment")
            assert ADDRESS in code, f"{doc} snippet {i} names no broker at {ADDRESS}"
        assert len(found) == tested, f"{doc} has {len(found)} snippets, the tests run {tested}"


class Snippet:
    """A snippet running in a child process, its output lines read as they come."""

    started: ClassVar[list[Snippet]] = []
    """Every one started, so the fixture kills one a failed assertion left running."""

    def __init__(self, code: str, bootstrap: str, port: int = 0) -> None:
        env = {**script_env(), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-c",
             code.replace(ADDRESS, bootstrap).replace("port=8080", f"port={port}")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        Snippet.started.append(self)
        self.lines: queue.Queue[str] = queue.Queue()
        self._errors: list[str] = []
        self._readers = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_errors, daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def _read_errors(self) -> None:
        assert self.process.stderr is not None
        self._errors.extend(self.process.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self._errors)

    def take(self, n: int) -> list[str]:
        """The next ``n`` lines of its output."""
        deadline = time.monotonic() + DEADLINE
        got: list[str] = []
        while len(got) < n:
            try:
                got.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                self.stop(signal.SIGKILL)
                raise AssertionError(f"{len(got)} of {n} lines; stderr: {self.stderr}") from None
        return got

    def stop(self, sig: int | None = None) -> int:
        """Send ``sig`` (None: let it end), wait; its exit status."""
        if sig is not None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        for reader in self._readers:
            reader.join(DEADLINE)
        return code


def drain(run: Snippet) -> list[str]:
    """Every line of a snippet that has exited."""
    lines: list[str] = []
    while not run.lines.empty():
        lines.append(run.lines.get())
    return lines


def committed(bootstrap: str, group: str, topic: str) -> int:
    c = ck.Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (tp,) = c.committed([ck.TopicPartition(topic, 0)], timeout=10)
        return int(tp.offset)
    finally:
        c.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path) as b:  # creates "orders" on first use, one partition
        try:
            yield b
        finally:
            while Snippet.started:
                process = Snippet.started.pop().process
                if process.poll() is None:
                    process.kill()
                    process.wait()


def test_the_readme_snippets(broker: EmbeddedBroker) -> None:
    producer, consumer = snippets("README.md")
    bootstrap = broker.bootstrap_servers
    run = Snippet(producer, bootstrap)
    assert run.stop() == 0, run.stderr
    assert run.lines.empty()  # "not sent:" for none
    values = [r.value for r in broker.consume_all("orders")]
    assert len(values) == 10_000 and set(values) == {f"order {i}".encode() for i in range(10_000)}

    run = Snippet(consumer, bootstrap)
    handled = run.take(20)
    assert all(line.startswith("0 ") for line in handled)  # partition offset key value
    assert run.stop(signal.SIGINT) == -signal.SIGINT  # Ctrl-C: KeyboardInterrupt, 130
    assert "KeyboardInterrupt" in run.stderr and "ERROR" not in run.stderr, run.stderr
    assert committed(bootstrap, "billing", "orders") >= 1  # what it finished


def test_the_client_md_snippets(broker: EmbeddedBroker) -> None:
    producer, consumer, on_signal, _ = snippets("docs/client.md")
    bootstrap = broker.bootstrap_servers
    run = Snippet(producer, bootstrap)
    assert run.stop() == 0, run.stderr
    (line,) = run.take(1)  # meta.partition, meta.offset, meta.timestamp of the first send
    partition, offset, timestamp = map(int, line.split())
    assert (partition, offset) == (0, 0) and abs(timestamp / 1000 - time.time()) < 60
    assert run.lines.empty()
    assert len(broker.consume_all("orders")) == 999

    run = Snippet(consumer, bootstrap)
    handled = run.take(20)  # partition offset key value: the JSON read back
    assert all(re.fullmatch(r"0 \d+ b'customer-\d' \{'id': \d+\}", line) for line in handled)
    assert run.stop(signal.SIGINT) == -signal.SIGINT
    assert "KeyboardInterrupt" in run.stderr and "ERROR" not in run.stderr, run.stderr
    first = committed(bootstrap, "billing", "orders")
    assert 1 <= first < 999, first

    # Stopping and closing: SIGTERM, then Ctrl-C, each a clean exit having committed exactly
    # what it handled (it prints a record, then returns: a printed record is finished)
    for sig in (signal.SIGTERM, signal.SIGINT):
        broker.produce("orders", *[b"more"] * 10)  # the handler is fast: some for each run
        run = Snippet(on_signal, bootstrap)
        head = run.take(5)
        assert run.stop(sig) == 0, run.stderr
        assert "Traceback" not in run.stderr, run.stderr
        offsets = [int(line.split()[1]) for line in head + drain(run)]
        assert offsets[0] == first and offsets == list(range(first, first + len(offsets)))
        first = committed(bootstrap, "billing", "orders")
        assert first == offsets[-1] + 1


def test_the_service_snippet(broker: EmbeddedBroker) -> None:
    """docs/client.md's aiohttp service: a POST answers the record's partition and offset, the
    consumer task bills it, and SIGTERM or Ctrl-C shuts down cleanly, committed."""
    import json
    import urllib.request

    service = snippets("docs/client.md")[3]
    bootstrap = broker.bootstrap_servers
    for i, sig in enumerate((signal.SIGTERM, signal.SIGINT)):
        port = free_port()
        run = Snippet(service, bootstrap, port)
        assert run.take(1)[0].startswith("======== Running on")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/orders",
                                         data=json.dumps({"id": i}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=DEADLINE) as answer:
            assert json.load(answer) == {"partition": 0, "offset": i}
        lines = run.take(2)
        assert lines[-1] == f"billing {i} {{'id': {i}}}", lines  # after aiohttp's "Press CTRL+C"
        assert run.stop(sig) == 0, run.stderr
        assert "Traceback" not in run.stderr and "never closed" not in run.stderr, run.stderr
        assert committed(bootstrap, "billing", "orders") == i + 1
