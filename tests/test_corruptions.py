"""CIFAR-10-C corruptions: every corruption at every severity against make_cifar_c.py transcribed image by
image (tests/corruption_reference.py, handed each image's view of the batch's draws; the four per-pixel
noises are checked in distribution in test_corruption_noise.py), values worked out by hand,
subsets and shards, and the official-file loader with its refusals.

Tolerance. jpeg, pixelate, frost, fog, brightness and saturate do the reference's own arithmetic
(integer, or float64 as numpy does it) and must match bit for bit; on the CPU so must the compiled
kernels of glass blur, Gaussian blur, motion blur, elastic and spatter. The others (and those five's
tensor versions, what a GPU runs) work in float32 where the reference works in float64, or sum in another
order; the reference then truncates to uint8, so a result within ~1e-4 of an integer can land one
level apart: we allow one level on at most 5% of the values (seen: at most 2%, defocus blur 5).
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import corruption_reference as R
import numpy as np
import pytest
import torch

from robustbench_mm.data import corruptions as C
from robustbench_mm.data.corruption_cpu import CPU_KERNELS
from robustbench_mm.data.corruption_families import frost_textures
from robustbench_mm.data.corruption_jpeg import round_trip_pil, round_trip_torchvision
from robustbench_mm.errors import UsageError

EXACT = {"pixelate", "jpeg_compression", "frost", "fog", "brightness", "saturate"}
# the compiled CPU kernels that redo the reference's float64 (or OpenCV's integer) arithmetic op for op
EXACT_ON_CPU = EXACT | {"glass_blur", "gaussian_blur", "motion_blur", "elastic_transform", "spatter"}
NEEDS = {  # test-only libraries each reference calls (make_cifar_c.py's own)
    "impulse_noise": ("skimage",), "gaussian_blur": ("skimage",), "glass_blur": ("skimage",),
    "brightness": ("skimage",), "saturate": ("skimage",), "defocus_blur": ("cv2",), "snow": ("cv2",),
    "spatter": ("cv2", "skimage"), "elastic_transform": ("cv2", "skimage"),
}
SEED = 7


def sample_images(n: int = 3, size: int = 32) -> np.ndarray:
    """Smooth colour waves plus noise, a flat gray patch and a black corner: (n, size, size, 3) uint8."""
    rng = np.random.default_rng(2024)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for k in range(n):
        waves = np.stack([np.sin((5 + 2 * k) * xx + c) * np.cos((3 + k) * yy + 2 * c) for c in range(3)], -1)
        image = (0.45 * waves + 0.5 + rng.normal(0, 0.07, waves.shape)).clip(0, 1)
        image[4:10, 20:28] = 0.5
        image[-5:, :5] = 0
        out.append(np.uint8(image * 255))
    return np.stack(out)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def to_uint8(images: torch.Tensor) -> np.ndarray:
    levels = (images * 255).round()
    assert torch.equal(levels, images * 255) or torch.allclose(levels, images * 255, atol=1e-4)
    return levels.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def need(name: str) -> None:
    for module in NEEDS.get(name, ()):
        pytest.importorskip(module)
    if name == "elastic_transform":
        import cv2
        major, minor = (int(part) for part in cv2.__version__.split(".")[:2])
        if (major, minor) >= (4, 11):
            pytest.skip(f"OpenCV {cv2.__version__}'s warpAffine samples at float positions; the reference's "
                        "(and CIFAR-10-C's) OpenCV rounded them to 1/32 pixel: install opencv-python-headless<4.11")


@pytest.fixture(scope="module")
def images():
    return sample_images()


# sampled at the uint8 output from the reference's exact distribution, not value for value:
# tests/test_corruption_noise.py checks them
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")


# the compiled CPU kernel of each corruption that has one, and the tensor version a GPU runs
VERSIONS = [(name, "cpu") for name in C.ALL_CORRUPTIONS if name not in NOISES] + [
    (name, "tensor") for name in C.ALL_CORRUPTIONS if name in CPU_KERNELS and name not in NOISES]


@pytest.mark.parametrize("severity", C.SEVERITIES)
@pytest.mark.parametrize("name, version", VERSIONS)
def test_matches_reference(name, version, severity, images, monkeypatch):
    need(name)
    if version == "tensor":
        monkeypatch.setattr(C, "CPU_KERNELS", {})
    ours = to_uint8(C.corrupt(to_tensor(images), name, severity, seed=SEED))
    reference = R.reference(images, name, severity, C.generators(SEED, name, severity, range(len(images))))
    difference = np.abs(ours.astype(int) - reference.astype(int))
    if name in (EXACT_ON_CPU if version == "cpu" else EXACT):
        assert difference.max() == 0, f"{name} {severity}: {np.count_nonzero(difference)} values differ"
    else:
        assert difference.max() <= 1, f"{name} {severity}: off by {difference.max()}"
        assert (difference > 0).mean() <= 0.05, f"{name} {severity}: {(difference > 0).mean():.1%} off by one"
    assert (ours != images).any(), f"{name} {severity} changed nothing"


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_compiled_hsv_is_the_tensor_version_on_every_kind_of_colour(name, monkeypatch):
    """Every level in steps of 5 (0 and 255 included) for each channel: grays, ties for the maximum, every
    hue sector, black and white, all severities. The tensor version is the one checked against skimage."""
    steps = np.arange(0, 256, 5, dtype=np.uint8)
    colours = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)  # 52**3 colours
    images = to_tensor(colours.reshape(1, 1, -1, 3))  # one image a row of pixels: the map is per pixel
    compiled = {s: C.corrupt(images, name, s) for s in C.SEVERITIES}
    monkeypatch.setattr(C, "CPU_KERNELS", {})
    for severity in C.SEVERITIES:
        assert torch.equal(compiled[severity], C.corrupt(images, name, severity)), f"{name} {severity}"


@pytest.mark.parametrize("codec", [round_trip_torchvision, round_trip_pil])
def test_both_jpeg_codecs_are_pils_save_and_open(codec, images):
    """torchvision's batched codec is the one used while torchvision has it, PIL's otherwise: both must give
    the pixels of PIL's save(quality) and Image.open, which make_cifar_c.py calls."""
    from PIL import Image

    for quality in C.PARAMETERS["jpeg_compression"]:
        expected = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "JPEG", quality=quality)
            expected.append(np.asarray(Image.open(buffer)))
        out = codec(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), quality)
        assert np.array_equal(out.permute(0, 2, 3, 1).numpy(), np.stack(expected)), quality


