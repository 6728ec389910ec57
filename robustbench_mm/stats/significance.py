"""Small, pure statistics for honest tables: intervals, spread over seeds, paired comparisons.

Accuracies are fractions in [0, 1] here; the report multiplies by 100. Every random draw takes an
explicit seed, so a report rebuilt from the same result files prints the same intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0

HOLDS = "holds"
REVERSED = "reversed"
NOT_DISTINGUISHABLE = "not distinguishable at this sample size"


def clopper_pearson(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact binomial interval for a proportion: it covers the true accuracy at least `confidence` of the time."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total > 0, got {correct} of {total}")
    tail = (1 - confidence) / 2
    low = 0.0 if correct == 0 else float(scipy_stats.beta.ppf(tail, correct, total - correct + 1))
    high = 1.0 if correct == total else float(scipy_stats.beta.ppf(1 - tail, correct + 1, total - correct))
    return low, high


def correct_count(accuracy_percent: float, total: int) -> int:
    """How many of `total` examples an accuracy in % stands for (result files store the percentage)."""
    count = round(accuracy_percent * total / 100)
    if not math.isclose(count * 100 / total, accuracy_percent, abs_tol=1e-3):
        raise ValueError(f"{accuracy_percent} % is not a whole number of {total} examples")
    return count


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1); the std is None for a single value."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("mean of no values")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else None


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Student-t interval of the mean over seeds; None for fewer than two values."""
    mean, std = mean_std(values)
    if std is None:
        return None
    half = float(scipy_stats.t.ppf(1 - (1 - confidence) / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean - half, mean + half


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: only examples the two models disagree on carry information."""

    only_a: int  # examples A gets right and B gets wrong
    only_b: int
    p_value: float


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """Two-sided exact McNemar test on paired per-example correctness of models A and B."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired masks must cover the same examples, got {a.shape} and {b.shape}")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_a + only_b
    if discordant == 0:
        return McNemar(0, 0, 1.0)
    p = 2 * float(scipy_stats.binom.cdf(min(only_a, only_b), discordant, 0.5))
    return McNemar(only_a, only_b, min(1.0, p))


def paired_bootstrap_difference(a_correct: np.ndarray, b_correct: np.ndarray, draws: int = BOOTSTRAP_DRAWS,
                                seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of accuracy(A) − accuracy(B), mean over seeds, resampling seeds and test examples.

    `a_correct` and `b_correct` are (seeds, examples) masks; row s of A is paired with row s of B
    (the same seed index) and column i is the same test example in both. Each draw picks seeds
    with replacement, then examples with replacement (one set of examples for every seed, since
    all seeds share the test set), so the interval carries both sources of variation. With one
    seed this is the ordinary paired bootstrap over examples.
    """
    a, b = np.atleast_2d(np.asarray(a_correct, dtype=float)), np.atleast_2d(np.asarray(b_correct, dtype=float))
    if a.shape != b.shape:
        raise ValueError(f"paired masks must have the same shape, got {a.shape} and {b.shape}")
    difference = a - b
    seeds, examples = difference.shape
    rng = np.random.default_rng(seed)
    # A draw's estimate is the mean of difference[rows][:, columns]; with how often each seed and
    # each example was drawn as weights that is (seed weights) @ difference @ (example weights).
    # Examples with the same column of differences are interchangeable, so the examples are drawn
    # over the few distinct columns (at most 3^seeds) with their frequencies: the same distribution,
    # and cheap for 10,000 test examples.
    columns, counts = np.unique(difference, axis=1, return_counts=True)
    seed_weights = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=draws) if seeds > 1 else np.ones((draws, 1))
    column_weights = rng.multinomial(examples, counts / examples, size=draws)
    estimates = ((seed_weights @ columns) * column_weights).sum(axis=1) / (seeds * examples)
    tail = (1 - confidence) / 2
    return float(np.quantile(estimates, tail)), float(np.quantile(estimates, 1 - tail))


def verdict_from_interval(low: float, high: float) -> str:
    """Whether an interval of (claimed better − claimed worse) supports the claim."""
    if low > 0:
        return HOLDS
    if high < 0:
        return REVERSED
    return NOT_DISTINGUISHABLE


def verdict_from_test(difference: float, p_value: float, level: float = 1 - CONFIDENCE) -> str:
    """Whether a paired test of (claimed better − claimed worse) supports the claim at `level`."""
    if p_value >= level or difference == 0:
        return NOT_DISTINGUISHABLE
    return HOLDS if difference > 0 else REVERSED
