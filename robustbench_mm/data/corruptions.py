"""CIFAR-10-C style common corruptions (Hendrycks & Dietterich, 2019), batched, seeded per image.

`corrupt(images, name, severity, seed, indices)` applies one corruption at one severity to a batch of
float images in [0, 1], shape (N, 3, H, W), on any device. The parameters are those of the CIFAR
generator, `ImageNet-C/create_c/make_cifar_c.py` in github.com/hendrycks/robustness (not ImageNet's,
nor imagecorruptions' ImageNet-sized ones); they sit in `PARAMETERS` and nowhere else.

Randomness. Every image draws its random numbers on the host from its own numpy Generator, seeded by
`SeedSequence([seed, CORRUPTION_IDS[name], severity, index])` where `index` is the image's place in
the whole set, and draws them in the order and the shapes the reference draws them. So an image gets
the same corruption in a batch of one, in a subset, in any shard and on any device; and a reference
that is handed the same Generator draws the same numbers (the tests do exactly that).

Quantisation. The reference reads uint8 images and writes `np.uint8(result)`, which truncates. So the
input is first rounded to uint8 levels (`round(255 x)`), and the output is `floor(clip(result, 0, 255)) / 255`.
Arithmetic is float64 where it is cheap and the reference's floor depends on it (shot noise, brightness,
saturate, contrast, fog, frost, glass blur's first blur), integer where the reference's is (pixelate's
PIL fixed point, spatter's OpenCV chain), float32 elsewhere; float32 against the reference's float64 can
put a result within ~1e-4 of an integer on its other side: one uint8 level, at most ~2% of values
(defocus blur 5). Filters and zooms are shifted adds and gathers in a fixed order, never a convolution
or matrix product, whose summation order can change with the batch size.

Where we differ from make_cifar_c.py (each one also named in the function's docstring):
- motion_blur and snow's streaks: the reference calls ImageMagick's MotionBlurImage through Wand; we
  use imagecorruptions' re-implementation (a one-sided Gaussian line kernel of width 2*radius+1, the
  image shifted along the angle with edge pixels repeated). Snow keeps the reference's uint8 layer
  going into the blur and rounds the blurred layer to uint8 as the PNG coming out of ImageMagick does.
- impulse_noise: skimage's `random_noise(mode='s&p')` as it is today (each value flipped with
  probability `amount`, then salt or pepper with probability 1/2); skimage 0.14, which made the
  published files, drew `ceil(amount * size / 2)` coordinates with `randint(0, n - 1)`, so it never
  touched the last row, column or channel.
- glass_blur: the reference's "swap" `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on numpy views copies
  x[h', w'] into x[h, w] and leaves x[h', w'] alone; with max_delta 1 every source is still
  untouched when it is read, so one pass is one gather, which is what we do (bit for bit the same).
- frost: the five textures the reference picks from (`randint(5)`: frost6 is never used), already
  shrunk by the reference's `cv2.resize(fx=0.2, fy=0.2)`, ship in `corruptions_frost.npz` (130 KB,
  RGB), so OpenCV is not needed and the crops are those of the reference bit for bit.
- elastic_transform: OpenCV's warpAffine (source coordinates rounded to 1/32 pixel, bilinear,
  reflect-101 border) and scipy's map_coordinates (order 1, reflect) are re-done as gathers.
- spatter (severities 1-3): OpenCV's Canny, distanceTransform, equalizeHist, filter2D and blur are
  transcribed in numpy, batched over images; severities 4-5 need none of them.
- Other image sizes than 32x32: the reference hard-codes 32 in glass_blur's loop, fog's map size,
  frost's crop and elastic's scale; we use H and W (fog's map: the next power of two), which gives
  the reference's numbers at 32x32.
"""

from __future__ import annotations

import io
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F

from robustbench_mm.errors import UsageError, check_choice

# The 15 corruptions of CIFAR-10-C's benchmark, then the 4 held-out extras, in make_cifar_c.py's order.
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
               "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression")
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS = CORRUPTIONS + EXTRA_CORRUPTIONS
# Part of every image's seed: a corruption keeps its number for good (append new ones, never reorder).
CORRUPTION_IDS = {name: number for number, name in enumerate(ALL_CORRUPTIONS)}
SEVERITIES = (1, 2, 3, 4, 5)
LABELS = {
    "gaussian_noise": "Gaussian noise", "shot_noise": "Shot noise", "impulse_noise": "Impulse noise",
    "defocus_blur": "Defocus blur", "glass_blur": "Glass blur", "motion_blur": "Motion blur",
    "zoom_blur": "Zoom blur", "snow": "Snow", "frost": "Frost", "fog": "Fog", "brightness": "Brightness",
    "contrast": "Contrast", "elastic_transform": "Elastic", "pixelate": "Pixelate", "jpeg_compression": "JPEG",
    "speckle_noise": "Speckle noise", "gaussian_blur": "Gaussian blur", "spatter": "Spatter",
    "saturate": "Saturate",
}

_IMSIZE = 32  # make_cifar_c.py's elastic_transform scales its constants by this; we scale by min(H, W)

