"""Spatter's water branch (severities 1-3): make_cifar_c.py's chain of OpenCV calls on the liquid layer,

    dist = 255 - Canny(liquid, 50, 150); dist = distanceTransform(dist, DIST_L2, 5); dist = min(dist, 20)
    dist = uint8(blur(dist, 3x3)); dist = equalizeHist(dist); dist = filter2D(dist, CV_8U, ker)
    dist = float32(blur(dist, 3x3)); m = liquid * dist

transcribed pixel by pixel from OpenCV's sources and compiled (numba), an image per thread, with OpenCV's
integer and fixed-point arithmetic, so the masks are OpenCV's bit for bit (the tests compare them) without
OpenCV, which the package does not depend on. Borders are OpenCV's defaults: Sobel replicates the edge,
blur and filter2D reflect it without repeating it (reflect-101), the distance transform starts from
"infinitely far" outside the image.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from robustbench_mm.data.corruption_filters import gaussian_plane, reflect101_index
from robustbench_mm.data.corruption_kernels import GAMMA, box_muller, compiled, splitmix

CANNY_LOW, CANNY_HIGH = 50, 150
CANNY_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)  # tan(22.5 deg) in OpenCV's 15-bit fixed point
# distanceTransform's DIST_L2 5x5 mask in 16-bit fixed point: (0, 1), (1, 1) and (1, 2) steps
HV_DIST, DIAG_DIST, LONG_DIST = (round(metric * 65536) for metric in (1.0, 1.4, 2.1969))
INIT_DIST = 2 ** 31 - 1  # OpenCV's INIT_DIST0 (INT_MAX), held in unsigned ints: the sums below never wrap
DIST_MAX = INIT_DIST >> 2
TRUNCATE = 20  # make_cifar_c's threshold(dist, 20, 20, THRESH_TRUNC)
EMBOSS = np.array([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])  # make_cifar_c's `ker`
BOX = np.ones((3, 3))  # cv2.blur's 3x3 sums


@compiled()
def _canny(image):
    """cv2.Canny(image, 50, 150) (aperture 3, L1 gradient): Sobel with a replicated border, non-maximum
    suppression in OpenCV's fixed-point sectors, hysteresis over 8-neighbours. Returns 0/255 uint8."""
    h, w = image.shape
    dx = np.empty((h, w), dtype=np.int64)
    dy = np.empty((h, w), dtype=np.int64)
    magnitude = np.zeros((h + 2, w + 2), dtype=np.int64)  # a zero frame: outside never beats a pixel
    for y in range(h):
        up, down = max(y - 1, 0), min(y + 1, h - 1)
        for x in range(w):
            left, right = max(x - 1, 0), min(x + 1, w - 1)
            across = np.int64(image[y, right]) - np.int64(image[y, left])
            across_up = np.int64(image[up, right]) - np.int64(image[up, left])
            across_down = np.int64(image[down, right]) - np.int64(image[down, left])
            dx[y, x] = across_up + across_down + 2 * across
            vertical = np.int64(image[down, x]) - np.int64(image[up, x])
            vertical_left = np.int64(image[down, left]) - np.int64(image[up, left])
            vertical_right = np.int64(image[down, right]) - np.int64(image[up, right])
            dy[y, x] = vertical_left + vertical_right + 2 * vertical
            magnitude[y + 1, x + 1] = abs(dx[y, x]) + abs(dy[y, x])
    state = np.zeros((h, w), dtype=np.uint8)  # 0 not an edge, 1 candidate, 2 kept
    stack = np.empty(h * w, dtype=np.int64)
    top = 0
    for y in range(h):
        for x in range(w):
            m = magnitude[y + 1, x + 1]
            if m <= CANNY_LOW:
                continue
            ax, ay = abs(dx[y, x]), abs(dy[y, x]) << 15
            tg22x = ax * CANNY_TG22
            tg67x = tg22x + (ax << 16)
            if ay < tg22x:
                keep = m > magnitude[y + 1, x] and m >= magnitude[y + 1, x + 2]
            elif ay > tg67x:
                keep = m > magnitude[y, x + 1] and m >= magnitude[y + 2, x + 1]
            elif (dx[y, x] ^ dy[y, x]) < 0:
                keep = m > magnitude[y, x + 2] and m > magnitude[y + 2, x]
            else:
                keep = m > magnitude[y, x] and m > magnitude[y + 2, x + 2]
            if keep:
                state[y, x] = 1
                if m > CANNY_HIGH:
                    state[y, x] = 2
                    stack[top] = y * w + x
                    top += 1
    while top > 0:  # every candidate 8-connected to a strong pixel is kept
        top -= 1
        y, x = divmod(stack[top], w)
        for ny in range(max(y - 1, 0), min(y + 2, h)):
            for nx in range(max(x - 1, 0), min(x + 2, w)):
                if state[ny, nx] == 1:
                    state[ny, nx] = 2
                    stack[top] = ny * w + nx
                    top += 1
    edges = np.zeros((h, w), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            if state[y, x] == 2:
                edges[y, x] = 255
    return edges


@compiled()
def _distance(image):
    """cv2.distanceTransform(image, DIST_L2, 5): OpenCV's distanceTransform_5x5, a forward and a backward
    pass of the 5x5 chamfer mask over a frame of two "infinitely far" pixels, distances to the nearest zero
    pixel in 16-bit fixed point, returned as float32 pixels."""
    h, w = image.shape
    far = np.int64(INIT_DIST)
    temp = np.full((h + 4, w + 4), far, dtype=np.int64)
    for y in range(h):
        t = y + 2
        for x in range(w):
            c = x + 2
            if image[y, x] == 0:
                temp[t, c] = 0
                continue
            best = min(temp[t - 2, c - 1], temp[t - 2, c + 1], temp[t - 1, c - 2], temp[t - 1, c + 2]) + LONG_DIST
            best = min(best, temp[t - 1, c - 1] + DIAG_DIST, temp[t - 1, c + 1] + DIAG_DIST)
            temp[t, c] = min(best, temp[t - 1, c] + HV_DIST, temp[t, c - 1] + HV_DIST)
    out = np.empty((h, w), dtype=np.float32)
    scale = np.float32(1.0 / 65536)
    for y in range(h - 1, -1, -1):
        t = y + 2
        for x in range(w - 1, -1, -1):
            c = x + 2
            best = temp[t, c]
            if best > HV_DIST:
                best = min(best, temp[t + 2, c + 1] + LONG_DIST, temp[t + 2, c - 1] + LONG_DIST,
                           temp[t + 1, c + 2] + LONG_DIST, temp[t + 1, c - 2] + LONG_DIST)
                best = min(best, temp[t + 1, c + 1] + DIAG_DIST, temp[t + 1, c - 1] + DIAG_DIST,
                           temp[t + 1, c] + HV_DIST, temp[t, c + 1] + HV_DIST)
                temp[t, c] = best
            out[y, x] = np.float32(min(best, DIST_MAX)) * scale
    return out


@compiled()
def _framed(image):
    """image with a one-pixel reflect-101 frame (OpenCV's default border), as float64."""
    h, w = image.shape
    out = np.empty((h + 2, w + 2))
    for y in range(-1, h + 1):
        for x in range(-1, w + 1):
            out[y + 1, x + 1] = image[reflect101_index(y, h), reflect101_index(x, w)]
    return out


@compiled()
def _correlate3(image, kernel):
    """The 3x3 correlation of `image` with `kernel` over a reflect-101 border, in float64, taps in row-major
    order from 0 (a box's sums come out as cv2.blur adds them: 0 + v and 1 v are exact)."""
    h, w = image.shape
    framed = _framed(image)
    out = np.empty((h, w))
    for y in range(h):
        for x in range(w):
            total = 0.0
            for i in range(3):
                for j in range(3):
                    total += kernel[i, j] * framed[y + i, x + j]
            out[y, x] = total
    return out


@compiled()
def _equalize(image):
    """cv2.equalizeHist: the cumulative histogram above the first occupied level, scaled in float32 by
    255 / (pixels not at that level) and rounded; a one-level image is left as it is."""
    h, w = image.shape
    histogram = np.zeros(256, dtype=np.int64)
    for y in range(h):
        for x in range(w):
            histogram[image[y, x]] += 1
    first = 0
    while histogram[first] == 0:
        first += 1
    total = h * w
    if histogram[first] == total:
        return image.copy()
    scale = np.float32(255.0 / (total - histogram[first]))
    lut = np.zeros(256, dtype=np.uint8)
    running = 0
    for level in range(first + 1, 256):
        running += histogram[level]
        lut[level] = min(max(np.rint(np.float32(running) * scale), 0), 255)
    out = np.empty((h, w), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            out[y, x] = lut[image[y, x]]
    return out


@compiled()
def _water_mask(liquid):
    """make_cifar_c's chain on one uint8 liquid layer (H, W) -> float32 m (before m /= max)."""
    h, w = liquid.shape
    edges = _canny(liquid)
    far = np.empty((h, w), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            far[y, x] = 255 - edges[y, x]
    distance = _distance(far)
    for y in range(h):
        for x in range(w):
            distance[y, x] = min(distance[y, x], np.float32(TRUNCATE))
    sums = _correlate3(distance, BOX)
    blurred = np.empty((h, w), dtype=np.uint8)
    for y in range(h):
        for x in range(w):
            blurred[y, x] = np.uint8(np.float32(sums[y, x] * (1 / 9)))  # >= 0, so truncation
    embossed = np.minimum(np.maximum(_correlate3(_equalize(blurred), EMBOSS), 0.0), 255.0)  # CV_8U saturates
    sums = _correlate3(embossed, BOX)
    out = np.empty((h, w), dtype=np.float32)
    for y in range(h):
        for x in range(w):
            out[y, x] = np.float32(liquid[y, x]) * np.float32(min(max(np.rint(sums[y, x] / 9.0), 0.0), 255.0))
    return out


@compiled(parallel=True)
def water_masks(liquid):
    """`_water_mask` of every uint8 liquid layer of (N, H, W): float32 (N, H, W)."""
    out = np.empty(liquid.shape, dtype=np.float32)
    for image in prange(liquid.shape[0]):
        out[image] = _water_mask(liquid[image])
    return out


WATER = np.array([175 / 255, 238 / 255, 238 / 255], dtype=np.float32)  # (175, 238, 238) "BGR" added to RGB
MUD = np.array([63 / 255, 42 / 255, 20 / 255], dtype=np.float32)


@compiled(parallel=True)
def spatter_levels(levels, keys, start, mean, std, liquid_weights, threshold, mud, intensity, mud_weights):
    """make_cifar_c's spatter of float32 levels (N, 3, H, W) with the tensor version's arithmetic, an image per
    thread: the liquid layer from normal(mean, std) words start .. start + H W - 1 of each key, skimage's
    float64 blur (`liquid_weights`), zeroed below `threshold`; water: `_water_mask` of its uint8 levels,
    over its maximum (a mask that is 0 everywhere gives 0 / 0, and the reference's image turns black),
    times `intensity`, times the water colour added; mud: the liquid above `threshold` blurred in float32
    (`mud_weights`), zeroed below 0.8, blending the image towards the mud colour. Returns float32
    clip(x, 0, 1) * 255."""
    out = np.empty(levels.shape, dtype=np.float32)
    for image in prange(levels.shape[0]):
        _spatter_image(levels[image], keys[image], start, mean, std, liquid_weights, threshold, mud, intensity,
                       mud_weights, out[image])
    return out


@compiled()
def _spatter_image(levels, key, start, mean, std, liquid_weights, threshold, mud, intensity, mud_weights, out):
    """`spatter_levels` of one image (C, H, W) into `out` (a thread's whole work: the parallel loop stays small,
    which keeps numba's compile time down)."""
    channels, h, w = levels.shape
    level = np.float32(255)
    raw = np.empty((h, w))
    flat = raw.reshape(h * w)
    for q in range(h * w):
        flat[q] = mean + std * box_muller(splitmix(key + np.uint64(start + q + 1) * GAMMA))
    radius = len(liquid_weights) // 2
    liquid = np.empty((h, w))
    gaussian_plane(raw, liquid, liquid_weights, True, np.empty((h + 2 * radius, w)),
                   np.empty((h, w + 2 * radius)), np.empty(w))
    for i in range(h):
        for j in range(w):
            if liquid[i, j] < threshold:
                liquid[i, j] = 0.0
    mask = np.empty((h, w), dtype=np.float32)
    if mud == 0:
        liquid8 = np.empty((h, w), dtype=np.uint8)
        for i in range(h):
            for j in range(w):
                liquid8[i, j] = np.uint8(np.int64(liquid[i, j] * 255) & 255)  # numpy's cast wraps too
        mask = _water_mask(liquid8)
        top = np.float32(0)
        for i in range(h):
            for j in range(w):
                top = max(top, mask[i, j])
        if top == 0:
            out[:] = 0  # nan, which the reference stores as 0
            return
        for i in range(h):
            for j in range(w):
                weight = mask[i, j] / top * np.float32(intensity)
                for channel in range(channels):
                    value = levels[channel, i, j] / level + weight * WATER[channel]
                    out[channel, i, j] = min(max(value, np.float32(0)), np.float32(1)) * level
        return
    above = np.empty((h, w), dtype=np.float32)
    for i in range(h):
        for j in range(w):
            above[i, j] = 1 if liquid[i, j] > threshold else 0
    radius = len(mud_weights) // 2
    gaussian_plane(above, mask, mud_weights, True, np.empty((h + 2 * radius, w)),
                   np.empty((h, w + 2 * radius), dtype=np.float32), np.empty(w))
    for i in range(h):
        for j in range(w):
            weight = mask[i, j] if mask[i, j] >= np.float32(0.8) else np.float32(0)
            for channel in range(channels):
                value = levels[channel, i, j] / level * (np.float32(1) - weight) + MUD[channel] * weight
                out[channel, i, j] = min(max(value, np.float32(0)), np.float32(1)) * level
