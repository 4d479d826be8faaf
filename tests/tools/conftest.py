"""Fixtures of the tools tests: one real broker for the session, a fresh topic name per test
(:func:`sluice.testing.unique_topic_name`), the tools run in-process (``sluice.tools.main``)
with their stdin, stdout and stderr captured, and reference confluent-kafka clients that check
what the tools did."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from sluice.testing import EmbeddedBroker, unique_topic_name
from sluice.tools import main
from tests.tools.reference import Reference

NUM_PARTITIONS = 3
"""The session broker's ``num.partitions`` (what a topic created without ``--partitions`` gets)."""


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(
        tmp_path_factory.mktemp("sluice-tools"), settings={"num.partitions": str(NUM_PARTITIONS)}
    ) as b:
        yield b


@pytest.fixture
def topic(request: pytest.FixtureRequest) -> str:
    """A topic (or group) name no other test uses, derived from the test's id."""
    return unique_topic_name(request.node.nodeid.removeprefix("tests/tools/"))


@pytest.fixture
def ref(broker: EmbeddedBroker) -> Iterator[Reference]:
    r = Reference(broker.bootstrap_servers)
    try:
        yield r
    finally:
        r.close()


@dataclass
class Result:
    code: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode()

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


Run = Callable[..., Result]


@pytest.fixture
def sluice(broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``sluice("topics", "list", stdin=b"...")``: run a tool in-process against the session
    broker (``--bootstrap-server`` comes from the environment, so tests can still pass their
    own); returns the exit code, stdout bytes and stderr text."""

    def run(*argv: str, stdin: bytes = b"") -> Result:
        out = io.BytesIO()
        stdout = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
        stderr = io.StringIO()
        with monkeypatch.context() as m:
            m.setenv("SLUICE_BOOTSTRAP_SERVER", broker.bootstrap_servers)
            m.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
            m.setattr(sys, "stdout", stdout)
            m.setattr(sys, "stderr", stderr)
            code = main(list(argv))
            stdout.flush()
        return Result(code, out.getvalue(), stderr.getvalue())

    return run
