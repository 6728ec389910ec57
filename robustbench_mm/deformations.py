"""The 17 deformation test sets of Table 7: their registry, seeded parameters and the batched warp.

Every deformation is an affine map of the image about its exact centre, applied to a whole batch
at once with `affine_grid`/`grid_sample` (one matrix per image), on whatever device the images are.

Conventions, all in PyTorch's `affine_grid` terms: a matrix maps *output* coordinates to the
*input* coordinates that are sampled, in normalized (x = column, y = row) coordinates whose origin
is the exact image centre (pixel 15.5 of 32). The matrices have no translation, so in pixel units
output pixel p samples c + A·(p - c) with c the centre, whichever `align_corners` is used (we use
False, where ±1 are the outer pixel edges). A zoom box of k % of the side therefore maps exactly
onto the image, with no rounding to whole pixels.

- Rotation by +a degrees turns the image counter-clockwise as displayed (row 0 at the top);
  +90 equals ``torch.rot90(x, 1, dims=(2, 3))``.
- Shear by s uses the authors' matrix [[1, -sin s], [0, cos s]], which their code applied to
  (row, column) coordinates: the sampled row is row - sin(s)·column and the sampled column is
  cos(s)·column. In (x, y) order that is [[cos s, 0], [-sin s, 1]]. Near 180 degrees it is almost
  a left-right mirror, which is why the paper's 171.9-degree set is easier than its 143.2 one.
- Zoom k %: sample the centred box of k % of the height and width into the full image (k < 100
  zooms in, k > 100 zooms out). The paper uses one fixed k per set, so zoom sets draw nothing.
- Outside the image is black (zeros padding). Nearest sampling is the authors' choice and the default.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import UsageError
from .paper import TABLE3_SETS

INTERPOLATIONS = ("nearest", "bilinear")
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


def _theta(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Per-image linear maps [[a, b], [c, d]] (no translation) as (N, 2, 3) `affine_grid` matrices."""
    zero = torch.zeros_like(a)
    return torch.stack([torch.stack([a, b, zero], -1), torch.stack([c, d, zero], -1)], -2)


def rotation_theta(degrees: torch.Tensor) -> torch.Tensor:
    """Counter-clockwise rotation as displayed; +90 degrees equals torch.rot90(x, 1, dims=(2, 3))."""
    angle = torch.deg2rad(degrees)
    cos, sin = torch.cos(angle), torch.sin(angle)
    return _theta(cos, -sin, sin, cos)


def shear_theta(degrees: torch.Tensor) -> torch.Tensor:
    """The authors' [[1, -sin s], [0, cos s]] on (row, column), written in affine_grid's (x, y) order."""
    angle = torch.deg2rad(degrees)
    return _theta(torch.cos(angle), torch.zeros_like(angle), -torch.sin(angle), torch.ones_like(angle))


def zoom_theta(percent: torch.Tensor) -> torch.Tensor:
    """Sample the centred box of `percent` % of the side into the whole image."""
    scale = percent / 100.0
    return _theta(scale, torch.zeros_like(scale), torch.zeros_like(scale), scale)


THETA_BUILDERS = {"rotate": rotation_theta, "shear": shear_theta, "zoom-in": zoom_theta, "zoom-out": zoom_theta}


def set_theta(deform_set: DeformSet, parameters: torch.Tensor) -> torch.Tensor:
    return THETA_BUILDERS[deform_set.kind](parameters)


def set_matrices(name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(parameters, float32 matrices) for the first `n` images of test set `name` under `seed`, on the CPU."""
    deform_set = DEFORM_SETS[name]
    parameters = draw_parameters(deform_set, n, seed)
    return parameters, set_theta(deform_set, parameters).float()


def deform(images: torch.Tensor, theta: torch.Tensor, interpolation: str = "nearest") -> torch.Tensor:
    """Warp each square image by its own matrix in one batched call; black outside the image."""
    if interpolation not in INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {interpolation!r}; valid: {', '.join(INTERPOLATIONS)}")
    if images.shape[-1] != images.shape[-2]:
        # Normalized coordinates stretch with the aspect ratio; rotations would shear non-square images.
        raise ValueError(f"deform needs square images, got {tuple(images.shape[-2:])}")
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
