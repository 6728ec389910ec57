"""The compiled CPU kernels against the library calls they stand for, bit for bit, on inputs that reach
every branch: scipy's Gaussian filter (both borders, both dtypes, every sigma the corruptions use) and
OpenCV's chain in spatter's water branch (Canny, distance transform, blur, equalizeHist, filter2D) on
liquid layers from empty to dense. The corruptions built on them are checked against make_cifar_c.py
in test_corruptions.py; these reach far more inputs than its three images."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import scipy.ndimage as ndi

from robustbench_mm.data.corruption_filters import gaussian_planes
from robustbench_mm.data.corruption_kernels import compiled
from robustbench_mm.data.corruption_ops import gaussian_kernel1d
from robustbench_mm.data.corruption_spatter import water_masks

# (sigma, truncate): elastic's displacement field (sigma 0.2 to 0.03 of 32 pixels, truncate 3), spatter's
# liquid and mud (truncate 4, skimage's default)
SIGMAS = [(6.4, 3), (1.92, 3), (0.96, 3), (0.7, 4), (1.0, 4), (0.5, 4), (0.6, 4)]


@pytest.mark.parametrize("nearest", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gaussian_planes_is_scipys_gaussian_filter(nearest, dtype):
    rng = np.random.default_rng(3)
    fields = rng.uniform(-1, 1, (3, 2, 32, 24))
    if dtype == np.float32:  # spatter's mud: a 0/1 mask in float32, rounded to float32 after each axis
        fields = (fields > 0.3).astype(np.float32)
    for sigma, truncate in SIGMAS:
        expected = ndi.gaussian_filter(fields, sigma=(0, 0, sigma, sigma), truncate=truncate,
                                       mode="nearest" if nearest else "reflect")
        out = gaussian_planes(fields, gaussian_kernel1d(sigma, truncate), nearest)
        assert out.dtype == expected.dtype
        assert np.array_equal(out, expected), (sigma, truncate)


def opencv_water_mask(liquid8: np.ndarray) -> np.ndarray:
    """make_cifar_c.py's water branch, as it calls OpenCV, up to m (before m /= max)."""
    import cv2

    dist = 255 - cv2.Canny(liquid8, 50, 150)
    dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
    dist = cv2.equalizeHist(dist)
    dist = cv2.filter2D(dist, cv2.CV_8U, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]]))
    dist = cv2.blur(dist, (3, 3)).astype(np.float32)
    return liquid8 * dist


def test_water_masks_are_opencvs_chain():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    layers = []
    for std in (0.1, 0.3, 0.6):  # sparse, CIFAR-10-C's, dense
        liquid = ndi.gaussian_filter(rng.normal(0.65, std, (20, 32, 32)), sigma=(0, 0.8, 0.8), mode="nearest")
        liquid[liquid < 0.69] = 0
        layers.append((liquid.clip(0, 1) * 255).astype(np.uint8))
    layers.append(np.zeros((1, 32, 32), np.uint8))  # no edge at all: every distance is "far"
    layers.append(np.full((1, 32, 32), 200, np.uint8))
    liquid8 = np.concatenate(layers)
    expected = np.stack([opencv_water_mask(layer) for layer in liquid8])
    out = water_masks(liquid8)
    assert out.dtype == np.float32
    assert np.array_equal(out, expected), f"{np.count_nonzero(out != expected)} values differ"
    assert (out > 0).mean() > 0.05  # the chain did not collapse to zeros


def test_a_kernel_numba_cannot_cache_is_still_compiled():
    """numba caches machine code beside the source or in the user's cache folder; where neither is writable (a
    read-only install and home) it refuses cache=True at import, as it does for code without a source file,
    which stands in for that here: the kernel is then compiled without a cache, not left broken."""
    namespace = {}
    exec("def double(x):\n    return 2 * x\n", namespace)
    with pytest.raises(RuntimeError, match="cannot cache"):
        numba.njit(cache=True)(namespace["double"])
    assert compiled()(namespace["double"])(21) == 42
