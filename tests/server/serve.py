"""``sluice serve`` as a child process: start it, learn its port from its log, signal it, and
always reap it."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from tests.server.wire import WireClient, api_versions

_LISTENING = re.compile(r"sluice listening on (\S+):(\d+) \(advertised (\S+)\)")


SLUICE_SERVE = (sys.executable, "-m", "sluice.cli", "serve")


class ServeProcess:
    def __init__(
        self, args: list[str], *, cwd: Path, nofile: tuple[int, int] | None = None
    ) -> None:
        """``nofile``: the (soft, hard) RLIMIT_NOFILE the broker process starts with."""
        self.started = time.monotonic()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}

        def limits() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        if not any(a.startswith("--admin-listen") for a in args):
            # Tests start many brokers at once: none takes the default admin port unless asked.
            args = [*args, "--admin-listen", "off"]
        self.args = args
        self.proc = subprocess.Popen(
            [*self.command, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # signals from the terminal do not reach it
            preexec_fn=limits if nofile is not None else None,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self._readers:
            reader.start()
        self.host = ""
        self.port = 0
        self.advertised = ""

    command: Sequence[str] = SLUICE_SERVE
    """How ``sluice serve`` is started; a subclass may start it another way (``scripts/serve``)."""

    def _read(self, stream: object) -> None:
        assert hasattr(stream, "readline")
        for line in iter(stream.readline, ""):
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    found = pattern.search(line)
                    if found:
                        return found
                remaining = deadline - time.monotonic()
                if self.proc.poll() is not None and all(not r.is_alive() for r in self._readers):
                    raise AssertionError(
                        f"sluice serve exited ({self.proc.returncode}):\n{self.output_unlocked()}"
                    )
                if remaining <= 0:
                    raise AssertionError(
                        f"no line matching {pattern.pattern!r} within {timeout}s:\n{self.output_unlocked()}"
                    )
                self._changed.wait(min(remaining, 0.1))

    def lines_matching(self, pattern: str) -> list[str]:
        with self._changed:
            return [line for line in self.lines if re.search(pattern, line)]

    def output_unlocked(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 20.0) -> float:
        """Wait for the listening line, then for an ApiVersions round trip; returns the seconds
        from process start to the first answered request."""
        found = self.wait_for_line(_LISTENING, timeout)
        self.host, self.port, self.advertised = found.group(1), int(found.group(2)), found.group(3)
        deadline = self.started + timeout
        while True:
            try:
                with WireClient(self.host, self.port, timeout=5) as client:
                    assert api_versions(client).error_code == 0
                return time.monotonic() - self.started
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "sluice serve never accepted a connection"
                time.sleep(0.01)

    def client(self) -> WireClient:
        return WireClient(self.host, self.port)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"sluice serve did not exit within {timeout}s:\n{self.output}"
            ) from None
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self) -> None:
        """SIGKILL the process and whatever it started (its session's process group): a wrapper
        script that did not ``exec`` leaves the broker behind, holding the output pipes open."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        for reader in self._readers:
            reader.join(5)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def run_serve(
    args: list[str], *, cwd: Path, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """``sluice serve`` expected to exit by itself (bad configuration, port in use)."""
    if not any(a.startswith("--admin-listen") for a in args):
        args = [*args, "--admin-listen", "off"]
    return subprocess.run(
        [*SLUICE_SERVE, *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
