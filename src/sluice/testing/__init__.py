"""Run a real sluice broker inside a Python process or a pytest fixture."""

from sluice.testing.embedded import EmbeddedBroker

__all__ = ["EmbeddedBroker"]
