"""The counter-based draws (data/corruption_random.py) and the per-pixel noises sampled exactly at the
uint8 output (data/corruption_noise.py): reference values for splitmix64, probabilities worked out by
hand, the alias tables against their rows, and means and variances per input level against
make_cifar_c.py's own noises drawn with numpy Generators (tests/corruption_reference.py)."""

from __future__ import annotations

import corruption_reference as R
import numpy as np
import pytest
import torch
from scipy.special import ndtr
from scipy.stats import poisson

from robustbench_mm.data import corruptions as C
from robustbench_mm.data.corruption_noise import ROWS, noise_tables
from robustbench_mm.data.corruption_kernels import sample_noise
from robustbench_mm.data.corruption_random import Draws, alias_probabilities, image_draws, words

NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
BAND_LEVELS = (0, 1, 20, 77, 128, 200, 254, 255)  # one 4-row band each in a 32 x 32 image


def test_words_are_splitmix64():
    """splitmix64 seeded with 0: its first outputs, as published with the algorithm (Vigna's splitmix64.c)."""
    out = words(np.array([0], dtype=np.uint64), 0, 3)[0]
    assert [hex(int(v)) for v in out] == ["0xe220a8397b1dcdaf", "0x6e789e6aa1b965f4", "0x6c45d188009454f"]
    assert np.array_equal(words(np.array([0], dtype=np.uint64), 2, 1)[0], out[2:])  # any position, directly


def test_uniforms_are_the_words_top_53_bits():
    keys = C.image_keys(1, "snow", 3, range(5))
    draws = Draws(keys)
    draws.skip(7)
    expected = (words(keys, 7, 300) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    assert np.array_equal(draws.random(size=(3, 100)), expected.reshape(5, 3, 100))


def test_image_views_read_the_batch_stream():
    keys = C.image_keys(3, "fog", 2, range(4))
    batch = Draws(keys)
    normals, integers = batch.normal(0.5, 2.0, size=(2, 3)), batch.integers(-1, 1, size=5)
    for k, view in enumerate(image_draws(keys)):
        assert np.array_equal(view.normal(0.5, 2.0, size=(2, 3)), normals[k])
        assert np.array_equal(view.integers(-1, 1, size=5), integers[k])
    assert set(np.unique(integers)) <= {-1, 0}
    assert len(set(C.image_keys(0, "fog", 1, range(1000)).tolist())) == 1000
    assert C.image_keys(0, "fog", 1, [5])[0] != C.image_keys(0, "fog", 2, [5])[0]


def test_uniform_and_normal_draws_have_their_moments():
    draws = Draws(C.image_keys(0, "snow", 1, range(50)))
    u, z = draws.random(2000), draws.normal(size=2000)
    n = u.size
    assert 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n) and abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / n)
    assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.var() - 1) < 5 * np.sqrt(2 / n)


# ------------------------------------------------------------------------------------------- the rows

def test_rows_by_hand():
    """Impulse 0.03: 1.5% to black, 1.5% to white, the rest stays. Gaussian sigma 0.08: a mid level stays
    with probability Phi(1 / 20.4) - 1/2 (it must land in [L/255, (L+1)/255)). Shot noise c = 50 at white:
    k ~ Poisson(50) stores 255 for every k >= 50. Black stays black under shot and speckle noise."""
    impulse = ROWS["impulse_noise"](0.03)
    assert impulse[100, 0] == impulse[100, 255] == pytest.approx(0.015) and impulse[100, 100] == pytest.approx(0.97)
    assert ROWS["gaussian_noise"](0.08)[128, 128] == pytest.approx(ndtr(1 / 20.4) - 0.5, abs=1e-15)
    shot = ROWS["shot_noise"](50)
    assert shot[255, 255] == pytest.approx(poisson.sf(49, 50), abs=1e-15)
    assert shot[0, 0] == 1 and ROWS["speckle_noise"](0.2)[0, 0] == 1
    # k = 1 of Poisson(50 * 20/255) stores floor(255 / 50) = 5
    assert shot[20, 5] == pytest.approx(poisson.pmf(1, 50 * 20 / 255), abs=1e-15)


