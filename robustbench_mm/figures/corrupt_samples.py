"""A picture of the common-corruption test sets: one test image under every corruption and severity.

One row per corruption, the clean image first and then one column per severity, so a person can see
with their own eyes that each set is what its name says and that the severities grow. The tiles are
handed in already corrupted by the evaluation stage, so they are exactly images the models were
evaluated on (generated or read from the official files).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from matplotlib.figure import Figure
from PIL import Image

from robustbench_mm.common.storage import atomic_write
from robustbench_mm.figures.deform_samples import mosaic_figure

GRID_KEY = "mm-robust-corrupt-samples"


def grid_description(dataset: str, source: str, seed: int, corruptions: tuple[str, ...],
                     severities: tuple[int, ...], index: int) -> str:
    """What a grid shows; stored in its PNG so an up-to-date grid is not drawn again."""
    return json.dumps({"dataset": dataset, "source": source, "seed": seed if source == "generated" else None,
                       "corruptions": list(corruptions), "severities": list(severities), "index": index})


def sample_grid_figure(clean: torch.Tensor, rows: list[tuple[str, torch.Tensor]], severities: tuple[int, ...],
                       title: str) -> Figure:
    """`clean` (3, H, W) in [0, 1]; `rows`: (label, (len(severities), 3, H, W) in [0, 1]) per corruption."""
    clean = clean.detach().cpu().float()
    header = ["clean"] + [f"sev. {s}" for s in severities]
    tiles = [(label, torch.cat([clean[None], images.detach().cpu().float()]),
              header if r == 0 else [""] * (1 + len(severities))) for r, (label, images) in enumerate(rows)]
    figure = mosaic_figure(tiles, title)
    # Above the column headers of the first row, which the mosaic's title would otherwise cover.
    figure.suptitle(title, fontsize=10, y=1.0 + 0.3 / figure.get_figheight())
    return figure


def save_sample_grid(path: Path, clean: torch.Tensor, rows: list[tuple[str, torch.Tensor]],
                     severities: tuple[int, ...], description: str, title: str) -> Path:
    """Draw `sample_grid_figure` to a PNG at `path`, atomically, with `description` in its metadata."""
    path = Path(path)
    figure = sample_grid_figure(clean, rows, severities, title)
    metadata = {GRID_KEY: description}
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata=metadata))
    return path


def grid_is_current(path: Path, description: str) -> bool:
    try:
        with Image.open(path) as png:
            stored = png.text.get(GRID_KEY)
    except (OSError, ValueError):
        return False
    return stored == description
