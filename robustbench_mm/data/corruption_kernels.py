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


@njit(cache=True, nogil=True, inline="always")
def _mix(z):
    """splitmix64's finaliser on one uint64 (every constant uint64: a mixed int64 would make numba use float64)."""
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True, parallel=True)
def stream_words(keys, start, count):
    """Words start..start+count-1 of every image's stream, (N, count) uint64: word j of key k is
    splitmix64(k + (j + 1) * golden gamma), wrapping."""
    out = np.empty((keys.shape[0], count), dtype=np.uint64)
    for image in prange(keys.shape[0]):
        key = keys[image]
        for j in range(count):
            out[image, j] = _mix(key + np.uint64(start + j + 1) * GAMMA)
    return out


@njit(cache=True, nogil=True, parallel=True)
def stream_units(keys, start, count):
    """`stream_words` as float64 in [0, 1): each word's top 53 bits times 2**-53 (exact, as numpy's `random`)."""
    out = np.empty((keys.shape[0], count), dtype=np.float64)
    for image in prange(keys.shape[0]):
        key = keys[image]
        for j in range(count):
            out[image, j] = (_mix(key + np.uint64(start + j + 1) * GAMMA) >> np.uint64(11)) * 2.0 ** -53
    return out


@njit(cache=True, nogil=True, parallel=True)
def stream_normals(keys, start, count):
    """`stream_words` as standard normals, one word each (Box-Muller): the radius from the high 32 bits
    (shifted off 0), the angle from the low 32. 32 bits bound |z| by sqrt(2 ln 2**33) = 6.8: the normal's mass
    beyond is 1e-11, not one value expected in all of CIFAR-10-C's snow and spatter layers, the only callers.
    log and cos are the C library's, as numpy's: their last bit may differ between CPUs' math libraries."""
    out = np.empty((keys.shape[0], count), dtype=np.float64)
    for image in prange(keys.shape[0]):
        key = keys[image]
        for j in range(count):
            word = _mix(key + np.uint64(start + j + 1) * GAMMA)
            radius = math.sqrt(math.log((np.float64(word >> np.uint64(32)) + 0.5) * 2.0 ** -32) * -2.0)
            out[image, j] = radius * math.cos(np.float64(word & np.uint64(0xFFFFFFFF)) * ANGLE_STEP)
    return out


@njit(cache=True, nogil=True, parallel=True)
def sample_noise(levels, keys, start, entries):
    """Every uint8 value of `levels` (N, P) replaced by a level drawn from its row of the alias table
    `entries` (`threshold << 8 | alias` per bucket, row = input level), value i of image k with word
    start + i of key k: the word's top 8 bits pick the bucket, kept when its low 54 bits are below the
    threshold, else the bucket's alias."""
    n, pixels = levels.shape
    out = np.empty((n, pixels), dtype=np.uint8)
    for image in prange(n):
        key = keys[image]
        for i in range(pixels):
            word = _mix(key + np.uint64(start + i + 1) * GAMMA)
            bucket = np.int64(word >> np.uint64(56))
            entry = entries[np.int64(levels[image, i]) << 8 | bucket]
            if np.int64(word & FRACTION_MASK) < entry >> 8:
                out[image, i] = bucket
            else:
                out[image, i] = entry & 255
    return out


@njit(cache=True, nogil=True, parallel=True)
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


@njit(cache=True, nogil=True, inline="always")
def reflect101_index(index, size):
    """OpenCV's BORDER_REFLECT_101 (d c b | a b c d | c b a) of an integer position."""
    if 0 <= index < size:  # nearly every position: no division
        return index
    if size == 1:
        return 0
    period = 2 * size - 2
    index = abs(index) % period
    return period - index if index >= size else index


@njit(cache=True, nogil=True, inline="always")
def _reflect(index, size):
    """scipy.ndimage's 'reflect' (d c b a | a b c d | d c b a) of an integer position."""
    if 0 <= index < size:  # nearly every position: no division
        return index
    index = index % (2 * size)  # numba's % on integers is Python's: never negative here
    return 2 * size - 1 - index if index >= size else index


