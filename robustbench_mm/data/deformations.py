"""The 17 deformation test sets of Table 7: their registry, seeded parameters and the warp.

Every deformation is a linear map about a centre point c, in (row, column) pixel coordinates:
output pixel p shows the source point s = c + A·(p - c). Two conventions say where c is, which
source points count as inside the image, and which way a positive rotation turns:

- ``ours``: c = (size - 1) / 2, the exact centre (15.5 of 32); a source point is inside when it
  lies within the pixel edges, [-0.5, size - 0.5). Rotation by +a turns the image
  counter-clockwise as displayed (+90 equals ``torch.rot90(x, 1, dims=(2, 3))``).
- ``authors``: the authors' ``affine_transforms.py`` (scipy ``affine_transform(order=0,
  mode='constant')``): c = size / 2 + 0.5 (16.5 of 32, one pixel right of and below the exact
  centre); a source point is inside only within the outermost pixel centres, [0, size - 1], so a
  half-pixel rim more is blanked; rotation by +a turns clockwise as displayed (their matrix
  [[cos a, -sin a], [sin a, cos a]] on (row, column)).

In both, shear by s is the authors' [[1, -sin s], [0, cos s]] on (row, column): the sampled row is
row - sin(s)·column and the sampled column is cos(s)·column, so near 180 degrees it is almost a
left-right mirror (why the paper's 171.9-degree set is easier than its 143.2 one). Zoom k % samples
the centred box of k % of the side into the whole image (k < 100 zooms in, k > 100 zooms out);
the paper uses one fixed k per set, so zoom sets draw nothing.

Identical pixels on every device: the source point of every output pixel is computed on the host
in float64 with fixed operation order (`source_points`), rounded to a pixel there, and the device
only gathers (`Warp.apply`). Nearest sampling takes pixel floor(s + 0.5), i.e. a source point
exactly half-way between two pixels takes the lower-right one. Zoom 40, 80, 120 and 160 % put some
source points exactly on such a half-pixel, so how a tie falls is part of the convention:

- ``ours`` snaps source points to a 2^-20 pixel grid first, so an exact half-pixel stays exact
  whatever the float rounding, and always goes to the lower-right pixel;
- ``authors`` keeps scipy's float64 arithmetic (shift = c - A·c, then shift + row·A[:, 0] +
  column·A[:, 1]) unsnapped, because that is what decided their ties: rounding error sends some of
  their half-pixel points one way and some the other.

Fill: black (0), or the dataset's mean pixel (zero after normalization; the authors' only committed
deformation pipeline sheared already-normalized images, whose empty space is therefore the mean).
Nearest sampling is the authors' choice and the default; bilinear blends the four neighbours, a
neighbour outside the image counting as the fill.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from robustbench_mm.data.images import NORMALIZATION
from robustbench_mm.errors import UsageError
from robustbench_mm.paper import TABLE3_SETS

INTERPOLATIONS = ("nearest", "bilinear")
CONVENTIONS = ("ours", "authors")
FILLS = ("black", "mean")
# Source points are snapped to this grid under our convention, so exact half-pixels stay exact.
SNAP = 2.0 ** 20
KINDS = ("rotate", "shear", "zoom-in", "zoom-out")
UNITS = {"rotate": "degrees", "shear": "degrees", "zoom-in": "percent", "zoom-out": "percent"}


@dataclass(frozen=True)
class DeformSet:
    """One test set: images deformed by `kind` with parameters in [-magnitude, magnitude] (zoom: exactly it)."""

    name: str
    kind: str
    magnitude: float  # degrees for rotate/shear, percent of the side for zoom

    @property
    def unit(self) -> str:
        return UNITS[self.kind]

    @property
    def label(self) -> str:
        """How the paper's Table 7 names the row."""
        shown = self.name.rpartition("-")[2]
        if self.kind == "rotate":
            return f"Rotation U(-{shown}°, {shown}°)"
        if self.kind == "shear":
            return f"Shearing U(-{shown}°, {shown}°)"
        return f"Zoom {'in' if self.kind == 'zoom-in' else 'out'} ({shown} %)"


