"""Do the paper's orderings hold? One row per ordering, with its paired test and verdict.

The comparisons themselves (which claims, which seeds pair, the tests) are report/orderings.py's."""

from __future__ import annotations

from robustbench_mm.attacks.autoattack import eps_text
from robustbench_mm.paper import AUTOATTACK_ORDERING_EPS, TABLE5_EPS
from robustbench_mm.report.orderings import Comparison, block_of, csv_row, tally
from robustbench_mm.report.records import DATASET_NAMES, Group, deform_evaluations, deform_look, deform_set_label
from robustbench_mm.report.sections import Block, Section


ORDERINGS_INTRO = (
    "Each row is one ordering the paper's numbers show (model A ahead of model B), tested on our runs of the same "
    "two models on the same test examples. Difference = A − B in accuracy points (mean over seeds), with its 95 % "
    "interval. One seed: the exact McNemar test on the examples where the two models disagree decides (p < 0.05). "
    "Several seeds: a bootstrap over seeds and test examples together decides (the interval excludes 0). "
    "**holds**: our difference has the paper's sign; **reversed**: the opposite sign; **not distinguishable at this "
    "sample size**: neither can be told apart from noise with these seeds and examples.")


AUTOATTACK_NOTE = (
    "AutoAttack block: the positive control of issue 23, not an ordering the paper reports. Adversarial training "
    "(Madry et al.) is the accepted L∞ defence, so it must stay ahead of every mixup model under the strongest "
    "attack. The paper's Table 5 lists the same rows but ranks adversarial training *below* input and manifold mixup "
    "under FGSM ε = 0.03 (CIFAR-10: 60.30 against 71.51 and 77.50; the FGSM blocks test that), so the paper gives "
    "no AutoAttack numbers (\"–\"). Tested like the others: exact McNemar on the per-example AutoAttack masks "
    "(correct after every stage) of the two models, or the bootstrap over seeds and examples.")


def ordering_blocks(fgsm_eps: float, autoattack_budgets: str = "") -> tuple[tuple[str | None, str], ...]:
    """(block, caption) of each block of the orderings table (`orderings.block_of`); FGSM at `fgsm_eps`."""
    budget = f" ({autoattack_budgets} budget)" if autoattack_budgets else ""
    return (("standard", f"FGSM ε = {fgsm_eps:g}, standard protocol (Table 5)"),
            ("paper", f"FGSM ε = {fgsm_eps:g}, paper protocol (Table 5)"),
            ("autoattack", (f"AutoAttack ε = {eps_text(AUTOATTACK_ORDERING_EPS)}{budget}: adversarial training "
                            "against each mixup model (positive control)")),
            (None, "Deformations (Tables 3 and 7): manifold mixup against each other model, per test set"))


def autoattack_budgets(comparisons: list[Comparison]) -> str:
    """'smoke' / 'standard' / 'smoke/standard': the AutoAttack budgets of the result files the block compares."""
    found = {(run.result(c.evaluation) or {}).get("budget", "standard")
             for c in comparisons if block_of(c) == "autoattack"
             for model in (c.better, c.worse) for run in model.runs if run.result(c.evaluation)}
    return "/".join(sorted(found))


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
    paper = "–" if claim.paper_better is None else f"{claim.paper_better:.2f} vs {claim.paper_worse:.2f}"
    return [what, claim.source, paper,
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
    if any(block_of(c) == "autoattack" for c in comparisons):
        notes.append(AUTOATTACK_NOTE)
    for block, caption in ordering_blocks(group.fgsm_eps, autoattack_budgets(comparisons)):
        chosen = [c for c in comparisons if block_of(c) == block]
        if chosen:
            blocks.append(Block(caption, columns, [ordering_cells(c) for c in chosen]))
            summary.append(f"{caption.split(' (')[0]}: {tally(chosen)}")
    if summary:
        notes.insert(0, "**In short:** " + "; ".join(summary) + ".")
    rows = [{"dataset": group.dataset, "arch": group.arch, "preset": group.preset, **csv_row(c)} for c in comparisons]
    return Section(group.heading, [], notes, blocks, rows)
