"""sluice: a Kafka-compatible streaming platform in Python."""

from __future__ import annotations

from functools import cache
from pathlib import Path

__all__ = ["__version__"]


@cache
def _version() -> str:
    """The version of the installed distribution. pyproject.toml is the one place it is written:
    installing copies it into the package metadata, and a source tree run without installing
    reads it from there."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sluice")
    except PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        try:
            with pyproject.open("rb") as f:
                found = tomllib.load(f)["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"
        return str(found)


def __getattr__(name: str) -> str:
    # Looked up on first use: importing importlib.metadata costs tens of milliseconds, which
    # every `import sluice` (the embedded broker in a test, each tool run) would otherwise pay.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'sluice' has no attribute {name!r}")
