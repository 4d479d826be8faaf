"""Settings for the session's broker: any broker setting, by its Kafka name."""

import pytest


@pytest.fixture(scope="session")
def sluice_settings() -> dict[str, object]:
    return {"num.partitions": 3}  # what topics created on first use get (Kafka's default: 1)
