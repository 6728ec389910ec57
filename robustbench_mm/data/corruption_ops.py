"""The image operations the corruptions are built from, batched on tensors: separable and tap
convolutions, zooms, motion-blur shifts, HSV and OpenCV's warpAffine sampling, each transcribed to match
its reference (spatter's OpenCV steps are compiled kernels: data/corruption_spatter.py)."""

from __future__ import annotations

from functools import cache
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F


def to_device(array: np.ndarray, like: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=like.device, dtype=dtype)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d's weights (what skimage.filters.gaussian uses)."""
    radius = int(truncate * float(sigma) + 0.5)
    grid = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * grid ** 2)
    return phi / phi.sum()


def correlate_taps(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every (H, W) plane of x (..., H, W) with a 2-D kernel by shifted adds, tap by tap in a
    fixed order: no convolution algorithm or matrix-product blocking chosen by the batch size, so an
    image's result never depends on what else is in the batch."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    h, w = x.shape[-2:]
    shape = x.shape
    padded = F.pad(x.reshape(-1, 1, h, w), (pw, pw, ph, ph), mode=mode)[:, 0] if (ph or pw) else x.reshape(-1, h, w)
    taps = [(i, j) for i in range(kh) for j in range(kw) if kernel[i, j] != 0]
    if not taps:
        return torch.zeros_like(x)
    (i, j), rest = taps[0], taps[1:]
    out = padded[:, i:i + h, j:j + w] * float(kernel[i, j])  # what 0 + k x is, without a pass over zeros
    for i, j in rest:
        out.add_(padded[:, i:i + h, j:j + w], alpha=float(kernel[i, j]))  # no temporary
    return out.reshape(shape)


def separable(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every (H, W) plane of x (..., H, W) with `kernel` along columns (axis H), then rows."""
    x = correlate_taps(x, kernel[:, None], mode)
    return correlate_taps(x, kernel[None, :], mode)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage.filters.gaussian(channel_axis=-1): scipy's kernel, truncate 4, 'nearest' border."""
    return separable(x, gaussian_kernel1d(sigma), "replicate")


@cache
def zoom_taps(size: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """make_cifar_c's clipped_zoom along one axis: crop the centre ceil(size / factor), scipy.ndimage.zoom
    (order=1) it, keep the middle `size` samples. Per output sample: its two source samples and weights."""
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    zoomed = round(crop * factor)  # scipy.ndimage.zoom's output length
    trim = (zoomed - size) // 2
    step = (crop - 1) / (zoomed - 1) if zoomed > 1 else 0.0  # scipy, grid_mode=False
    position = (trim + np.arange(size)) * step
    low = np.minimum(np.floor(position).astype(np.int64), crop - 1)
    fraction = position - low
    high = np.minimum(low + 1, crop - 1)
    fraction = np.where(low + 1 < crop, fraction, 0.0)
    return top + low, top + high, 1 - fraction, fraction


def clipped_zoom(planes: torch.Tensor, factor: float) -> torch.Tensor:
    """clipped_zoom of (..., H, W) planes, as two gathers and weighted adds per axis."""
    h, w = planes.shape[-2:]
    low, high, w_low, w_high = (torch.as_tensor(a, device=planes.device) for a in zoom_taps(h, factor))
    planes = (planes.index_select(-2, low) * w_low.to(planes.dtype)[:, None]
              + planes.index_select(-2, high) * w_high.to(planes.dtype)[:, None])
    low, high, w_low, w_high = (torch.as_tensor(a, device=planes.device) for a in zoom_taps(w, factor))
    return (planes.index_select(-1, low) * w_low.to(planes.dtype)
            + planes.index_select(-1, high) * w_high.to(planes.dtype))


@cache
def zoom_blur_taps(h: int, w: int, factors: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """make_cifar_c's zoom blur, (x + sum of clipped_zoom(x, f) over factors) / (len(factors) + 1), is one
    linear map; per output pixel, its source pixels (T, H * W) and float64 weights, padded with zero
    weights. A 32 x 32 pixel draws on at most ~25 sources where the per-factor zooms touched ~8 x 16."""
    operator = np.eye(h * w)
    for factor in factors:
        rows, cols = np.zeros((h, h)), np.zeros((w, w))
        for matrix, size in ((rows, h), (cols, w)):
            low, high, w_low, w_high = zoom_taps(size, factor)
            np.add.at(matrix, (np.arange(size), low), w_low)
            np.add.at(matrix, (np.arange(size), high), w_high)
        operator += np.kron(rows, cols)
    operator /= len(factors) + 1
    counts = (operator != 0).sum(1)
    sources = np.tile(np.arange(h * w), (int(counts.max()), 1))
    weights = np.zeros(sources.shape)
    for pixel, row in enumerate(operator):
        nonzero = np.flatnonzero(row)
        sources[:len(nonzero), pixel] = nonzero
        weights[:len(nonzero), pixel] = row[nonzero]
    return sources, weights


def zoom_blur_planes(planes: torch.Tensor, factors) -> torch.Tensor:
    """`zoom_blur_taps`' sum over (..., H, W) planes, tap by tap in a fixed order (never a matrix product,
    whose summation order may follow the batch size)."""
    h, w = planes.shape[-2:]
    sources, weights = zoom_blur_taps(h, w, tuple(float(f) for f in factors))
    # pixel-major, so that a tap's sources are whole rows (contiguous copies, not a gather per value)
    pixels = planes.reshape(-1, h * w).T.contiguous()
    sources = torch.from_numpy(sources).to(planes.device)
    weights = torch.from_numpy(weights).to(planes.device, planes.dtype)[:, :, None]
    out = pixels.index_select(0, sources[0]).mul_(weights[0])  # what 0 + v w is
    for tap in range(1, len(sources)):
        out.addcmul_(pixels.index_select(0, sources[tap]), weights[tap])
    return out.T.reshape(planes.shape)


def motion_shifts(width: int, angles_degrees: np.ndarray, height_limit: int, width_limit: int):
    """imagecorruptions' _motion_blur: each tap's (dy, dx) per image, and whether the tap counts
    (the loop stops at the first tap that leaves the image)."""
    i = np.arange(width)
    radians = np.deg2rad(angles_degrees)[:, None]
    point0, point1 = width * np.sin(radians), width * np.cos(radians)
    hypot = np.hypot(point0, point1)
    dy = -np.ceil((i * point0) / hypot - 0.5).astype(np.int64)
    dx = -np.ceil((i * point1) / hypot - 0.5).astype(np.int64)
    inside = (np.abs(dy) < height_limit) & (np.abs(dx) < width_limit)
    counts = np.cumprod(inside, axis=1).astype(bool)
    return dy, dx, counts


def motion_kernel(radius: int, sigma: float) -> np.ndarray:
    """imagecorruptions' motion-blur weights: a one-sided Gaussian over 2 radius + 1 taps, normalised."""
    width = 2 * radius + 1
    kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    return kernel / kernel.sum()


def motion_blur_planes(planes: torch.Tensor, radius: int, sigma: float, angles: np.ndarray) -> torch.Tensor:
    """imagecorruptions' _motion_blur on (N, C, H, W) with one angle per image. A tap shifts an image by a
    whole (dy, dx) with its edge repeated: a window of the edge-padded image. Sorted by angle, the images
    that share a tap's shift are runs, so each run adds one window (a view) instead of a per-pixel gather;
    every image still sums its taps in tap order, whatever else is in the batch."""
    n, _, h, w = planes.shape
    kernel = motion_kernel(radius, sigma)
    width = len(kernel)
    order = np.argsort(angles, kind="stable")
    dy, dx, counts = motion_shifts(width, angles[order], h, w)
    reach = int(max(np.abs(dy[counts]).max(initial=0), np.abs(dx[counts]).max(initial=0)))
    sorted_planes = planes.index_select(0, torch.from_numpy(order).to(planes.device))
    padded = F.pad(sorted_planes, (reach,) * 4, mode="replicate") if reach else sorted_planes
    out = torch.zeros_like(sorted_planes)
    for tap in range(width):
        key = np.stack([dy[:, tap], dx[:, tap], counts[:, tap]], 1)
        starts = np.concatenate([[0], np.flatnonzero((key[1:] != key[:-1]).any(1)) + 1, [n]])
        weight = torch.tensor(kernel[tap], dtype=planes.dtype, device=planes.device)
        for first, stop in pairwise(starts):
            if counts[first, tap]:  # the loop stopped before this tap for these images
                top, left = reach - dy[first, tap], reach - dx[first, tap]  # shifted[y] = image[clip(y - dy)]
                out[first:stop].addcmul_(padded[first:stop, :, top:top + h, left:left + w], weight)
    return out.index_select(0, torch.from_numpy(np.argsort(order)).to(planes.device))


def rgb2hsv(unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """skimage.color.rgb2hsv's arithmetic, op for op, on (N, 3, H, W) float64: hue, saturation, value."""
    r, g, b = unit[:, 0], unit[:, 1], unit[:, 2]
    value = unit.amax(1)
    delta = value - unit.amin(1)
    flat = delta == 0
    # skimage divides by delta and value only where they are not 0; dividing everywhere puts inf and nan
    # only where the pixel is flat (value >= delta), and there the result is replaced by 0 below
    saturation = torch.where(flat, 0.0, delta / value)
    hue = (g - b) / delta
    hue = torch.where(g == value, 2.0 + (b - r) / delta, hue)
    hue = torch.where(b == value, 4.0 + (r - g) / delta, hue)  # later cases win, as in skimage
    hue = torch.where(flat, 0.0, torch.remainder(hue / 6.0, 1.0))
    return hue, saturation, value


def hsv2rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb's arithmetic on (N, H, W) planes; returns (N, 3, H, W). Each channel picks
    from (v, p, q, t) by hue sector with three selects: stacking skimage's six triples moved 18 planes,
    and a gather from the four stacked ones cost more than the arithmetic."""
    sextant = hue * 6
    sector = torch.floor(sextant)
    f = sextant - sector
    p = value * (1 - saturation)
    q = value * (1 - f * saturation)
    t = value * (1 - (1 - f) * saturation)
    v = value
    sector = torch.remainder(sector, 6)
    s0, s1, s2, s3, s4, s5 = (sector == k for k in range(6))
    red = torch.where(s1, q, torch.where(s4, t, torch.where(s2 | s3, p, v)))  # v q p p t v
    green = torch.where(s0, t, torch.where(s3, q, torch.where(s4 | s5, p, v)))  # t v v q p p
    blue = torch.where(s2, t, torch.where(s5, q, torch.where(s0 | s1, p, v)))  # p p t v v q
    return torch.stack((red, green, blue), 1)


def affine_inverse(matrices: np.ndarray) -> np.ndarray:
    """cv2.warpAffine's inverse of each (2, 3) matrix (N, 2, 3): (a11, a12, a21, a22, b1, b2), (6, N) float64."""
    m = matrices
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    det = np.where(det != 0, 1.0 / np.where(det != 0, det, 1.0), 0.0)
    a11, a22 = m[:, 1, 1] * det, m[:, 0, 0] * det
    a12, a21 = -m[:, 0, 1] * det, -m[:, 1, 0] * det
    b1 = -a11 * m[:, 0, 2] - a12 * m[:, 1, 2]
    b2 = -a21 * m[:, 0, 2] - a22 * m[:, 1, 2]
    return np.stack([a11, a12, a21, a22, b1, b2])


def affine_sources(matrices: np.ndarray, h: int, w: int):
    """cv2.warpAffine's source positions (INTER_LINEAR): the inverse matrix in 10-bit fixed point,
    rounded to 1/32 pixel; returns integer (y, x) and the 1/32 fractions, each (N, H, W)."""
    a11, a12, a21, a22, b1, b2 = affine_inverse(matrices)
    scale = 1024  # AB_SCALE
    cols = np.arange(w)
    rows = np.arange(h)
    adelta = np.rint(a11[:, None] * cols[None, :] * scale).astype(np.int64)  # (N, W)
    bdelta = np.rint(a21[:, None] * cols[None, :] * scale).astype(np.int64)
    x0 = np.rint((a12[:, None] * rows[None, :] + b1[:, None]) * scale).astype(np.int64) + 16  # (N, H)
    y0 = np.rint((a22[:, None] * rows[None, :] + b2[:, None]) * scale).astype(np.int64) + 16
    big_x = (x0[:, :, None] + adelta[:, None, :]) >> 5
    big_y = (y0[:, :, None] + bdelta[:, None, :]) >> 5
    return big_y >> 5, big_x >> 5, big_y & 31, big_x & 31


def reflect101(index: np.ndarray, size: int) -> np.ndarray:
    if size == 1:
        return np.zeros_like(index)
    period = 2 * size - 2
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)


def reflect(index: np.ndarray, size: int) -> np.ndarray:
    """scipy.ndimage's 'reflect' (half-sample symmetric) on integer sample positions."""
    period = 2 * size
    index = index % period
    return np.where(index >= size, period - 1 - index, index)


def folded(index: torch.Tensor, size: int, fold) -> torch.Tensor:
    """fold(index, size) (numpy, on integers) through a table over index's range: integer % on every
    element is the slow part of a fold."""
    low = int(index.min())
    table = torch.from_numpy(fold(np.arange(low, int(index.max()) + 1), size))
    return table.index_select(0, (index - low).reshape(-1)).reshape(index.shape)


def bilinear_gather(planes: torch.Tensor, y0, x0, fy, fx, fold, dtype=torch.float32) -> torch.Tensor:
    """sum over the 4 neighbours of planes[n, :, fold(y), fold(x)] * weight; y0, x0 integer (N, H, W),
    fy, fx float fractions (N, H, W) given as numpy. Sums in `dtype` (float64 as scipy's map_coordinates
    does, rounding once at the end; a mixed float32/float64 multiply-add is several times slower) and
    returns planes' dtype. Indices and weights are torch ops on the host (numpy's fancy indexing and
    fresh temporaries were most of the time)."""
    n, c, h, w = planes.shape
    flat = planes.reshape(n, c, h * w).to(dtype)
    out = None
    y0, x0, fy, fx = (torch.from_numpy(np.ascontiguousarray(a)) for a in (y0, x0, fy, fx))
    rows = [(folded(y0 + dy, h, fold) * w, wy) for dy, wy in ((0, 1 - fy), (1, fy))]
    cols = [(folded(x0 + dx, w, fold), wx) for dx, wx in ((0, 1 - fx), (1, fx))]
    for row, wy in rows:
        for col, wx in cols:
            weight = (wy * wx).to(planes.device, dtype).reshape(n, 1, h * w)
            index = (row + col).to(planes.device).reshape(n, 1, h * w).expand(n, c, h * w)
            if out is None:  # 0 + w v is w v: no pass over zeros
                out = flat.gather(2, index).mul_(weight)
            else:
                out.addcmul_(weight, flat.gather(2, index))  # in place: a fresh product tensor costs page faults
    return out.reshape(n, c, h, w).to(planes.dtype)
