"""A picture of the deformation test sets: the same few test images under every deformation.

It lets a person check with their own eyes that each set is what its name says.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image

from robustbench_mm.common.storage import atomic_write
from robustbench_mm.data.deformations import DEFORM_SETS, deform, fill_values, set_matrices
from robustbench_mm.data.images import to_unit_float

GRID_KEY = "mm-robust-deform-samples"


def _parameter_text(kind: str, value: float) -> str:
    return f"{value:+.0f}°" if kind in ("rotate", "shear") else ""


def sample_grid_figure(images: torch.Tensor, seed: int, interpolation: str,
                       sets: tuple[str, ...] | None = None, title: str = "", convention: str = "ours",
                       fill: torch.Tensor | None = None) -> Figure:
    """Rows: the clean images, then one row per set; rotations and shears show each image's own angle.

    `images` are the first test images (uint8 or [0, 1] float, N x 3 x H x W), so every tile is
    exactly an image the models are evaluated on.
    """
    images = images.detach().cpu()
    clean = to_unit_float(images) if images.dtype == torch.uint8 else images.float()
    rows = [("clean", clean, [""] * len(clean))]
    for name in sets if sets is not None else DEFORM_SETS:
        parameters, maps = set_matrices(name, len(clean), seed, convention)
        kind = DEFORM_SETS[name].kind
        rows.append((DEFORM_SETS[name].label, deform(clean, maps, interpolation, convention, fill),
                     [_parameter_text(kind, float(p)) for p in parameters]))
    return mosaic_figure(rows, title or f"Deformation test sets (seed {seed}, {interpolation} sampling, "
                                         f"{convention} convention)")


def mosaic_figure(rows: list[tuple[str, torch.Tensor, list[str]]], title: str) -> Figure:
    """All tiles in one image on one axes: drawing 18 x 8 separate axes takes many seconds."""
    n_cols = len(rows[0][1])
    size = rows[0][1].shape[-1]
    gap = max(3, size // 4)
    step = size + gap
    mosaic = torch.ones(3, len(rows) * step - gap, n_cols * step - gap)  # white between tiles
    for r, (_, batch, _) in enumerate(rows):
        for c, image in enumerate(batch):
            mosaic[:, r * step:r * step + size, c * step:c * step + size] = image.clamp(0, 1)
    figure = Figure(figsize=(0.8 * n_cols + 2.2, 0.8 * len(rows) + 0.6))
    ax = figure.add_axes((0.22, 0.01, 0.77, 0.95))
    ax.imshow(mosaic.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_axis_off()
    for r, (label, _, texts) in enumerate(rows):
        ax.text(-gap, r * step + size / 2, label, ha="right", va="center", fontsize=9)
        for c, text in enumerate(texts):
            if text:
                ax.text(c * step + size / 2, r * step - 0.5, text, ha="center", va="bottom", fontsize=7)
    figure.suptitle(title, fontsize=10)
    return figure


def grid_description(dataset: str, seed: int, interpolation: str, sets: tuple[str, ...] | None,
                     convention: str = "ours", fill: str = "black") -> str:
    """What a grid shows; stored in its PNG so an up-to-date grid is not drawn again."""
    return json.dumps({"dataset": dataset, "seed": seed, "interpolation": interpolation, "convention": convention,
                       "fill": fill, "sets": list(sets if sets is not None else DEFORM_SETS)})


def save_sample_grid(path: Path, images: torch.Tensor, seed: int, interpolation: str,
                     sets: tuple[str, ...] | None = None, dataset: str = "", convention: str = "ours",
                     fill: str = "black") -> Path:
    """Draw `sample_grid_figure` of the first test `images` of `dataset` to a PNG at `path`, atomically."""
    path = Path(path)
    title = (f"Deformation test sets on the first {len(images)} {dataset} test images "
             f"(seed {seed}, {interpolation} sampling, {convention} convention, {fill} fill)")
    figure = sample_grid_figure(images, seed, interpolation, sets, title, convention, fill_values(fill, dataset))
    metadata = {GRID_KEY: grid_description(dataset, seed, interpolation, sets, convention, fill)}
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata=metadata))
    return path


def grid_is_current(path: Path, dataset: str, seed: int, interpolation: str,
                    sets: tuple[str, ...] | None = None, convention: str = "ours", fill: str = "black") -> bool:
    try:
        with Image.open(path) as png:
            stored = png.text.get(GRID_KEY)
    except (OSError, ValueError):
        return False
    return stored == grid_description(dataset, seed, interpolation, sets, convention, fill)