@pytest.mark.parametrize("name", NOISES)
def test_alias_tables_give_their_rows(name):
    parameter = C.PARAMETERS[name][4]
    rows = ROWS[name](parameter)
    assert np.allclose(rows.sum(1), 1, atol=1e-12)
    implied = alias_probabilities(noise_tables(name, parameter))
    assert np.abs(implied - rows / rows.sum(1, keepdims=True)).max() < 1e-13


def test_sampling_by_hand():
    """Row 1: bucket 3 keeps 3 below threshold 2**53 (probability 1/2), else gives alias 7; row 0 keeps every
    bucket. A word's top 8 bits pick the bucket and its low 54 bits meet the threshold: each value's word is
    the next of its image's stream."""
    entries = np.zeros(2 * 256, dtype=np.int64)
    entries[256:] = np.arange(256) | (1 << 54) << 8  # row 1 keeps every bucket ...
    entries[256 + 3] = (1 << 53) << 8 | 7  # ... but bucket 3, half the time
    entries[:256] = np.arange(256)  # threshold 0: row 0 always gives the alias, 0 .. 255 in turn
    keys = C.image_keys(0, "fog", 1, range(64))
    levels = np.ones((64, 400), dtype=np.uint8)
    levels[:, -1] = 0
    out = sample_noise(levels, keys, 5, entries)
    w = words(keys, 5, 400)
    bucket = (w >> np.uint64(56)).astype(np.int64)
    low = (w & np.uint64((1 << 54) - 1)).astype(np.int64)
    expected = np.where((bucket == 3) & (low >= 1 << 53), 7, bucket)
    expected[:, -1] = bucket[:, -1]  # row 0's alias of bucket j is j
    assert np.array_equal(out, expected)
    assert ((bucket == 3) & (out == 7)).any() and ((bucket == 3) & (out == 3)).any()  # both branches taken


def band_images(n: int) -> np.ndarray:
    image = np.zeros((32, 32, 3), np.uint8)
    for band, level in enumerate(BAND_LEVELS):
        image[4 * band:4 * band + 4] = level
    return np.repeat(image[None], n, axis=0)


def moments(rows: np.ndarray, level: int) -> tuple[float, float, float]:
    values = np.arange(256.0)
    p = rows[level] / rows[level].sum()
    mean = (p * values).sum()
    variance = (p * (values - mean) ** 2).sum()
    fourth = (p * (values - mean) ** 4).sum()
    return mean, variance, fourth


def check_moments(samples: np.ndarray, rows: np.ndarray, label: str) -> None:
    """Each band's mean and variance within 5 standard errors of the exact ones."""
    for band, level in enumerate(BAND_LEVELS):
        values = samples[:, 4 * band:4 * band + 4].astype(np.float64).ravel()
        n = values.size
        mean, variance, fourth = moments(rows, level)
        assert abs(values.mean() - mean) <= 5 * np.sqrt(variance / n) + 1e-9, f"{label} level {level}: mean"
        # plus the second-order term of the estimated mean, all there is when fourth = variance ** 2 (a fair coin)
        spread = np.sqrt(max(fourth - variance ** 2, 0) / n) + 5 * variance / n
        assert abs(values.var() - variance) <= 5 * spread + 1e-9, f"{label} level {level}: variance"


@pytest.mark.parametrize("severity", (1, 5))
@pytest.mark.parametrize("name", NOISES)
def test_ours_and_the_reference_have_the_same_distribution(name, severity):
    """make_cifar_c.py's noise with real numpy Generators, and ours, against the exact per-level moments."""
    n = 40
    images = band_images(n)
    rows = ROWS[name](C.PARAMETERS[name][severity - 1])
    rngs = [np.random.default_rng([11, severity, k]) for k in range(n)]
    check_moments(R.reference(images, name, severity, rngs), rows, f"reference {name} {severity}")
    ours = C.corrupt(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, name, severity, seed=11)
    check_moments((ours * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy(), rows, f"ours {name} {severity}")
