"""The log cleaner's worker processes: where a cleaning run's file work happens
(:func:`sluice.storage.compaction.run`), so that parsing every record in Python never holds the
interpreter lock the broker's event loop needs.

A worker is a ``python`` running :func:`main`, started on first use and reused run after run. It reads a pickled :class:`~sluice.storage.compaction.RunPlan` from its stdin and
writes back the pickled output (or the exception), each framed by an 8-byte length. It imports
nothing of the broker's application (no ``__main__`` re-import, unlike ``multiprocessing``), and
dies with the broker (Linux ``PR_SET_PDEATHSIG``): a worker must never go on writing files
after the broker that planned them is gone. Aborting a run kills its worker; the next run
starts another.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from sluice.storage.compaction import RunOutput, RunPlan, run
from sluice.storage.swaps import CleaningAborted

_LENGTH = struct.Struct(">Q")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
"""The directory holding the ``sluice`` package: on the worker's path whatever the broker's is."""


class WorkerDied(Exception):
    """The worker exited (killed by an abort, or crashed) before answering."""


def _send(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def _recv(stream: IO[bytes]) -> Any:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise EOFError
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class CleanerWorker:
    """One worker process, used by one cleaner thread at a time."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.killed = False

    def _started(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
            self._proc = subprocess.Popen(
                [sys.executable, "-c", "from sluice.storage.cleaner_worker import main; main()"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                close_fds=True,
            )
        return self._proc

    def run(self, plan: RunPlan) -> RunOutput:
        """Run ``plan`` in the worker and wait for its output (blocking: a cleaner thread's
        part, which holds no lock while it waits). Raises the run's own exception, or
        WorkerDied."""
        self.killed = False
        proc = self._started()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _send(proc.stdin, plan)
            output = _recv(proc.stdout)
        except (EOFError, OSError) as exc:
            self.close()
            raise WorkerDied(f"the cleaner's worker process exited ({exc!r})") from None
        if isinstance(output, BaseException):
            raise output
        assert isinstance(output, RunOutput)
        return output

    def kill(self) -> None:
        """Abort the run in progress (any thread)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            self.killed = True
            with contextlib.suppress(OSError):
                proc.kill()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _yield_to_the_broker() -> None:
    """Run only when the broker has nothing to run (Linux ``SCHED_IDLE``; elsewhere the lowest
    nice level): the cleaner is background work, and on a small machine its core is the one the
    broker's event loop would otherwise wait for. It still progresses under load (an idle-class
    task gets a small share), and gets the whole core when the broker is idle."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def main() -> None:
    parent = os.getppid()
    _die_with_parent(parent)
    _yield_to_the_broker()
    channel_in = os.fdopen(os.dup(0), "rb")
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must never corrupt the channel
    while True:
        try:
            plan = _recv(channel_in)
        except (EOFError, OSError):
            return  # the broker closed the pipe (or died)
        try:
            result: Any = run(plan)
        except CleaningAborted as exc:
            result = exc
        except BaseException as exc:  # handed to the broker, which logs it
            try:
                pickle.dumps(exc)
                result = exc
            except Exception:
                result = RuntimeError(f"{type(exc).__name__}: {exc}")
        try:
            _send(channel_out, result)
        except OSError:
            return  # nobody to answer: the broker is gone
