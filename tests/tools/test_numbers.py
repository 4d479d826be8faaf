"""Numbers past what the wire carries (INT16, INT32, INT64) or a timeout librdkafka cannot hold
are usage errors naming the bound: each of these ended in an OverflowError or struct.error
traceback (or, for --timeout 1e300, an immediate "cannot reach" timeout)."""

from __future__ import annotations

import pytest

from tests.tools.conftest import Run
from tests.tools.reference import Reference

HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ("consume", "{t}", "--offset", f"-{HUGE}"),
            f"argument --offset/-O: an offset or -N is at most {2**63 - 1} in size: '-{HUGE}'",
        ),
        (
            ("consume", "{t}", "--partition", "0", "--offset", HUGE),
            f"argument --offset/-O: an offset or -N is at most {2**63 - 1} in size: '{HUGE}'",
        ),
        (
            ("topics", "create", "{t}", "--partitions", HUGE),
            f"argument --partitions/-p: must be <= {2**31 - 1}: '{HUGE}'",
        ),
        (
            ("topics", "create", "{t}", "--replication-factor", "70000"),
            "argument --replication-factor/-r: must be <= 32767: '70000'",
        ),
        (
            ("topics", "alter", "{t}", "--partitions", HUGE),
            f"argument --partitions/-p: must be <= {2**31 - 1}: '{HUGE}'",
        ),
        (
            ("transactions", "list", "--min-duration-ms", HUGE),
            f"argument --min-duration-ms: must be <= {2**63 - 1}: '{HUGE}'",
        ),
        (
            ("transactions", "list", "--producer-id", HUGE),
            f"argument --producer-id: must be <= {2**63 - 1}: '{HUGE}'",
        ),
        (
            ("transactions", "list", "--timeout", "1e300"),
            "argument --timeout: must be <= 2147483: '1e300'",
        ),
        (("topics", "list", "--timeout", "inf"), "argument --timeout: must be <= 2147483: 'inf'"),
        (("topics", "list", "--timeout", "nan"), "argument --timeout: must be > 0: 'nan'"),
    ],
)
def test_a_number_past_its_field_is_a_usage_error(
    sluice: Run, ref: Reference, topic: str, argv: tuple[str, ...], said: str
) -> None:
    ref.create_topic(topic)  # the tools get as far as the number, not an unknown topic
    r = sluice(*(a.replace("{t}", topic) for a in argv))
    assert r.code == 2, r.err
    command = " ".join(
        a for a in argv[:2] if a in ("consume", "topics", "transactions", "create", "alter", "list")
    )
    assert r.err.splitlines()[-1] == f"sluice {command}: error: {said}"
