"""The ways a user starts sluice, run as they would run them: the ``sluice`` console script,
``python -m sluice``, and ``./scripts/serve`` from another directory."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.server.serve import ServeProcess
from tests.server.wire import metadata

REPO = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "sluice"
"""The script pip installs next to the interpreter running the tests (not resolved: the venv's
``bin`` is what matters, not the interpreter it links to)."""


def _pyproject_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "argv",
    [[sys.executable, "-m", "sluice"], [str(CONSOLE_SCRIPT)]],
    ids=["python -m sluice", "sluice"],
)
def test_version_prints_the_pyproject_version(argv: list[str], tmp_path: Path) -> None:
    done = _run([*argv, "--version"], tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (
        0,
        f"sluice {_pyproject_version()}\n",
        "",
    )


def test_python_m_sluice_is_the_sluice_command(tmp_path: Path) -> None:
    done = _run([sys.executable, "-m", "sluice", "serve", "--help"], tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("usage: sluice serve ")
    assert "--data-dir" in done.stdout
    usage = _run([sys.executable, "-m", "sluice", "no-such-command"], tmp_path)
    assert usage.returncode == 2
    assert "invalid choice: 'no-such-command'" in usage.stderr


def test_serve_help_describes_every_option(tmp_path: Path) -> None:
    """``--log-level`` was listed bare, with neither its meaning nor its default."""
    done = _run([sys.executable, "-m", "sluice", "serve", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\noptions:\n", 1)[1].splitlines()
    bare = [
        line.strip()
        for i, line in enumerate(lines)
        if line.startswith("  -")
        and "  " not in line.strip()  # flags and their help on one line are two spaces apart
        and not (i + 1 < len(lines) and lines[i + 1].startswith(" " * 8))
    ]
    assert bare == []
    assert "default info" in " ".join(done.stdout.split())


class ScriptsServe(ServeProcess):
    command = (str(REPO / "scripts" / "serve"),)


def _venv_is_built() -> bool:
    """Whether ``scripts/_venv.sh`` would start at once: ``.venv`` exists and was installed from
    this pyproject.toml (``./scripts/test`` makes it so before running pytest)."""
    stamp = REPO / ".venv" / ".sluice-installed"
    want = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    return stamp.is_file() and stamp.read_text().strip() == want


def test_scripts_serve_resolves_relative_paths_from_where_it_was_run(tmp_path: Path) -> None:
    """A relative ``--data-dir`` and ``--config`` mean the user's directory, not the repository
    root the set-up script works in; and SIGTERM reaches the broker itself (the script ``exec``s),
    which exits 0 after a clean shutdown."""
    # Not a skip: a stale venv would make the script install packages mid-test, so say how to
    # run it instead (./scripts/test builds the venv before pytest starts).
    assert _venv_is_built(), "the repository's .venv is missing or stale: run ./scripts/test"
    (tmp_path / "my.toml").write_text("num.partitions = 3\n")
    args = ["--listen", "127.0.0.1:0", "--data-dir", "rel/dir", "--config", "my.toml"]
    with ScriptsServe(args, cwd=tmp_path) as proc:
        proc.wait_ready(timeout=60)
        with proc.client() as client:
            metadata(client, ["from-config"])  # auto-creates it with num.partitions
            described = metadata(client, ["from-config"], auto_create=False)
        assert [len(t.partitions) for t in described.topics] == [3]
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output
    data_dir = tmp_path / "rel" / "dir"
    assert any(p.name.startswith("from-config") for p in data_dir.iterdir()), proc.output
    assert not (REPO / "rel").exists()


_CTRL_C_DURING_IMPORT = """
import os, runpy, signal, sys

signal.signal(signal.SIGINT, signal.default_int_handler)  # as from a terminal


class CtrlCAt:
    '''Sends this process SIGINT as the module named by argv[1] starts to import.'''

    def find_spec(self, name, path=None, target=None):
        if name == WHEN:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None


WHEN = sys.argv.pop(1)
sys.meta_path.insert(0, CtrlCAt())
runpy.run_module("sluice", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("when", "err"),
    [
        ("sluice.cli", "sluice: interrupted\n"),  # python -m sluice importing the CLI
        ("sluice.tools", "sluice serve: interrupted\n"),  # the CLI importing the tools' parsers
        ("sluice.server.app", "sluice serve: interrupted\n"),  # serve importing the broker
        ("uvloop", "sluice serve: interrupted\n"),
    ],
)
def test_ctrl_c_while_serve_imports_ends_it_with_one_line(
    when: str, err: str, tmp_path: Path
) -> None:
    """``sluice serve`` imports for ~250 ms before its event loop takes SIGINT over; a Ctrl-C
    then printed a KeyboardInterrupt traceback from wherever the import was. It ends with one
    line and 130 now, as the tools do, and without having started."""
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_DURING_IMPORT, when, "serve", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"), "--admin-listen", "off"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    assert (done.returncode, done.stdout, done.stderr) == (130, "", err)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            ["--data-dir", ""],
            "sluice serve: error: argument --data-dir: is empty (an unset variable?)",
        ),
        (
            ["--listen", " "],
            "sluice serve: error: argument --listen: is empty (an unset variable?)",
        ),
        (
            ["--advertise", ""],
            "sluice serve: error: argument --advertise: is empty (an unset variable?)",
        ),
        (["--config", ""], "sluice serve: error: argument --config: is empty (an unset variable?)"),
        (
            ["--set", "log.dirs="],
            "sluice serve: bad value for log.dirs: '' (is empty: give the data directory)",
        ),
        (
            ["--set", "listeners="],
            "sluice serve: bad value for listeners: '' (is empty: give HOST:PORT)",
        ),
    ],
)
def test_an_empty_address_or_path_is_refused(given: list[str], said: str, tmp_path: Path) -> None:
    """An unset variable (``--data-dir "$DATA"``) read as not given: the logs went to
    ./sluice-data (log.dirs= to the directory it ran from), listeners= bound every interface."""
    from tests.server.serve import run_serve

    done = run_serve(
        ["--listen", "127.0.0.1:0", *given] if given[0] != "--listen" else given,
        cwd=tmp_path,
        timeout=15,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == said
    assert list(tmp_path.iterdir()) == []  # nothing stored where it ran
