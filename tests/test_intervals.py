"""Bootstrap intervals: they cover the mean, shrink with more items, and pair arms item by item."""

import numpy as np
import pytest

from refrag_lib.errors import CourseError
from refrag_lib.intervals import (
    excludes_zero,
    format_interval,
    mean_interval,
    paired_difference,
    recovered_interval,
    verdict,
)


def test_interval_holds_the_mean_and_shrinks_with_more_items():
    rng = np.random.default_rng(0)
    small, large = rng.normal(0.3, 0.1, 20), rng.normal(0.3, 0.1, 2000)
    a, b = mean_interval(small), mean_interval(large)
    assert a["low"] < a["mean"] < a["high"] and b["low"] < 0.3 < b["high"]
    assert (b["high"] - b["low"]) < (a["high"] - a["low"]) / 5  # ~sqrt(100) narrower
    assert mean_interval([1.0, 1.0, 1.0]) == {"mean": 1.0, "low": 1.0, "high": 1.0}


def test_paired_difference_sees_a_small_shift_that_separate_intervals_hide():
    rng = np.random.default_rng(1)
    base = rng.normal(0.0, 1.0, 200)  # large spread between items
    shifted = base + 0.05 + rng.normal(0.0, 0.01, 200)  # the same items, slightly better
    assert not excludes_zero(paired_difference(base, base))
    gain = paired_difference(shifted, base)
    assert excludes_zero(gain) and gain["mean"] == pytest.approx(0.05, abs=0.005)
    separate_a, separate_b = mean_interval(shifted), mean_interval(base)
    assert separate_a["low"] < separate_b["high"]  # unpaired, the two intervals overlap
    assert format_interval(gain, 2).startswith("0.05 [")


def test_too_few_or_unmatched_items_are_refused():
    with pytest.raises(CourseError, match="at least 2"):
        mean_interval([0.5])
    with pytest.raises(CourseError, match="same items"):
        paired_difference([0.1, 0.2, 0.3], [0.1, 0.2])


def test_the_verdict_follows_the_interval():
    assert verdict({"mean": 0.1, "low": 0.02, "high": 0.2}, "REFRAG ahead", "RAG-FT ahead").startswith("REFRAG ahead:")
    assert verdict({"mean": -0.1, "low": -0.2, "high": -0.01}, "REFRAG ahead", "RAG-FT ahead").startswith("RAG-FT")
    assert verdict({"mean": 0.07, "low": -0.04, "high": 0.17}, "up", "down") == (
        "a tie: +0.07 [-0.04, +0.17], the 95% interval contains 0")


def test_context_recovered_is_the_share_of_the_full_context_gain_with_a_paired_interval():
    rng = np.random.default_rng(0)
    none = 4.0 + rng.normal(0, 0.3, 64)
    full = none - 2.0 + rng.normal(0, 0.1, 64)
    half = none - 1.0 + rng.normal(0, 0.1, 64)
    recovered = recovered_interval(none, half, full)
    assert recovered["low"] < recovered["mean"] < recovered["high"]
    assert abs(recovered["mean"] - 0.5) < 0.05 and recovered["high"] - recovered["low"] < 0.1
    assert recovered_interval(none, full, full)["mean"] == pytest.approx(1.0)
    with pytest.raises(CourseError):
        recovered_interval(none, half[:10], full)