# make_cifar_c.py's `c` lists, severity 1 first; the comment says what each entry is.
PARAMETERS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # standard deviation, on [0, 1]
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),  # standard deviation of the multiplicative noise
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),  # sigma in pixels
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, max_delta, iterations
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, alias blur sigma
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma (angle ~ U(-45, 45))
    # zoom factors: np.arange(start, stop, step); note np.arange(1, 1.06, 0.01) ends at 1.06
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    # mean, std, zoom, threshold, blur radius, blur sigma, blend (angle ~ U(-135, -45))
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image weight, frost weight
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # fog weight, plasma wibble decay
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the distance to each channel's mean
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),  # HSV saturation * a + b
    "jpeg_compression": (80, 65, 58, 50, 40),  # JPEG quality
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # side of the shrunk image / side
    # alpha, sigma, affine jitter, in units of the image side (make_cifar_c: IMSIZE * these, IMSIZE = 32)
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
    # mean, std, sigma, threshold, intensity, mud (0: water, 1: mud)
    "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
}

FROST_FILE = Path(__file__).resolve().parent / "corruptions_frost.npz"
FROST_TEXTURES = ("frost1", "frost2", "frost3", "frost4", "frost5")

OFFICIAL_IMAGES = 10_000  # rows per severity in CIFAR-10-C / CIFAR-100-C's <corruption>.npy
OFFICIAL_DATASETS = ("cifar10", "cifar100")


# ---------------------------------------------------------------------------------------------- public API

def generators(seed: int, name: str, severity: int, indices) -> list[np.random.Generator]:
    """One numpy Generator per image, seeded by (seed, corruption, severity, index in the whole set)."""
    corruption_id = CORRUPTION_IDS[name]
    return [np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, corruption_id, severity, int(i)])))
            for i in indices]


def check_corruption(name: str, severity: int) -> None:
    check_choice("corruption", name, ALL_CORRUPTIONS)
    check_choice("severity", severity, SEVERITIES)


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0, indices=None) -> torch.Tensor:
    """`images` (N, 3, H, W) in [0, 1] corrupted, on their device, as float32 multiples of 1/255.

    `indices[k]` is image k's place in the whole set (default 0..N-1); it picks the image's random numbers.
    """
    check_corruption(name, severity)
    if images.dim() != 4 or images.shape[1] != 3:
        raise UsageError(f"corrupt expects images of shape (N, 3, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    indices = range(n) if indices is None else [int(i) for i in indices]
    if len(indices) != n:
        raise UsageError(f"corrupt got {n} images but {len(indices)} indices")
    x = (images.float().clamp(0, 1) * 255).round()
    if n == 0:
        return x
    rngs = generators(seed, name, severity, indices)
    out = _FUNCTIONS[name](x, PARAMETERS[name][severity - 1], rngs)
    return quantise(out).to(images.device)


def quantise(values: torch.Tensor) -> torch.Tensor:
    """The reference's `np.uint8(clip(v, 0, 255))`, truncation included, as float32 in [0, 1]."""
    return values.clamp(0, 255).floor().float() / 255


# ------------------------------------------------------------------------------------------------- helpers

def _to_device(array: np.ndarray, like: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=like.device, dtype=dtype)


def _hwc_draws(rngs, draw) -> np.ndarray:
    """Per-image draws of shape (H, W, C) (the reference's layout) stacked and turned to (N, C, H, W)."""
    return np.stack([draw(rng) for rng in rngs]).transpose(0, 3, 1, 2)


def _gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage.gaussian_filter1d's weights (what skimage.filters.gaussian uses)."""
    radius = int(truncate * float(sigma) + 0.5)
    grid = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * grid ** 2)
    return phi / phi.sum()


