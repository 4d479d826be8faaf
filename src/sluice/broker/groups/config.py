"""``GroupConfig``: the coordinator's settings, shared by membership and the offsets manager.

A module of its own so that both managers can read it without importing the coordinator that
wires them (which imports them).
"""

from __future__ import annotations

from sluice.dataclass import dataclass


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Kafka's broker settings of the same names (``group.*``, ``offsets.*``)."""

    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    initial_rebalance_delay_ms: int = 0
    """Kafka defaults to 3000 to let a starting fleet join in one generation; an embedded
    broker for tests and development wants the first consumer assigned at once."""
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    offsets_retention_check_interval_ms: int = 600_000
    offset_metadata_max_bytes: int = 4096
    timer_interval_ms: int = 100
    """Resolution of session, rebalance and sync timeouts."""
