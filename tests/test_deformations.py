"""The deformation maths, checked against hand-computed images: matrices, seeds and the batched warp."""

from __future__ import annotations

import math

import pytest
import torch

from robustbench_mm.config import DeformConfig
from robustbench_mm.deformations import (
    DEFORM_SETS, deform, draw_parameters, resolve_set_names, rotation_theta, set_matrices, set_seed, shear_theta,
    zoom_theta,
)
from robustbench_mm.errors import UsageError
from robustbench_mm.paper import TABLE3_SETS, TABLE7


def asymmetric_images(n=2, size=6):
    """Distinct values everywhere, so any mirror, transpose or shift shows."""
    return torch.arange(n * 3 * size * size, dtype=torch.float32).reshape(n, 3, size, size) / (n * 3 * size * size)


def degrees(*values):
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotation_by_90_degrees_is_rot90_counter_clockwise(interpolation):
    x = asymmetric_images()
    out = deform(x, rotation_theta(degrees(90, 90)), interpolation)
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    assert not torch.allclose(out, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)
    minus = deform(x, rotation_theta(degrees(-90, -90)), interpolation)
    assert torch.allclose(minus, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_shear_zero_rotation_zero_and_zoom_100_are_the_identity(interpolation):
    x = asymmetric_images(size=32)
    for theta in (shear_theta(degrees(0, 0)), rotation_theta(degrees(0, 0)), zoom_theta(degrees(100, 100))):
        out = deform(x, theta, interpolation)
        if interpolation == "nearest":
            assert torch.equal(out, x)
        else:
            assert torch.allclose(out, x, atol=1e-6)


def test_authors_shear_matrix_on_row_column_coordinates():
    # [[1, -sin s], [0, cos s]] on (row, column): at s = 180° the column is mirrored, rows stay.
    x = asymmetric_images()
    assert torch.equal(deform(x, shear_theta(degrees(180, 180))), x.flip(3))
    # Sampled column = cos(s)·column: at s = 60° the middle half of each row is stretched to full width.
    assert torch.allclose(shear_theta(degrees(60)), torch.tensor([[[0.5, 0.0, 0.0], [-math.sqrt(3) / 2, 1.0, 0.0]]],
                                                                 dtype=torch.float64), atol=1e-12)


def test_shear_moves_rows_by_sin_s_times_column():
    """A single bright pixel right of the centre lands where the authors' matrix says, worked out by hand."""
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3, 5] = 1.0
    out = deform(image, shear_theta(degrees(30)))
    # Centre 3.5. Output (r, c) samples column 3.5 + cos30·(c - 3.5), which rounds to 5 for c = 5 only,
    # and row 3.5 + (r - 3.5) - sin30·(c - 3.5) = r - 0.75 there, which rounds to 3 for r = 4 only.
    # With +sin the pixel would land in row 2 instead.
    assert (out[0, 0] == 1).nonzero().tolist() == [[4, 5]]
    assert out.sum() == 1


def test_zoom_in_50_percent_of_a_checkerboard_by_hand():
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float()
    out = deform(checker.expand(1, 1, 8, 8), zoom_theta(degrees(50)))[0, 0]
    # The centred 4x4 box (pixels 2..5) enlarged 2x: each pixel becomes a 2x2 block.
    expected = torch.tensor([
        [0, 0, 1, 1, 0, 0, 1, 1],
        [0, 0, 1, 1, 0, 0, 1, 1],
        [1, 1, 0, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0, 1, 1],
        [0, 0, 1, 1, 0, 0, 1, 1],
        [1, 1, 0, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 1, 0, 0],
    ], dtype=torch.float32)
    assert torch.equal(out, expected)


def test_zoom_in_keeps_only_the_centred_box():
    x = torch.rand(1, 3, 32, 32)
    marked = x.clone()
    marked[..., :8, :] = 5.0  # outside the centred 50 % box (rows 8..23)
    marked[..., :, 24:] = 5.0
    assert torch.equal(deform(marked, zoom_theta(degrees(50))), deform(x, zoom_theta(degrees(50))))


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_zoom_out_180_percent_borders_are_exactly_black(interpolation):
    ones = torch.ones(2, 3, 32, 32)
    out = deform(ones, zoom_theta(degrees(180, 180)), interpolation)
    # Output pixel j samples 1.8·(j - 15.5) + 15.5: inside the image for j = 7..24 only (32 / 1.8 = 17.8 pixels).
    assert torch.equal(out[..., :6, :], torch.zeros_like(out[..., :6, :]))
    assert torch.equal(out[..., 26:, :], torch.zeros_like(out[..., 26:, :]))
    assert torch.equal(out[..., :, :6], torch.zeros_like(out[..., :, :6]))
    assert torch.equal(out[..., :, 26:], torch.zeros_like(out[..., :, 26:]))
    assert torch.allclose(out[..., 8:24, 8:24], torch.ones(16, 16), atol=1e-6)
    if interpolation == "nearest":
        expected = torch.zeros(32, 32)
        expected[7:25, 7:25] = 1
        assert torch.equal(out[0, 0], expected)


