"""The common-corruption figures, from plain numbers: a corruption x severity heatmap per model, and
accuracy against severity with a line per model. report/corruption_figures.py pulls the numbers out of
the result files; these functions only draw (matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from robustbench_mm.figures.plots import Series


def corruption_heatmap_figure(corruption_labels: list[str], severities: list[int],
                              panels: list[tuple[str, np.ndarray, np.ndarray]], title: str) -> Figure:
    """One heatmap per model: rows corruptions, columns severities, the accuracy (%) written in each cell.

    `panels` holds (model label, accuracy (corruptions, severities) with NaN where not measured, std over
    seeds of the same shape with NaN for one seed). One shared colour scale, 0 to 100 %.
    """
    n = len(panels)
    columns = min(n, 4)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(1.0 + 2.9 * columns, 0.9 + rows * (0.3 * len(corruption_labels) + 1.0)),
                    layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    cmap = colormaps["viridis"].with_extremes(bad="#dddddd")
    image = None
    for index, (ax, (label, values, spread)) in enumerate(zip(axes, panels)):
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for (row, col), value in np.ndenumerate(values):
            if math.isnan(value):
                ax.text(col, row, "n/a", ha="center", va="center", fontsize=7, color="#444444")
                continue
            text = f"{value:.0f}" if math.isnan(spread[row, col]) else f"{value:.0f}±{spread[row, col]:.0f}"
            ax.text(col, row, text, ha="center", va="center", fontsize=7 if len(text) < 4 else 6,
                    color="white" if value < 55 else "black")
        ax.set_xticks(range(len(severities)), [str(s) for s in severities], fontsize=8)
        ax.set_xlabel("severity", fontsize=8)
        if index % columns == 0:
            ax.set_yticks(range(len(corruption_labels)), corruption_labels, fontsize=8)
        else:
            ax.set_yticks([])
        ax.set_title(label, fontsize=9, wrap=True)
    for ax in axes[n:]:
        ax.set_visible(False)
    if image is not None:
        figure.colorbar(image, ax=list(axes[:n]), shrink=0.7, label="accuracy (%)")
    figure.suptitle(title, fontsize=11)
    return figure


def severity_curves_figure(series: list[Series], reference_lines: list[tuple[str, float]], title: str) -> Figure:
    """Accuracy (%) against severity (0 = clean), mean over corruptions, a line per model.

    Each series carries its error bars (std over seeds) where there are several seeds and each seed's
    points. `reference_lines` are horizontal dotted lines (label, accuracy) drawn for orientation.
    """
    figure = Figure(figsize=(8.4, 4.8), layout="constrained")
    ax = figure.subplots()
    for i, s in enumerate(series):
        dodge = (i - (len(series) - 1) / 2) * 0.04
        x = [v + dodge for v in s.x]
        if s.yerr is not None:
            ax.errorbar(x, s.y, yerr=s.yerr, color=s.color, label=s.label, marker="o", markersize=4, capsize=3,
                        linestyle=s.linestyle)
        else:
            ax.plot(x, s.y, color=s.color, label=s.label, marker="o", markersize=4, linestyle=s.linestyle)
        if s.seed_points:
            ax.scatter([p[0] + dodge for p in s.seed_points], [p[1] for p in s.seed_points], color=s.color, s=9,
                       alpha=0.5)
    for label, value in reference_lines:
        ax.axhline(value, color="#999999", linestyle=":", linewidth=1)
        ax.text(0.02, value, label, transform=ax.get_yaxis_transform(), fontsize=7, color="#555555",
                va="bottom")
    ticks = sorted({int(round(v)) for s in series for v in s.x})
    ax.set_xticks(ticks, ["clean" if t == 0 else str(t) for t in ticks])
    ax.set_xlabel("severity (mean over the corruptions)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    figure.suptitle(title, fontsize=11)
    return figure
