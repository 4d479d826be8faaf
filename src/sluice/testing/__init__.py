"""Run a real sluice broker inside a Python process or a pytest fixture."""

from sluice.testing.embedded import EmbeddedBroker
from sluice.testing.process import BrokerProcess

__all__ = ["BrokerProcess", "EmbeddedBroker"]
