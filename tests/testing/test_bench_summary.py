"""``python -m sluice.bench.testing_kit`` prints each measurement as median (p10-p90)."""

from sluice.bench.testing_kit import _summary


def test_the_deciles_stay_within_what_was_measured() -> None:
    """Five bimodal round trips (librdkafka's mock cluster: 2 ms or 48 ms) gave a p10 of
    -1.6 ms: the default quantile method extrapolates past the samples."""
    line = _summary([0.002, 0.046, 0.048, 0.0021, 0.049], 1000)
    assert line == "    46.0 ms  (2.0-48.6)"
