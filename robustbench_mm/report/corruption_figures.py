"""The report's common-corruption PNGs: each group's corruptions.json turned into plain numbers, drawn by
figures/corruption_plots.py, and `mm-robust corrupt`'s sample grid copied beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustbench_mm.common.storage import copy_file
from robustbench_mm.data.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS, LABELS, SEVERITIES
from robustbench_mm.figures.corruption_plots import corruption_heatmap_figure, severity_curves_figure
from robustbench_mm.figures.plots import Series, model_colors, save_png
from robustbench_mm.report.records import Group, ModelRuns
from robustbench_mm.report.tables.corruptions import EVALUATION
from robustbench_mm.runs.files import corrupt_samples_file


def _results(model: ModelRuns) -> list[dict]:
    return [r for r in (run.result(EVALUATION) for run in model.runs) if r is not None]


def _examples(group: Group) -> str:
    n = sorted({str(r.result(EVALUATION)["n_examples"]) for r in group.runs if r.result(EVALUATION)})
    return f"{'/'.join(n)} test images"


def heatmap_panels(group: Group, corruptions: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per model with results: (label, mean accuracy over seeds per (corruption, severity), std or NaN)."""
    panels = []
    for model in group.models:
        results = _results(model)
        if not results:
            continue
        stacked = np.full((len(results), len(corruptions), len(SEVERITIES)), np.nan)
        for i, result in enumerate(results):
            for entry in result["sets"].values():
                if entry["corruption"] in corruptions and entry["severity"] in SEVERITIES:
                    stacked[i, corruptions.index(entry["corruption"]), SEVERITIES.index(entry["severity"])] = \
                        entry["accuracy"]
        counts = np.isfinite(stacked).sum(axis=0)
        with np.errstate(invalid="ignore"):
            mean = np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)
            std = np.nanstd(stacked, axis=0, ddof=1) if len(results) > 1 else np.full_like(mean, np.nan)
        label = model.label if len(results) == 1 else f"{model.label}\n(mean ± std, {len(results)} seeds)"
        panels.append((label, mean, np.where(counts > 1, std, np.nan)))
    return panels


def severity_values(result: dict) -> list[float | None]:
    """Clean accuracy, then per severity the mean over the standard corruptions measured at it (None: none)."""
    values: list[float | None] = [result["clean"]["accuracy"]]
    for severity in SEVERITIES:
        at = [e["accuracy"] for e in result["sets"].values() if e["severity"] == severity and
              e["corruption"] in CORRUPTIONS]
        values.append(sum(at) / len(at) if at else None)
    return values


def severity_series(group: Group, colors: dict[str, str]) -> list[Series]:
    series = []
    for model in group.models:
        per_seed = [severity_values(r) for r in _results(model)]
        if not per_seed:
            continue
        xs, ys, below, points = [], [], [], []
        for x in range(len(SEVERITIES) + 1):
            values = [v[x] for v in per_seed if v[x] is not None]
            if not values:
                continue
            xs.append(x)
            ys.append(float(np.mean(values)))
            below.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
            points += [(x, v) for v in values] if len(per_seed) > 1 else []
        several = len(per_seed) > 1
        label = model.label + (f" (mean ± std, {len(per_seed)} seeds)" if several else "")
        series.append(Series(label, colors[model.key], xs, ys, (below, below) if several else None, tuple(points)))
    return series


def draw_corruptions(group: Group, reports_root: Path, attacks_root: Path) -> dict[str, str]:
    """Write the group's corruption figures; {file name: caption} of those written, in reading order."""
    written: dict[str, str] = {}
    if not any(r.result(EVALUATION) for r in group.runs):
        return written
    present = {e["corruption"] for r in group.runs if r.result(EVALUATION) for e in r.result(EVALUATION)["sets"].values()}
    corruptions = [c for c in CORRUPTIONS + EXTRA_CORRUPTIONS if c in present]
    panels = heatmap_panels(group, corruptions)
    if panels:
        name = f"corruptions-heatmap-{group.slug}.png"
        labels = [LABELS[c] + (" (extra)" if c in EXTRA_CORRUPTIONS else "") for c in corruptions]
        save_png(corruption_heatmap_figure(labels, list(SEVERITIES), panels,
                                           f"Accuracy (%) per corruption and severity — {group.heading} "
                                           f"({_examples(group)})"), reports_root / name)
        written[name] = "Common corruptions: accuracy per corruption and severity, one panel per model"
    keys = [m.key for m in group.models]
    colors = model_colors(keys)
    series = severity_series(group, colors)
    if series:
        name = f"corruptions-severity-{group.slug}.png"
        save_png(severity_curves_figure(series, [], f"Accuracy vs corruption severity — {group.heading}\n(mean over "
                                                    f"the 15 corruptions, {_examples(group)})"), reports_root / name)
        written[name] = "Common corruptions: accuracy against severity, mean over the corruptions"
    samples = attacks_root / corrupt_samples_file(group.dataset)
    if samples.is_file():
        name = f"corrupt-samples-{group.slug}.png"
        copy_file(samples, reports_root / name)
        written[name] = "The common-corruption test sets: one test image under every corruption and severity"
    return written
