"""A second virtual environment for Quix Streams, which pins confluent-kafka below the version
the rest of the suite uses (quixstreams 3.x: confluent-kafka < 2.13): tests run Quix Streams
applications as child processes of ``quix_python()``, against a real sluice broker.

Built on first use (about a minute), reused while ``pyproject.toml`` and the pinned version are
unchanged, the way ``scripts/_venv.sh`` keeps the main environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-quix"
QUIXSTREAMS = "quixstreams==3.28.1"
_lock = threading.Lock()


def quix_python() -> Path:
    """The interpreter of an environment with Quix Streams and sluice installed."""
    python = VENV / "bin" / "python"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + QUIXSTREAMS.encode()).hexdigest()
    stamp = VENV / ".sluice-quix-installed"
    with _lock, (ROOT / ".venv-quix.lock").open("w") as lock_file:
        # pytest-xdist workers are processes: the file lock keeps them from building at once
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
            return python
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", QUIXSTREAMS, "-e", str(ROOT)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"installing {QUIXSTREAMS} failed:\n{done.stdout}\n{done.stderr}")
        stamp.write_text(want)
    return python
