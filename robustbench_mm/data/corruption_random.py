"""Counter-based random numbers for the corruptions: every image's draws are a pure function of
(seed, corruption, severity, index in the whole set), computed for a whole batch at once.

Each image gets a 64-bit key, splitmix64 chained over those four numbers; its stream is word j =
splitmix64(key + (j + 1) * golden gamma), for any j without computing the ones before it. A batch's
draws are then one integer computation on the host (a compiled kernel, data/corruption_kernels.py, in
wrapping uint64 arithmetic), so an image gets the same numbers alone, in a subset, in a shard or in a whole run, and
on every device (the host makes them; the device only receives them).

`Draws` hands them out in numpy Generator's vocabulary (`random`, `uniform`, `normal`, `integers`),
one word per value in call order, for the corruptions that draw a few numbers per image (glass blur's
moves, a snow layer, fog's plasma): `Draws(keys)` gives (N, *size) arrays, and `image_draws` one
image's view of the same stream, which the tests hand to make_cifar_c.py's per-image arithmetic so
it sees the numbers the batch used. The per-pixel noises instead sample their uint8 output directly
(`alias_table` here, sampled by data/corruption_kernels.py's `sample_noise`).

Integers and uniforms are exact integer arithmetic, the same bits on every machine. Normals (Box-Muller,
one word each) go through the C library's float64 log and cos, whose last bit may differ between math
libraries: a difference that could move a stored uint8 level with a probability of order 1e-13.
"""

from __future__ import annotations

import numpy as np

from robustbench_mm.data.corruption_kernels import (
    FRACTION_BITS, GAMMA, MIX1, MIX2, stream_normals, stream_units, stream_words)


def mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (returned)."""
    t = z >> np.uint64(30)
    z ^= t
    z *= MIX1
    np.right_shift(z, np.uint64(27), out=t)
    z ^= t
    z *= MIX2
    np.right_shift(z, np.uint64(31), out=t)
    z ^= t
    return z


def image_keys(seed: int, corruption_id: int, severity: int, indices) -> np.ndarray:
    """One uint64 key per image: splitmix64 chained over seed, corruption, severity and the image's index."""
    index = np.asarray(indices, dtype=np.int64).astype(np.uint64).reshape(-1)
    key = np.zeros(index.shape, dtype=np.uint64)
    gamma = np.uint64(GAMMA)
    for part in (np.uint64(seed % 2 ** 64), np.uint64(corruption_id), np.uint64(severity), index):
        key += gamma
        key += part
        mix(key)
    return key


def words(keys: np.ndarray, start: int, count: int) -> np.ndarray:
    """Words start..start+count-1 of every image's stream: (N, count) uint64."""
    return stream_words(np.ascontiguousarray(keys, dtype=np.uint64), start, count)


