"""The embedded broker's temporary data directory: where tempfile would make it, private, and
removed by cleanup or, when forgotten, at the interpreter's exit."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sluice.testing.tmpdir import TemporaryDirectory, temporary_root

_FRESH = """
import os, sys
from sluice.testing.tmpdir import TemporaryDirectory
d = TemporaryDirectory(prefix="sluice-")
open(os.path.join(d.name, "data"), "w").close()
print(d.name)
print("tempfile" in sys.modules)
"""


def _fresh(env: dict[str, str]) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _FRESH], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_fresh_process_makes_it_under_tmpdir_without_tempfile_and_removes_it_at_exit(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TEMP", "TMP")}
    env["TMPDIR"] = str(tmp_path)
    name, imported = _fresh(env)
    assert Path(name).parent == tmp_path and Path(name).name.startswith("sluice-")
    assert imported == "False"
    assert not Path(name).exists()  # forgotten, so removed as the interpreter exited
    assert list(tmp_path.iterdir()) == []


def test_a_tmpdir_tempfile_would_pass_over_is_left_to_tempfile(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TEMP", "TMP")}
    env["TMPDIR"] = str(tmp_path / "missing")
    expected = subprocess.run(
        [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
        capture_output=True, text=True, timeout=60, env=env,
    ).stdout.strip()
    name, imported = _fresh(env)
    assert str(Path(name).parent) == expected
    assert imported == "True"


def test_private_removed_by_cleanup_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile is loaded: its answer
    assert temporary_root() == str(tmp_path)
    d = TemporaryDirectory(prefix="sluice-")
    path = Path(d.name)
    assert path.parent == tmp_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    (path / "sub").mkdir()
    (path / "sub" / "file").write_bytes(b"x")
    d.cleanup()
    assert not path.exists()
    d.cleanup()  # again: nothing to do, no error


def test_two_are_distinct_and_one_removed_by_someone_else_cleans_up_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    a, b = TemporaryDirectory(prefix="x-"), TemporaryDirectory(prefix="x-")
    assert a.name != b.name
    os.rmdir(a.name)
    a.cleanup()
    b.cleanup()
    assert list(tmp_path.iterdir()) == []


_FORKED = """
import os, sys
from sluice.testing.tmpdir import TemporaryDirectory
d = TemporaryDirectory(prefix="sluice-")
pid = os.fork()
if pid == 0:
    sys.exit(0)  # the child's interpreter exits as usual: its exit hooks run
os.waitpid(pid, 0)
print(os.path.isdir(d.name))
print(d.name)
"""


def test_a_forked_child_leaves_it_to_the_process_that_made_it(tmp_path: Path) -> None:
    """A child forked from the process (os.fork, then a normal exit) removed the directory at
    its own exit: a running embedded broker's data went from under it."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", _FORKED], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    kept, name = out.stdout.splitlines()
    assert kept == "True"
    assert not os.path.exists(name)  # and the parent still removed it at its own exit


_READ_ONLY = """
import os, sys
from sluice.testing.tmpdir import TemporaryDirectory
d = TemporaryDirectory(prefix="sluice-")
part = os.path.join(d.name, "t-0")
os.makedirs(os.path.join(part, "locked"))
open(os.path.join(part, "00000000000000000000.log"), "w").close()
os.chmod(os.path.join(part, "00000000000000000000.log"), 0o400)
os.chmod(os.path.join(part, "locked"), 0o000)
os.chmod(part, 0o500)  # as a test provoking a disk error might leave it
print(d.name)
if sys.argv[1] == "cleanup":
    d.cleanup()
    print(os.path.exists(d.name))
"""


@pytest.mark.parametrize("how", ["cleanup", "exit"])
def test_read_only_contents_are_removed_too(tmp_path: Path, how: str) -> None:
    """As tempfile's are: a read-only directory inside made cleanup raise PermissionError and
    leave the whole directory behind (it was never tried again). Run without the power to
    ignore permissions (root's CAP_DAC_OVERRIDE), which would hide the difference."""
    command = [sys.executable, "-c", _READ_ONLY, how]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "needs setpriv to run without root's permission override"
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    name = out.stdout.splitlines()[0]
    if how == "cleanup":
        assert out.stdout.splitlines()[1] == "False"
    assert not os.path.exists(name)
    assert list(tmp_path.iterdir()) == []
