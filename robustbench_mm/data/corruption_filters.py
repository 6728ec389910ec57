"""Compiled CPU kernels (numba) for the corruptions' filters: scipy's Gaussian filter, the Gaussian and glass
blurs built on it, the motion blur's shifted sums, and OpenCV's and scipy's bilinear sampling (elastic). As in
data/corruption_kernels.py: an image per thread, the reference's arithmetic in its order, no fast-math; the
tensor versions in data/corruption_ops.py stay for GPUs, and the tests hold each to its reference."""

from __future__ import annotations

import numpy as np
from numba import prange

from robustbench_mm.data.corruption_kernels import GAMMA, box_muller, compiled, splitmix


@compiled(inline="always")
def reflect101_index(index, size):
    """OpenCV's BORDER_REFLECT_101 (d c b | a b c d | c b a) of an integer position."""
    if 0 <= index < size:  # nearly every position: no division
        return index
    if size == 1:
        return 0
    period = 2 * size - 2
    index = abs(index) % period
    return period - index if index >= size else index


@compiled(inline="always")
def _reflect(index, size):
    """scipy.ndimage's 'reflect' (d c b a | a b c d | d c b a) of an integer position."""
    if 0 <= index < size:  # nearly every position: no division
        return index
    index = index % (2 * size)  # numba's % on integers is Python's: never negative here
    return 2 * size - 1 - index if index >= size else index


@compiled(inline="always")
def _extend(index, size, nearest):
    """scipy.ndimage's 'nearest' (a a | a b c d | d d) or 'reflect' (b a | a b c d | d c) border."""
    if nearest:
        return min(max(index, 0), size - 1)
    return _reflect(index, size)


@compiled()
def gaussian_plane(plane, out, weights, nearest, tall, wide, total):
    """scipy.ndimage.gaussian_filter of one (H, W) plane into `out`, bit for bit: along H, then along W, each
    output summed in float64 as scipy's correlate1d sums a symmetric kernel (the centre tap, then the pairs of
    mirrored taps from the outermost in) and stored in out's dtype after each pass, as scipy's output array is.
    Scratch: tall (H + 2r, W) float64, wide (H, W + 2r) of out's dtype, total (W,) float64. A row of outputs at
    a time from a border-extended copy (the loop numba vectorises)."""
    h, w = plane.shape
    radius = len(weights) // 2
    centre = weights[radius]
    for i in range(h + 2 * radius):
        source = _extend(i - radius, h, nearest)
        for j in range(w):
            tall[i, j] = plane[source, j]
    for i in range(h):
        for j in range(w):
            total[j] = tall[i + radius, j] * centre
        for tap in range(radius, 0, -1):
            weight = weights[radius - tap]
            for j in range(w):
                total[j] += (tall[i + radius - tap, j] + tall[i + radius + tap, j]) * weight
        for j in range(w):
            wide[i, radius + j] = total[j]
        for j in range(radius):
            wide[i, radius - 1 - j] = wide[i, radius + _extend(-1 - j, w, nearest)]
            wide[i, radius + w + j] = wide[i, radius + _extend(w + j, w, nearest)]
    for i in range(h):
        for j in range(w):
            total[j] = np.float64(wide[i, radius + j]) * centre
        for tap in range(radius, 0, -1):
            weight = weights[radius - tap]
            for j in range(w):
                total[j] += (np.float64(wide[i, radius - tap + j]) + np.float64(wide[i, radius + tap + j])) * weight
        for j in range(w):
            out[i, j] = total[j]


@compiled(parallel=True)
def gaussian_planes(fields, weights, nearest):
    """scipy.ndimage.gaussian_filter(fields, sigma=(0, 0, s, s), mode='nearest' or 'reflect') of (N, K, H, W)
    float32 or float64 fields, `weights` its symmetric 1-D kernel, bit for bit (`gaussian_plane`)."""
    n, k, h, w = fields.shape
    radius = len(weights) // 2
    out = np.empty_like(fields)
    for image in prange(n):
        tall = np.empty((h + 2 * radius, w))
        wide = np.empty((h, w + 2 * radius), dtype=fields.dtype)
        total = np.empty(w)
        for field in range(k):
            gaussian_plane(fields[image, field], out[image, field], weights, nearest, tall, wide, total)
    return out