class Draws:
    """Every image's stream, read in call order; each method returns (N, *size) arrays."""

    def __init__(self, keys: np.ndarray):
        self.keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        self.position = 0

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, size, stream=stream_words) -> np.ndarray:
        """The next prod(size) words of every image, shaped (N, *size) (or what `stream` makes of them)."""
        shape = () if size is None else (size,) if isinstance(size, int) else tuple(size)
        count = int(np.prod(shape, dtype=np.int64))
        out = stream(self.keys, self.position, count)
        self.position += count
        return out.reshape((len(self.keys),) + shape)

    def skip(self, size) -> None:
        self.position += int(np.prod((size,) if isinstance(size, int) else tuple(size), dtype=np.int64))

    def reserve(self, size) -> int:
        """Move past the next prod(size) words of every image and return where they start: for a kernel that
        draws them itself from the keys (the same words, in the same order)."""
        start = self.position
        self.skip(size)
        return start

    def random(self, size=None) -> np.ndarray:
        """Uniform floats in [0, 1): a word's top 53 bits times 2**-53, every value a multiple of 2**-53 as
        numpy's `random` (the kernel computes them with the words, one pass instead of three)."""
        return self.take(size, stream_units)

    def uniform(self, low=0.0, high=1.0, size=None) -> np.ndarray:
        return low + (high - low) * self.random(size)  # numpy Generator.uniform's own formula

    def normal(self, loc=0.0, scale=1.0, size=None) -> np.ndarray:
        return loc + scale * self.take(size, stream_normals)

    def integers(self, low, high=None, size=None) -> np.ndarray:
        """Uniform integers in [low, high) (numpy's `integers`, endpoint False), from the top 53 bits:
        floor(u * span) is off uniform by at most span / 2**53."""
        if high is None:
            low, high = 0, low
        span = int(high) - int(low) if np.ndim(low) == 0 and np.ndim(high) == 0 else 0
        if 2 <= span <= 2 ** 53 and span & (span - 1) == 0:
            # u * 2**k is exact, so floor(u * 2**k) is the word's top k bits: one shift (glass blur's moves)
            return int(low) + (self.take(size) >> np.uint64(65 - span.bit_length())).astype(np.int64)
        u = self.random(size)
        span = np.asarray(high, dtype=np.int64) - np.asarray(low, dtype=np.int64)  # per image, or one for all
        low = np.asarray(low, dtype=np.int64)
        if span.ndim:
            span, low = (np.broadcast_to(a, span.shape).reshape(span.shape + (1,) * (u.ndim - 1)) for a in (span, low))
        return low + np.floor(u * span).astype(np.int64)


class ImageDraws:
    """One image's view of a `Draws` stream, with numpy Generator's signatures: what the tests hand the
    per-image reference so that it draws exactly the numbers the batch drew for that image."""

    def __init__(self, key: np.uint64):
        self._draws = Draws(np.array([key], dtype=np.uint64))

    def random(self, size=None):
        return self._draws.random(size)[0]

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._draws.uniform(low, high, size)[0]

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._draws.normal(loc, scale, size)[0]

    def integers(self, low, high=None, size=None):
        return self._draws.integers(low, high, size)[0]


def image_draws(keys: np.ndarray) -> list[ImageDraws]:
    return [ImageDraws(key) for key in np.asarray(keys, dtype=np.uint64).reshape(-1)]


# ------------------------------------------------------------------------------ per-pixel noise, exactly

def alias_table(probabilities: np.ndarray) -> np.ndarray:
    """Walker's alias method (Vose's construction) for each row of (R, 256) probabilities, flattened to
    R * 256 int64 entries `threshold << 8 | alias`: a word whose top 8 bits pick bucket j of row r gives
    j when its low 54 bits are below the threshold and the alias otherwise. The sampled probabilities
    are the rows' to within 2**-54 per bucket (plus float64 rounding in building the table)."""
    rows, buckets = probabilities.shape
    assert buckets == 256
    entries = np.zeros((rows, buckets), dtype=np.int64)
    one = 1 << FRACTION_BITS
    for r, row in enumerate(probabilities):
        scaled = (row / row.sum() * buckets).tolist()
        small = [j for j, q in enumerate(scaled) if q < 1.0]
        large = [j for j, q in enumerate(scaled) if q >= 1.0]
        alias = list(range(buckets))
        share = [1.0] * buckets
        while small and large:
            s, g = small.pop(), large.pop()
            share[s], alias[s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            (small if scaled[g] < 1.0 else large).append(g)
        # what is left is 1 up to rounding: those buckets keep themselves
        entries[r] = [min(one, max(0, round(q * one))) << 8 | a for q, a in zip(share, alias)]
    return entries.reshape(-1)


def alias_probabilities(entries: np.ndarray) -> np.ndarray:
    """The (R, 256) probabilities that `alias_table`'s entries sample (for checking them)."""
    entries = entries.reshape(-1, 256)
    kept = (entries >> 8).astype(np.float64) / 2.0 ** FRACTION_BITS / 256
    out = kept.copy()
    for row, row_entries, row_kept in zip(out, entries, kept):
        np.add.at(row, row_entries & 255, 1 / 256 - row_kept)
    return out
