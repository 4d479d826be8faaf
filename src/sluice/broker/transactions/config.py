"""``TransactionConfig``: the transaction coordinator's settings (Kafka's broker settings of the
same names), apart from the coordinator so tests can build one without a broker."""

from __future__ import annotations

from sluice.dataclass import dataclass


@dataclass(frozen=True, slots=True)
class TransactionConfig:
    max_timeout_ms: int = 900_000
    """``transaction.max.timeout.ms``: InitProducerId asking for more is refused."""
    id_expiration_ms: int = 7 * 24 * 3600 * 1000
    """``transactional.id.expiration.ms``: an id idle this long (no transaction) is forgotten."""
    abort_interval_ms: int = 10_000
    """``transaction.abort.timed.out.transaction.cleanup.interval.ms``."""
    expiration_check_interval_ms: int = 3_600_000
    """``transaction.remove.expired.transaction.cleanup.interval.ms``."""
    partition_verification: bool = True
    """``transaction.partition.verification.enable``: a transactional batch is appended only
    if its producer's ongoing transaction includes the partition (Kafka's KIP-890 part 1)."""
    marker_retry_ms: int = 500
    """First wait before writing a transaction's markers again after a failure (a full disk);
    doubled up to 10 s while it keeps failing."""
