"""The report's figures, drawn headless (matplotlib's Agg canvas; no display, no pyplot state).

Each ``*_figure`` function takes plain numbers and returns a Figure, so tests can draw from
synthetic data; `draw_group` pulls those numbers out of one group's records and writes PNGs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from robustbench_mm.common.storage import atomic_write, copy_file
from robustbench_mm.paper import PGD_UNBOUNDED, TABLE5, TABLE7, paper_table7
from robustbench_mm.report.orderings import compare_group
from robustbench_mm.report.records import (
    Group, ModelRuns, RunRecord, column_label, deform_cell, deform_evaluations, deform_look, deform_set_label,
    table7_columns)
from robustbench_mm.report.tables.robustness import stage_series
from robustbench_mm.stats.estimates import SeedValue, estimate
from robustbench_mm.stats.significance import HOLDS, NOT_DISTINGUISHABLE, REVERSED

MASKING_FIGURE = "gradient-masking.png"  # drawn by `mm-robust attack` into attacks/<run>/
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


# ---- from records to PNG files ----------------------------------------------------------------


def _group_title(group: Group, what: str) -> str:
    return f"{what} — {group.heading}"


def sweep_series(model: ModelRuns, protocol: str, color: str) -> Series | None:
    """A model's FGSM accuracy vs ε: the mean over seeds with std error bars and each seed's dots,
    or for one seed its value with the exact 95 % interval over test examples."""
    per_eps: dict[float, list[SeedValue]] = {}
    for record in model.runs:
        result = record.result(f"fgsm-{protocol}")
        if not result:
            continue
        sweep = result.get("sweep") or {"eps": result["eps"], "accuracy": result["accuracy"]}
        for eps, accuracy in zip(sweep["eps"], sweep["accuracy"]):
            per_eps.setdefault(round(float(eps), 9), []).append(
                SeedValue(record.name, record.seed, float(accuracy), result.get("n_examples")))
    if not per_eps:
        return None
    eps_values = sorted(per_eps)
    cells = [estimate(per_eps[eps]) for eps in eps_values]
    below, above = [], []
    for cell in cells:
        if cell.std is not None:
            below.append(cell.std)
            above.append(cell.std)
        elif cell.interval is not None:
            below.append(cell.mean - cell.interval[0])
            above.append(cell.interval[1] - cell.mean)
        else:
            below.append(0.0)
            above.append(0.0)
    seeds = max(cell.n_seeds for cell in cells)
    points = tuple((eps, v.value) for eps, cell in zip(eps_values, cells) for v in cell.values) if seeds > 1 else ()
    spread = f"mean ± std, {seeds} seeds" if seeds > 1 else "95 % interval over test examples"
    return Series(f"{model.label} ({spread})", color, eps_values, [cell.mean for cell in cells], (below, above),
                  points)


def draw_fgsm(group: Group, colors: dict[str, str], path: Path) -> bool:
    panels: dict[str, list[Series]] = {}
    for protocol in ("standard", "paper"):
        series = [sweep_series(model, protocol, colors[model.runs[0].name]) for model in group.models]
        panels[protocol] = [s for s in series if s is not None]
    if not any(panels.values()):
        return False
    paper_points = {}
    if group.dataset in TABLE5:  # the paper's stars only where the dataset is the paper's
        for model in group.models:
            value = TABLE5[group.dataset].get(model.key)
            if value is not None:
                paper_points[model.label] = (colors[model.runs[0].name], value)
    n = sorted({str(r.result(f"fgsm-{p}")["n_examples"]) for r in group.runs for p in ("standard", "paper")
                if r.result(f"fgsm-{p}")})
    save_png(fgsm_sweep_figure(panels, paper_points, 0.03,
                               _group_title(group, f"FGSM accuracy vs ε ({'/'.join(n)} test images)")), path)
    return True


def pgd_legend_label(model_label: str, protocol: str, final_accuracies: list[float]) -> str:
    """One legend entry per model and protocol; with several seeds, their count and mean final accuracy."""
    if len(final_accuracies) == 1:
        return f"{model_label}, {protocol}: {final_accuracies[0]:.1f} % at the end"
    mean = sum(final_accuracies) / len(final_accuracies)
    return f"{model_label}, {protocol} ({len(final_accuracies)} seeds): mean {mean:.1f} % at the end"


def draw_pgd(group: Group, colors: dict[str, str], path: Path) -> bool:
    """Solid: the paper protocol (Appendix D's verdict); dashed: the standard protocol."""
    series, thresholds, paper_points, step_size = [], set(), {}, set()
    for protocol, style in (("paper", "-"), ("standard", "--")):
        for model in group.models:
            measured = [(record, result) for record in model.runs
                        if (result := record.result(f"pgd-unbounded-{protocol}"))]
            if not measured:
                continue
            label = pgd_legend_label(model.label, protocol, [r["accuracy_per_step"][-1] for _, r in measured])
            for record, result in measured:
                curve = result["accuracy_per_step"]
                series.append(Series(label, colors[record.name], list(range(len(curve))), curve, linestyle=style))
                step_size.add(result.get("step_size"))
                if result.get("threshold") is not None:
                    thresholds.add(result["threshold"])
                if record.key in PGD_UNBOUNDED and group.dataset == "cifar10":
                    paper_points[record.label] = (colors[record.name], PGD_UNBOUNDED[record.key])
    if not series:
        return False
    threshold = thresholds.pop() if len(thresholds) == 1 else None
    title = _group_title(group, f"Unbounded PGD, step {'/'.join(map(str, step_size))}, no ε-ball, worst case "
                                "over iterates\n(solid: paper protocol; dashed: standard)")
    save_png(pgd_figure(series, threshold, paper_points, title), path)
    return True


def draw_autoattack_stages(group: Group, colors: dict[str, str], path: Path) -> bool:
    panels: dict[str, list[Series]] = {}
    for record in group.runs:
        for label, names, values in stage_series(record.results):
            panels.setdefault(label, []).append(Series(record.label, colors[record.name], names, values))
    if not panels:
        return False
    n = sorted({str(r.results[e]["n_examples"]) for r in group.runs for e in r.results if e.startswith("autoattack-")})
    title = _group_title(group, f"AutoAttack, robust accuracy after each stage ({'/'.join(n)} test images)")
    save_png(autoattack_stages_figure(dict(sorted(panels.items())), title), path)
    return True


def draw_table7(group: Group, path: Path) -> bool:
    columns = table7_columns(group)
    evaluation = deform_evaluations(group)[0]  # the report's main Table 7
    if not any(m and any(r.result(evaluation) for r in m.runs) for _, m in columns):
        return False
    sets = list(TABLE7)
    ours = np.full((len(sets), len(columns)), np.nan)
    ours_std = np.full_like(ours, np.nan)
    paper = np.full_like(ours, np.nan)
    for col, (key, model) in enumerate(columns):
        for row, set_name in enumerate(sets):
            cell = deform_cell(model, key, set_name, evaluation)[0]
            if cell is not None:
                ours[row, col] = cell.mean
                if cell.std is not None:
                    ours_std[row, col] = cell.std
            value = paper_table7(set_name, key)
            if value is not None:
                paper[row, col] = value
    seeds = sorted({len(m.runs) for _, m in columns if m})
    labels = [column_label(key, model) for key, model in columns]
    paper_title = "paper (CIFAR-100, PreActResNet34)"
    title = _group_title(group, "Table 7: accuracy (%) under deformations") + "\n" + deform_look(evaluation, command=False)
    if seeds != [1]:
        title += f"\n(ours: mean ± std over {'/'.join(map(str, seeds))} seeds)"
    if group.dataset != "cifar100":
        title += "\n(different dataset from the paper: a sanity check, not a reproduction)"
    save_png(table7_figure([deform_set_label(s) for s in sets], labels, ours, paper, title, paper_title, ours_std),
             path)
    return True


def seeds_note(counts: list[int]) -> str:
    """How many seeds of each model the comparisons drawn rest on, e.g. '1 seed of each model'."""
    low, high = min(counts), max(counts)
    if low == high:
        return f"{low} seed{'s' if low != 1 else ''} of each model"
    return f"{low} to {high} seeds of each model, by comparison: [n] on each row"


def orderings_forest(group: Group) -> tuple[list[ForestRow], str] | None:
    """The forest plot's rows and title, or None when no ordering could be compared.

    The seeds counted are those whose results entered a comparison (its paired seeds), not the
    run folders: a seed trained but not yet attacked adds nothing to the plot.
    """
    sections = {"standard": "FGSM ε = 0.03, standard protocol", "paper": "FGSM ε = 0.03, paper protocol",
                None: "Deformations (Tables 3 and 7)"}
    shown = [c for c in compare_group(group.models, group.dataset, deform_evaluations(group)[0])
             if c.difference is not None]
    if not shown:
        return None
    counts = [len(c.differences) for c in shown]
    rows = []
    for c, seeds in zip(shown, counts):
        what = f"{c.better.key} > {c.worse.key}"
        if c.claim.evaluation == "deform":
            what = f"{deform_set_label(c.claim.label)}: {what}"
        if len(set(counts)) > 1:
            what += f" [{seeds}]"
        low, high = c.interval if c.interval else (None, None)
        rows.append(ForestRow(what, c.difference, low, high, c.verdict, sections[c.protocol]))
    return rows, _group_title(group, f"Do the paper's orderings hold? (95 % intervals; {seeds_note(counts)})")


def draw_orderings(group: Group, path: Path) -> bool:
    forest = orderings_forest(group)
    if forest is None:
        return False
    save_png(forest_figure(*forest), path)
    return True


def draw_training(group: Group, colors: dict[str, str], path: Path) -> bool:
    accuracy, nll, best = [], [], {}
    for model in group.models:
        label = model.label if len(model.runs) == 1 else f"{model.label} ({len(model.runs)} seeds)"
        for record in model.runs:
            history = [h for h in (record.meta or {}).get("history", []) if "test_accuracy" in h]
            if not history:
                continue
            epochs = [h["epoch"] for h in history]
            accuracy.append(Series(label, colors[record.name], epochs, [h["test_accuracy"] for h in history]))
            nll.append(Series(label, colors[record.name], epochs, [h["test_nll"] for h in history]))
            chosen = record.meta["checkpoints"].get("best")
            if chosen and chosen.get("test_accuracy") is not None:
                best[record.name] = (colors[record.name], chosen["epoch"], chosen["test_accuracy"])
    if not accuracy:
        return False
    save_png(training_figure(accuracy, nll, best, _group_title(group, "Training curves")), path)
    return True


def _load_examples(record: RunRecord) -> ExampleRows | None:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(record.examples_file))
        rows = ExampleRows(record.label, *(_as_unit(tensors[k]) for k in ("clean", "adversarial")),
                           *(tensors[k].astype(int).tolist() for k in ("labels", "clean_pred", "adversarial_pred")))
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
    n = min(EXAMPLES_PER_MODEL, len(rows.labels))
    return ExampleRows(rows.label, rows.clean[:n], rows.adversarial[:n], rows.labels[:n], rows.clean_pred[:n],
                       rows.adversarial_pred[:n])