@compiled(parallel=True)
def blurred_levels(levels, weights, moves):
    """skimage's gaussian blur ('nearest', float64) of uint8 levels (N, C, H, W) as make_cifar_c's gaussian_blur
    and glass_blur use it, returned as float32 levels floor(clip(x, 0, 1) * 255). With `moves` (N, passes, H * W)
    of source pixel indices (glass blur): blur, floor(x * 255), then each pass moves pixel p to p's source
    pixel's value, then blur again; with an empty `moves` (N, 0, 0) one blur."""
    n, channels, h, w = levels.shape
    radius = len(weights) // 2
    out = np.empty(levels.shape, dtype=np.float32)
    passes = moves.shape[1]
    for image in prange(n):
        tall = np.empty((h + 2 * radius, w))
        wide = np.empty((h, w + 2 * radius))
        total = np.empty(w)
        unit = np.empty((h, w))
        blurred = np.empty((channels, h, w))
        for channel in range(channels):
            for i in range(h):
                for j in range(w):
                    unit[i, j] = np.float64(levels[image, channel, i, j]) / 255
            gaussian_plane(unit, blurred[channel], weights, True, tall, wide, total)
        if passes:
            flat = blurred.reshape(channels, h * w)
            for channel in range(channels):
                for p in range(h * w):
                    flat[channel, p] = np.floor(flat[channel, p] * 255)
            moved = np.empty(h * w)
            for channel in range(channels):
                for step in range(passes):
                    for p in range(h * w):
                        moved[p] = flat[channel, moves[image, step, p]]
                    flat[channel] = moved
                for i in range(h):
                    for j in range(w):
                        unit[i, j] = blurred[channel, i, j] / 255
                gaussian_plane(unit, blurred[channel], weights, True, tall, wide, total)
        for channel in range(channels):
            for i in range(h):
                for j in range(w):
                    out[image, channel, i, j] = np.floor(min(max(blurred[channel, i, j], 0.0), 1.0) * 255)
    return out


@compiled()
def _streak(plane, out, weights, dy, dx, counted):
    """Add to `out` (H, W) float64, tap by tap, weights[t] times `plane` (H, W) shifted by (dy[t], dx[t]) with
    its edge repeated (taps whose `counted` is False are skipped). The plane is copied once into a frame of
    `reach` repeated pixels, so a tap is one shift of the whole flattened frame: every output pixel reads its
    source without a bound check, in one long loop per tap (the frame's extra columns are summed and dropped)."""
    h, w = plane.shape
    reach = 0
    for tap in range(weights.shape[0]):
        if counted[tap]:
            reach = max(reach, abs(dy[tap]), abs(dx[tap]))
    wide = w + 2 * reach
    frame = np.empty((h + 2 * reach + 1) * wide)  # one spare row: the last row's dropped columns read into it
    for i in range(h + 2 * reach + 1):
        source = plane[min(max(i - reach, 0), h - 1)]
        for j in range(wide):
            frame[i * wide + j] = source[min(max(j - reach, 0), w - 1)]
    sums = np.zeros(h * wide)
    for tap in range(weights.shape[0]):
        if counted[tap]:
            weight = weights[tap]
            offset = (reach - dy[tap]) * wide + reach - dx[tap]  # (i, j) reads (i + reach - dy, j + reach - dx)
            for p in range(h * wide):
                sums[p] += frame[p + offset] * weight
    for i in range(h):
        for j in range(w):
            out[i, j] = sums[i * wide + j]


