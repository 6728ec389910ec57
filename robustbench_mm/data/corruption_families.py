"""The 19 corruptions of CIFAR-10-C, one function each: `f(images, parameters, draws)` on [0, 255]-scale
float images, `draws` the batch's counter-based random numbers (data/corruption_random.py), with
make_cifar_c.py's arithmetic (data/corruptions.py holds the parameters and the public API)."""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch

from robustbench_mm.data.corruption_filters import gaussian_planes
from robustbench_mm.data.corruption_jpeg import jpeg_round_trip
from robustbench_mm.data.corruption_noise import level_noise
from robustbench_mm.data.corruption_ops import (
    affine_sources, bilinear_gather, clipped_zoom, correlate_taps, gaussian_blur, gaussian_kernel1d, hsv2rgb,
    motion_blur_planes, reflect, reflect101, rgb2hsv, to_device, zoom_blur_planes)
from robustbench_mm.data.corruption_random import Draws
from robustbench_mm.data.corruption_spatter import water_masks
from robustbench_mm.errors import UsageError


def _gaussian_blur_corruption(x, c, draws):
    return gaussian_blur(x / 255, c).clamp_(0, 1).mul_(255)


def glass_moves(shape, c, draws) -> np.ndarray:
    """glass_blur's moves as each pass's source pixel of every pixel, (N, passes, H * W) int64."""
    sigma, max_delta, iterations = c
    if max_delta != 1:
        raise NotImplementedError("glass_blur's gather is exact for max_delta 1, all CIFAR severities use")
    n, _, h, w = shape
    moved = (h - max_delta - 1, w - max_delta - 1)  # rows and columns max_delta + 1 .. end, moved far end first
    moves = draws.integers(-max_delta, max_delta, size=(iterations, moved[0] * moved[1], 2))
    moves = moves.reshape(n, iterations, *moved, 2)[:, :, ::-1, ::-1]  # in image order
    offsets = np.zeros((n, iterations, h, w), dtype=np.int64)
    offsets[:, :, max_delta + 1:, max_delta + 1:] = moves[..., 1] * w + moves[..., 0]
    return offsets.reshape(n, iterations, h * w) + np.arange(h * w)


def _glass_blur(x, c, draws):
    """Blur, `iterations` passes of local pixel moves, blur. The reference's swap is a copy (see the
    module's docstring), so each pass is x[h, w] <- x[h + dy, w + dx] for h, w from the far end down
    to max_delta + 1, with (dx, dy) = randint(-1, 1, size=2) drawn in that loop order."""
    sigma, max_delta, iterations = c
    n, _, h, w = x.shape
    index = torch.from_numpy(glass_moves(x.shape, c, draws)).to(x.device)
    # np.uint8(gaussian(x / 255) * 255); float64 as the reference, since a level lost to float32 here
    # is moved and blurred again (it came out two levels apart)
    out = gaussian_blur(x.double().div_(255), sigma).mul_(255).floor_()
    # the levels are whole numbers in 0..255: one gather moves a pixel's three, packed in 10-bit fields
    levels = out.to(torch.int32).reshape(n, 3, h * w)
    packed = levels[:, 0] | levels[:, 1] << 10 | levels[:, 2] << 20
    for iteration in range(iterations):
        packed = packed.gather(1, index[:, iteration])
    out = torch.stack([packed & 1023, packed >> 10 & 1023, packed >> 20], 1).reshape(n, 3, h, w).double()
    return gaussian_blur(out / 255, sigma).clamp_(0, 1).mul_(255)


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


def _defocus_blur(x, c, draws):
    """cv2.filter2D with the disk kernel: a correlation with reflect-101 borders."""
    return correlate_taps(x / 255, _defocus_kernel(*c), "reflect").clamp_(0, 1).mul_(255)


def _motion_blur(x, c, draws):
    """imagecorruptions' re-implementation of ImageMagick's motion blur (make_cifar_c calls Wand)."""
    radius, sigma = c
    angles = draws.uniform(-45, 45)
    return motion_blur_planes(x, radius, sigma, angles).clamp_(0, 255)


def _zoom_blur(x, c, draws):
    """Every factor's clipped zoom and the average with the image, as one set of per-pixel taps on the levels."""
    return zoom_blur_planes(x, np.arange(*c)).clamp_(0, 255)