@njit(cache=True, nogil=True, parallel=True)
def bilinear_sample(planes, y0, x0, wy0, wy1, wx0, wx1):
    """cv2.warpAffine's bilinear sampling with a reflect-101 border: out[n, c, i, j] is the sum over the four
    neighbours of (y0, x0)[n, i, j] of plane value x weight wy wx, in planes' dtype (float32, as OpenCV's
    float images), neighbours in the order (0, 0), (0, 1), (1, 0), (1, 1)."""
    n, channels, h, w = planes.shape
    out = np.empty_like(planes)
    for image in prange(n):
        for i in range(h):
            for j in range(w):
                top, left = y0[image, i, j], x0[image, i, j]
                r0, r1 = reflect101_index(top, h), reflect101_index(top + 1, h)
                c0, c1 = reflect101_index(left, w), reflect101_index(left + 1, w)
                w00, w01 = wy0[image, i, j] * wx0[image, i, j], wy0[image, i, j] * wx1[image, i, j]
                w10, w11 = wy1[image, i, j] * wx0[image, i, j], wy1[image, i, j] * wx1[image, i, j]
                for channel in range(channels):
                    plane = planes[image, channel]
                    total = plane[r0, c0] * w00
                    total += w01 * plane[r0, c1]
                    total += w10 * plane[r1, c0]
                    total += w11 * plane[r1, c1]
                    out[image, channel, i, j] = total
    return out


@njit(cache=True, nogil=True, inline="always")
def _extend(index, size, nearest):
    """scipy.ndimage's 'nearest' (a a | a b c d | d d) or 'reflect' (b a | a b c d | d c) border."""
    if nearest:
        return min(max(index, 0), size - 1)
    return _reflect(index, size)


@njit(cache=True, nogil=True, parallel=True)
def gaussian_planes(fields, weights, nearest):
    """scipy.ndimage.gaussian_filter(fields, sigma=(0, 0, s, s), mode='nearest' or 'reflect') of (N, K, H, W)
    float32 or float64 fields, `weights` its symmetric 1-D kernel, bit for bit: along H, then along W, each
    output summed in float64 as scipy's correlate1d sums a symmetric kernel (the centre tap, then the pairs of
    mirrored taps from the outermost in) and stored in the fields' dtype after each pass, as scipy's output
    array is. A row of outputs at a time from a border-extended copy (the loop numba vectorises)."""
    n, k, h, w = fields.shape
    radius = len(weights) // 2
    out = np.empty_like(fields)
    for image in prange(n):
        tall = np.empty((h + 2 * radius, w))
        wide = np.empty((h, w + 2 * radius), dtype=fields.dtype)
        total = np.empty(w)
        for field in range(k):
            for i in range(h + 2 * radius):
                tall[i] = fields[image, field, _extend(i - radius, h, nearest)]
            for i in range(h):
                for j in range(w):
                    total[j] = tall[i + radius, j] * weights[radius]
                for tap in range(radius, 0, -1):
                    weight = weights[radius - tap]
                    for j in range(w):
                        total[j] += (tall[i + radius - tap, j] + tall[i + radius + tap, j]) * weight
                wide[i, radius:radius + w] = total
                for j in range(radius):
                    wide[i, radius - 1 - j] = wide[i, radius + _extend(-1 - j, w, nearest)]
                    wide[i, radius + w + j] = wide[i, radius + _extend(w + j, w, nearest)]
            for i in range(h):
                for j in range(w):
                    total[j] = np.float64(wide[i, radius + j]) * weights[radius]
                for tap in range(radius, 0, -1):
                    weight = weights[radius - tap]
                    for j in range(w):
                        total[j] += (np.float64(wide[i, radius - tap + j]) + np.float64(wide[i, radius + tap + j])) * weight
                out[image, field, i] = total
    return out


@njit(cache=True, nogil=True, parallel=True)
def displaced_sample(planes, displacement):
    """scipy.ndimage.map_coordinates(order=1, mode='reflect') of float32 planes (N, C, H, W) at rows i + dy and
    columns j + dx, displacement (N, 2, H, W) = (dx, dy) float64: the four neighbours' values x weights summed in
    float64 in the order (0, 0), (0, 1), (1, 0), (1, 1), rounded to float32 once."""
    n, channels, h, w = planes.shape
    out = np.empty_like(planes)
    for image in prange(n):
        for i in range(h):
            for j in range(w):
                row = i + displacement[image, 1, i, j]
                col = j + displacement[image, 0, i, j]
                top, left = np.floor(row), np.floor(col)
                wy1, wx1 = row - top, col - left
                wy0, wx0 = 1 - wy1, 1 - wx1
                r0, r1 = _reflect(int(top), h), _reflect(int(top) + 1, h)
                c0, c1 = _reflect(int(left), w), _reflect(int(left) + 1, w)
                w00, w01, w10, w11 = wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1
                for channel in range(channels):
                    plane = planes[image, channel]
                    total = np.float64(plane[r0, c0]) * w00
                    total += w01 * np.float64(plane[r0, c1])
                    total += w10 * np.float64(plane[r1, c0])
                    total += w11 * np.float64(plane[r1, c1])
                    out[image, channel, i, j] = total
    return out
