"""A caller's ``timeout`` made safe to hand to asyncio: NaN (``float("nan")``, say from a
deadline computed from nothing) and negative ones mean "do not wait", as the consumer's
shutdown reads them. asyncio itself would schedule a NaN timer that never fires (the wait
then has no limit at all) and uvloop raises a bare ValueError."""

from __future__ import annotations


def wait_limit(timeout: float | None) -> float | None:
    """``timeout`` seconds, 0 for NaN or a negative one; None (no limit) stays None."""
    if timeout is None:
        return None
    if not timeout > 0:  # NaN included
        return 0.0
    return timeout
