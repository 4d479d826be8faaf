"""The transaction coordinator: transactional ids, their state log, and the transaction APIs."""

from sluice.broker.transactions.config import TransactionConfig
from sluice.broker.transactions.coordinator import TransactionCoordinator

__all__ = ["TransactionConfig", "TransactionCoordinator"]