@pytest.mark.parametrize("name", ["snow", "spatter"])
def test_compiled_kernel_is_the_tensor_version(name, monkeypatch):
    """These kernels redo the tensor version's float32 steps one image at a time (snow's streaks sum in float64,
    which lands on the same uint8 levels here): the same images, so the tolerance above covers the GPU too."""
    images = to_tensor(sample_images(6))
    compiled = [C.corrupt(images, name, severity, seed=SEED) for severity in C.SEVERITIES]
    monkeypatch.setattr(C, "CPU_KERNELS", {})
    for severity, expected in zip(C.SEVERITIES, compiled):
        assert torch.equal(C.corrupt(images, name, severity, seed=SEED), expected), severity


def test_constants_are_make_cifar_c():
    assert len(C.CORRUPTIONS) == 15 and len(C.EXTRA_CORRUPTIONS) == 4
    assert set(C.PARAMETERS) == set(C.LABELS) == set(C.ALL_CORRUPTIONS) == set(C.CORRUPTION_IDS)
    assert all(len(C.PARAMETERS[name]) == 5 for name in C.ALL_CORRUPTIONS)
    # a few values from make_cifar_c.py (ImageNet's and imagecorruptions' differ for every one of them)
    assert C.PARAMETERS["gaussian_noise"][0] == 0.04 and C.PARAMETERS["shot_noise"][4] == 50
    assert C.PARAMETERS["jpeg_compression"] == (80, 65, 58, 50, 40)
    assert C.PARAMETERS["pixelate"] == (0.95, 0.9, 0.85, 0.75, 0.65)
    assert C.PARAMETERS["contrast"] == (0.75, 0.5, 0.4, 0.3, 0.15)
    assert C.PARAMETERS["frost"][4] == (0.75, 0.45) and C.PARAMETERS["fog"][4] == (1.5, 1.75)
    assert len(np.arange(*C.PARAMETERS["zoom_blur"][0])) == 7  # np.arange(1, 1.06, 0.01) reaches 1.06


