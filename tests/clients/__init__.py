import pytest

# The shared contract and the adapters hold the assertions; let pytest explain their failures.
pytest.register_assert_rewrite("tests.clients.contract", "tests.clients.adapters")
