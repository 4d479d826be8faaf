"""confluent-kafka (librdkafka) against sluice: the shared round-trip and admin contracts."""

from __future__ import annotations

from tests.clients.adapters import ConfluentAdmin, ConfluentClient
from tests.clients.contract import AdminContract, BinaryRoundTripContract


class TestRoundTrip(BinaryRoundTripContract):
    client = ConfluentClient()


class TestAdmin(AdminContract):
    admin_class = ConfluentAdmin
