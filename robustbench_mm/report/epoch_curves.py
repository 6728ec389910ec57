"""The right half of the paper's Table 5: FGSM test accuracy against training epoch.

The numbers come from the per-epoch history training writes into ``checkpoints/<run>/meta.json``
(see `training_fgsm`): one line per model, one panel per FGSM protocol, and a tidy CSV. The
in-training FGSM's cost is reported as a share of a training epoch.
"""

from __future__ import annotations

import statistics
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from robustbench_mm.figures.plots import Series, save_png
from robustbench_mm.report.calibration_figure import unique_label
from robustbench_mm.report.records import Group


PROTOCOLS = ("standard", "paper")
CSV_COLUMNS = (
    "dataset", "arch", "preset", "model", "run", "protocol", "eps", "epoch", "fgsm_accuracy", "test_accuracy",
    "n_examples", "fgsm_seconds", "epoch_seconds", "fgsm_share_of_epoch", "train_seed", "train_commit",
)


def fgsm_history(meta: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The history records that carry an in-training FGSM measurement."""
    return [h for h in (meta or {}).get("history", []) if isinstance(h.get("fgsm"), dict)]


def epoch_rows(group: Group) -> list[dict[str, Any]]:
    rows = []
    for record in group.runs:
        for h in fgsm_history(record.meta):
            fgsm = h["fgsm"]
            for protocol in PROTOCOLS:
                if protocol not in fgsm["accuracy"]:
                    continue
                rows.append({
                    "dataset": group.dataset, "arch": group.arch, "preset": group.preset, "model": record.key,
                    "run": record.name, "protocol": protocol, "eps": fgsm["eps"], "epoch": h["epoch"],
                    "fgsm_accuracy": fgsm["accuracy"][protocol], "test_accuracy": h.get("test_accuracy"),
                    "n_examples": fgsm["n_examples"], "fgsm_seconds": fgsm["seconds"], "epoch_seconds": h.get("seconds"),
                    "fgsm_share_of_epoch": round(fgsm["seconds"] / h["seconds"], 4) if h.get("seconds") else None,
                    "train_seed": record.meta["config"]["seed"], "train_commit": record.meta.get("git_commit"),
                })
    return rows


def cost_share(rows: list[dict[str, Any]]) -> float | None:
    """Median over evaluations of (in-training FGSM time) / (training epoch time); each evaluation counted once."""
    shares = {(r["run"], r["epoch"]): r["fgsm_share_of_epoch"] for r in rows if r["fgsm_share_of_epoch"] is not None}
    return statistics.median(shares.values()) if shares else None


def epochs_figure(panels: dict[str, list[Series]], eps: float, title: str) -> Figure:
    """One panel per protocol: FGSM accuracy against training epoch, a line per model."""
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    scales = {"standard": "ε on the [0, 1] pixel scale", "paper": "ε on the normalized input (the paper's)"}
    for ax, (protocol, series) in zip(axes, panels.items()):
        for s in series:
            ax.plot(s.x, s.y, marker="o", markersize=3, color=s.color, label=s.label)
        ax.set_title(f"{protocol} protocol: {scales.get(protocol, '')}", fontsize=10)
        ax.set_xlabel("training epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=8, loc="best")
    axes[0].set_ylabel(f"test accuracy under FGSM ε = {eps:g} (%)")
    figure.suptitle(title, fontsize=12)
    return figure


def draw_epochs(group: Group, colors: dict[str, str], path) -> str | None:
    """Write the figure; return its caption (with the measured cost), or None when no model has the data."""
    rows = epoch_rows(group)
    if not rows:
        return None
    panels: dict[str, list[Series]] = {}
    for protocol in PROTOCOLS:
        panels[protocol] = []
        for record in group.runs:
            points = [(r["epoch"], r["fgsm_accuracy"]) for r in rows if r["run"] == record.name and r["protocol"] == protocol]
            if points:
                panels[protocol].append(Series(unique_label(group, record).replace("\n", " "), colors[record.name], [p[0] for p in points],
                                               [p[1] for p in points]))
    n = "/".join(sorted({str(r["n_examples"]) for r in rows}))
    eps = rows[0]["eps"]
    title = (f"Table 5 (right): FGSM accuracy during training, first {n} test images — {group.heading}")
    save_png(epochs_figure(panels, eps, title), path)
    share = cost_share(rows)
    cost = f"; measuring it cost {100 * share:.0f} % of a training epoch (median)" if share is not None else ""
    return f"Table 5 (right): FGSM accuracy (ε = {eps:g}) against training epoch, both protocols{cost}"
