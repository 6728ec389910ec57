"""The four per-pixel noises (Gaussian, shot, speckle, impulse), sampled exactly at the uint8 output.

make_cifar_c.py adds noise to every value and stores `uint8(clip(v, 0, 1) * 255)`, so a value's output
is a random level whose distribution depends only on its input level and the severity. We compute that
distribution exactly for each of the 256 input levels (normal CDF at the level boundaries; Poisson
probabilities summed over the counts that store as each level) and sample it with Walker's alias method
from one counter-based word per value (data/corruption_random.py): no per-image generator, no
transcendental function per value, and the same bits on every machine and device. Shot noise is exact
Poisson in distribution, not a normal approximation; the images differ from the reference's for the same
seed only in which draws they get, not in how those are distributed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy.special import ndtr
from scipy.stats import poisson

from robustbench_mm.data.corruption_kernels import sample_noise
from robustbench_mm.data.corruption_random import Draws, alias_table

LEVELS = np.arange(256)


def gaussian_rows(sigma: float) -> np.ndarray:
    """P(output m | input L) for uint8(clip(L/255 + sigma z, 0, 1) * 255): the output is at most m - 1
    exactly when L/255 + sigma z < m/255, so the CDF at the boundaries m = 1..255 is Phi((m - L) / (255 sigma))."""
    boundaries = (LEVELS[1:][None, :] - LEVELS[:, None]) / (255.0 * sigma)
    return _rows_from_cdf(ndtr(boundaries))


def speckle_rows(sigma: float) -> np.ndarray:
    """uint8(clip(x + x sigma z, 0, 1) * 255), x = L/255: below m/255 when z < (m/L - 1)/sigma; black stays black."""
    with np.errstate(divide="ignore"):
        boundaries = (LEVELS[1:][None, :] / LEVELS[:, None] - 1.0) / sigma
    cdf = ndtr(boundaries)
    cdf[0] = 1.0  # L = 0: x + x z = 0 always
    return _rows_from_cdf(cdf)


def shot_rows(photons: float) -> np.ndarray:
    """uint8(clip(k / c, 0, 1) * 255) with k ~ Poisson(L/255 * c): every count below c stored with the
    reference's own float64 arithmetic, and all counts >= c (stored as 255) in one tail."""
    counts = np.arange(int(np.ceil(photons)))
    counts = counts[counts < photons]
    stored = np.floor(np.clip(counts / photons, 0, 1) * 255).astype(np.int64)
    rows = np.zeros((256, 256))
    for level in LEVELS:
        lam = level / 255.0 * photons
        if lam == 0:
            rows[level, 0] = 1.0
            continue
        np.add.at(rows[level], stored, poisson.pmf(counts, lam))
        rows[level, 255] += poisson.sf(counts[-1], lam)  # P(k >= c), computed directly for the tail
    return rows


def impulse_rows(amount: float) -> np.ndarray:
    """skimage's s&p: a value is flipped with probability `amount`, to 0 or 255 with probability 1/2 each."""
    rows = np.diag(np.full(256, 1.0 - amount))
    rows[:, 0] += amount / 2
    rows[:, 255] += amount / 2
    return rows


def _rows_from_cdf(cdf: np.ndarray) -> np.ndarray:
    full = np.concatenate([np.zeros((256, 1)), cdf, np.ones((256, 1))], axis=1)
    return np.diff(full, axis=1).clip(min=0)


ROWS = {"gaussian_noise": gaussian_rows, "shot_noise": shot_rows, "speckle_noise": speckle_rows,
        "impulse_noise": impulse_rows}


@lru_cache(maxsize=32)
def noise_tables(name: str, parameter: float) -> np.ndarray:
    """The alias tables of one noise at one severity (tens of milliseconds to build, once per process)."""
    return alias_table(ROWS[name](parameter))


def level_noise(name: str):
    """The corruption function `f(images, parameter, draws)` of one per-pixel noise."""
    def corruption(x: torch.Tensor, c, draws: Draws) -> torch.Tensor:
        levels = x.to(device="cpu", dtype=torch.uint8).reshape(len(x), -1).numpy()
        out = sample_noise(levels, draws.keys, draws.reserve(levels.shape[1]), noise_tables(name, c))
        return torch.from_numpy(out).reshape(x.shape).to(x.device)
    corruption.__name__ = f"_{name}"
    return corruption
