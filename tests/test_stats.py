"""Statistics and table cells checked against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from robustbench_mm.runs.seeds import seeded_run_name, split_seed_suffix
from robustbench_mm.stats.estimates import SeedValue, estimate
from robustbench_mm.stats.significance import (
    HOLDS, NOT_DISTINGUISHABLE, REVERSED, clopper_pearson, correct_count, mcnemar_exact, mean_std,
    paired_bootstrap_difference, t_interval, verdict_from_interval, verdict_from_test)


def test_clopper_pearson_50_of_100_and_the_edges():
    # 50 of 100: the exact interval is symmetric about 0.5 with bounds 0.39832 and 0.60168 (R binom.test).
    low, high = clopper_pearson(50, 100)
    assert (low, high) == pytest.approx((0.398321, 0.601679), abs=1e-6)
    # No successes: the upper bound solves (1 - p)^n = 0.025, i.e. 1 - 0.025^(1/n).
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)), abs=1e-12)
    # All successes: the lower bound solves p^n = 0.025.
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0), abs=1e-12)
    with pytest.raises(ValueError):
        clopper_pearson(11, 10)


def test_counts_and_seed_spread():
    assert correct_count(12.5, 40) == 5
    with pytest.raises(ValueError):
        correct_count(12.6, 40)  # not a whole number of examples
    assert mean_std([70.0, 72.0, 74.0]) == (72.0, 2.0)  # sample std: sqrt((4 + 0 + 4) / 2)
    assert mean_std([70.0]) == (70.0, None)
    # t(0.975, 2) = 4.302653; half width = 4.302653 * 2 / sqrt(3)
    low, high = t_interval([70.0, 72.0, 74.0])
    assert (low, high) == pytest.approx((72 - 4.968275, 72 + 4.968275), abs=1e-5)


def test_mcnemar_on_a_constructed_example():
    # A right and B wrong on 10 examples, the reverse on 2, both right on 5:
    # p = 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096 = 158 / 4096.
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b) == (10, 2)
    assert result.p_value == pytest.approx(158 / 4096, abs=1e-12)
    assert mcnemar_exact(b, a).p_value == pytest.approx(158 / 4096, abs=1e-12)
    assert mcnemar_exact(a, a).p_value == 1.0  # no disagreement, no evidence
    # Balanced disagreement: 3 vs 3 -> p = 2 * P(X <= 3 | n = 6) = 2 * 42 / 64 > 1, capped at 1.
    assert mcnemar_exact([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]).p_value == 1.0
    assert verdict_from_test(10 - 2, result.p_value) == HOLDS
    assert verdict_from_test(2 - 10, result.p_value) == REVERSED
    assert verdict_from_test(8, 0.2) == NOT_DISTINGUISHABLE


def test_paired_bootstrap_is_seeded_and_centred():
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    low, high = paired_bootstrap_difference(a, b)
    assert 0 < low < 8 / 17 < high
    assert paired_bootstrap_difference(a, b) == (low, high)  # same seed, same interval
    # Several seeds: a difference that flips sign with the seed is not distinguishable from zero.
    seeds_a = np.array([[True] * 20 + [False] * 20, [False] * 40])
    seeds_b = np.array([[False] * 40, [True] * 20 + [False] * 20])
    low, high = paired_bootstrap_difference(seeds_a, seeds_b)
    assert verdict_from_interval(low, high) == NOT_DISTINGUISHABLE
    assert verdict_from_interval(0.1, 0.3) == HOLDS and verdict_from_interval(-0.3, -0.1) == REVERSED


def test_cells_over_seeds_and_over_examples():
    one = estimate([SeedValue("run", 0, 50.0, 100)])
    assert one.text() == "50.00 [39.8, 60.2]"
    columns = one.columns()
    assert (columns["n_seeds"], columns["per_seed"], columns["std"]) == (1, "0:50", None)
    assert (columns["ci_low"], columns["ci_high"]) == pytest.approx((39.8321, 60.1679), abs=1e-4)
    several = estimate([SeedValue("r-s2", 2, 74.0, 100), SeedValue("r-s0", 0, 70.0, 100),
                        SeedValue("r-s1", 1, 72.0, 100)], missing=["r-s3"])
    assert several.text() == "72.00 ± 2.00 (3 seeds) (1 more seed missing)"
    columns = several.columns()
    assert columns["per_seed"] == "0:70;1:72;2:74" and columns["std"] == 2.0
    assert columns["ci_low"] == pytest.approx(72 - 4.968275, abs=1e-5)
    assert estimate([SeedValue("run", 0, 50.3, 100)]).text() == "50.30"  # not a count: no made-up interval
    assert estimate([]) is None
    assert split_seed_suffix("digits-preactresnet18-input-a1-s12") == ("digits-preactresnet18-input-a1", 12)
    assert split_seed_suffix("digits-preactresnet18-baseline") == ("digits-preactresnet18-baseline", None)
    assert seeded_run_name("x", 3) == "x-s3"


def test_paired_bootstrap_matches_the_normal_interval_on_a_large_sample():
    # 1000 paired examples: A alone right on 100, B alone right on 40. The difference per example is
    # +1, -1 or 0: mean 0.06, variance 0.14 - 0.06^2 = 0.1364, standard error sqrt(0.1364 / 1000).
    a = np.zeros(1000, bool)
    b = np.zeros(1000, bool)
    a[:100] = True
    b[100:140] = True
    half = 1.959964 * np.sqrt(0.1364 / 1000)
    assert paired_bootstrap_difference(a, b, draws=20000) == pytest.approx((0.06 - half, 0.06 + half), abs=0.003)
    # Two identical seeds carry no spread between seeds: the same interval as one seed.
    assert paired_bootstrap_difference(np.stack([a, a]), np.stack([b, b]), draws=20000) == pytest.approx(
        (0.06 - half, 0.06 + half), abs=0.003)
