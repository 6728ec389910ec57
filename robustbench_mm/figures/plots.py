"""The report's figures, drawn headless (matplotlib's Agg canvas; no display, no pyplot state).

Each ``*_figure`` function takes plain numbers and returns a Figure, so tests can draw from
synthetic data; report/figures.py pulls those numbers out of one group's records and writes PNGs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from robustbench_mm.common.storage import atomic_write
from robustbench_mm.stats.significance import HOLDS, NOT_DISTINGUISHABLE, REVERSED

KEY_COLORS = {"baseline": "#555555", "input-a1": "#1f77b4", "input-a2": "#17becf", "manifold-a2": "#d62728"}
SPARE_COLORS = ("#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
EXAMPLES_PER_MODEL = 8
DPI = 110


@dataclass(frozen=True)
class Series:
    label: str
    color: str
    x: list[float]
    y: list[float]
    # Error bars as (below, above) distances from y, and each seed's own (x, y) points, when known.
    yerr: tuple[list[float], list[float]] | None = None
    seed_points: tuple[tuple[float, float], ...] = ()
    linestyle: str = "-"


def model_colors(keys: list[str]) -> dict[str, str]:
    """The paper's four models keep one colour in every figure; others take spare ones in order."""
    colors, spare = {}, iter(SPARE_COLORS * 4)
    for key in keys:
        colors[key] = KEY_COLORS.get(key) or next(spare)
    return colors


def legend_entries(labels: list[str]) -> list[int]:
    """Indices of the first line of each label: the seeds of one model share a label and one legend entry."""
    seen: set[str] = set()
    return [i for i, label in enumerate(labels) if not (label in seen or seen.add(label))]


def one_legend_entry_per_label(ax, **kwargs) -> None:
    handles, labels = ax.get_legend_handles_labels()
    kept = legend_entries(labels)
    ax.legend([handles[i] for i in kept], [labels[i] for i in kept], **kwargs)


def save_png(figure: Figure, path: Path) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight"))


# ---- figures from plain data ------------------------------------------------------------------


def fgsm_sweep_figure(panels: dict[str, list[Series]], paper_points: dict[str, tuple[str, float]],
                      marked_eps: float, title: str) -> Figure:
    """One panel per protocol: accuracy vs ε, a line per model; stars are the paper's Table 5 values.

    Each line carries its error bars (std over seeds, or an interval over test examples for one seed)
    and, with several seeds, every seed's value as a small dot.
    """
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    scales = {"standard": "ε on the [0, 1] pixel scale", "paper": "ε on the normalized-input scale (≈ ε·σ per pixel)"}
    for ax, (protocol, series) in zip(axes, panels.items()):
        # Each model's points shift a little sideways so overlapping error bars stay readable.
        span = max((max(s.x) - min(s.x) for s in series), default=0) or 1.0
        for i, s in enumerate(series):
            dodge = (i - (len(series) - 1) / 2) * 0.006 * span
            ax.errorbar([x + dodge for x in s.x], s.y, yerr=s.yerr, marker="o", markersize=4, color=s.color,
                        label=s.label, capsize=3, elinewidth=1)
            if s.seed_points:
                ax.plot([x + dodge for x, _ in s.seed_points], [y for _, y in s.seed_points], marker=".",
                        markersize=5, linestyle="none", color=s.color, alpha=0.45)
        if protocol == "paper":
            for label, (color, value) in paper_points.items():
                ax.plot([marked_eps], [value], marker="*", markersize=14, color=color, markeredgecolor="black",
                        linestyle="none", label=f"paper: {label}")
        ax.axvline(marked_eps, color="black", linestyle=":", linewidth=1)
        ax.text(marked_eps, 101, f" ε = {marked_eps:g}", fontsize=8, va="bottom")
        ax.set_title(f"{protocol} protocol", fontsize=11)
        ax.set_xlabel(scales.get(protocol, "ε"))
        ax.set_ylim(0, 105)
        ax.grid(alpha=0.3)
        if not series:
            ax.text(0.5, 0.5, "no result file", transform=ax.transAxes, ha="center", color="gray")
    # One legend under both panels: inside a panel it covered curves or the ε marker.
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        figure.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=2, fontsize=8)
    axes[0].set_ylabel("test accuracy under FGSM (%)")
    figure.suptitle(title, fontsize=12)
    return figure