def _snow(x, c, draws):
    mean, std, zoom, threshold, radius, sigma, blend = c
    h, w = x.shape[2:]
    layers = draws.normal(loc=mean, scale=std, size=(h, w))
    angles = draws.uniform(-135, -45)
    layer = clipped_zoom(to_device(layers, x), zoom)
    layer = torch.where(layer < threshold, 0.0, layer)
    layer = (layer.clamp(0, 1) * 255).floor()  # .astype(np.uint8) before the PNG that goes to ImageMagick
    layer = motion_blur_planes(layer[:, None], radius, sigma, angles)
    layer = layer.round().float() / 255  # ImageMagick's 8-bit PNG, in float32 as the image (mixed is slow)
    unit = x / 255
    gray = 0.299 * unit[:, 0:1] + 0.587 * unit[:, 1:2] + 0.114 * unit[:, 2:3]  # cv2.COLOR_RGB2GRAY
    lifted = torch.maximum(unit, gray * 1.5 + 0.5).mul_(1 - blend)
    unit = unit.mul_(blend).add_(lifted)  # in place from here: each fresh image-sized tensor costs page faults
    return unit.add_(layer).add_(layer.flip(-1, -2)).clamp_(0, 1).mul_(255)


FROST_FILE = Path(__file__).resolve().parent / "corruptions_frost.npz"


FROST_TEXTURES = ("frost1", "frost2", "frost3", "frost4", "frost5")


@lru_cache(maxsize=1)
def frost_textures() -> tuple[np.ndarray, ...]:
    """The reference's frost1..frost5 after cv2.resize(fx=0.2, fy=0.2), RGB uint8 (H, W, 3)."""
    with np.load(FROST_FILE, allow_pickle=False) as archive:
        return tuple(archive[name] for name in FROST_TEXTURES)


def _frost(x, c, draws):
    h, w = x.shape[2:]
    textures = frost_textures()
    if min(min(t.shape[:2]) for t in textures) <= max(h, w):
        raise UsageError(f"frost textures are as small as {min(min(t.shape[:2]) for t in textures)} pixels; "
                         f"images of {w}x{h} are too big")
    chosen = draws.integers(len(textures))
    heights = np.array([t.shape[0] for t in textures])[chosen]
    widths = np.array([t.shape[1] for t in textures])[chosen]
    tops, lefts = draws.integers(0, heights - h), draws.integers(0, widths - w)
    crops = [textures[k][top:top + h, left:left + w] for k, top, left in zip(chosen, tops, lefts)]
    frost = to_device(np.stack(crops).transpose(0, 3, 1, 2), x)
    # float64: 0.9 x + 0.4 f lands on integers; in place, since fresh batch-sized tensors cost page faults
    return x.double().mul_(c[0]).add_(frost.double().mul_(c[1])).clamp_(0, 255)


