"""gradient-masking.png: one panel per check, titled with its verdict, drawn from the check's numbers.

Drawn headless on matplotlib's Agg canvas (no pyplot state), from the `figure` dict each
check in gradient-masking.json carries, so the picture can always be redrawn from the file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from robustbench_mm.attacks.autoattack import eps_text
from robustbench_mm.common.storage import atomic_write

PASS_COLOR, FAIL_COLOR = "#2ca02c", "#d62728"
PROTOCOL_COLORS = {"standard": "#1f77b4", "paper": "#ff7f0e"}


def _curve(ax, data: dict) -> None:
    curve = data["accuracy_per_step"]
    ax.plot(range(len(curve)), curve, color="black", label=f"{data.get('protocol', '')} (verdict)")
    for protocol, other in data.get("others", {}).items():
        ax.plot(range(len(other)), other, color=PROTOCOL_COLORS.get(protocol), linestyle="--", label=protocol)
    ax.axhline(data["threshold"], color="gray", linestyle="--", linewidth=1, label=f"threshold {data['threshold']:g} %")
    ax.set_xlabel("unbounded PGD iteration (0 = clean)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7)


def _bars(ax, data: dict) -> None:
    labels = ["FGSM acc.", "PGD acc.", "fooled by\nFGSM only", "fooled by\nPGD only"]
    n = max(data["n_examples"], 1)
    values = [data["fgsm_accuracy"], data["pgd_accuracy"], 100 * data["fooled_by_fgsm_only"] / n,
              100 * data["fooled_by_pgd_only"] / n]
    ax.bar(labels, values, color=["#1f77b4", "#9467bd", "#d62728", "#2ca02c"])
    for i, value in enumerate(values):
        ax.text(i, value, f"{value:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(f"% of {data['n_examples']} examples, eps {data['eps']:g}")
    ax.tick_params(axis="x", labelsize=7)


def _sweep(ax, data: dict) -> None:
    for protocol, series in data["sweeps"].items():
        ax.plot(series["eps"], series["accuracy"], marker="o", markersize=3,
                color=PROTOCOL_COLORS.get(protocol), label=protocol)
    ax.set_xlabel("eps (standard: pixels; paper: normalized)")
    ax.set_ylabel("FGSM accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7)


def _eps_zero(ax, data: dict) -> None:
    labels = ["clean", *(f"FGSM eps 0\n{p}" for p in data["eps_zero_accuracy"])]
    values = [data["clean_accuracy"], *data["eps_zero_accuracy"].values()]
    ax.bar(labels, values, color=["gray", *(PROTOCOL_COLORS.get(p) for p in data["eps_zero_accuracy"])])
    for i, value in enumerate(values):
        ax.text(i, value, f"{value:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.tick_params(axis="x", labelsize=7)


def _gradient_histogram(ax, data: dict) -> None:
    if not any(np.any(histogram["counts"]) for histogram in data["histograms"].values()):
        _gradient_kinds(ax, data)  # no finite nonzero gradient has a logarithm to bin: an empty histogram says nothing
        return
    occupied = []
    for protocol, histogram in data["histograms"].items():
        edges = np.asarray(histogram["log10_edges"], dtype=float)
        counts = np.asarray(histogram["counts"])
        ax.stairs(counts, edges, color=PROTOCOL_COLORS.get(protocol),
                  label=f"{protocol}: {histogram['zero']} zero, {histogram['non_finite']} non-finite")
        occupied += [edges[i] for i in np.flatnonzero(counts)] + [edges[i + 1] for i in np.flatnonzero(counts)]
    if occupied:  # zoom on the occupied bins; the zero and non-finite counts are in the legend
        ax.set_xlim(min(occupied) - 2, max(occupied) + 2)
    ax.set_xlabel("log10 max |input gradient| per example")
    ax.set_ylabel("examples")
    ax.legend(fontsize=7)


def _gradient_kinds(ax, data: dict) -> None:
    """Examples whose input gradient is zero, non-finite or neither, per protocol, as bars."""
    kinds = ("zero", "non-finite", "nonzero and finite")
    width = 0.8 / len(data["histograms"])
    for k, (protocol, histogram) in enumerate(data["histograms"].items()):
        counts = [histogram["zero"], histogram["non_finite"], int(np.sum(histogram["counts"]))]
        positions = np.arange(len(kinds)) + (k - (len(data["histograms"]) - 1) / 2) * width
        ax.bar(positions, counts, width, color=PROTOCOL_COLORS.get(protocol), label=protocol)
        for x, count in zip(positions, counts):
            ax.text(x, count, str(count), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(np.arange(len(kinds)), kinds)
    ax.set_ylabel("examples (max |input gradient|)")
    ax.legend(fontsize=7)


def _black_box(ax, data: dict) -> None:
    labels = ["after APGD-CE,\nAPGD-T, FAB-T", "after Square", "fooled by\nSquare only"]
    n = max(data["n_examples"], 1)
    values = [data["white_box_accuracy"], data["after_square_accuracy"], 100 * data["fooled_by_square_only"] / n]
    ax.bar(labels, values, color=["#1f77b4", "#9467bd", "#d62728"])
    for i, value in enumerate(values):
        ax.text(i, value, f"{value:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(f"% of {data['n_examples']} examples, eps {eps_text(data['eps'])}")
    ax.tick_params(axis="x", labelsize=7)


def _determinism(ax, data: dict) -> None:
    identical = data["n_logits"] - data["differing"]
    ax.bar(["identical", "differing"], [identical, data["differing"]], color=["#2ca02c", "#d62728"])
    largest = data["max_abs_difference"]
    ax.set_ylabel("logits (two passes)")
    ax.text(0.5, 0.5, f"max |difference| = {largest:.3g}" if largest is not None else "non-finite difference",
            transform=ax.transAxes, ha="center", fontsize=8, bbox={"facecolor": "white", "alpha": 0.8})


def _loss_trace(ax, data: dict) -> None:
    window = data["window"]
    for trace, moved in zip(data["traces"], data["movement"]):
        values = np.asarray([np.nan if v is None else v for v in trace], dtype=float)
        finite = values[np.isfinite(values)]
        span = (finite.max() - finite.min()) if finite.size else 0.0
        scaled = (values - finite.min()) / span if span > 0 else np.zeros_like(values)
        best = np.fmax.accumulate(scaled)
        tripped = moved is None or moved > data["threshold"]
        ax.plot(range(len(best)), best, color="#d62728" if tripped else "#1f77b4", alpha=0.6, linewidth=1)
    if data["traces"]:
        length = len(data["traces"][0])
        ax.axvspan(max(length - window, 0), length - 1, color="gray", alpha=0.15,
                   label=f"last {window} iterates (may move ≤ {data['threshold']:g})")
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no failed examples", transform=ax.transAxes, ha="center", fontsize=8)
    ax.set_xlabel("attack iterate (0 = start)")
    ax.set_ylabel(f"best loss so far, rescaled\n({len(data['traces'])} of {data['n_failed']} failed examples)",
                  fontsize=8)
    ax.set_ylim(-0.05, 1.05)


def _silent_success(ax, data: dict) -> None:
    labels = ["reported\nfooled", "fooled on\nre-evaluation", "silent\nsuccesses", "over-\nclaimed"]
    values = [data["claimed_fooled"], data["reevaluated_fooled"], data["silent"], data["overclaimed"]]
    ax.bar(labels, values, color=["#1f77b4", "#9467bd", "#d62728", "#ff7f0e"])
    for i, value in enumerate(values):
        ax.text(i, value, str(value), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(f"examples (of {data['n_examples']})")
    ax.tick_params(axis="x", labelsize=7)


PANELS = {"loss-trace": _loss_trace, "silent-success": _silent_success, "curve": _curve, "bars": _bars, "sweep": _sweep, "eps-zero": _eps_zero,
          "gradient-histogram": _gradient_histogram, "determinism": _determinism, "black-box": _black_box}


def gradient_masking_figure(checks: list[dict], title: str) -> Figure:
    columns = 3
    rows = -(-len(checks) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.4 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, check in zip(axes, checks):
        PANELS[check["figure"]["kind"]](ax, check["figure"])
        verdict = "PASS" if check["passed"] else "FAIL"
        ax.set_title(f"{verdict}: {check['name']}", fontsize=9, color=PASS_COLOR if check["passed"] else FAIL_COLOR)
        ax.grid(alpha=0.3)
    for ax in axes[len(checks):]:
        ax.set_axis_off()
    figure.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=11)  # a list of failed checks runs long
    return figure


def save_gradient_masking_figure(path: Path, checks: list[dict], title: str) -> None:
    figure = gradient_masking_figure(checks, title)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
