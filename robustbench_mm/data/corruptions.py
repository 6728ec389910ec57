"""CIFAR-10-C style common corruptions (Hendrycks & Dietterich, 2019), batched, seeded per image.

`corrupt(images, name, severity, seed, indices)` applies one corruption at one severity to a batch of
float images in [0, 1], shape (N, 3, H, W), on any device. The parameters are those of the CIFAR
generator, `ImageNet-C/create_c/make_cifar_c.py` in github.com/hendrycks/robustness (not ImageNet's,
nor imagecorruptions' ImageNet-sized ones); they sit in `PARAMETERS` and nowhere else.

Randomness. Every image's random numbers are a pure function of (seed, corruption, severity, index)
where `index` is the image's place in the whole set: a counter-based stream (splitmix64 of a per-image
key and the draw's position, data/corruption_random.py) computed for the whole batch at once on the
host. So an image gets the same corruption in a batch of one, in a subset, in any shard and on any
device. The corruptions that draw a few numbers per image (glass blur, motion blur, snow, frost, fog,
elastic, spatter) draw them in the reference's order and shapes, and `generators` gives the reference
each image's view of the same stream (the tests compare value for value). The per-pixel noises
(Gaussian, shot, speckle, impulse) sample each stored uint8 value from its exact distribution given the
input level (data/corruption_noise.py): the same distribution as the reference's, other draws.

Quantisation. The reference reads uint8 images and writes `np.uint8(result)`, which truncates. So the
input is first rounded to uint8 levels (`round(255 x)`), and the output is `floor(clip(result, 0, 255)) / 255`.
Arithmetic is float64 where it is cheap and the reference's floor depends on it (shot noise, brightness,
saturate, contrast, fog, frost, glass blur's first blur), integer where the reference's is (pixelate's
PIL fixed point, spatter's OpenCV chain), float32 elsewhere; float32 against the reference's float64 can
put a result within ~1e-4 of an integer on its other side: one uint8 level, at most ~2% of values
(defocus blur 5). Filters and zooms are shifted adds and gathers in a fixed order, never a convolution
or matrix product, whose summation order can change with the batch size.

Two versions. On the CPU, eight corruptions run as compiled per-image kernels (numba; data/
corruption_filters.py, corruption_spatter.py, corruption_kernels.py): brightness and saturate, glass,
Gaussian and motion blur, snow, elastic and spatter. They redo the reference's float64 (or OpenCV's
fixed-point) arithmetic op for op, so on the CPU glass, Gaussian and motion blur, elastic and spatter are
make_cifar_c's bit for bit too; snow and spatter follow the tensor version's steps bit for bit. On a GPU,
and for the other corruptions everywhere, the tensor versions of data/corruption_families.py run (the four
noises are sampled by a kernel on the host for any device, and JPEG is libjpeg's on the host).

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

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from robustbench_mm.data.corruption_cpu import CPU_KERNELS
from robustbench_mm.data.corruption_families import FUNCTIONS
from robustbench_mm.data.corruption_random import Draws, ImageDraws, image_draws
from robustbench_mm.data.corruption_random import image_keys as random_keys
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


# On the CPU the tensor versions go through a batch this many pixels per image plane at a time (64 images of
# 32x32): they are chains of memory-bound passes over float64 batches, and a chunk's temporaries stay in cache
# (357 images: pixelate, contrast, frost 10-25% faster). The compiled kernels take the batch at once: their
# loops are per image already.
CHUNK_PIXELS = 64 * 32 * 32

OFFICIAL_IMAGES = 10_000  # rows per severity in CIFAR-10-C / CIFAR-100-C's <corruption>.npy
OFFICIAL_DATASETS = ("cifar10", "cifar100")


# ---------------------------------------------------------------------------------------------- public API

def image_keys(seed: int, name: str, severity: int, indices) -> np.ndarray:
    """Every image's 64-bit key, from (seed, corruption, severity, index in the whole set)."""
    return random_keys(seed, CORRUPTION_IDS[name], severity, [int(i) for i in indices])


def generators(seed: int, name: str, severity: int, indices) -> list[ImageDraws]:
    """Each image's own view of the draws `corrupt` makes for it, with numpy Generator's methods: what the
    per-image reference (tests/corruption_reference.py) is handed to draw the batch's numbers."""
    return image_draws(image_keys(seed, name, severity, indices))


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
    if n == 0:
        return images.float()
    keys = image_keys(seed, name, severity, indices)
    on_cpu = images.device.type == "cpu"
    function = CPU_KERNELS.get(name, FUNCTIONS[name]) if on_cpu else FUNCTIONS[name]
    whole = not on_cpu or name in CPU_KERNELS
    step = n if whole else max(1, CHUNK_PIXELS // images[0, 0].numel())
    with one_thread_on_cpu(images.device):
        # in place after the copy (fresh tensors cost page faults); NCHW-contiguous, which the kernels index
        x = images.float().clamp(0, 1).contiguous().mul_(255).round_()
        parameters = PARAMETERS[name][severity - 1]
        if step >= n:
            return quantise_(function(x, parameters, Draws(keys)))
        out = torch.empty_like(x)
        # every image's result is its own (a subset gives the same), so a CPU batch goes through in chunks
        for start in range(0, n, step):
            part = slice(start, start + step)
            out[part] = quantise_(function(x[part], parameters, Draws(keys[part])))
        return out


@contextmanager
def one_thread_on_cpu(device: torch.device):
    """torch at one thread while a corruption runs on the CPU. Its ops are many small memory-bound passes
    over a batch: a second thread gains little on an idle machine, and where the cores are shared each op
    waits for the other thread to be scheduled (all 19 corruptions of 357 images: 0.8 s at one thread,
    5-9 s at two, on a loaded 2-core machine). The count is restored afterwards; results do not depend on it."""
    previous = torch.get_num_threads()
    if device.type != "cpu" or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def quantise_(values: torch.Tensor) -> torch.Tensor:
    """The reference's `np.uint8(clip(v, 0, 255))`, truncation included, as float32 in [0, 1]; in place when
    `values` is float32 (a corruption's result is its own tensor: a fresh batch-sized one costs page faults)."""
    return values.clamp_(0, 255).floor_().float().div_(255)


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


CORRUPTION_SOURCES = ("auto", "generated", "official")


def resolve_corruption_names(requested, extra: bool = False) -> tuple[str, ...]:
    """'all' (the 15 of CIFAR-10-C's benchmark), corruption names, or a comma-separated mix, plus the 4 extra
    ones when `extra` -> names in make_cifar_c.py's order. An empty selection means the 15."""
    tokens = [requested] if isinstance(requested, str) else list(requested)
    names = [part.strip() for token in tokens for part in str(token).split(",") if part.strip()]
    if tokens and not names:
        raise UsageError(f"--corruptions {', '.join(map(repr, tokens))} names no corruption; give names or 'all' "
                         "(or leave --corruptions out for the 15)")
    chosen: set[str] = set(EXTRA_CORRUPTIONS) if extra else set()
    for name in names or ["all"]:
        if name == "all":
            chosen.update(CORRUPTIONS)
        elif name in ALL_CORRUPTIONS:
            chosen.add(name)
        else:
            raise UsageError(f"unknown corruption {name!r}; valid: all, {', '.join(ALL_CORRUPTIONS)} "
                             "(or a comma-separated list)")
    return tuple(name for name in ALL_CORRUPTIONS if name in chosen)