def pgd_figure(series: list[Series], threshold: float | None, paper_points: dict[str, tuple[str, float]],
               title: str) -> Figure:
    """Accuracy after every unbounded-PGD iteration; index 0 is the clean accuracy."""
    figure = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = figure.subplots()
    last = max((s.x[-1] for s in series), default=1)
    for s in series:
        ax.plot(s.x, s.y, color=s.color, linestyle=s.linestyle, label=s.label, linewidth=1.8)
    for label, (color, value) in paper_points.items():
        ax.plot([last], [value], marker="*", markersize=14, color=color, markeredgecolor="black", linestyle="none",
                label=f"paper (Appendix D): {label} {value:g} %")
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", linewidth=1,
                   label=f"gradient-masking threshold ({threshold:g} %)")
    # Accuracy usually collapses within the first few steps; a log scale past step 10 keeps
    # those steps readable while still showing all of the run.
    linear_until = 10
    if last > 2 * linear_until:
        ax.set_xscale("symlog", linthresh=linear_until, linscale=1.5)
        ax.set_xlabel(f"PGD iteration (0 = clean; log scale beyond {linear_until})")
        ax.set_xticks([t for t in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t <= last] +
                      ([last] if last not in (20, 50, 100, 200, 500, 1000) else []))
        ax.xaxis.set_major_formatter("{x:.0f}")
    else:
        ax.set_xlabel("PGD iteration (0 = clean)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_xlim(0, last)
    ax.grid(alpha=0.3)
    one_legend_entry_per_label(ax, fontsize=8, loc="upper right")
    ax.set_title(title, fontsize=11)
    return figure


def autoattack_stages_figure(panels: dict[str, list[Series]], title: str) -> Figure:
    """One panel per AutoAttack column: robust accuracy after each stage (0 = clean), a line per model."""
    figure = Figure(figsize=(5.2 * max(len(panels), 1) + 0.6, 4.4), layout="constrained")
    axes = figure.subplots(1, max(len(panels), 1), sharey=True, squeeze=False)[0]
    for ax, (label, series) in zip(axes, panels.items()):
        names = series[0].x if series else []
        for s in series:
            ax.plot(range(len(s.y)), s.y, marker="o", color=s.color, label=f"{s.label}: {s.y[-1]:.1f} %")
            ax.annotate(f"{s.y[-1]:.1f}", (len(s.y) - 1, s.y[-1]), textcoords="offset points", xytext=(6, 0),
                        fontsize=7, color=s.color, va="center")
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("after stage (each runs only on the examples still robust)")
        ax.set_title(label, fontsize=10)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("robust accuracy (%)")
    figure.suptitle(title, fontsize=12)
    return figure


def table7_figure(set_labels: list[str], model_labels: list[str], ours: np.ndarray, paper: np.ndarray,
                  title: str, paper_title: str, ours_std: np.ndarray | None = None) -> Figure:
    """Three heatmaps with the numbers written in: ours, the paper's, and ours − paper.

    `ours` and `paper` are (sets, models) arrays with NaN where there is no number; those cells
    are grey and read 'n/a', never a value. `ours_std` (NaN where there is one seed) adds '± std'
    under our numbers and under the differences.
    """
    figure = Figure(figsize=(4.2 + 2.1 * len(model_labels) * 1.5, 0.42 * len(set_labels) + 2.2), layout="constrained")
    axes = figure.subplots(1, 3, sharey=True)
    delta = ours - paper
    limit = max(5.0, float(np.nanmax(np.abs(delta)))) if np.isfinite(delta).any() else 5.0
    panels = [(ours, "ours", "viridis", 0, 100), (paper, paper_title, "viridis", 0, 100),
              (delta, "ours − paper", "RdBu", -limit, limit)]
    spread = ours_std if ours_std is not None else np.full_like(ours, np.nan)
    for index, (ax, (values, name, cmap_name, low, high)) in enumerate(zip(axes, panels)):
        cmap = _colormap(cmap_name)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=low, vmax=high, aspect="auto")
        for (row, col), value in np.ndenumerate(values):
            if math.isnan(value):
                ax.text(col, row, "n/a", ha="center", va="center", fontsize=8, color="#444444")
            else:
                shade = (value - low) / (high - low)
                dark = shade < 0.55 if cmap_name == "viridis" else abs(shade - 0.5) > 0.3
                text = f"{value:+.1f}" if cmap_name == "RdBu" else f"{value:.1f}"
                if index != 1 and not math.isnan(spread[row, col]):
                    text += f"\n±{spread[row, col]:.1f}"
                ax.text(col, row, text, ha="center", va="center", fontsize=8 if "\n" not in text else 6.5,
                        linespacing=0.9, color="white" if dark else "black")
        ax.set_xticks(range(len(model_labels)), model_labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(name, fontsize=10)
        figure.colorbar(image, ax=ax, shrink=0.6, label="accuracy (%)" if cmap_name == "viridis" else "Δ (points)")
    axes[0].set_yticks(range(len(set_labels)), set_labels, fontsize=8)
    figure.suptitle(title, fontsize=12)
    return figure


VERDICT_COLORS = {HOLDS: "#1a7f37", REVERSED: "#cf222e", NOT_DISTINGUISHABLE: "#6e7781"}


@dataclass(frozen=True)
class ForestRow:
    """One ordering: its label, our difference (points) with its 95 % interval, and the verdict."""

    label: str
    difference: float
    low: float | None
    high: float | None
    verdict: str
    section: str  # rows of one section are drawn together under its name


def forest_figure(rows: list[ForestRow], title: str) -> Figure:
    """Differences claimed-better − claimed-worse with their intervals; right of 0 agrees with the paper."""
    sections = list(dict.fromkeys(r.section for r in rows))
    lines: list[ForestRow | str] = []
    for section in sections:
        lines.append(section)
        lines += [r for r in rows if r.section == section]
    figure = Figure(figsize=(9.5, 1.4 + 0.24 * len(lines)), layout="constrained")
    ax = figure.subplots()
    labels = []
    for y, line in enumerate(lines):
        if isinstance(line, str):
            labels.append(line)
            continue
        color = VERDICT_COLORS.get(line.verdict, "#bbbbbb")
        if line.low is not None:
            ax.plot([line.low, line.high], [y, y], color=color, linewidth=2, solid_capstyle="butt")
        ax.plot([line.difference], [y], marker="o", markersize=5, color=color,
                markerfacecolor=color if line.verdict in VERDICT_COLORS else "white")
        labels.append(line.label)
    ax.set_yticks(range(len(lines)), labels, fontsize=7.5)
    for tick, line in zip(ax.get_yticklabels(), lines):
        if isinstance(line, str):
            tick.set_fontweight("bold")
    ax.set_ylim(len(lines) - 0.5, -0.5)  # top to bottom, and every section heading inside the axes
    ax.axvline(0, color="black", linewidth=1)
    ax.set_xlabel("our accuracy difference, paper's better model − paper's worse model (points); "
                  "right of 0 = the paper's order")
    ax.grid(axis="x", alpha=0.3)
    handles = [ax.plot([], [], marker="o", color=color, linestyle="-", label=verdict)[0]
               for verdict, color in VERDICT_COLORS.items()]
    # Above the rows, not over them: with many rows any corner of the axes hides some.
    ax.legend(handles=handles, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles),
              frameon=False)
    ax.set_title(title, fontsize=11, pad=22)
    return figure


