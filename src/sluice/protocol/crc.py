"""CRC-32C (Castagnoli), the checksum of Kafka's record batches: the ``crc32c`` package's C
function (hardware-accelerated), loaded without the package's ``__init__``.

That ``__init__`` imports ``importlib.metadata`` to read its own version and ``argparse`` for
its command line, which cost more than the extension itself: about a tenth of what
``import sluice.testing`` took. If the package's layout ever changes, the plain import is used.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Callable
from typing import Any


def _load() -> Callable[..., int]:
    package = importlib.util.find_spec("crc32c")  # finds, does not run, the package
    if package is not None and package.submodule_search_locations is not None:
        spec = importlib.machinery.PathFinder.find_spec(
            "crc32c._crc32c", list(package.submodule_search_locations)
        )
        if spec is not None and spec.loader is not None:
            module: Any = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            fn: Callable[..., int] = module.crc32c
            return fn
    import crc32c as full  # pragma: no cover - a different layout of the package

    slow: Callable[..., int] = full.crc32c
    return slow


crc32c = _load()
"""``crc32c(data, value=0) -> int``: the CRC-32C of a bytes-like ``data``."""