def _table7_sets() -> tuple[DeformSet, ...]:
    rotations = [DeformSet(f"rotate-{d}", "rotate", float(d)) for d in (20, 40, 60, 80)]
    # The authors drew shears in radians (0.5 ... 3); the paper's row names round them to degrees.
    shears = [DeformSet(f"shear-{math.degrees(r):.1f}", "shear", math.degrees(r)) for r in (0.5, 1.0, 2.0, 2.5, 3.0)]
    zoom_in = [DeformSet(f"zoom-in-{k}", "zoom-in", float(k)) for k in (20, 40, 60, 80)]
    zoom_out = [DeformSet(f"zoom-out-{k}", "zoom-out", float(k)) for k in (120, 140, 160, 180)]
    return (*rotations, *shears, *zoom_in, *zoom_out)


DEFORM_SETS: dict[str, DeformSet] = {s.name: s for s in _table7_sets()}
SET_GROUPS = {"all": tuple(DEFORM_SETS), "table3": TABLE3_SETS}


def resolve_set_names(requested) -> tuple[str, ...]:
    """'all', 'table3', set names, or a comma-separated mix of them -> set names in Table 7 order.

    Accepts a string or a sequence of strings; an empty selection means all 17 sets.
    """
    tokens = [requested] if isinstance(requested, str) else list(requested)
    names = [part.strip() for token in tokens for part in str(token).split(",") if part.strip()]
    if tokens and not names:
        raise UsageError(f"--sets {', '.join(map(repr, tokens))} names no set; give set names, 'all' or 'table3' "
                         "(or leave --sets out for all 17)")
    chosen: set[str] = set()
    for name in names or ["all"]:
        if name in SET_GROUPS:
            chosen.update(SET_GROUPS[name])
        elif name in DEFORM_SETS:
            chosen.add(name)
        else:
            raise UsageError(f"unknown deformation set {name!r}; valid: {', '.join(SET_GROUPS)}, "
                             f"{', '.join(DEFORM_SETS)} (or a comma-separated list)")
    return tuple(name for name in DEFORM_SETS if name in chosen)


def set_seed(seed: int, name: str) -> int:
    """The generator seed of one test set: fixed by (`seed`, set name) in every process and on every machine.

    Python's built-in `hash` of a string changes between processes, so it cannot be used here.
    """
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: a valid torch.Generator seed


def draw_parameters(deform_set: DeformSet, n: int, seed: int) -> torch.Tensor:
    """Each image's parameter (float64, CPU, in the set's unit), uniform over the set's range.

    Drawn on the CPU so the same seed gives the same set on any device; the first m of n draws
    equal a draw of m, so a subset of the test set keeps its images' deformations.
    """
    if deform_set.kind in ("zoom-in", "zoom-out"):
        return torch.full((n,), deform_set.magnitude, dtype=torch.float64)
    generator = torch.Generator(device="cpu").manual_seed(set_seed(seed, deform_set.name))
    uniform = torch.rand(n, generator=generator, dtype=torch.float64)
    return (2.0 * uniform - 1.0) * deform_set.magnitude


def evaluation_name(convention: str = "ours", fill: str = "black") -> str:
    """The result name of a deform evaluation: 'deform' for ours + black (so older results keep their
    name), else with the convention and/or fill appended, e.g. 'deform-authors-mean'."""
    return "-".join(["deform"] + [part for part, default in ((convention, "ours"), (fill, "black"))
                                  if part != default])


DEFORM_VARIANTS = {evaluation_name(c, f): (c, f) for c in CONVENTIONS for f in FILLS}  # result name -> (convention, fill)
DEFORM_EVALUATIONS = tuple(DEFORM_VARIANTS)


def rotation_maps(degrees: torch.Tensor, convention: str = "ours") -> torch.Tensor:
    """(N, 2, 2) float64 (row, column) maps; ours turns counter-clockwise as displayed, the authors' clockwise."""
    maps = []
    for value in degrees.tolist():
        angle = math.radians(value)
        cos, sin = math.cos(angle), math.sin(angle)  # libm, not a vectorised kernel: the same bits everywhere
        maps.append([[cos, -sin], [sin, cos]] if convention == "authors" else [[cos, sin], [-sin, cos]])
    return torch.tensor(maps, dtype=torch.float64).reshape(-1, 2, 2)