def _as_unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def _examples_caption(record: RunRecord) -> str:
    from safetensors import safe_open

    with safe_open(str(record.examples_file), framework="numpy") as handle:
        metadata = handle.metadata() or {}
    if "eps" not in metadata:
        return "attacked"
    return f"FGSM ε = {float(metadata['eps']):g}\n({metadata.get('protocol', '?')} protocol)"


def draw_examples(group: Group, path: Path) -> bool:
    records = [r for r in group.runs if r.examples_file]
    models = [m for m in (_load_examples(r) for r in records) if m is not None and m.labels]
    if not models:
        return False
    attack = _examples_caption(records[0])
    class_names = CIFAR10_CLASSES if group.dataset == "cifar10" else (
        tuple(map(str, range(10))) if group.dataset == "digits" else None)
    title = _group_title(group, "Adversarial examples (green = correct, red = wrong)")
    save_png(examples_figure(models, class_names, attack, title), path)
    return True


def draw_group(group: Group, reports_root: Path, attacks_root: Path) -> dict[str, str]:
    """Write every figure this group has data for; return {file name: caption}, in reading order."""
    colors = model_colors([r.key for r in group.runs])
    colors = {r.name: colors[r.key] for r in group.runs}
    drawers = [
        ("fgsm-eps-sweep", "FGSM accuracy vs ε, both protocols", lambda p: draw_fgsm(group, colors, p)),
        ("pgd-unbounded", "Unbounded PGD: accuracy after every iteration", lambda p: draw_pgd(group, colors, p)),
        ("autoattack-stages", "AutoAttack: robust accuracy after each stage",
         lambda p: draw_autoattack_stages(group, colors, p)),
        ("table7-ours-vs-paper", "Table 7: ours vs the paper", lambda p: draw_table7(group, p)),
        ("orderings", "Do the paper's orderings hold? Our differences with 95 % intervals",
         lambda p: draw_orderings(group, p)),
        ("training-curves", "Training curves: test accuracy and NLL per epoch", lambda p: draw_training(group, colors, p)),
        ("adversarial-examples", "Adversarial examples: clean, attacked, and the perturbation",
         lambda p: draw_examples(group, p)),
    ]
    written = {}
    for stem, caption, draw in drawers:
        name = f"{stem}-{group.slug}.png"
        if draw(reports_root / name):
            written[name] = caption
    # Figures the evaluation stages drew themselves are copied, so reports/ stands on its own.
    main = deform_evaluations(group)[0]  # the sample grid of the warp the main Table 7 used
    copies = [(attacks_root / f"deform-samples-{group.dataset}{main.removeprefix('deform')}.png",
               f"deform-samples-{group.slug}.png",
               f"The deformation test sets on the first test images ({deform_look(main, command=False)})")]
    # A model's masking figure only with its gradient-masking result: one dropped as stale (other weights)
    # leaves a figure of the old weights behind.
    copies += [(attacks_root / r.name / MASKING_FIGURE, f"gradient-masking-{r.name}.png",
                f"Gradient-masking checks: {r.label}") for r in group.runs if "gradient-masking" in r.results]
    for source, name, caption in copies:
        if source.is_file():
            copy_file(source, reports_root / name)
            written[name] = caption
    return written
