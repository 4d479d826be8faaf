"""A subscription pattern as librdkafka reads it, and the same pattern for Python's ``re``.

librdkafka matches topic names with POSIX extended regular expressions (``regcomp``), which
Python's ``re`` reads differently in places a user meets: ``\\d`` is a literal ``d`` there
(``^orders-\\d+`` subscribed to nothing, silently), ``[[:digit:]]`` is a digit there and a
set of ``[:digt`` followed by ``]`` in Python (with a FutureWarning). The toolkit reads the
pattern itself (is a dead-letter topic one this consumer reads?), so it checks the pattern as
librdkafka will read it and translates it for ``re``; what librdkafka would read otherwise than
a Python user means is refused at construction, saying what to write instead."""

from __future__ import annotations

import re
import warnings

from sluice.client.errors import ConfigurationError

CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "xdigit": "0-9A-Fa-f", "punct": r"!-/:-@\[-`{-~", "space": r" \t\n\r\f\v", "blank": r" \t",
    "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~",
}
"""POSIX bracket classes, in ASCII (a topic name is ASCII)."""
MISREAD = {"d": "[0-9]", "D": "[^0-9]", "A": "^", "Z": "$"}
"""Python escapes POSIX reads as the bare letter, and what to write instead."""
GNU = {"<": r"\b", ">": r"\b", "`": r"\A", "'": r"\Z"}
"""glibc's escapes that Python reads as literal characters."""


def _refuse(pattern: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"pattern={pattern!r}: {why}; librdkafka matches topic names with POSIX extended "
        "regular expressions"
    )


def python_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` (a POSIX extended regex, as librdkafka reads it) as Python's ``re`` reads
    it, or :class:`ConfigurationError` for what librdkafka reads otherwise than Python does
    (``\\d``; ``(?...)``, which librdkafka refuses at subscribe)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt in MISREAD:
                raise _refuse(
                    pattern, f"\\{nxt} is the letter {nxt!r} there, not Python's: write "
                    f"{MISREAD[nxt]} instead",
                )
            out.append(GNU.get(nxt, ch + nxt))
            i += 2
        elif ch == "(" and pattern.startswith("(?", i):
            raise _refuse(pattern, "(?...) is Python's syntax; write (...) for a group")
        elif ch == "[":
            i = _bracket(pattern, i, out)
        else:
            out.append(ch)
            i += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return re.compile("".join(out))
        except re.error as exc:
            raise ConfigurationError(
                f"pattern={pattern!r}: not a regular expression ({exc})"
            ) from None


def _bracket(pattern: str, start: int, out: list[str]) -> int:
    """The POSIX bracket expression at ``start`` into ``out``, as a Python set: a ``]`` first is
    a member, a backslash is a member, ``[:class:]`` is its characters. Returns where it ends."""
    i, n = start + 1, len(pattern)
    out.append("[")
    if i < n and pattern[i] == "^":
        out.append("^")
        i += 1
    first = True
    while i < n:
        ch = pattern[i]
        if ch == "]" and not first:
            out.append("]")
            return i + 1
        first = False
        if pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            name = pattern[i + 2:end] if end >= 0 else ""
            if name not in CLASSES:
                raise _refuse(pattern, f"[:{name}:] is no character class ({', '.join(CLASSES)})")
            out.append(CLASSES[name])
            i = end + 2
            continue
        if ch == "\\" and i + 1 < n and pattern[i + 1] in MISREAD:
            raise _refuse(
                pattern, f"[\\{pattern[i + 1]}] is a backslash or the letter there: write "
                "[0-9] or [[:digit:]] for a digit",
            )
        out.append("\\" + ch if ch in "\\[]^" else ch)
        i += 1
    raise ConfigurationError(f"pattern={pattern!r}: not a regular expression (a '[' not closed)")


def checked(pattern: object) -> tuple[str, re.Pattern[str]]:
    """A subscription regex as librdkafka takes it -- a non-empty str starting with ``^``
    (added when missing: librdkafka reads a name without it as a literal topic name, while the
    docs and Python call it a pattern) -- and the same for Python's ``re``."""
    if not isinstance(pattern, str) or not pattern:
        raise ConfigurationError(
            f"pattern={pattern!r}: a regular expression (a non-empty str) such as '^orders-.*'"
        )
    if not pattern.startswith("^"):
        pattern = "^" + pattern
    return pattern, python_regex(pattern)
