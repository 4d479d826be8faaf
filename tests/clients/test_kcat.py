"""kcat (librdkafka's command-line client, Debian's package) against sluice: the shared
round-trip contract. kcat has no admin commands; its topics come from auto-creation or another
client's admin API (both covered by the contract)."""

from __future__ import annotations

from tests.clients.adapters import KcatClient
from tests.clients.contract import RoundTripContract


class TestRoundTrip(RoundTripContract):
    client = KcatClient()
