"""docs/testing.md shows the example files verbatim: each ``<!-- example: PATH -->`` line is
followed by a fenced block that must be exactly that file, and every file of tests/examples is
shown. The examples themselves run as tests (tests/examples), so the docs cannot drift from
what works. After editing an example::

    python tests/testing/test_docs_examples.py --write
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
EXAMPLES = ROOT / "tests" / "examples"
_BLOCK = re.compile(r"<!-- example: (?P<path>\S+) -->\n```(?P<lang>\w*)\n(?P<body>.*?)```\n", re.S)


def _blocks(text: str) -> list[re.Match[str]]:
    return list(_BLOCK.finditer(text))


def test_every_example_is_shown_exactly_as_it_runs() -> None:
    text = DOC.read_text()
    shown = {m["path"]: m["body"] for m in _blocks(text)}
    assert text.count("<!-- example:") == len(shown), "an example marker without its block"
    for path, body in shown.items():
        assert body == (ROOT / path).read_text(), f"docs/testing.md's copy of {path} differs"
    files = {
        str(p.relative_to(ROOT))
        for p in EXAMPLES.glob("*.py")
        if p.name != "__init__.py"
    }
    assert files <= set(shown), f"examples not in docs/testing.md: {sorted(files - set(shown))}"


def write() -> None:
    """Refresh every example block of docs/testing.md from its file."""

    def fill(m: re.Match[str]) -> str:
        body = (ROOT / m["path"]).read_text()
        return f"<!-- example: {m['path']} -->\n```{m['lang']}\n{body}```\n"

    DOC.write_text(_BLOCK.sub(fill, DOC.read_text()))


if __name__ == "__main__" and "--write" in sys.argv:
    write()