def _colormap(name: str):
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad="#dddddd")


def training_figure(accuracy: list[Series], nll: list[Series], best: dict[str, tuple[str, int, float]],
                    title: str) -> Figure:
    """Test accuracy and NLL per epoch, a line per model; a star marks each model's best epoch."""
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    ax_acc, ax_nll = figure.subplots(1, 2)
    for s in accuracy:
        ax_acc.plot(s.x, s.y, marker="o", markersize=3, color=s.color, label=s.label)
    for color, epoch, value in best.values():
        ax_acc.plot([epoch], [value], marker="*", markersize=12, color=color, markeredgecolor="black",
                    linestyle="none")
    for s in nll:
        ax_nll.plot(s.x, s.y, marker="o", markersize=3, color=s.color, label=s.label)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_nll.set_ylabel("test NLL (nats)")
    for ax in (ax_acc, ax_nll):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            one_legend_entry_per_label(ax, fontsize=8)
    ax_acc.set_title("test accuracy (★ = best epoch)", fontsize=10)
    ax_nll.set_title("test negative log-likelihood", fontsize=10)
    figure.suptitle(title, fontsize=12)
    return figure


@dataclass(frozen=True)
class ExampleRows:
    """Saved examples of one model: images as float (N, 3, H, W) in [0, 1], class indices as ints."""

    label: str
    clean: np.ndarray
    adversarial: np.ndarray
    labels: list[int]
    clean_pred: list[int]
    adversarial_pred: list[int]


