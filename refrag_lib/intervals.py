"""95% bootstrap intervals for the course's quality figures (scipy.stats.bootstrap, percentile method).

A figure over held-out items (windows, questions) is a mean; its interval says how far another draw
of as many items could move it. A difference between two arms on the SAME items gets a paired
interval (resampling items, not arms), which is far tighter than comparing two separate intervals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import CourseError

RESAMPLES = 2000


def _check(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) < 2:
        raise CourseError(f"An interval needs at least 2 held-out items, got {len(array)}: evaluate on more.")
    return array


def mean_interval(values: Sequence[float], seed: int = 0, level: float = 0.95) -> dict:
    """{"mean", "low", "high"}: the mean over items and its bootstrap interval."""
    from scipy.stats import bootstrap

    array = _check(values)
    if np.all(array == array[0]):  # every item scored the same: no spread to resample
        return {"mean": float(array[0]), "low": float(array[0]), "high": float(array[0])}
    ci = bootstrap((array,), np.mean, n_resamples=RESAMPLES, confidence_level=level, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    return {"mean": float(array.mean()), "low": float(ci.low), "high": float(ci.high)}


def paired_difference(a: Sequence[float], b: Sequence[float], seed: int = 0, level: float = 0.95) -> dict:
    """mean(a - b) over the same items, with its paired bootstrap interval."""
    first, second = _check(a), _check(b)
    if first.shape != second.shape:
        raise CourseError(f"A paired difference needs the same items in both arms ({len(first)} vs {len(second)}).")
    return mean_interval(first - second, seed, level)


def excludes_zero(interval: dict) -> bool:
    """True when the interval lies entirely on one side of 0: a difference the items support."""
    return interval["low"] > 0 or interval["high"] < 0


def format_interval(interval: dict, digits: int = 3) -> str:
    return f"{interval['mean']:.{digits}f} [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def verdict(difference: dict, above: str, below: str, digits: int = 2) -> str:
    """The sentence a paired difference supports, chosen by its interval rather than typed: `above` when the
    whole interval lies above 0, `below` when it lies below, else a tie."""
    numbers = f"{difference['mean']:+.{digits}f} [{difference['low']:+.{digits}f}, {difference['high']:+.{digits}f}]"
    if difference["low"] > 0:
        return f"{above}: {numbers}, the whole 95% interval above 0"
    if difference["high"] < 0:
        return f"{below}: {numbers}, the whole 95% interval below 0"
    return f"a tie: {numbers}, the 95% interval contains 0"


def recovered_interval(none: Sequence[float], compressed: Sequence[float], full: Sequence[float], seed: int = 0,
                       level: float = 0.95) -> dict:
    """Context recovered, (mean none - mean compressed) / (mean none - mean full), with a paired bootstrap
    interval: the same items resampled in all three arms (one loss per item and arm, e.g. log-ppl)."""
    from scipy.stats import bootstrap

    arms = [_check(none), _check(compressed), _check(full)]
    if len({len(arm) for arm in arms}) != 1:
        raise CourseError("Context recovered needs the same items in all three arms.")
    arms = np.stack(arms)

    def ratio(rows):
        a, b, c = arms[:, rows].mean(axis=-1)
        return (a - b) / (a - c)

    rows = np.arange(arms.shape[1])
    ci = bootstrap((rows,), ratio, n_resamples=RESAMPLES, confidence_level=level, method="percentile",
                   vectorized=False, random_state=np.random.default_rng(seed)).confidence_interval
    return {"mean": float(ratio(rows)), "low": float(ci.low), "high": float(ci.high)}