def _plasma_fractals(draws: Draws, mapsize: int, wibbledecay: float) -> np.ndarray:
    """make_cifar_c's plasma_fractal (diamond-square) for every image at once, in float64, with each
    image's uniform draws taken in the reference's order, so the maps are the reference's bit for bit."""
    n = len(draws)
    steps = []
    stepsize = mapsize
    while stepsize >= 2:
        steps.append(stepsize)
        stepsize //= 2
    sizes = [(mapsize // s) ** 2 for s in steps]
    uniforms = draws.random(3 * sum(sizes))
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


def _fog(x, c, draws):
    h, w = x.shape[2:]
    mapsize = 1 << (max(h, w) - 1).bit_length()
    plasma = to_device(_plasma_fractals(draws, mapsize, c[1])[:, :h, :w], x, torch.float64)[:, None]
    unit = x.double().div_(255)  # float64, as the reference: cheap here, and it keeps the floor where theirs falls
    max_value = unit.amax(dim=(1, 2, 3), keepdim=True)
    return unit.add_(plasma * c[0]).mul_(max_value).div_(max_value + c[0]).clamp_(0, 1).mul_(255)


def _brightness(x, c, draws):
    """skimage's HSV round trip with the value raised by c, in float64 as the reference computes it."""
    hue, saturation, value = rgb2hsv(x.double().div_(255))
    return hsv2rgb(hue, saturation, (value + c).clamp_(0, 1)).clamp_(0, 1).mul_(255)


def _saturate(x, c, draws):
    """skimage's HSV round trip with the saturation scaled by a and raised by b, in float64."""
    hue, saturation, value = rgb2hsv(x.double().div_(255))
    return hsv2rgb(hue, (saturation * c[0] + c[1]).clamp_(0, 1), value).clamp_(0, 1).mul_(255)


def _contrast(x, c, draws):
    unit = x.double()
    # the levels' sum is exact in any order, so an image's mean never depends on its batch
    means = unit.sum(dim=(2, 3), keepdim=True) / (x.shape[2] * x.shape[3]) / 255
    return unit.div_(255).sub_(means).mul_(c).add_(means).clamp_(0, 1).mul_(255)


def _jpeg_compression(x, c, draws):
    images = x.to(device="cpu", dtype=torch.uint8)
    return jpeg_round_trip(images, c).to(device=x.device, dtype=torch.float32)


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


def _box_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """`_pil_box_coefficients` as taps: each output sample's sources (T, out) and weights, padded with zeros."""
    matrix = _pil_box_coefficients(in_size, out_size)
    count = int((matrix != 0).sum(1).max())
    sources = np.zeros((count, out_size), dtype=np.int64)
    weights = np.zeros((count, out_size), dtype=np.int64)
    for out, row in enumerate(matrix):
        nonzero = np.flatnonzero(row)
        sources[:len(nonzero), out] = nonzero
        weights[:len(nonzero), out] = row[nonzero]
    return sources, weights


@cache
def _pixelate_passes(h: int, w: int, small_h: int, small_w: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """PIL's two BOX resizes (each horizontal, then vertical) as passes over pixel-major planes: per pass,
    every output pixel's source pixels (T, out pixels) and integer weights."""
    passes = []
    for (rows, cols), (size, new_size), horizontal in (
            ((h, w), (w, small_w), True), ((h, small_w), (h, small_h), False),
            ((small_h, small_w), (small_w, w), True), ((small_h, w), (small_h, h), False)):
        sources, weights = _box_taps(size, new_size)
        if horizontal:  # pixel (y, x') reads (y, source of x') of a rows x cols image
            pixels = np.arange(rows)[None, :, None] * cols + sources[:, None, :]
            weights = np.broadcast_to(weights[:, None, :], pixels.shape)
        else:  # pixel (y', x) reads (source of y', x)
            pixels = sources[:, :, None] * cols + np.arange(cols)[None, None, :]
            weights = np.broadcast_to(weights[:, :, None], pixels.shape)
        count = pixels.shape[0]
        passes.append((torch.from_numpy(pixels.reshape(count, -1).copy()),
                       torch.from_numpy(weights.reshape(count, -1, 1).astype(np.float64))))
    return passes


def _box_pass(pixels: torch.Tensor, sources: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One PIL BOX pass over pixel-major (pixels, planes) uint8 levels in float64: integer tap sums (exact in
    float64, so their order cannot change them), + 2**21, >> 22, clipped to uint8. A pass whose every pixel
    takes one source at full weight (each enlargement) is that copy: (v 2**22 + 2**21) >> 22 = v."""
    if len(sources) == 1 and bool((weights == 1 << 22).all()):
        return pixels.index_select(0, sources[0])
    out = pixels.index_select(0, sources[0]).mul_(weights[0])
    for tap in range(1, len(sources)):
        out.add_(pixels.index_select(0, sources[tap]).mul_(weights[tap]))
    return out.add_(1 << 21).mul_(2.0 ** -22).floor_().clamp_(0, 255)


def _pixelate(x, c, draws):
    """PIL's resize(BOX) to `c` of the side and back, pixel-major (a pass's sources are whole rows of planes:
    contiguous copies, where a pass along the last axis of (N, 3, H, W) was a matrix product or a gather)."""
    n, channels, h, w = x.shape
    pixels = torch.empty(h * w, n * channels, dtype=torch.float64, device=x.device)
    pixels.copy_(x.reshape(n * channels, h * w).T)
    for sources, weights in _pixelate_passes(h, w, int(h * c), int(w * c)):
        pixels = _box_pass(pixels, sources.to(x.device), weights.to(x.device))
    return pixels.T.reshape(n, channels, h, w)


def elastic_affine(shape, c, draws):
    """elastic_transform's random affine warp: cv2.getAffineTransform of three jittered points, (N, 2, 3)."""
    h, w = shape[2:]
    jitter = c[2] * min(h, w)
    center = np.float32([h, w]) // 2
    square = min(h, w) // 3
    pts1 = np.float32([center + square, [center[0] + square, center[1] - square], center - square])
    affine = draws.uniform(-jitter, jitter, size=pts1.shape).astype(np.float32)
    pts2 = pts1[None] + affine  # (N, 3, 2) float32, as (x, y) pairs
    system = np.concatenate([pts1.astype(np.float64), np.ones((3, 1))], axis=1)  # cv2.getAffineTransform
    return np.linalg.solve(system[None], pts2.astype(np.float64)).transpose(0, 2, 1)


def _elastic_plan(x, c, draws):
    """The host-side half of elastic_transform: where cv2.warpAffine samples (integer (y, x) and float32
    weights of the 1/32-pixel grid) and the smoothed displacement field (dx, dy) float64, (N, 2, H, W)."""
    h, w = x.shape[2:]
    alpha, sigma = (value * min(h, w) for value in c[:2])
    matrices = elastic_affine(x.shape, c, draws)
    raw = draws.uniform(-1, 1, size=(2, h, w))  # the dx's, then the dy's: two (h, w) draws in a row
    sy, sx, fy, fx = affine_sources(matrices, h, w)
    table = np.float32(np.arange(32)) / np.float32(32)  # cv2's INTER_TAB_SIZE linear weights, float32
    # scipy.ndimage.gaussian_filter(raw, (0, 0, sigma, sigma), mode="reflect", truncate=3), bit for bit
    smooth = gaussian_planes(raw, gaussian_kernel1d(sigma, truncate=3), False) if sigma > 0 else raw
    displacement = (smooth * alpha).astype(np.float32).astype(np.float64)
    return sy, sx, table[fy], table[fx], displacement


def _elastic_transform(x, c, draws):
    """A random affine warp (cv2.warpAffine, reflect-101), then a smooth random displacement field
    (scipy.ndimage.map_coordinates, order 1, 'reflect'), both as gathers."""
    h, w = x.shape[2:]
    sy, sx, wy, wx, displacement = _elastic_plan(x, c, draws)
    warped = bilinear_gather(x / 255, sy, sx, wy, wx, reflect101)
    rows = np.arange(h)[None, :, None] + displacement[:, 1]
    cols = np.arange(w)[None, None, :] + displacement[:, 0]
    y0, x0 = np.floor(rows), np.floor(cols)
    out = bilinear_gather(warped, y0.astype(np.int64), x0.astype(np.int64), rows - y0, cols - x0, reflect,
                           dtype=torch.float64)
    return out.clamp_(0, 1).mul_(255)


def _gaussian_nearest(planes, sigma):
    """skimage's gaussian(planes[k], sigma) of every (H, W) plane, in the planes' dtype: scipy's gaussian_filter
    (truncate 4, 'nearest'), bit for bit."""
    return gaussian_planes(planes[:, None], gaussian_kernel1d(sigma), True)[:, 0]


def _spatter(x, c, draws):
    mean, std, sigma, threshold, intensity, mud = c
    h, w = x.shape[2:]
    liquid = draws.normal(loc=mean, scale=std, size=(h, w))
    liquid = _gaussian_nearest(liquid, sigma)
    liquid[liquid < threshold] = 0
    unit = x / 255
    if mud == 0:
        m = water_masks((liquid * 255).astype(np.uint8))
        with np.errstate(invalid="ignore", divide="ignore"):
            m /= m.max(axis=(1, 2), keepdims=True)
            m *= intensity
        mask = to_device(m, x)[:, None]
        # the reference adds (175, 238, 238) / 255 in "BGR" order to an RGB image: red gets 175
        color = torch.tensor([175 / 255, 238 / 255, 238 / 255], device=x.device).view(1, 3, 1, 1)
        return unit.add_(mask * color).clamp_(0, 1).mul_(255).nan_to_num_(nan=0.0)
    m = (liquid > threshold).astype(np.float32)
    m = _gaussian_nearest(m, intensity)
    m[m < 0.8] = 0
    mask = to_device(m, x)[:, None]
    color = torch.tensor([63 / 255, 42 / 255, 20 / 255], device=x.device).view(1, 3, 1, 1) * mask
    return unit.mul_(1 - mask).add_(color).clamp_(0, 1).mul_(255)


FUNCTIONS = {
    "gaussian_noise": level_noise("gaussian_noise"), "shot_noise": level_noise("shot_noise"),
    "impulse_noise": level_noise("impulse_noise"),
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur, "zoom_blur": _zoom_blur,
    "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness, "contrast": _contrast,
    "elastic_transform": _elastic_transform, "pixelate": _pixelate, "jpeg_compression": _jpeg_compression,
    "speckle_noise": level_noise("speckle_noise"), "gaussian_blur": _gaussian_blur_corruption, "spatter": _spatter,
    "saturate": _saturate,
}