def shear_maps(degrees: torch.Tensor, convention: str = "ours") -> torch.Tensor:
    """The authors' [[1, -sin s], [0, cos s]] on (row, column), in both conventions."""
    maps = []
    for value in degrees.tolist():
        angle = math.radians(value)
        maps.append([[1.0, -math.sin(angle)], [0.0, math.cos(angle)]])
    return torch.tensor(maps, dtype=torch.float64).reshape(-1, 2, 2)


def zoom_maps(percent: torch.Tensor, convention: str = "ours") -> torch.Tensor:
    """Sample the centred box of `percent` % of the side into the whole image."""
    maps = [[[value / 100.0, 0.0], [0.0, value / 100.0]] for value in percent.tolist()]
    return torch.tensor(maps, dtype=torch.float64).reshape(-1, 2, 2)


MAP_BUILDERS = {"rotate": rotation_maps, "shear": shear_maps, "zoom-in": zoom_maps, "zoom-out": zoom_maps}


def set_matrices(name: str, n: int, seed: int, convention: str = "ours") -> tuple[torch.Tensor, torch.Tensor]:
    """(parameters, (N, 2, 2) float64 maps) for the first `n` images of test set `name` under `seed`, on the CPU."""
    check_convention(convention)
    deform_set = DEFORM_SETS[name]
    parameters = draw_parameters(deform_set, n, seed)
    return parameters, MAP_BUILDERS[deform_set.kind](parameters, convention)


def check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise UsageError(f"unknown convention {convention!r}; valid: {', '.join(CONVENTIONS)}")


def centre(size: int, convention: str) -> float:
    return size / 2 + 0.5 if convention == "authors" else (size - 1) / 2