def test_registry_is_table7_with_the_authors_radian_shears():
    assert list(DEFORM_SETS) == list(TABLE7)
    shears = [s.magnitude for s in DEFORM_SETS.values() if s.kind == "shear"]
    assert shears == pytest.approx([math.degrees(r) for r in (0.5, 1.0, 2.0, 2.5, 3.0)])
    assert DEFORM_SETS["zoom-out-140"].label == "Zoom out (140 %)"
    assert DEFORM_SETS["rotate-60"].label == "Rotation U(-60°, 60°)"


def test_set_selection_all_table3_lists_and_unknown_names():
    assert resolve_set_names("all") == tuple(TABLE7)
    assert resolve_set_names(()) == tuple(TABLE7)
    assert resolve_set_names("table3") == TABLE3_SETS
    assert resolve_set_names(["zoom-out-180,rotate-20", "rotate-20"]) == ("rotate-20", "zoom-out-180")
    assert resolve_set_names("table3,rotate-40") == ("rotate-20", "rotate-40", *TABLE3_SETS[1:])
    with pytest.raises(UsageError, match="unknown deformation set 'rotate-30'.*table3.*rotate-20.*zoom-out-180"):
        resolve_set_names("rotate-20,rotate-30")
    with pytest.raises(UsageError, match="unknown deformation set 'bogus'"):
        DeformConfig(sets=("bogus",))
    with pytest.raises(UsageError, match="--seed"):
        DeformConfig(seed=-1)
    with pytest.raises(UsageError, match="interpolation"):
        DeformConfig(interpolation="bicubic")
    assert DeformConfig(sets=("table3",)).sets == TABLE3_SETS


def test_set_seeds_are_stable_across_processes_and_differ_between_sets():
    # SHA-256 of "seed:name": the same on every machine and Python process (unlike hash()).
    assert set_seed(0, "rotate-20") == 7630016748100310800
    seeds = {set_seed(0, name) for name in DEFORM_SETS} | {set_seed(1, name) for name in DEFORM_SETS}
    assert len(seeds) == 2 * len(DEFORM_SETS)
    assert all(0 <= s < 2 ** 63 for s in seeds)


def test_same_seed_same_set_different_seed_or_set_differs():
    rotate = DEFORM_SETS["rotate-40"]
    a = draw_parameters(rotate, 500, seed=3)
    assert torch.equal(a, draw_parameters(rotate, 500, seed=3))
    assert not torch.equal(a, draw_parameters(rotate, 500, seed=4))
    other = draw_parameters(DEFORM_SETS["rotate-80"], 500, seed=3)
    assert not torch.allclose(other / 2, a)  # its own seed, not a scaled copy of rotate-40's draws
    assert torch.equal(draw_parameters(rotate, 50, seed=3), a[:50])  # a subset keeps its images' deformations
    x = asymmetric_images(n=500, size=8)
    _, theta = set_matrices("rotate-40", 500, 3)
    assert torch.equal(deform(x, theta), deform(x, set_matrices("rotate-40", 500, 3)[1]))


def test_parameters_are_uniform_over_the_range_and_zoom_is_fixed():
    p = draw_parameters(DEFORM_SETS["shear-171.9"], 20000, seed=0)
    magnitude = math.degrees(3.0)
    assert p.abs().max() <= magnitude
    assert p.min() < -0.99 * magnitude and p.max() > 0.99 * magnitude
    assert abs(p.mean().item()) < 0.02 * magnitude
    assert p.std().item() == pytest.approx(magnitude / math.sqrt(3), rel=0.02)
    zoom = draw_parameters(DEFORM_SETS["zoom-in-60"], 5, seed=0)
    assert torch.equal(zoom, torch.full((5,), 60.0, dtype=torch.float64))


def test_each_image_gets_its_own_matrix():
    x = torch.ones(4, 3, 32, 32)
    _, theta = set_matrices("rotate-80", 4, 0)
    out = deform(x, theta)
    black = (out == 0).flatten(1).sum(1)
    assert len(set(black.tolist())) == 4  # four angles, four different black corner areas


def test_deform_rejects_non_square_images_and_unknown_interpolation():
    with pytest.raises(ValueError, match="square"):
        deform(torch.zeros(1, 3, 8, 6), zoom_theta(degrees(50)))
    with pytest.raises(UsageError, match="bilinear"):
        deform(torch.zeros(1, 3, 8, 8), zoom_theta(degrees(50)), "cubic")
