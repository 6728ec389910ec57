"""The CPU versions of eight corruptions: each hands the batch to a compiled per-image kernel (numba;
data/corruption_kernels.py, corruption_filters.py, corruption_spatter.py) with the host-side draws and
tables it needs. Each gives the images of its tensor version in data/corruption_families.py (which a GPU
runs), bit for bit or within the tolerance the tests allow, and most are make_cifar_c's bit for bit
(data/corruptions.py says which); `corrupt` chooses."""

from __future__ import annotations

import numpy as np
import torch

from robustbench_mm.data.corruption_families import elastic_affine, glass_moves
from robustbench_mm.data.corruption_filters import blurred_levels, elastic_levels, motion_planes, snow_levels
from robustbench_mm.data.corruption_kernels import hsv_round_trip
from robustbench_mm.data.corruption_ops import (
    affine_inverse, gaussian_kernel1d, motion_kernel, motion_shifts, zoom_taps)
from robustbench_mm.data.corruption_spatter import spatter_levels


def _gaussian_blur_on_cpu(x, c, draws):
    """skimage's float64 blur, bit for bit (the tensor version sums in float32, in another order)."""
    no_moves = np.zeros((len(x), 0, 0), dtype=np.int64)
    return torch.from_numpy(blurred_levels(x.numpy(), gaussian_kernel1d(c), no_moves))


def _glass_blur_on_cpu(x, c, draws):
    """Both blurs in float64 as skimage's, bit for bit, and the moves between them."""
    return torch.from_numpy(blurred_levels(x.numpy(), gaussian_kernel1d(c[0]), glass_moves(x.shape, c, draws)))


def _motion_on_cpu(planes, radius, sigma, angles):
    """`motion_blur_planes` as a kernel: the same taps per image in the same order, summed in float64 as
    imagecorruptions' numpy does (bit for bit), where the tensor version sums in float32."""
    kernel = motion_kernel(radius, sigma)
    dy, dx, counted = motion_shifts(len(kernel), angles, *planes.shape[2:])
    return torch.from_numpy(motion_planes(planes.numpy(), kernel, dy, dx, counted))


def _motion_blur_on_cpu(x, c, draws):
    radius, sigma = c
    return _motion_on_cpu(x, radius, sigma, draws.uniform(-45, 45)).clamp_(0, 255)


def _snow_on_cpu(x, c, draws):
    """`_snow`'s arithmetic in one per-image kernel (the streaks summed in float64, as imagecorruptions does)."""
    mean, std, zoom, threshold, radius, sigma, blend = c
    h, w = x.shape[2:]
    start = draws.reserve((h, w))  # the layer's normals
    angles = draws.uniform(-135, -45)
    kernel = motion_kernel(radius, sigma)
    dy, dx, counted = motion_shifts(len(kernel), angles, h, w)
    rows, columns = (_zoom_weights(size, zoom) for size in (h, w))
    return torch.from_numpy(snow_levels(x.numpy(), draws.keys, start, mean, std, rows, columns, np.float32(threshold),
                                        kernel, dy, dx, counted, blend))


def _zoom_weights(size, factor):
    """`zoom_taps` with float32 weights, as `clipped_zoom` applies them to a float32 layer."""
    low, high, low_weight, high_weight = zoom_taps(size, factor)
    return low, high, low_weight.astype(np.float32), high_weight.astype(np.float32)


def _hsv_on_cpu(x, saturation_scale, saturation_shift, value_shift):
    levels = x.to(torch.uint8).reshape(len(x), 3, -1).numpy()
    return torch.from_numpy(hsv_round_trip(levels, saturation_scale, saturation_shift, value_shift)).reshape(x.shape)


def _brightness_on_cpu(x, c, draws):
    return _hsv_on_cpu(x, 1.0, 0.0, c)


def _saturate_on_cpu(x, c, draws):
    return _hsv_on_cpu(x, c[0], c[1], 0.0)


def _elastic_on_cpu(x, c, draws):
    """The same arithmetic in one kernel, an image at a time, drawing the displacement from the image's key."""
    h, w = x.shape[2:]
    alpha, sigma = (value * min(h, w) for value in c[:2])
    inverse = affine_inverse(elastic_affine(x.shape, c, draws))
    start = draws.reserve((2, h, w))  # the displacement field's uniforms
    weights = gaussian_kernel1d(sigma, truncate=3) if sigma > 0 else np.zeros(0)
    return torch.from_numpy(elastic_levels(x.numpy(), inverse, draws.keys, start, weights, alpha))


def _spatter_on_cpu(x, c, draws):
    """`_spatter`'s arithmetic in one per-image kernel, drawing the liquid from each image's key."""
    mean, std, sigma, threshold, intensity, mud = c
    h, w = x.shape[2:]
    start = draws.reserve((h, w))  # the liquid layer's normals
    mud_weights = gaussian_kernel1d(intensity) if mud else np.ones(1)
    return torch.from_numpy(spatter_levels(x.numpy(), draws.keys, start, mean, std, gaussian_kernel1d(sigma),
                                           threshold, mud, intensity, mud_weights))


# By corruption name; these take the whole batch at once (their loops are per image), where the tensor
# versions go through a CPU batch in chunks.
CPU_KERNELS = {"brightness": _brightness_on_cpu, "saturate": _saturate_on_cpu, "glass_blur": _glass_blur_on_cpu,
               "gaussian_blur": _gaussian_blur_on_cpu, "motion_blur": _motion_blur_on_cpu, "snow": _snow_on_cpu,
               "elastic_transform": _elastic_on_cpu, "spatter": _spatter_on_cpu}