# ------------------------------------------------------------------------------------------ by hand

def test_brightness_by_hand():
    """Severity 1 adds 0.05 = 12.75/255 to the HSV value; hue and saturation stay, so every channel
    scales by new value / value: (51, 102, 153) -> value 165.75, factor 165.75/153 -> (55.25, 110.5,
    165.75) -> truncated (55, 110, 165). Black has no hue: it turns gray 12.75 -> 12. White stays."""
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, :16] = (51, 102, 153)
    image[0, 16:, :16] = 255
    out = to_uint8(C.corrupt(to_tensor(image), "brightness", 1))
    assert tuple(out[0, 0, 0]) == (55, 110, 165)
    assert tuple(out[0, 20, 0]) == (255, 255, 255)
    assert tuple(out[0, 20, 20]) == (12, 12, 12)


def test_contrast_by_hand():
    """Severity 1: (x - channel mean) * 0.75 + mean. Red half 0, half 102: mean 51 -> 12.75, 89.25 -> 12, 89;
    green all 200 stays 200; blue a quarter 255, the rest 0: mean 63.75 -> 207.1875, 15.9375 -> 207, 15."""
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, 16:, :, 0] = 102
    image[0, :, :, 1] = 200
    image[0, :16, :16, 2] = 255
    out = to_uint8(C.corrupt(to_tensor(image), "contrast", 1))
    assert tuple(out[0, 0, 0]) == (12, 200, 207)
    assert tuple(out[0, 31, 31]) == (89, 200, 15)


def test_pixelate_by_hand():
    """Severity 4: PIL BOX 32 -> 24 -> 32. Shrinking, output column 1 (centre 2.0, half-width 2/3)
    averages input columns 1 and 2; column 0 takes column 0 alone. Growing, output columns 1 and 2
    (centres 1.125, 1.875) both take small column 1. So a lone 240 in column 1 becomes 120 in columns
    1 and 2 and 0 everywhere else."""
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[0, :, 1] = 240
    out = to_uint8(C.corrupt(to_tensor(image), "pixelate", 4))
    expected = np.zeros(32, np.uint8)
    expected[1:3] = 120
    assert (out[0] == expected[None, :, None]).all()


# ------------------------------------------------------------------------------------------ seeding

@pytest.mark.parametrize("name", C.ALL_CORRUPTIONS)
def test_subset_and_shards_give_the_whole_run(name):
    images = to_tensor(sample_images(5))
    whole = C.corrupt(images, name, 3, seed=SEED)
    subset = C.corrupt(images[[4, 1]], name, 3, seed=SEED, indices=[4, 1])
    assert torch.equal(subset, whole[[4, 1]])
    shards = torch.cat([C.corrupt(images[:2], name, 3, seed=SEED, indices=range(2)),
                        C.corrupt(images[2:], name, 3, seed=SEED, indices=range(2, 5))])
    assert torch.equal(shards, whole)
    if name not in ("brightness", "contrast", "pixelate", "jpeg_compression", "defocus_blur", "zoom_blur",
                    "gaussian_blur", "saturate"):  # the deterministic ones
        assert not torch.equal(C.corrupt(images, name, 3, seed=SEED + 1), whole)
        assert not torch.equal(C.corrupt(images[:1], name, 3, seed=SEED, indices=[1]), whole[:1])