@compiled(parallel=True)
def motion_planes(planes, weights, dy, dx, counted):
    """imagecorruptions' motion blur of float32 levels (N, C, H, W), as its numpy runs it: per image, the sum
    over its taps t that count of weights[t] (float64) times the image shifted by (dy, dx)[n, t] with its edge
    repeated, in float64, in tap order. Returns float64."""
    n, channels, h, w = planes.shape
    out = np.empty(planes.shape)
    for image in prange(n):
        for channel in range(channels):
            _streak(planes[image, channel], out[image, channel], weights, dy[image], dx[image], counted[image])
    return out


@compiled(parallel=True)
def elastic_levels(levels, inverse, keys, start, weights, alpha):
    """make_cifar_c's elastic_transform of float32 levels (N, C, H, W), an image per thread, everything in
    small per-image buffers: cv2.warpAffine (INTER_LINEAR, reflect-101) with `inverse` (6, N), the inverse
    matrices' (a11, a12, a21, a22, b1, b2), in OpenCV's fixed point (10 bits, rounded to 1/32 pixel) with its
    float32 weights and sums; the displacement field, uniform(-1, 1) words start .. start + 2 H W - 1 of each
    key (the dx's, then the dy's), smoothed by `weights` (scipy's gaussian_filter, 'reflect'; none when empty),
    times alpha, rounded to float32; then scipy's map_coordinates (order 1, 'reflect') of the warped image at
    the displaced positions, summed in float64. Returns float32 clip(x, 0, 1) * 255."""
    n, channels, h, w = levels.shape
    out = np.empty(levels.shape, dtype=np.float32)
    table = np.arange(32).astype(np.float32) / np.float32(32)  # cv2's INTER_TAB_SIZE linear weights
    one, level = np.float32(1), np.float32(255)
    radius = len(weights) // 2
    for image in prange(n):
        a11, a12, a21, a22, b1, b2 = (inverse[0, image], inverse[1, image], inverse[2, image], inverse[3, image],
                                      inverse[4, image], inverse[5, image])
        warped = np.empty((channels, h, w), dtype=np.float32)
        across_x, across_y = np.empty(w, dtype=np.int64), np.empty(w, dtype=np.int64)
        for j in range(w):
            across_x[j] = np.int64(np.rint(a11 * j * 1024))
            across_y[j] = np.int64(np.rint(a21 * j * 1024))
        for i in range(h):
            x0 = np.int64(np.rint((a12 * i + b1) * 1024)) + 16
            y0 = np.int64(np.rint((a22 * i + b2) * 1024)) + 16
            for j in range(w):
                big_x = (x0 + across_x[j]) >> 5
                big_y = (y0 + across_y[j]) >> 5
                r0, r1 = reflect101_index(big_y >> 5, h), reflect101_index((big_y >> 5) + 1, h)
                c0, c1 = reflect101_index(big_x >> 5, w), reflect101_index((big_x >> 5) + 1, w)
                wy1, wx1 = table[big_y & 31], table[big_x & 31]
                wy0, wx0 = one - wy1, one - wx1
                w00, w01, w10, w11 = wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1
                for channel in range(channels):
                    plane = levels[image, channel]
                    total = plane[r0, c0] / level * w00
                    total += w01 * (plane[r0, c1] / level)
                    total += w10 * (plane[r1, c0] / level)
                    total += w11 * (plane[r1, c1] / level)
                    warped[channel, i, j] = total
        raw = np.empty((2, h, w))
        flat = raw.reshape(2 * h * w)
        key = keys[image]
        for q in range(2 * h * w):
            unit = (splitmix(key + np.uint64(start + q + 1) * GAMMA) >> np.uint64(11)) * 2.0 ** -53
            flat[q] = -1 + 2 * unit  # Generator.uniform(-1, 1)'s formula
        smooth = np.empty((2, h, w))
        if len(weights):
            tall = np.empty((h + 2 * radius, w))
            wide = np.empty((h, w + 2 * radius))
            row = np.empty(w)
            for field in range(2):
                gaussian_plane(raw[field], smooth[field], weights, False, tall, wide, row)
        else:
            smooth[:] = raw
        for i in range(h):
            for j in range(w):
                row_at = i + np.float64(np.float32(smooth[1, i, j] * alpha))
                col_at = j + np.float64(np.float32(smooth[0, i, j] * alpha))
                top, left = np.floor(row_at), np.floor(col_at)
                wy1, wx1 = row_at - top, col_at - left
                wy0, wx0 = 1 - wy1, 1 - wx1
                r0, r1 = _reflect(int(top), h), _reflect(int(top) + 1, h)
                c0, c1 = _reflect(int(left), w), _reflect(int(left) + 1, w)
                w00, w01, w10, w11 = wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1
                for channel in range(channels):
                    plane = warped[channel]
                    total = np.float64(plane[r0, c0]) * w00
                    total += w01 * np.float64(plane[r0, c1])
                    total += w10 * np.float64(plane[r1, c0])
                    total += w11 * np.float64(plane[r1, c1])
                    out[image, channel, i, j] = min(max(np.float32(total), np.float32(0)), one) * level
    return out


