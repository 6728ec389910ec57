"""Compiled CPU kernels (numba) for the corruptions whose batched tensor version is a long chain of passes
over the batch: the counter-based random words, the per-pixel noises' sampling, and the HSV round trip
of brightness and saturate. Each kernel loops over images in parallel and over one image's pixels with
the reference's own arithmetic, in the reference's order (float64 where it is float64, no fused or
reordered operations: numba compiles without fast-math), so its results are those of the tensor version
and of make_cifar_c.py bit for bit, and an image's result never depends on the rest of the batch or the
thread count. The tensor versions stay for images on a GPU (data/corruption_families.py chooses).

Compiled once per machine: numba caches the machine code beside this file (or in the user's cache folder
when that is read-only), so only the first call after an install waits for the compiler (about a second
a kernel).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
# Alias sampling: a word's top 8 bits pick the bucket and its low 54 bits are compared with the bucket's
# threshold, which is stored above its 8-bit alias in one int64 (2**54 << 8 still fits), so one read serves.
FRACTION_BITS = 54
FRACTION_MASK = np.uint64((1 << FRACTION_BITS) - 1)
ANGLE_STEP = 2 * np.pi * 2.0 ** -32  # a 32-bit word's share of a turn


def compiled(**options):
    """numba's njit with its machine code cached on disk and the GIL released; where no cache folder is writable
    (a read-only install and home), numba refuses to cache, and the kernel is compiled in every process instead."""
    def decorate(function):
        try:
            return njit(cache=True, nogil=True, **options)(function)
        except RuntimeError:
            return njit(nogil=True, **options)(function)
    return decorate


@compiled(inline="always")
def splitmix(z):
    """splitmix64's finaliser on one uint64 (every constant uint64: a mixed int64 would make numba use float64)."""
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


@compiled(parallel=True)
def stream_words(keys, start, count):
    """Words start..start+count-1 of every image's stream, (N, count) uint64: word j of key k is
    splitmix64(k + (j + 1) * golden gamma), wrapping."""
    out = np.empty((keys.shape[0], count), dtype=np.uint64)
    for image in prange(keys.shape[0]):
        key = keys[image]
        for j in range(count):
            out[image, j] = splitmix(key + np.uint64(start + j + 1) * GAMMA)
    return out


@compiled(parallel=True)
def stream_units(keys, start, count):
    """`stream_words` as float64 in [0, 1): each word's top 53 bits times 2**-53 (exact, as numpy's `random`)."""
    out = np.empty((keys.shape[0], count), dtype=np.float64)
    for image in prange(keys.shape[0]):
        key = keys[image]
        for j in range(count):
            out[image, j] = (splitmix(key + np.uint64(start + j + 1) * GAMMA) >> np.uint64(11)) * 2.0 ** -53
    return out


@compiled(parallel=True)
def stream_normals(keys, start, count):
    """`stream_words` as standard normals, one word each (Box-Muller): the radius from the high 32 bits
    (shifted off 0), the angle from the low 32. 32 bits bound |z| by sqrt(2 ln 2**33) = 6.8: the normal's mass
    beyond is 1e-11, not one value expected in all of CIFAR-10-C's snow and spatter layers, the only callers.
    log and cos are the C library's, as numpy's: their last bit may differ between CPUs' math libraries."""
    out = np.empty((keys.shape[0], count), dtype=np.float64)
    for image in prange(keys.shape[0]):
        key = keys[image]
        for j in range(count):
            out[image, j] = box_muller(splitmix(key + np.uint64(start + j + 1) * GAMMA))
    return out


@compiled(inline="always")
def box_muller(word):
    """One standard normal from one word (see `stream_normals`)."""
    radius = math.sqrt(math.log((np.float64(word >> np.uint64(32)) + 0.5) * 2.0 ** -32) * -2.0)
    return radius * math.cos(np.float64(word & np.uint64(0xFFFFFFFF)) * ANGLE_STEP)


@compiled(parallel=True)
def sample_noise(levels, keys, start, entries):
    """Every uint8 value of `levels` (N, P) replaced by a level drawn from its row of the alias table
    `entries` (`threshold << 8 | alias` per bucket, row = input level), value i of image k with word
    start + i of key k: the word's top 8 bits pick the bucket, kept when its low 54 bits are below the
    threshold, else the bucket's alias. Returns the levels as float32, what the corruption hands on."""
    n, pixels = levels.shape
    out = np.empty((n, pixels), dtype=np.float32)
    for image in prange(n):
        key = keys[image]
        for i in range(pixels):
            word = splitmix(key + np.uint64(start + i + 1) * GAMMA)
            bucket = np.int64(word >> np.uint64(56))
            entry = entries[np.int64(levels[image, i]) << 8 | bucket]
            if np.int64(word & FRACTION_MASK) < entry >> 8:
                out[image, i] = bucket
            else:
                out[image, i] = entry & 255
    return out


@compiled(parallel=True)
def hsv_round_trip(levels, saturation_scale, saturation_shift, value_shift):
    """make_cifar_c's brightness and saturate on uint8 levels (N, 3, P): skimage's rgb2hsv of levels / 255,
    saturation s -> clip(s a + b, 0, 1) and value v -> clip(v + c, 0, 1), skimage's hsv2rgb, then
    uint8(clip(x, 0, 1) * 255), all in float64 op for op as numpy computes it. Returns float32 levels."""
    n, _, pixels = levels.shape
    unit = np.arange(256) / 255.0  # what x / 255. gives for each level
    out = np.empty((n, 3, pixels), dtype=np.float32)
    for image in prange(n):
        for i in range(pixels):
            r, g, b = unit[levels[image, 0, i]], unit[levels[image, 1, i]], unit[levels[image, 2, i]]
            value = max(r, g, b)
            delta = value - min(r, g, b)
            hue = 0.0
            saturation = 0.0
            if delta != 0.0:
                saturation = delta / value
                if b == value:  # skimage assigns red, green, blue in turn: the last that is the max wins
                    hue = 4.0 + (r - g) / delta
                elif g == value:
                    hue = 2.0 + (b - r) / delta
                else:
                    hue = (g - b) / delta
                hue = hue / 6.0
                if hue < 0.0:  # numpy's % 1.0 for hue / 6 in (-1/6, 1)
                    hue += 1.0
            saturation = min(max(saturation * saturation_scale + saturation_shift, 0.0), 1.0)
            value = min(max(value + value_shift, 0.0), 1.0)
            sextant = hue * 6
            sector = np.floor(sextant)
            f = sextant - sector
            p = value * (1 - saturation)
            q = value * (1 - f * saturation)
            t = value * (1 - (1 - f) * saturation)
            which = int(sector) % 6
            if which == 0:
                red, green, blue = value, t, p
            elif which == 1:
                red, green, blue = q, value, p
            elif which == 2:
                red, green, blue = p, value, t
            elif which == 3:
                red, green, blue = p, q, value
            elif which == 4:
                red, green, blue = t, p, value
            else:
                red, green, blue = value, p, q
            out[image, 0, i] = np.floor(min(max(red, 0.0), 1.0) * 255)
            out[image, 1, i] = np.floor(min(max(green, 0.0), 1.0) * 255)
            out[image, 2, i] = np.floor(min(max(blue, 0.0), 1.0) * 255)
    return out