def test_refuses_bad_arguments():
    images = to_tensor(sample_images(1))
    with pytest.raises(UsageError, match="corruption"):
        C.corrupt(images, "rain", 1)
    with pytest.raises(UsageError, match="severity"):
        C.corrupt(images, "fog", 6)
    with pytest.raises(UsageError, match="indices"):
        C.corrupt(images, "fog", 1, indices=[0, 1])
    with pytest.raises(UsageError, match="shape"):
        C.corrupt(images[:, :1], "fog", 1)


def test_frost_textures_are_the_references_shrunk():
    """Our shipped textures equal cv2.resize(cv2.imread(frostK), fx=0.2, fy=0.2) of the images
    imagecorruptions ships (the same files as hendrycks/robustness's), BGR turned RGB."""
    cv2 = pytest.importorskip("cv2")
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or spec.origin is None:
        pytest.skip("imagecorruptions (its frost images) is not installed")
    folder = Path(spec.origin).parent / "frost"
    for k, texture in enumerate(frost_textures(), start=1):
        path = next(folder.glob(f"frost{k}.*"))
        shrunk = cv2.resize(cv2.imread(str(path)), (0, 0), fx=0.2, fy=0.2)[..., ::-1]
        assert np.array_equal(texture, shrunk), path.name


# ------------------------------------------------------------------------------------------ official files

ROWS = 4  # images per severity in the fabricated files (10000 in the real ones)


def write_official(folder: Path, name="fog", images=None, labels=None):
    clean = np.array([3, 1, 4, 1], dtype=np.int64)
    if images is None:
        images = np.arange(5 * ROWS * 32 * 32 * 3, dtype=np.int64).reshape(5 * ROWS, 32, 32, 3).astype(np.uint8)
    if labels is None:
        labels = np.tile(clean, 5).astype(np.uint8)
    np.save(folder / f"{name}.npy", images)
    np.save(folder / "labels.npy", labels)
    return clean, images


def test_load_official_reads_a_severity(tmp_path):
    clean, images = write_official(tmp_path)
    out = C.load_official(tmp_path, "cifar10", "fog", 3, clean, images_per_severity=ROWS)
    assert isinstance(out, np.memmap) and out.dtype == np.uint8
    assert np.array_equal(out, images[2 * ROWS:3 * ROWS])


@pytest.mark.parametrize("case, message", [
    ("shape", "expected shape \\(20, 32, 32, 3\\), got \\(20, 32, 32\\)"),
    ("dtype", "expected dtype uint8, got float32"),
    ("labels", "are not the clean cifar10 test labels"),
    ("pickle", "not a readable .npy array"),
    ("missing", "no such file"),
])
def test_load_official_refuses_a_bad_file(tmp_path, case, message):
    clean, images = write_official(tmp_path)
    if case == "shape":
        np.save(tmp_path / "fog.npy", images[..., 0])
    elif case == "dtype":
        np.save(tmp_path / "fog.npy", images.astype(np.float32))
    elif case == "labels":
        labels = np.tile(clean, 5)
        labels[2 * ROWS + 1] = 9
        np.save(tmp_path / "labels.npy", labels)
    elif case == "pickle":
        np.save(tmp_path / "fog.npy", np.array([{"not": "images"}], dtype=object), allow_pickle=True)
    else:
        (tmp_path / "fog.npy").unlink()
    with pytest.raises(UsageError, match=message) as caught:
        C.load_official(tmp_path, "cifar10", "fog", 3, clean, images_per_severity=ROWS)
    assert "\n" not in str(caught.value)
    assert ("labels.npy" if case == "labels" else "fog.npy") in str(caught.value)