def _correlate_taps(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every (H, W) plane of x (..., H, W) with a 2-D kernel by shifted adds, tap by tap in a
    fixed order: no convolution algorithm or matrix-product blocking chosen by the batch size, so an
    image's result never depends on what else is in the batch."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    h, w = x.shape[-2:]
    shape = x.shape
    padded = F.pad(x.reshape(-1, 1, h, w), (pw, pw, ph, ph), mode=mode)[:, 0] if (ph or pw) else x.reshape(-1, h, w)
    out = torch.zeros(padded.shape[0], h, w, dtype=x.dtype, device=x.device)
    for i in range(kh):
        for j in range(kw):
            if kernel[i, j] != 0:
                out.add_(padded[:, i:i + h, j:j + w], alpha=float(kernel[i, j]))  # no temporary
    return out.reshape(shape)


def _separable(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every (H, W) plane of x (..., H, W) with `kernel` along columns (axis H), then rows."""
    x = _correlate_taps(x, kernel[:, None], mode)
    return _correlate_taps(x, kernel[None, :], mode)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """skimage.filters.gaussian(channel_axis=-1): scipy's kernel, truncate 4, 'nearest' border."""
    return _separable(x, _gaussian_kernel1d(sigma), "replicate")


@cache
def _zoom_taps(size: int, factor: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


def _clipped_zoom(planes: torch.Tensor, factor: float) -> torch.Tensor:
    """clipped_zoom of (..., H, W) planes, as two gathers and weighted adds per axis."""
    h, w = planes.shape[-2:]
    low, high, w_low, w_high = (torch.as_tensor(a, device=planes.device) for a in _zoom_taps(h, factor))
    planes = (planes.index_select(-2, low) * w_low.to(planes.dtype)[:, None]
              + planes.index_select(-2, high) * w_high.to(planes.dtype)[:, None])
    low, high, w_low, w_high = (torch.as_tensor(a, device=planes.device) for a in _zoom_taps(w, factor))
    return planes.index_select(-1, low) * w_low.to(planes.dtype) + planes.index_select(-1, high) * w_high.to(planes.dtype)


def _motion_shifts(width: int, angles_degrees: np.ndarray, height_limit: int, width_limit: int):
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


def _motion_blur_planes(planes: torch.Tensor, radius: int, sigma: float, angles: np.ndarray) -> torch.Tensor:
    """imagecorruptions' _motion_blur on (N, C, H, W) with one angle per image, as per-tap gathers."""
    n, c, h, w = planes.shape
    width = 2 * radius + 1
    kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    kernel = kernel / kernel.sum()
    dy, dx, counts = _motion_shifts(width, angles, h, w)
    rows = np.clip(np.arange(h)[None, None, :] - dy[:, :, None], 0, h - 1)  # shifted[y] = image[clip(y - dy)]
    cols = np.clip(np.arange(w)[None, None, :] - dx[:, :, None], 0, w - 1)
    flat = torch.from_numpy(rows[:, :, :, None] * w + cols[:, :, None, :]).to(planes.device)  # (N, T, H, W)
    weights = torch.from_numpy(kernel[None, :] * counts).to(planes.device, planes.dtype)  # (N, T)
    source = planes.reshape(n, c, h * w)
    out = torch.zeros_like(source)
    for tap in range(width):
        index = flat[:, tap].reshape(n, 1, h * w).expand(n, c, h * w)
        out += weights[:, tap, None, None] * source.gather(2, index)
    return out.reshape(n, c, h, w)


def _rgb2hsv(unit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """skimage.color.rgb2hsv's arithmetic, op for op, on (N, 3, H, W) float64: hue, saturation, value."""
    r, g, b = unit[:, 0], unit[:, 1], unit[:, 2]
    value = unit.amax(1)
    delta = value - unit.amin(1)
    flat = delta == 0
    safe = torch.where(flat, 1.0, delta)
    saturation = torch.where(flat, 0.0, delta / torch.where(value == 0, 1.0, value))
    hue = (g - b) / safe
    hue = torch.where(g == value, 2.0 + (b - r) / safe, hue)
    hue = torch.where(b == value, 4.0 + (r - g) / safe, hue)  # later cases win, as in skimage
    hue = torch.where(flat, 0.0, torch.remainder(hue / 6.0, 1.0))
    return hue, saturation, value


def _hsv2rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb's arithmetic on (N, H, W) planes; returns (N, 3, H, W)."""
    sector = torch.floor(hue * 6)
    f = hue * 6 - sector
    p = value * (1 - saturation)
    q = value * (1 - f * saturation)
    t = value * (1 - (1 - f) * saturation)
    v = value
    sector = torch.remainder(sector, 6).long()
    choices = torch.stack([torch.stack(channels, 1) for channels in
                           ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])  # (6, N, 3, H, W)
    index = sector[None, :, None].expand(1, -1, 3, -1, -1)
    return choices.gather(0, index)[0]


# ----------------------------------------------------------------------------------------------- noise

def _gaussian_noise(x, c, rngs):
    noise = _to_device(_hwc_draws(rngs, lambda r: r.normal(size=(x.shape[2], x.shape[3], 3), scale=c)), x)
    return (x / 255 + noise).clamp(0, 1) * 255


def _shot_noise(x, c, rngs):
    """Poisson counts need the image on the host; the whole reference arithmetic runs there in float64."""
    lam = x.cpu().numpy().astype(np.float64).transpose(0, 2, 3, 1) / 255.0 * c
    counts = np.stack([rng.poisson(image) for rng, image in zip(rngs, lam)])
    out = np.floor(np.clip(counts / c, 0, 1) * 255)
    return _to_device(out.transpose(0, 3, 1, 2), x)


def _impulse_noise(x, c, rngs):
    """skimage.util.random_noise(mode='s&p', amount=c): flip with probability c, salt vs pepper 1/2."""
    shape = (x.shape[2], x.shape[3], 3)
    draws = [(rng.random(shape) <= c, rng.random(shape) <= 0.5) for rng in rngs]
    flipped = _to_device(np.stack([d[0] for d in draws]).transpose(0, 3, 1, 2), x, torch.bool)
    salted = _to_device(np.stack([d[1] for d in draws]).transpose(0, 3, 1, 2), x, torch.bool)
    return torch.where(flipped, torch.where(salted, 255.0, 0.0), x)


def _speckle_noise(x, c, rngs):
    noise = _to_device(_hwc_draws(rngs, lambda r: r.normal(size=(x.shape[2], x.shape[3], 3), scale=c)), x)
    unit = x / 255
    return (unit + unit * noise).clamp(0, 1) * 255


# ----------------------------------------------------------------------------------------------- blurs

def _gaussian_blur_corruption(x, c, rngs):
    return (_gaussian_blur(x / 255, c)).clamp(0, 1) * 255


def _glass_blur(x, c, rngs):
    """Blur, `iterations` passes of local pixel moves, blur. The reference's swap is a copy (see the
    module's docstring), so each pass is x[h, w] <- x[h + dy, w + dx] for h, w from the far end down
    to max_delta + 1, with (dx, dy) = randint(-1, 1, size=2) drawn in that loop order."""
    sigma, max_delta, iterations = c
    if max_delta != 1:
        raise NotImplementedError("glass_blur's gather is exact for max_delta 1, all CIFAR severities use")
    n, _, h, w = x.shape
    # np.uint8(gaussian(x / 255) * 255); float64 as the reference, since a level lost to float32 here
    # is moved and blurred again (it came out two levels apart)
    out = (_gaussian_blur(x.double() / 255, sigma) * 255).floor()
    ys = np.arange(h - max_delta, max_delta, -1)
    xs = np.arange(w - max_delta, max_delta, -1)
    positions = len(ys) * len(xs)
    draws = np.stack([rng.integers(-max_delta, max_delta, size=(iterations, positions, 2)) for rng in rngs])
    grid_y = np.repeat(ys, len(xs))
    grid_x = np.tile(xs, len(ys))
    base = np.arange(h * w).reshape(h, w)
    for iteration in range(iterations):
        index = np.broadcast_to(base, (n, h, w)).copy()
        dx, dy = draws[:, iteration, :, 0], draws[:, iteration, :, 1]
        index[:, grid_y, grid_x] = (grid_y + dy) * w + (grid_x + dx)
        flat = torch.from_numpy(index.reshape(n, 1, h * w)).to(x.device).expand(n, 3, h * w)
        out = out.reshape(n, 3, h * w).gather(2, flat).reshape(n, 3, h, w)
    return _gaussian_blur(out / 255, sigma).clamp(0, 1) * 255


@cache
def _defocus_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c's disk(): an aliased disk on a 17x17 grid, normalised, then cv2.GaussianBlur
    (3x3, sigma alias_blur, reflect-101 border); cropped to its non-zero square."""
    grid = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
    taps = (taps / taps.sum()).astype(np.float32)
    smoothed = ndi.correlate1d(ndi.correlate1d(disk, taps, axis=1, mode="mirror"), taps, axis=0, mode="mirror")
    nonzero = np.argwhere(smoothed != 0)
    reach = int(np.abs(nonzero - len(grid) // 2).max())
    middle = len(grid) // 2
    return smoothed[middle - reach:middle + reach + 1, middle - reach:middle + reach + 1].astype(np.float64)


def _defocus_blur(x, c, rngs):
    """cv2.filter2D with the disk kernel: a correlation with reflect-101 borders."""
    return _correlate_taps(x / 255, _defocus_kernel(*c), "reflect").clamp(0, 1) * 255


def _motion_blur(x, c, rngs):
    """imagecorruptions' re-implementation of ImageMagick's motion blur (make_cifar_c calls Wand)."""
    radius, sigma = c
    angles = np.array([rng.uniform(-45, 45) for rng in rngs])
    return _motion_blur_planes(x, radius, sigma, angles).clamp(0, 255)


def _zoom_blur(x, c, rngs):
    factors = np.arange(*c)
    unit = x / 255
    out = torch.zeros_like(unit)
    for factor in factors:
        out += _clipped_zoom(unit, factor)
    return ((unit + out) / (len(factors) + 1)).clamp(0, 1) * 255


# ----------------------------------------------------------------------------------------------- weather

def _snow(x, c, rngs):
    mean, std, zoom, threshold, radius, sigma, blend = c
    h, w = x.shape[2:]
    layers = np.stack([rng.normal(size=(h, w), loc=mean, scale=std) for rng in rngs])
    angles = np.array([rng.uniform(-135, -45) for rng in rngs])
    layer = _clipped_zoom(_to_device(layers, x), zoom)
    layer = torch.where(layer < threshold, 0.0, layer)
    layer = (layer.clamp(0, 1) * 255).floor()  # .astype(np.uint8) before the PNG that goes to ImageMagick
    layer = _motion_blur_planes(layer[:, None], radius, sigma, angles)
    layer = layer.round() / 255  # ImageMagick writes an 8-bit PNG
    unit = x / 255
    gray = 0.299 * unit[:, 0:1] + 0.587 * unit[:, 1:2] + 0.114 * unit[:, 2:3]  # cv2.COLOR_RGB2GRAY
    unit = blend * unit + (1 - blend) * torch.maximum(unit, gray * 1.5 + 0.5)
    return (unit + layer + layer.flip(-1, -2)).clamp(0, 1) * 255


@lru_cache(maxsize=1)
def frost_textures() -> tuple[np.ndarray, ...]:
    """The reference's frost1..frost5 after cv2.resize(fx=0.2, fy=0.2), RGB uint8 (H, W, 3)."""
    with np.load(FROST_FILE, allow_pickle=False) as archive:
        return tuple(archive[name] for name in FROST_TEXTURES)


def _frost(x, c, rngs):
    h, w = x.shape[2:]
    textures = frost_textures()
    crops = []
    for rng in rngs:
        texture = textures[rng.integers(len(textures))]
        if texture.shape[0] <= h or texture.shape[1] <= w:
            raise UsageError(f"frost textures are {texture.shape[1]}x{texture.shape[0]}; images of {w}x{h} are too big")
        top, left = rng.integers(0, texture.shape[0] - h), rng.integers(0, texture.shape[1] - w)
        crops.append(texture[top:top + h, left:left + w])
    frost = _to_device(np.stack(crops).transpose(0, 3, 1, 2), x)
    return (c[0] * x.double() + c[1] * frost.double()).clamp(0, 255)  # float64: 0.9 x + 0.4 f lands on integers


def _plasma_fractals(rngs, mapsize: int, wibbledecay: float) -> np.ndarray:
    """make_cifar_c's plasma_fractal (diamond-square) for every image at once, in float64, with each
    image's uniform draws taken in the reference's order, so the maps are the reference's bit for bit."""
    n = len(rngs)
    steps = []
    stepsize = mapsize
    while stepsize >= 2:
        steps.append(stepsize)
        stepsize //= 2
    sizes = [(mapsize // s) ** 2 for s in steps]
    uniforms = np.stack([rng.random(3 * sum(sizes)) for rng in rngs])
    maparray = np.empty((n, mapsize, mapsize), dtype=np.float64)
    maparray[:, 0, 0] = 0
    wibble = 100
    used = 0

    def wibbledmean(array):
        nonlocal used
        count = array.shape[1] * array.shape[2]
        draw = uniforms[:, used:used + count].reshape(array.shape)
        used += count
        return array / 4 + wibble * (-wibble + (wibble - -wibble) * draw)  # Generator.uniform(-w, w)

    for stepsize in steps:
        half = stepsize // 2
        cornerref = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=1)
        squareaccum += np.roll(squareaccum, shift=-1, axis=2)
        maparray[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = (drgrid + np.roll(drgrid, 1, axis=1)) + (ulgrid + np.roll(ulgrid, -1, axis=2))
        maparray[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = (drgrid + np.roll(drgrid, 1, axis=2)) + (ulgrid + np.roll(ulgrid, -1, axis=1))
        maparray[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        wibble /= wibbledecay
    maparray -= maparray.min(axis=(1, 2), keepdims=True)
    return maparray / maparray.max(axis=(1, 2), keepdims=True)


def _fog(x, c, rngs):
    h, w = x.shape[2:]
    mapsize = 1 << (max(h, w) - 1).bit_length()
    plasma = _to_device(_plasma_fractals(rngs, mapsize, c[1])[:, :h, :w], x, torch.float64)[:, None]
    unit = x.double() / 255  # float64, as the reference: cheap here, and it keeps the floor where theirs falls
    max_value = unit.amax(dim=(1, 2, 3), keepdim=True)
    return ((unit + c[0] * plasma) * max_value / (max_value + c[0])).clamp(0, 1) * 255


# ----------------------------------------------------------------------------------------------- digital

def _brightness(x, c, rngs):
    """skimage's HSV round trip with the value raised by c, in float64 as the reference computes it."""
    hue, saturation, value = _rgb2hsv(x.double() / 255)
    return _hsv2rgb(hue, saturation, (value + c).clamp(0, 1)).clamp(0, 1) * 255


def _saturate(x, c, rngs):
    """skimage's HSV round trip with the saturation scaled by a and raised by b, in float64."""
    hue, saturation, value = _rgb2hsv(x.double() / 255)
    return _hsv2rgb(hue, (saturation * c[0] + c[1]).clamp(0, 1), value).clamp(0, 1) * 255


def _contrast(x, c, rngs):
    unit = x.double() / 255
    # the levels' sum is exact in any order, so an image's mean never depends on its batch
    means = x.double().sum(dim=(2, 3), keepdim=True) / (x.shape[2] * x.shape[3]) / 255
    return ((unit - means) * c + means).clamp(0, 1) * 255


def _jpeg_compression(x, c, rngs):
    """PIL's JPEG encoder and decoder, image by image (there is no batched libjpeg)."""
    from PIL import Image

    images = x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=c)
        buffer.seek(0)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return _to_device(np.stack(out).transpose(0, 3, 1, 2), x)


@cache
def _pil_box_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's resample coefficients for the BOX filter (precompute_coeffs, normalize_coeffs_8bpc)
    as an integer (out, in) matrix in units of 2**-22."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    matrix = np.zeros((out_size, in_size), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = []
        for k in range(xmax):
            position = (k + xmin - center + 0.5) / filterscale
            weights.append(1.0 if -0.5 < position <= 0.5 else 0.0)
        total = sum(weights)
        for k, weight in enumerate(weights):
            weight = weight / total if total != 0 else weight
            matrix[xx, xmin + k] = int(0.5 + weight * (1 << 22)) if weight >= 0 else int(-0.5 + weight * (1 << 22))
    return matrix


def _pil_box_resize(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """PIL's Image.resize(BOX) on uint8 levels: horizontal pass then vertical, each in 22-bit fixed point
    rounded and clipped to uint8. float64 holds every sum exactly (255 * 2**22 * side < 2**53)."""
    h, w = x.shape[-2:]
    values = x.double()
    if out_w != w:
        cols = torch.as_tensor(_pil_box_coefficients(w, out_w), dtype=torch.float64, device=x.device)
        values = (torch.floor((values @ cols.T + (1 << 21)) / (1 << 22))).clamp(0, 255)
    if out_h != h:
        rows = torch.as_tensor(_pil_box_coefficients(h, out_h), dtype=torch.float64, device=x.device)
        values = (torch.floor((rows @ values + (1 << 21)) / (1 << 22))).clamp(0, 255)
    return values.to(x.dtype)


def _pixelate(x, c, rngs):
    h, w = x.shape[-2:]
    small = _pil_box_resize(x, int(h * c), int(w * c))
    return _pil_box_resize(small, h, w)


# ----------------------------------------------------------------------------------------------- elastic

def _affine_sources(matrices: np.ndarray, h: int, w: int):
    """cv2.warpAffine's source positions (INTER_LINEAR): the inverse matrix in 10-bit fixed point,
    rounded to 1/32 pixel; returns integer (y, x) and the 1/32 fractions, each (N, H, W)."""
    m = matrices
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    det = np.where(det != 0, 1.0 / np.where(det != 0, det, 1.0), 0.0)
    a11, a22 = m[:, 1, 1] * det, m[:, 0, 0] * det
    a12, a21 = -m[:, 0, 1] * det, -m[:, 1, 0] * det
    b1 = -a11 * m[:, 0, 2] - a12 * m[:, 1, 2]
    b2 = -a21 * m[:, 0, 2] - a22 * m[:, 1, 2]
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


def _reflect101(index: np.ndarray, size: int) -> np.ndarray:
    if size == 1:
        return np.zeros_like(index)
    period = 2 * size - 2
    index = np.abs(index) % period
    return np.where(index >= size, period - index, index)


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """scipy.ndimage's 'reflect' (half-sample symmetric) on integer sample positions."""
    period = 2 * size
    index = index % period
    return np.where(index >= size, period - 1 - index, index)


def _bilinear_gather(planes: torch.Tensor, y0, x0, fy, fx, fold, dtype=torch.float32) -> torch.Tensor:
    """sum over the 4 neighbours of planes[n, :, fold(y), fold(x)] * weight; y0, x0 integer (N, H, W),
    fy, fx float fractions (N, H, W) given as numpy."""
    n, c, h, w = planes.shape
    flat = planes.reshape(n, c, h * w)
    out = torch.zeros_like(flat)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            index = fold(y0 + dy, h) * w + fold(x0 + dx, w)
            weight = torch.from_numpy(np.ascontiguousarray(wy * wx)).to(planes.device, dtype).reshape(n, 1, h * w)
            gather_index = torch.from_numpy(index.reshape(n, 1, h * w)).to(planes.device).expand(n, c, h * w)
            out += weight * flat.gather(2, gather_index)
    return out.reshape(n, c, h, w)


def _elastic_transform(x, c, rngs):
    """A random affine warp (cv2.warpAffine, reflect-101), then a smooth random displacement field
    (scipy.ndimage.map_coordinates, order 1, 'reflect'), both as gathers."""
    h, w = x.shape[2:]
    imsize = min(h, w)
    alpha, sigma, jitter = (value * imsize for value in c)
    center = np.float32([h, w]) // 2
    square = min(h, w) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    affine, fields = [], []
    for rng in rngs:
        affine.append(rng.uniform(-jitter, jitter, size=pts1.shape).astype(np.float32))
        fields.append((rng.uniform(-1, 1, size=(h, w)), rng.uniform(-1, 1, size=(h, w))))
    pts2 = pts1[None] + np.stack(affine)  # (N, 3, 2) float32, as (x, y) pairs
    system = np.concatenate([pts1.astype(np.float64), np.ones((3, 1))], axis=1)  # cv2.getAffineTransform
    matrices = np.linalg.solve(system[None], pts2.astype(np.float64)).transpose(0, 2, 1)  # (N, 2, 3)
    sy, sx, fy, fx = _affine_sources(matrices, h, w)
    table = np.float32(np.arange(32)) / np.float32(32)  # cv2's INTER_TAB_SIZE linear weights, float32
    warped = _bilinear_gather(x / 255, sy, sx, table[fy], table[fx], _reflect101)

    raw = np.stack([np.stack(pair) for pair in fields])  # (N, 2, H, W): dx's draw, then dy's
    if sigma > 0:
        smooth = ndi.gaussian_filter(raw, sigma=(0, 0, sigma, sigma), mode="reflect", truncate=3)
    else:
        smooth = raw.copy()
    displacement = (smooth * alpha).astype(np.float32).astype(np.float64)
    rows = np.arange(h)[None, :, None] + displacement[:, 1]
    cols = np.arange(w)[None, None, :] + displacement[:, 0]
    y0, x0 = np.floor(rows), np.floor(cols)
    out = _bilinear_gather(warped, y0.astype(np.int64), x0.astype(np.int64), rows - y0, cols - x0, _reflect,
                           dtype=torch.float64)
    return out.clamp(0, 1) * 255


# ----------------------------------------------------------------------------------------------- spatter

_CANNY_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)


def _correlate_int(images: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """3x3 correlation of (N, H, W) in integers; mode 'nearest' (replicate) or 'mirror' (reflect-101)."""
    padded = np.pad(images.astype(np.int64), ((0, 0), (1, 1), (1, 1)), mode="edge" if mode == "nearest" else "reflect")
    h, w = images.shape[1:]
    out = np.zeros(images.shape, dtype=np.int64)
    for i in range(3):
        for j in range(3):
            if kernel[i, j]:
                out += int(kernel[i, j]) * padded[:, i:i + h, j:j + w]
    return out


def _canny(images: np.ndarray, low: int = 50, high: int = 150) -> np.ndarray:
    """cv2.Canny(img, 50, 150) (aperture 3, L1 gradient) on (N, H, W) uint8: Sobel with replicated
    borders, non-maximum suppression in OpenCV's fixed-point sectors, hysteresis over 8-neighbours."""
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    dx = _correlate_int(images, sobel, "nearest")
    dy = _correlate_int(images, sobel.T, "nearest")
    mag = np.abs(dx) + np.abs(dy)
    padded = np.pad(mag, ((0, 0), (1, 1), (1, 1)))
    h, w = images.shape[1:]

    def neighbour(oy, ox):
        return padded[:, 1 + oy:1 + oy + h, 1 + ox:1 + ox + w]

    ax = np.abs(dx)
    ay = np.abs(dy) << 15
    tg22x = ax * _CANNY_TG22
    tg67x = tg22x + (ax << 16)
    s = np.where((dx ^ dy) < 0, -1, 1)
    horizontal = (mag > neighbour(0, -1)) & (mag >= neighbour(0, 1))
    vertical = (mag > neighbour(-1, 0)) & (mag >= neighbour(1, 0))
    diagonal_plus = (mag > neighbour(-1, -1)) & (mag > neighbour(1, 1))  # s = 1: previous row j-1, next row j+1
    diagonal_minus = (mag > neighbour(-1, 1)) & (mag > neighbour(1, -1))
    diagonal = np.where(s > 0, diagonal_plus, diagonal_minus)
    keep = np.where(ay < tg22x, horizontal, np.where(ay > tg67x, vertical, diagonal))
    candidate = (mag > low) & keep
    strong = candidate & (mag > high)
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    labels, count = ndi.label(candidate, structure=structure)
    kept = np.zeros(count + 1, dtype=bool)
    kept[np.unique(labels[strong])] = True
    kept[0] = False
    return np.where(kept[labels], 255, 0).astype(np.uint8)


def _distance_5x5(images: np.ndarray) -> np.ndarray:
    """cv2.distanceTransform(img, DIST_L2, 5): OpenCV's two-pass 5x5 chamfer in 16-bit fixed point, to the
    nearest zero pixel, for (N, H, W) at once."""
    hv, diag, long = (round(m * 65536) for m in (1.0, 1.4, 2.1969))
    n, h, w = images.shape
    far = 2 ** 31 - 1
    tmp = np.full((n, h + 4, w + 4), far, dtype=np.int64)
    forward = ((-2, -1, long), (-2, 1, long), (-1, -2, long), (-1, -1, diag), (-1, 0, hv), (-1, 1, diag),
               (-1, 2, long), (0, -1, hv))
    for i in range(h):
        for j in range(w):
            y, x = i + 2, j + 2
            best = np.min(np.stack([tmp[:, y + oy, x + ox] + d for oy, ox, d in forward]), axis=0)
            tmp[:, y, x] = np.where(images[:, i, j] == 0, 0, best)
    for i in range(h - 1, -1, -1):
        for j in range(w - 1, -1, -1):
            y, x = i + 2, j + 2
            current = tmp[:, y, x]
            best = np.min(np.stack([current] + [tmp[:, y - oy, x - ox] + d for oy, ox, d in forward]), axis=0)
            tmp[:, y, x] = np.where(current > hv, best, current)
    return (tmp[:, 2:h + 2, 2:w + 2] * np.float32(1 / 65536)).astype(np.float32)


def _box3(images: np.ndarray) -> np.ndarray:
    """cv2.blur(img, (3, 3))'s sums over a reflect-101 border (the caller scales and rounds)."""
    if np.issubdtype(images.dtype, np.integer):
        return _correlate_int(images, np.ones((3, 3), dtype=np.int64), "mirror")
    h, w = images.shape[1:]
    padded = np.pad(images.astype(np.float64), ((0, 0), (1, 1), (1, 1)), mode="reflect")
    return sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3))


def _equalize_hist(images: np.ndarray) -> np.ndarray:
    out = np.empty_like(images)
    for k, image in enumerate(images):
        hist = np.bincount(image.ravel(), minlength=256)
        first = int(np.flatnonzero(hist)[0])
        total = image.size
        if hist[first] == total:
            out[k] = first
            continue
        scale = np.float32(255.0 / (total - hist[first]))
        lut = np.zeros(256, dtype=np.uint8)
        sums = np.cumsum(hist[first + 1:])
        lut[first + 1:] = np.clip(np.rint(sums.astype(np.float32) * scale), 0, 255).astype(np.uint8)
        out[k] = lut[image]
    return out


def _spatter_water_masks(liquid: np.ndarray) -> np.ndarray:
    """make_cifar_c's water branch up to m (before /max): OpenCV's chain, transcribed, for (N, H, W)."""
    liquid8 = (liquid * 255).astype(np.uint8)
    dist = (255 - _canny(liquid8)).astype(np.uint8)
    dist = _distance_5x5(dist)
    dist = np.minimum(dist, np.float32(20))
    dist = (_box3(dist) * (1 / 9)).astype(np.float32).astype(np.uint8)
    dist = _equalize_hist(dist)
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    dist = np.clip(_correlate_int(dist, ker, "mirror"), 0, 255).astype(np.uint8)
    dist = np.clip(np.rint(_box3(dist) / 9.0), 0, 255).astype(np.uint8).astype(np.float32)
    return liquid8 * dist


def _spatter(x, c, rngs):
    mean, std, sigma, threshold, intensity, mud = c
    h, w = x.shape[2:]
    liquid = np.stack([rng.normal(size=(h, w), loc=mean, scale=std) for rng in rngs])
    liquid = ndi.gaussian_filter(liquid, sigma=(0, sigma, sigma), mode="nearest", truncate=4.0)
    liquid[liquid < threshold] = 0
    unit = x / 255
    if mud == 0:
        m = _spatter_water_masks(liquid)
        with np.errstate(invalid="ignore", divide="ignore"):
            m = m / m.max(axis=(1, 2), keepdims=True) * intensity
        mask = _to_device(m, x)[:, None]
        # the reference adds (175, 238, 238) / 255 in "BGR" order to an RGB image: red gets 175
        color = torch.tensor([175 / 255, 238 / 255, 238 / 255], device=x.device).view(1, 3, 1, 1)
        return torch.nan_to_num((unit + mask * color).clamp(0, 1) * 255, nan=0.0)
    m = (liquid > threshold).astype(np.float32)
    m = ndi.gaussian_filter(m, sigma=(0, intensity, intensity), mode="nearest", truncate=4.0)
    m[m < 0.8] = 0
    mask = _to_device(m, x)[:, None]
    color = torch.tensor([63 / 255, 42 / 255, 20 / 255], device=x.device).view(1, 3, 1, 1) * mask
    return (unit * (1 - mask) + color).clamp(0, 1) * 255


_FUNCTIONS = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur, "zoom_blur": _zoom_blur,
    "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness, "contrast": _contrast,
    "elastic_transform": _elastic_transform, "pixelate": _pixelate, "jpeg_compression": _jpeg_compression,
    "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur_corruption, "spatter": _spatter,
    "saturate": _saturate,
}


# ----------------------------------------------------------------------------------------------- official files

def load_official(data_dir, dataset: str, corruption: str, severity: int, clean_labels,
                  images_per_severity: int = OFFICIAL_IMAGES) -> np.ndarray:
    """The official CIFAR-10-C / CIFAR-100-C images of one corruption at one severity, (n, 32, 32, 3)
    uint8, memory-mapped: rows (severity-1)*n .. severity*n of `<data_dir>/<corruption>.npy`, checked
    against `labels.npy` and the clean test set's labels. `images_per_severity` is 10000 for the real
    files (tests shrink it)."""
    check_choice("dataset", dataset, OFFICIAL_DATASETS)
    check_corruption(corruption, severity)
    folder = Path(data_dir)
    clean = np.asarray(clean_labels)
    n = images_per_severity
    if clean.shape != (n,):
        raise UsageError(f"{dataset}-C needs the {n} clean test labels, got an array of shape {clean.shape}")
    images = _load_array(folder / f"{corruption}.npy", (5 * n, 32, 32, 3), np.uint8)
    labels = _load_array(folder / "labels.npy", (5 * n,), None)
    if not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"{folder / 'labels.npy'}: expected integer labels, got dtype {labels.dtype}")
    rows = slice((severity - 1) * n, severity * n)
    if not np.array_equal(np.asarray(labels[rows]), clean):
        raise UsageError(f"{folder / 'labels.npy'}: rows {rows.start}..{rows.stop - 1} are not the clean "
                         f"{dataset} test labels in order")
    return images[rows]


def _load_array(path: Path, shape: tuple, dtype) -> np.ndarray:
    if not path.is_file():
        raise UsageError(f"{path}: no such file (expected a .npy array of shape {shape})")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise UsageError(f"{path}: not a readable .npy array ({error})") from None
    if array.shape != shape:
        raise UsageError(f"{path}: expected shape {shape}, got {array.shape}")
    if dtype is not None and array.dtype != dtype:
        raise UsageError(f"{path}: expected dtype {np.dtype(dtype).name}, got {array.dtype}")
    return array