def source_points(maps: torch.Tensor, size: int, convention: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns): float64 (N, size * size) source point of every output pixel, row-major, on the CPU.

    The arithmetic is scipy's, step by step, so the authors' ties fall as theirs did: shift =
    c - (A[:, 0]·c + A[:, 1]·c), then (shift + row·A[:, 0]) + column·A[:, 1], each operation a
    separate float64 rounding (elementwise ops, never a fused or BLAS kernel).
    """
    maps = maps.to(device="cpu", dtype=torch.float64)
    c = centre(size, convention)
    pixel = torch.arange(size, dtype=torch.float64)
    row = pixel.repeat_interleave(size)  # output pixel p = (row, column), row-major
    column = pixel.repeat(size)
    points = []
    for axis in (0, 1):
        a_row, a_column = maps[:, axis, 0:1], maps[:, axis, 1:2]
        shift = c - (a_row * c + a_column * c)
        point = (shift + row * a_row) + column * a_column
        if convention == "ours":
            point = torch.round(point * SNAP) / SNAP
        points.append(point)
    return points[0], points[1]


def _inside(point: torch.Tensor, size: int, convention: str) -> torch.Tensor:
    if convention == "authors":
        return (point >= 0) & (point <= size - 1)  # scipy mode='constant': outermost pixel centres
    return (point >= -0.5) & (point < size - 0.5)  # pixel edges


@dataclass(frozen=True)
class Warp:
    """Where every output pixel of every image comes from: gathering it is the whole warp.

    `index` (N, K, H·W) holds flat source pixels, H·W meaning the fill; K = 1 for nearest, 4 for
    bilinear, whose `weights` (N, 4, H·W, float32) blend the four in a fixed order.
    """

    index: torch.Tensor
    weights: torch.Tensor | None
    size: int

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: slice) -> "Warp":
        return Warp(self.index[rows], None if self.weights is None else self.weights[rows], self.size)

    def to(self, device: torch.device | str) -> "Warp":
        return Warp(self.index.to(device), None if self.weights is None else self.weights.to(device), self.size)

    def apply(self, images: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
        """`images` (N, C, H, W) warped, image i by row i; `fill` per channel (None: black)."""
        n, channels, height, width = images.shape
        if height != self.size or width != self.size:
            raise ValueError(f"warp made for {self.size}x{self.size} images, got {height}x{width}")
        if n != len(self):
            raise ValueError(f"warp made for {len(self)} images, got {n}")
        pad = torch.zeros(n, channels, 1, dtype=images.dtype, device=images.device) if fill is None else \
            fill.to(device=images.device, dtype=images.dtype).view(1, channels, 1).expand(n, channels, 1)
        pixels = torch.cat([images.reshape(n, channels, height * width), pad], dim=2)
        taps = []
        for k in range(self.index.shape[1]):
            index = self.index[:, k].long().unsqueeze(1).expand(n, channels, height * width)
            taps.append(pixels.gather(2, index))
        if self.weights is None:
            out = taps[0]
        else:
            weights = self.weights.to(images.dtype).unsqueeze(2)
            out = taps[0] * weights[:, 0]
            for k in range(1, 4):  # one add at a time: the same rounding on every device
                out = out + taps[k] * weights[:, k]
        return out.view(n, channels, height, width)


def _index_dtype(size: int) -> torch.dtype:
    return torch.int16 if size * size < 2 ** 15 else torch.int32  # half the memory of a whole test set's warps


def plan_warp(maps: torch.Tensor, size: int, convention: str = "ours", interpolation: str = "nearest",
              chunk: int = 1024) -> Warp:
    """The `Warp` of square `size` images under (N, 2, 2) `maps`, computed on the CPU in float64."""
    check_convention(convention)
    if interpolation not in INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    indices, weights = [], []
    for start in range(0, len(maps), chunk):  # bounds the float64 temporaries on a whole test set
        rows, columns = source_points(maps[start:start + chunk], size, convention)
        inside = _inside(rows, size, convention) & _inside(columns, size, convention)
        if interpolation == "nearest":
            r, c = torch.floor(rows + 0.5), torch.floor(columns + 0.5)
            flat = torch.where(inside, r * size + c, float(size * size))
            indices.append(flat.to(_index_dtype(size)).unsqueeze(1))
            continue
        # Ours blends in-image neighbours right up to the outer pixel edges, as grid_sample's zeros padding does.
        whole = inside if convention == "authors" else torch.ones_like(inside)
        r0, c0 = torch.floor(rows), torch.floor(columns)
        fr, fc = rows - r0, columns - c0
        taps, tap_weights = [], []
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            r, c = r0 + dr, c0 + dc
            in_image = whole & (r >= 0) & (r <= size - 1) & (c >= 0) & (c <= size - 1)
            taps.append(torch.where(in_image, r * size + c, float(size * size)))
            # Outside the authors' rim the whole pixel is the fill: all weight on the first tap.
            tap_weights.append(torch.where(whole, w, 1.0 if (dr, dc) == (0, 0) else 0.0))
        indices.append(torch.stack(taps, 1).to(_index_dtype(size)))
        weights.append(torch.stack(tap_weights, 1).float())
    index = torch.cat(indices) if indices else torch.empty(0, 1, size * size, dtype=_index_dtype(size))
    return Warp(index, torch.cat(weights) if weights else None, size)


def fill_values(fill: str, dataset: str) -> torch.Tensor | None:
    """The per-channel [0, 1] pixel that fills empty space: None for black, the dataset's mean for mean."""
    if fill not in FILLS:
        raise UsageError(f"unknown fill {fill!r}; valid: {', '.join(FILLS)}")
    if fill == "black":
        return None
    return torch.tensor(NORMALIZATION[dataset][0], dtype=torch.float32)


def deform(images: torch.Tensor, maps: torch.Tensor, interpolation: str = "nearest", convention: str = "ours",
           fill: torch.Tensor | None = None) -> torch.Tensor:
    """Warp each square image by its own map in one batched gather; `fill` per channel, None = black."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"deform needs square images, got {tuple(images.shape[-2:])}")
    return plan_warp(maps, images.shape[-1], convention, interpolation).to(images.device).apply(images, fill)
