"""kafka-python against sluice: the shared round-trip and admin contracts."""

from __future__ import annotations

from tests.clients.adapters import KafkaPythonAdmin, KafkaPythonClient
from tests.clients.contract import AdminContract, BinaryRoundTripContract


class TestRoundTrip(BinaryRoundTripContract):
    client = KafkaPythonClient()


class TestAdmin(AdminContract):
    admin_class = KafkaPythonAdmin
