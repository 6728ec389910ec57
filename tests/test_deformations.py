"""The deformation maths, checked against hand-computed images and scipy: maps, conventions, seeds and the warp."""

from __future__ import annotations

import math

import pytest
import torch

from robustbench_mm.config import DeformConfig
from robustbench_mm.data.deformations import (
    DEFORM_SETS, deform, draw_parameters, plan_warp, resolve_set_names, rotation_maps, set_matrices, set_seed,
    shear_maps, zoom_maps)
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
    out = deform(x, rotation_maps(degrees(90, 90)), interpolation)
    assert torch.allclose(out, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    assert not torch.allclose(out, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)
    minus = deform(x, rotation_maps(degrees(-90, -90)), interpolation)
    assert torch.allclose(minus, torch.rot90(x, -1, dims=(2, 3)), atol=1e-5)


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_shear_zero_rotation_zero_and_zoom_100_are_the_identity(interpolation):
    x = asymmetric_images(size=32)
    for maps in (shear_maps(degrees(0, 0)), rotation_maps(degrees(0, 0)), zoom_maps(degrees(100, 100))):
        out = deform(x, maps, interpolation)
        if interpolation == "nearest":
            assert torch.equal(out, x)
        else:
            assert torch.allclose(out, x, atol=1e-6)


def test_authors_shear_matrix_on_row_column_coordinates():
    # [[1, -sin s], [0, cos s]] on (row, column): at s = 180° the column is mirrored, rows stay.
    x = asymmetric_images()
    assert torch.equal(deform(x, shear_maps(degrees(180, 180))), x.flip(3))
    # Sampled column = cos(s)·column: at s = 60° the middle half of each row is stretched to full width.
    assert torch.allclose(shear_maps(degrees(60)), torch.tensor([[[1.0, -math.sqrt(3) / 2], [0.0, 0.5]]],
                                                                dtype=torch.float64), atol=1e-12)


def test_shear_moves_rows_by_sin_s_times_column():
    """A single bright pixel right of the centre lands where the authors' matrix says, worked out by hand."""
    image = torch.zeros(1, 1, 8, 8)
    image[0, 0, 3, 5] = 1.0
    out = deform(image, shear_maps(degrees(30)))
    # Centre 3.5. Output (r, c) samples column 3.5 + cos30·(c - 3.5), which rounds to 5 for c = 5 only,
    # and row 3.5 + (r - 3.5) - sin30·(c - 3.5) = r - 0.75 there, which rounds to 3 for r = 4 only.
    # With +sin the pixel would land in row 2 instead.
    assert (out[0, 0] == 1).nonzero().tolist() == [[4, 5]]
    assert out.sum() == 1


def test_zoom_in_50_percent_of_a_checkerboard_by_hand():
    checker = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2).float()
    out = deform(checker.expand(1, 1, 8, 8), zoom_maps(degrees(50)))[0, 0]
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
    assert torch.equal(deform(marked, zoom_maps(degrees(50))), deform(x, zoom_maps(degrees(50))))


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_zoom_out_180_percent_borders_are_exactly_black(interpolation):
    ones = torch.ones(2, 3, 32, 32)
    out = deform(ones, zoom_maps(degrees(180, 180)), interpolation)
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
    _, maps = set_matrices("rotate-40", 500, 3)
    assert torch.equal(deform(x, maps), deform(x, set_matrices("rotate-40", 500, 3)[1]))


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
    _, maps = set_matrices("rotate-80", 4, 0)
    out = deform(x, maps)
    black = (out == 0).flatten(1).sum(1)
    assert len(set(black.tolist())) == 4  # four angles, four different black corner areas


def test_deform_rejects_non_square_images_and_unknown_interpolation():
    with pytest.raises(ValueError, match="square"):
        deform(torch.zeros(1, 3, 8, 6), zoom_maps(degrees(50)))
    with pytest.raises(UsageError, match="bilinear"):
        deform(torch.zeros(1, 3, 8, 8), zoom_maps(degrees(50)), "cubic")


# ---- the authors' convention, against scipy ------------------------------------------------------

def scipy_reference(images, kind, value, cval=(0.0, 0.0, 0.0), order=0):
    """The authors' warp, written here from their description: scipy's affine_transform per channel,
    (row, column) matrix about centre size / 2 + 0.5, pixels beyond the outermost centres = cval."""
    ndimage = pytest.importorskip("scipy.ndimage")
    import numpy as np

    angle = math.radians(value)
    matrix = {"rotate": [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
              "shear": [[1.0, -math.sin(angle)], [0.0, math.cos(angle)]],
              "zoom": [[value / 100, 0.0], [0.0, value / 100]]}[kind]
    matrix = np.array(matrix)
    size = images.shape[-1]
    centre = np.array([size / 2 + 0.5] * 2)
    offset = centre - matrix @ centre
    return torch.from_numpy(np.stack([
        np.stack([ndimage.affine_transform(channel, matrix, offset, order=order, mode="constant", cval=fill)
                  for channel, fill in zip(image, cval)]) for image in images.double().numpy()]))


# Asymmetric angles (a flipped rotation sign shows), shears in the authors' radians, and every zoom,
# including 40, 80, 120 and 160 %, whose half-pixel ties scipy breaks by its float64 rounding.
AUTHORS_CASES = [("rotate", v) for v in (17.3, -33.1, 58.7, 80.0, -5.0)] + \
                [("shear", math.degrees(r)) for r in (0.5, -1.0, 2.0, 2.5, -3.0)] + \
                [("zoom", k) for k in (20, 40, 60, 80, 120, 140, 160, 180)]
MAPS = {"rotate": rotation_maps, "shear": shear_maps, "zoom": zoom_maps}


@pytest.mark.parametrize("kind, value", AUTHORS_CASES)
def test_authors_convention_is_the_authors_scipy_warp_pixel_for_pixel(kind, value):
    x = asymmetric_images(n=1, size=32).double()
    ours = deform(x, MAPS[kind](degrees(value), "authors"), convention="authors")
    assert torch.equal(ours, scipy_reference(x, kind, value))


@pytest.mark.parametrize("kind, value", [("rotate", 33.1), ("shear", 57.3), ("zoom", 140)])
def test_authors_convention_with_mean_fill_and_bilinear_sampling(kind, value):
    x = asymmetric_images(n=1, size=32).double()
    mean = torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64)
    maps = MAPS[kind](degrees(value), "authors")
    assert torch.equal(deform(x, maps, convention="authors", fill=mean), scipy_reference(x, kind, value, mean.tolist()))
    bilinear = deform(x, maps, "bilinear", "authors", mean)
    assert torch.allclose(bilinear, scipy_reference(x, kind, value, mean.tolist(), order=1), atol=1e-7)