def montage(rows: list[np.ndarray], gap: int) -> np.ndarray:
    """Image rows (each (N, 3, H, W) in [0, 1]) tiled into one white-separated (rows·(H+gap), N·(W+gap), 3) image."""
    n, _, h, w = rows[0].shape
    canvas = np.ones((len(rows) * (h + gap), n * (w + gap), 3), dtype=np.float32)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            top, left = r * (h + gap) + gap, c * (w + gap) + gap // 2
            canvas[top:top + h, left:left + w] = np.clip(image.transpose(1, 2, 0), 0, 1)
    return canvas


def examples_figure(models: list[ExampleRows], class_names: tuple[str, ...] | None, attack: str,
                    title: str) -> Figure:
    """Per model: clean images, the same images attacked, and the perturbation made visible.

    One montage image per model keeps the figure cheap to draw; prediction labels are green when
    right and red when wrong.
    """
    size, gap = models[0].clean.shape[-1], max(10, models[0].clean.shape[-1] // 3)
    columns = max(len(m.labels) for m in models)
    figure = Figure(figsize=(1.3 * columns + 1.8, 3.9 * len(models) + 0.5), layout="constrained")
    axes = figure.subplots(len(models), 1, squeeze=False)[:, 0]
    name = (lambda i: class_names[i] if class_names and 0 <= i < len(class_names) else str(i))
    for ax, model in zip(axes, models):
        change = model.adversarial - model.clean
        amplify = 0.5 / max(float(np.abs(change).max()), 1e-12)
        rows = [model.clean, model.adversarial, 0.5 + amplify * change]
        ax.imshow(montage(rows, gap), interpolation="nearest")
        for c, truth in enumerate(model.labels):
            x = c * (size + gap) + gap // 2 + size / 2
            for r, pred in ((0, model.clean_pred[c]), (1, model.adversarial_pred[c])):
                text = f"{name(truth)} → {name(pred)}" if r == 0 else f"→ {name(pred)}"
                ax.text(x, r * (size + gap) + gap - 1.5, text, ha="center", va="bottom", fontsize=7.5,
                        color="#1a7f37" if pred == truth else "#cf222e")
        ax.set_xticks([])
        ax.set_yticks([r * (size + gap) + gap + size / 2 for r in range(3)],
                      ["clean", attack, f"perturbation\n(×{amplify:.0f}, grey = 0)"], fontsize=8)
        ax.set_title(model.label, fontsize=10, loc="left")
        for spine in ax.spines.values():
            spine.set_visible(False)
    figure.suptitle(title + "\nlabels: true class → prediction", fontsize=11)
    return figure
