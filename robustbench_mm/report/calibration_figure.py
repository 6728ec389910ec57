"""Reliability diagrams from ``attacks/<run>/calibration.json``: a row per model, a column per condition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from robustbench_mm.figures.plots import save_png
from robustbench_mm.report.records import Group


@dataclass(frozen=True)
class ModelCalibration:
    label: str
    color: str
    conditions: dict[str, dict[str, Any]]  # condition name -> its entry in calibration.json


def reliability_figure(models: list[ModelCalibration], descriptions: dict[str, str], title: str) -> Figure:
    """Per model and condition, on top: accuracy per confidence bin (bars) against the bin's mean
    confidence (black ticks; the gap is the miscalibration) and the diagonal of perfect calibration;
    below: the share of examples in each bin, which says how much each bar counts towards the ECE."""
    names = list(descriptions)
    figure = Figure(figsize=(3.4 * len(names) + 0.8, 3.5 * len(models) + 0.8), layout="constrained")
    grid = figure.add_gridspec(2 * len(models), len(names), height_ratios=[3, 1] * len(models))
    for row, model in enumerate(models):
        for col, name in enumerate(names):
            ax = figure.add_subplot(grid[2 * row, col])
            share_ax = figure.add_subplot(grid[2 * row + 1, col], sharex=ax)
            ax.plot([0, 100], [0, 100], linestyle="--", color="black", linewidth=0.8)
            ax.set_xlim(0, 100)
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.25)
            ax.tick_params(labelbottom=False)
            entry = model.conditions.get(name)
            if entry is None:
                ax.text(50, 50, "not measured", ha="center", va="center", color="gray")
                continue
            bins = entry["reliability"]
            edges = [100 * e for e in bins["edges"]]
            width = edges[1] - edges[0]
            filled = [(x, a, c) for x, a, c in zip(edges, bins["accuracy"], bins["confidence"]) if a is not None]
            ax.bar([f[0] for f in filled], [f[1] for f in filled], width=width, align="edge", color=model.color,
                   alpha=0.8, edgecolor="black", linewidth=0.4, label="accuracy in the bin")
            ax.plot([f[0] + width / 2 for f in filled], [f[2] for f in filled], linestyle="none", marker="_",
                    markersize=9, markeredgewidth=2, color="black", label="mean confidence in the bin")
            ax.text(3, 96, f"ECE {entry['ece']:.1f} %\naccuracy {entry['accuracy']:.1f} %\n"
                           f"mean confidence {entry['mean_confidence']:.1f} %",
                    va="top", fontsize=7.5, bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})
            total = max(sum(bins["count"]), 1)
            share_ax.bar(edges[:-1], [100 * c / total for c in bins["count"]], width=width, align="edge",
                         color="#999999")
            share_ax.set_ylim(0, 100)
            share_ax.set_yticks([0, 50, 100])
            share_ax.grid(alpha=0.25)
            if row == 0:
                ax.set_title(name, fontsize=10)
            if col == 0:
                ax.set_ylabel(f"{model.label}\naccuracy (%)", fontsize=8.5)
                share_ax.set_ylabel("examples (%)", fontsize=7.5)
            if row == len(models) - 1:
                share_ax.set_xlabel("confidence: top softmax probability (%)")
            if row == 0 and col == 0:
                ax.legend(fontsize=7, loc="center left")
    figure.suptitle(title, fontsize=11)
    return figure


def unique_label(group: Group, record) -> str:
    """The model's label, with its run name when another run of the group has the same model (e.g. seeds)."""
    if [r.key for r in group.runs].count(record.key) > 1:
        return f"{record.label}\n{record.name}"
    return record.label


def draw_reliability(group: Group, colors: dict[str, str], path) -> str | None:
    """Write the diagrams of every model with a calibration.json; return the caption, or None without data."""
    models, descriptions, bins, examples = [], {}, set(), set()
    for record in group.runs:
        result = record.result("calibration")
        if not result:
            continue
        models.append(ModelCalibration(f"{unique_label(group, record)} ({result['model'].get('checkpoint')})",
                                       colors[record.name],
                                       result["conditions"]))
        for name, entry in result["conditions"].items():
            descriptions.setdefault(name, entry.get("description", name))
        bins.add(result["bins"])
        examples.add(result["n_examples"])
    if not models:
        return None
    title = (f"Reliability diagrams, {'/'.join(map(str, sorted(bins)))} equal-width bins, "
             f"{'/'.join(map(str, sorted(examples)))} test images — {group.heading}")
    save_png(reliability_figure(models, descriptions, title), path)
    return f"Calibration (beyond the paper): reliability diagrams and ECE on {', '.join(descriptions)} test images"
