"""Do the paper's orderings hold? One row per ordering, with its paired test and verdict.

The comparisons themselves (which claims, which seeds pair, the tests) are report/orderings.py's."""

from __future__ import annotations

from robustbench_mm.paper import TABLE5_EPS
from robustbench_mm.report.orderings import Comparison, csv_row, tally
from robustbench_mm.report.records import DATASET_NAMES, Group, deform_evaluations, deform_look, deform_set_label
from robustbench_mm.report.sections import Block, Section


ORDERINGS_INTRO = (
    "Each row is one ordering the paper's numbers show (model A ahead of model B), tested on our runs of the same "
    "two models on the same test examples. Difference = A − B in accuracy points (mean over seeds), with its 95 % "
    "interval. One seed: the exact McNemar test on the examples where the two models disagree decides (p < 0.05). "
    "Several seeds: a bootstrap over seeds and test examples together decides (the interval excludes 0). "
    "**holds**: our difference has the paper's sign; **reversed**: the opposite sign; **not distinguishable at this "
    "sample size**: neither can be told apart from noise with these seeds and examples.")


def ordering_blocks(fgsm_eps: float) -> tuple[tuple[str | None, str], ...]:
    """(protocol, caption) of each block of the orderings table; FGSM orderings are tested at `fgsm_eps`."""
    return (("standard", f"FGSM ε = {fgsm_eps:g}, standard protocol (Table 5)"),
            ("paper", f"FGSM ε = {fgsm_eps:g}, paper protocol (Table 5)"),
            (None, "Deformations (Tables 3 and 7): manifold mixup against each other model, per test set"))


def _signed(value: float) -> str:
    return f"{value:+.2f}"


def ordering_cells(comparison: Comparison) -> list[str]:
    c, claim = comparison, comparison.claim
    what = f"{c.better.label} ahead of {c.worse.label}"
    if claim.evaluation == "deform":
        what = f"{deform_set_label(claim.label)}: {what}"
    ours = f"{c.ours_better:.2f} vs {c.ours_worse:.2f}" if c.ours_better is not None else "–"
    if c.difference is None:
        difference = "–"
    elif c.interval is None:
        difference = _signed(c.difference)
    else:
        difference = f"{_signed(c.difference)} [{_signed(c.interval[0])}, {_signed(c.interval[1])}]"
    seeds = len(c.differences)
    return [what, claim.source, f"{claim.paper_better:.2f} vs {claim.paper_worse:.2f}",
            ours + (f" ({seeds} seeds)" if seeds > 1 else ""), difference, c.evidence, f"**{c.verdict}**"]


def orderings_section(group: Group) -> Section:
    deform = deform_evaluations(group)[0]
    comparisons = group.comparisons
    notes = [ORDERINGS_INTRO, f"Deformation orderings are tested on the `{deform}` results: {deform_look(deform, False)}."]
    if group.dataset not in ("cifar10", "cifar100"):
        notes.append(f"The paper's orderings were measured on CIFAR; here they are tested on "
                     f"{DATASET_NAMES.get(group.dataset, group.dataset)}: whether the same orderings appear in this "
                     "setting, not whether the paper reproduces.")
    columns = ["Ordering (paper: A ahead of B)", "Source", "Paper: A vs B", "Ours: A vs B",
               "Difference A − B [95 % interval]", "Evidence", "Verdict"]
    blocks, summary = [], []
    if group.fgsm_eps != TABLE5_EPS:
        notes.append(f"The models were attacked at ε = {group.fgsm_eps:g}, so the paper's FGSM orderings (measured at "
                     f"ε = {TABLE5_EPS:g}) are tested there, on the same test examples.")
    for protocol, caption in ordering_blocks(group.fgsm_eps):
        chosen = [c for c in comparisons if c.protocol == protocol]
        if chosen:
            blocks.append(Block(caption, columns, [ordering_cells(c) for c in chosen]))
            summary.append(f"{caption.split(' (')[0]}: {tally(chosen)}")
    if summary:
        notes.insert(0, "**In short:** " + "; ".join(summary) + ".")
    rows = [{"dataset": group.dataset, "arch": group.arch, "preset": group.preset, **csv_row(c)} for c in comparisons]
    return Section(group.heading, [], notes, blocks, rows)
