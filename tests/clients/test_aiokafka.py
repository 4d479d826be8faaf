"""aiokafka (asyncio, non-flexible API versions) against sluice: the shared round-trip and admin
contracts; its admin client uses AlterConfigs, not IncrementalAlterConfigs."""

from __future__ import annotations

from tests.clients.adapters import AiokafkaAdmin, AiokafkaClient
from tests.clients.contract import AdminContract, BinaryRoundTripContract


class TestRoundTrip(BinaryRoundTripContract):
    client = AiokafkaClient()


class TestAdmin(AdminContract):
    admin_class = AiokafkaAdmin