@compiled(parallel=True)
def snow_levels(levels, keys, start, mean, std, zoom_rows, zoom_columns, threshold, weights, dy, dx, counted, blend):
    """make_cifar_c's snow of float32 levels (N, 3, H, W) with the tensor version's float32 arithmetic, an image
    per thread: the snow layer from normal(mean, std) words start .. start + H W - 1 of each key, clipped_zoom
    (`zoom_rows`, `zoom_columns`: (low, high, low weight, high weight) per output row and column), zeroed below
    `threshold`, stored as uint8, streaked by `motion_planes`' blur (float64), rounded to uint8; the image lifted
    towards its gray level, blended, plus the layer and the layer turned half a turn. Returns float32
    clip(x, 0, 1) * 255."""
    n, channels, h, w = levels.shape
    out = np.empty(levels.shape, dtype=np.float32)
    row_low, row_high, row_low_weight, row_high_weight = zoom_rows
    column_low, column_high, column_low_weight, column_high_weight = zoom_columns
    keep, lift = np.float32(blend), np.float32(1 - blend)
    level = np.float32(255)
    for image in prange(n):
        key = keys[image]
        layer = np.empty((h, w), dtype=np.float32)
        flat = layer.reshape(h * w)
        for q in range(h * w):
            flat[q] = mean + std * box_muller(splitmix(key + np.uint64(start + q + 1) * GAMMA))
        zoomed = np.empty((h, w), dtype=np.float32)
        for i in range(h):
            for j in range(w):
                zoomed[i, j] = (layer[row_low[i], j] * row_low_weight[i]
                                + layer[row_high[i], j] * row_high_weight[i])
        streaks = np.empty((h, w))
        for i in range(h):
            for j in range(w):
                value = (zoomed[i, column_low[j]] * column_low_weight[j]
                         + zoomed[i, column_high[j]] * column_high_weight[j])
                if value < threshold:
                    value = np.float32(0)
                layer[i, j] = np.floor(min(max(value, np.float32(0)), np.float32(1)) * level)
        _streak(layer, streaks, weights, dy[image], dx[image], counted[image])
        for i in range(h):
            for j in range(w):
                layer[i, j] = np.float32(np.rint(streaks[i, j])) / level
        for i in range(h):
            for j in range(w):
                red, green, blue = (levels[image, 0, i, j] / level, levels[image, 1, i, j] / level,
                                    levels[image, 2, i, j] / level)
                gray = np.float32(0.299) * red + np.float32(0.587) * green + np.float32(0.114) * blue
                lifted_gray = gray * np.float32(1.5) + np.float32(0.5)
                for channel, value in ((0, red), (1, green), (2, blue)):
                    mixed = value * keep + max(value, lifted_gray) * lift
                    mixed = (mixed + layer[i, j]) + layer[h - 1 - i, w - 1 - j]
                    out[image, channel, i, j] = min(max(mixed, np.float32(0)), np.float32(1)) * level
    return out
