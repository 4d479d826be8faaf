"""``sluice serve`` as a child process, for tests that must kill the broker the hard way.

:class:`EmbeddedBroker` shares the test's process, so it cannot be SIGKILLed; crash-recovery
tests (of sluice, or of an application's at-least-once handling) need a separate process. The
port is chosen once and kept across restarts, so clients can reconnect to the same address.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

_READY = b"sluice listening on "
"""What ``sluice serve`` logs once its logs are open and it accepts connections."""
_PORT_ATTEMPTS = 3
_OWN_SETTINGS = {
    "listeners": "nothing (it listens on a free loopback port: bootstrap_servers)",
    "log.dirs": "data_dir",
    "log.dir": "data_dir",
}
"""Broker settings a BrokerProcess takes from its own arguments, as EmbeddedBroker does."""


class _PortTaken(Exception):
    """The child could not bind its Kafka port: another process holds it."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class BrokerProcess:
    """``python -m sluice.cli serve`` on a loopback port with ``data_dir``, its output appended to
    ``log_path``. Use as a context manager (or call :meth:`stop`) so the process is always reaped."""

    def __init__(
        self,
        data_dir: Path,
        log_path: Path,
        *,
        settings: Mapping[str, object] | None = None,
        timeout: float = 30.0,
        admin: bool = False,
    ) -> None:
        """``settings``: broker settings by Kafka name, their values as
        :class:`~sluice.testing.EmbeddedBroker` takes them (``True``, ``60000``, ``["compact",
        "delete"]``: Kafka's strings on the command line; each was ``str()``-ed, so a list
        reached the child as ``['compact', 'delete']`` and failed its start, and ``None`` as
        ``'None'``). ``admin``: serve the admin side (metrics, health, console) on a free
        loopback port (:attr:`admin_url`); off otherwise, unless ``settings`` name
        ``sluice.admin.listen``."""
        from sluice.testing.topics import broker_settings

        self.data_dir = Path(data_dir)
        self.log_path = Path(log_path)
        # the command line's --listen/--data-dir won over _OWN_SETTINGS silently
        self.settings = broker_settings(settings, "BrokerProcess", _OWN_SETTINGS)
        self.timeout = timeout
        self.port = free_port()
        self.admin_port = free_port() if admin else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False
        """Whether it has served once: from then on its port is kept."""

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        if self.admin_port is None:
            raise RuntimeError("admin_url: this BrokerProcess was made without admin=True")
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Spawn the broker and return once it serves: its own output says it is listening (with
        ``admin``, /readyz says so too). A port that answers is not enough: after a stop, or
        between :func:`free_port` and the child's bind, another process (a broker of another
        pytest-xdist worker) may take the port, and would answer for a child that then fails to
        bind. At the first start such a port is replaced by a new free one; at a restart, which
        must keep the port (clients reconnect to it), it is a RuntimeError."""
        if self.proc is not None:
            raise RuntimeError("this BrokerProcess is already started (stop() or kill() it first)")
        for _ in range(_PORT_ATTEMPTS - 1):
            try:
                self._start_once()
            except _PortTaken:
                if self._started:
                    raise RuntimeError(
                        f"sluice serve cannot restart: another process took port {self.port}:\n"
                        f"{self.log_path.read_text()}"
                    ) from None
                self.port = free_port()
            else:
                self._started = True
                return
        self._start_once()
        self._started = True

    def _start_once(self) -> None:
        args = [sys.executable, "-m", "sluice.cli", "serve", "--listen", self.bootstrap_servers]
        args += ["--data-dir", str(self.data_dir)]
        if "sluice.admin.listen" not in self.settings:
            admin = "off" if self.admin_port is None else f"127.0.0.1:{self.admin_port}"
            args += ["--admin-listen", admin]
        for key, value in self.settings.items():
            args += ["--set", f"{key}={value}"]
        with self.log_path.open("ab") as log:
            start_of_run = log.tell()
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        output = b""
        deadline = time.monotonic() + self.timeout
        with self.log_path.open("rb") as log:
            log.seek(start_of_run)
            while True:
                output += log.read()
                if self.proc.poll() is not None:
                    self.proc = None
                    output += log.read()
                    if f"cannot listen on 127.0.0.1:{self.port}:".encode() in output:
                        raise _PortTaken
                    said = output.decode(errors="replace")  # this run's, not earlier ones'
                    raise RuntimeError(f"sluice serve exited at start:\n{said}")
                if _READY in output and (self.admin_port is None or self._admin_ready()):
                    return
                if time.monotonic() > deadline:
                    self.kill()
                    raise TimeoutError(
                        f"sluice serve did not start within {self.timeout} s:\n"
                        f"{self.log_path.read_text()}"
                    )
                time.sleep(0.02)  # the readiness probe's retry interval

    def _admin_ready(self) -> bool:
        """/readyz answers 200: the logs are open and the Kafka listener accepts (the Kafka port
        alone takes connections into its backlog as soon as it is bound)."""
        try:
            with urllib.request.urlopen(self.admin_url + "/readyz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:  # refused, or 503 (HTTPError is an OSError)
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown at all, as in a crash or power cut of the process."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGKILL)
        proc.wait(self.timeout)

    def stop(self) -> int:
        """SIGTERM and wait for the clean shutdown; returns the exit code (0 when clean)."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        proc.terminate()
        try:
            return proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def restart(self) -> None:
        """A clean stop and a start on the same port and data directory."""
        code = self.stop()
        if code != 0:
            raise RuntimeError(f"sluice serve exited {code}:\n{self.log_path.read_text()}")
        self.start()

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.running:
            self.stop()
        else:
            self.kill()