def test_the_two_conventions_differ_where_the_issue_says():
    x = asymmetric_images(n=1, size=32)
    # Zoom 100 % and rotation 0 are the identity in both; at 140 % the centres differ by one pixel.
    for convention in ("ours", "authors"):
        assert torch.equal(deform(x, zoom_maps(degrees(100)), convention=convention), x)
    zoom_ours = deform(x, zoom_maps(degrees(140)), convention="ours")
    zoom_authors = deform(x, zoom_maps(degrees(140)), convention="authors")
    assert not torch.equal(zoom_ours, zoom_authors)
    # The authors' +90 turns clockwise, about (16.5, 16.5): output (r, q) shows source (33 - q, r), which is
    # torch's clockwise rot90 moved two columns right, the two columns it leaves blank. (The outermost rows and
    # columns are left out: cos 90° is 6e-17 in float64, which nudges some source points just past the last
    # pixel centre, where scipy's border blanks them.)
    authors = deform(x, rotation_maps(degrees(90), "authors"), convention="authors")
    assert torch.equal(authors[..., 1:-1, 3:-1], torch.rot90(x, -1, dims=(2, 3))[..., 1:-1, 1:-3])
    assert authors[..., :2].abs().sum() == 0
    # Their border: a source point half a pixel beyond the outer centres is blank; ours samples it.
    ones = torch.ones(1, 1, 32, 32)
    zoom_out = zoom_maps(degrees(100 * 32.4 / 32))  # row 0 samples 16.5 - 1.0125·16.5 < 0 (authors)
    assert deform(ones, zoom_out, convention="authors")[0, 0, 0].sum() == 0
    assert deform(ones, zoom_maps(degrees(100 * 32.4 / 32)), convention="ours")[0, 0, 0].sum() == 32


# ---- ties: the same documented pixels on every device --------------------------------------------

# Under our convention output row r of a 32-pixel zoom by k % samples source row floor(15.5 + k/100·(r - 15.5) + 1/2),
# computed exactly: a source point on a half-pixel goes to the lower (larger) row. These are the rows where it
# matters (2r - 31 a multiple of 5), each pinned to the pixel it must take.
HALF_PIXEL_TIES = {
    40: {3: 11, 8: 13, 13: 15, 18: 17, 23: 19, 28: 21},
    120: {3: 1, 8: 7, 13: 13, 18: 19, 23: 25, 28: 31},
    160: {8: 4, 13: 12, 18: 20, 23: 28},
}


@pytest.mark.parametrize("percent", sorted(HALF_PIXEL_TIES))
def test_half_pixel_zoom_ties_take_fixed_documented_pixels(percent):
    from fractions import Fraction

    rows = torch.arange(32, dtype=torch.float64).view(1, 1, 32, 1).expand(1, 1, 32, 32).contiguous()
    sampled = deform(rows + 1, zoom_maps(degrees(percent)))[0, 0, :, 16] - 1  # -1: black, else the source row
    centre, scale = Fraction(31, 2), Fraction(percent, 100)
    exact = [math.floor(centre + scale * (r - centre) + Fraction(1, 2)) for r in range(32)]
    exact = [row if 0 <= row < 32 else -1 for row in exact]
    assert sampled.long().tolist() == exact
    for r, source in HALF_PIXEL_TIES[percent].items():
        assert centre + scale * (r - centre) == source - Fraction(1, 2)  # really a tie
        assert sampled[r] == source


def test_source_pixels_are_planned_on_the_host_and_only_gathered_on_the_device():
    """The device never computes a coordinate: a nearest warp is nothing but integer source pixels."""
    _, maps = set_matrices("zoom-out-160", 3, 0)
    warp = plan_warp(maps, 32)
    assert warp.index.dtype in (torch.int16, torch.int32) and warp.weights is None
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(warp.apply(x), deform(x, maps))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to compare with")
@pytest.mark.parametrize("convention", ["ours", "authors"])
def test_a_gpu_warps_every_set_to_the_same_pixels_as_the_cpu(convention):
    x = torch.rand(64, 3, 32, 32)
    for name in DEFORM_SETS:
        _, maps = set_matrices(name, 64, 0, convention)
        warp = plan_warp(maps, 32, convention)
        assert torch.equal(warp.to("cuda").apply(x.cuda()).cpu(), warp.apply(x)), name
