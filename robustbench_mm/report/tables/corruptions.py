"""Common corruptions (CIFAR-10-C style): accuracy, calibration and a relative corruption error per model.

One section per (dataset, architecture, preset) group, read from ``attacks/<run>/corruptions.json``
(`mm-robust corrupt`). One row per model, seeds aggregated as in every table: clean accuracy, the
mean over the 15 corruptions x 5 severities (RobustBench's ``corruptions_acc``, in %), the ECE under
corruption (mean over the 75 sets), a relative corruption error against our baseline model, and the
accuracy per corruption (mean over its severities). RobustBench's public CIFAR-10-C numbers are
printed beside ours as reference points, and each mixup model is tested against the baseline
(report/corruption_orderings.py).

Relative corruption error (mCE-style, as RobustBench's `corruptions_evaluation` computes mCE, with our
baseline in AlexNet's place): for each corruption c, CE_c = sum_s (1 - acc_model(c, s)) /
sum_s (1 - acc_baseline(c, s)); the table shows the mean of CE_c over the 15 corruptions, in %. The
baseline's per-set accuracies are its mean over seeds; the model's is each seed's own, so a model's
cell has its spread over seeds like any other.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from robustbench_mm.data.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS, LABELS, SEVERITIES
from robustbench_mm.paper import CORRUPTION_ANCHOR_SOURCE, CORRUPTION_ANCHORS
from robustbench_mm.report.corruption_orderings import (
    EVALUATION, TEST_NOTE, CorruptionComparison, compare_corruption_group, ordering_csv_row)
from robustbench_mm.report.orderings import tally
from robustbench_mm.report.records import DATASET_NAMES, Group, ModelRuns
from robustbench_mm.report.sections import (
    UNCERTAINTY_NOTE, Block, Section, cell_status, estimate_cell, header_facts, markdown_table, one_or_each,
    table_csv_row)
from robustbench_mm.stats.estimates import Estimate

TITLE = "Common corruptions — accuracy under the 15 corruptions × 5 severities of CIFAR-10-C"
RCE_HEADER = "Relative corruption error (%) — relative to our baseline; the AlexNet normalisation is ImageNet-only"
INCOMPLETE = ("corruptions.json lacks some of the 75 standard sets; rerun `mm-robust corrupt` with every corruption "
              "and severity")
NOT_OURS = "not in the paper"


def has_corruptions(records: Iterable[Any]) -> bool:
    return any(EVALUATION in r.results for r in records)


def set_fractions(result: Mapping[str, Any]) -> dict[tuple[str, int], float]:
    """{(corruption, severity): accuracy as a fraction} of a corruptions.json."""
    return {(e["corruption"], e["severity"]): e["accuracy"] / 100 for e in result["sets"].values()}


def relative_corruption_error(model: Mapping[tuple[str, int], float], baseline: Mapping[tuple[str, int], float],
                              corruptions: Sequence[str] = CORRUPTIONS,
                              severities: Sequence[int] = SEVERITIES) -> float | None:
    """mean over c of sum_s (1 - model[c, s]) / sum_s (1 - baseline[c, s]), a fraction (1 = the baseline's error).

    Accuracies are fractions keyed by (corruption, severity). None when a set is missing on either side or the
    baseline makes no error on some corruption (the ratio is undefined there)."""
    ratios = []
    for name in corruptions:
        keys = [(name, s) for s in severities]
        if any(k not in model or k not in baseline for k in keys):
            return None
        denominator = sum(1 - baseline[k] for k in keys)
        if denominator <= 0:
            return None
        ratios.append(sum(1 - model[k] for k in keys) / denominator)
    return sum(ratios) / len(ratios) if ratios else None


def baseline_fractions(models: Sequence[ModelRuns]) -> dict[tuple[str, int], float] | None:
    """The first baseline model's per-set accuracy (fraction), averaged over its seeds; None without one."""
    base = next((m for m in models if m.key == "baseline"), None)
    results = [r.result(EVALUATION) for r in base.runs] if base else []
    per_seed = [set_fractions(r) for r in results if r is not None]
    if not per_seed:
        return None
    common = set.intersection(*(set(p) for p in per_seed))
    return {k: sum(p[k] for p in per_seed) / len(per_seed) for k in common}


def averaged_cell(model: ModelRuns, value_of: Callable[[dict[str, Any]], float | None],
                  absent: str) -> tuple[Estimate | None, str]:
    """A cell of a mean over sets (or of an ECE): seeds aggregated, but no binomial interval over test examples,
    which only an accuracy on one set of n images has (the averaged sets share their images)."""
    cell, why = model.cell(EVALUATION, value_of, absent)
    if cell is None:
        return None, why
    return Estimate(tuple(replace(v, n_examples=None) for v in cell.values), cell.missing), why


def _summary_value(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: r["summary"].get(key)


def _per_corruption(name: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: (r["summary"]["per_corruption"].get(name) or {}).get("accuracy")


def shown_corruptions(group: Group) -> list[str]:
    """The 15 standard corruptions, then any extra one a model of the group was evaluated on."""
    present = {name for r in group.runs if (res := r.result(EVALUATION)) for name in res["summary"]["per_corruption"]}
    return list(CORRUPTIONS) + [name for name in EXTRA_CORRUPTIONS if name in present]


def corruption_label(name: str) -> str:
    return LABELS.get(name, name) + (" (extra, not in the mean)" if name in EXTRA_CORRUPTIONS else "")


def anchor_notes(group: Group) -> str:
    points = ", ".join(f"{a.method} {a.architecture} {a.corruptions_acc:.2f} % (clean {a.clean_acc:.2f} %)"
                       for a in CORRUPTION_ANCHORS)
    text = (f"**Reference points, not a comparison:** {CORRUPTION_ANCHOR_SOURCE}: {points}. They are other "
            "architectures, trained for hundreds of epochs at full width on the official CIFAR-10-C files; ")
    if group.dataset != "cifar10":
        text += (f"our models are on {DATASET_NAMES.get(group.dataset, group.dataset)}, so they are sanity checks of "
                 "the scale only, not a reproduction.")
    else:
        text += "they show where published models stand, not what these models should reach."
    return text


def ordering_block(comparisons: Sequence[CorruptionComparison]) -> Block | None:
    if not comparisons:
        return None
    rows = []
    for c in comparisons:
        ours = f"{c.ours_better:.2f} vs {c.ours_worse:.2f}" if c.ours_better is not None else "–"
        seeds = len(c.differences)
        if c.difference is None:
            difference = "–"
        elif c.interval is None:
            difference = f"{c.difference:+.2f}"
        else:
            difference = f"{c.difference:+.2f} [{c.interval[0]:+.2f}, {c.interval[1]:+.2f}]"
        rows.append([f"{c.better.label} ahead of {c.worse.label}", ours + (f" ({seeds} seeds)" if seeds > 1 else ""),
                     difference, c.evidence, f"**{c.verdict}**"])
    return Block("Common corruptions (mean over the 15 × 5 sets): each mixup model against the baseline",
                 ["Ordering (A ahead of B)", "Ours: A vs B", "Difference A − B [95 % interval]", "Evidence", "Verdict"],
                 rows)


def corruption_ordering_rows(group: Group, comparisons: Sequence[CorruptionComparison]) -> list[dict[str, Any]]:
    return [{"dataset": group.dataset, "arch": group.arch, "preset": group.preset, **ordering_csv_row(c)}
            for c in comparisons]


def _facts(group: Group) -> list[tuple[str, str]]:
    sources, differs, severities = {}, {}, {}
    for model in group.models:
        results = [r.result(EVALUATION) for r in model.runs if r.result(EVALUATION)]
        if not results:
            continue
        sources[model.key] = ", ".join(dict.fromkeys(f"{r['source']} ({r.get('reference', '')})" for r in results))
        differs[model.key] = ", ".join(dict.fromkeys(
            ", ".join(r.get("differs_from_reference") or {}) or "none" for r in results))
        severities[model.key] = ", ".join(dict.fromkeys(
            "/".join(map(str, sorted({e["severity"] for e in r["sets"].values()}))) for r in results))
    protocol = ("every test image under each corruption at each severity (one test set per corruption and severity), "
                "classified once; accuracy per set, then means over sets")
    facts = header_facts(group, (EVALUATION,), protocol)
    where = facts.index(("protocol", protocol)) + 1
    facts[where:where] = [("corrupted images", one_or_each(sources)), ("severities", one_or_each(severities)),
                          ("corruptions that differ from the reference", one_or_each(differs))]
    return facts


def _difference_notes(group: Group) -> list[str]:
    notes: dict[str, str] = {}
    arithmetic = ""
    for r in group.runs:
        result = r.result(EVALUATION)
        if result:
            notes.update(result.get("differs_from_reference") or {})
            arithmetic = arithmetic or result.get("arithmetic_note", "")
    if not notes and not arithmetic:
        return []
    text = "**Where our generated sets differ from the reference:** " + "; ".join(
        f"{LABELS.get(name, name)}: {why}" for name, why in notes.items())
    return [text + (f". Arithmetic: {arithmetic}." if arithmetic else ".")]


def corruptions_section(group: Group, comparisons: Sequence[CorruptionComparison] | None = None) -> Section:
    comparisons = compare_corruption_group(group.models) if comparisons is None else comparisons
    models = group.models
    baseline = baseline_fractions(models)
    shown = shown_corruptions(group)
    summary_rows, per_rows, rows = [], [], []

    def rce(result: dict[str, Any]) -> float | None:
        value = relative_corruption_error(set_fractions(result), baseline) if baseline else None
        return None if value is None else 100 * value

    rce_absent = ("no baseline model with corruption results in this group" if baseline is None else
                  "not every standard set on this model and the baseline, or a baseline with no error on a corruption")
    columns = [("clean", lambda m: m.cell(EVALUATION, lambda r: r["clean"]["accuracy"], "")),
               ("corruptions_acc", lambda m: averaged_cell(m, _summary_value("corruptions_accuracy"), INCOMPLETE)),
               ("corruptions_ece", lambda m: averaged_cell(m, _summary_value("corruptions_ece"), INCOMPLETE)),
               ("relative_ce", lambda m: averaged_cell(m, rce, rce_absent))]
    for model in models:
        cells = [model.label, f"`{model.folders}`"]
        for setting, cell_of in columns:
            cell, why = cell_of(model)
            cells.append(estimate_cell(cell, why))
            rows.append(table_csv_row(group, model, model.key, EVALUATION, setting, cell, None, cell_status(cell, why),
                                      NOT_OURS))
        summary_rows.append(cells)
        per = [model.label]
        for name in shown:
            cell, why = averaged_cell(model, _per_corruption(name), f"corruptions.json has no {name}")
            per.append(estimate_cell(cell, why))
            rows.append(table_csv_row(group, model, model.key, EVALUATION, name, cell, None, cell_status(cell, why),
                                      NOT_OURS))
        per_rows.append(per)
    for anchor in CORRUPTION_ANCHORS:
        different = "different architecture" + ("" if group.dataset == anchor.dataset else
                                                 f", {DATASET_NAMES.get(anchor.dataset, anchor.dataset)}")
        summary_rows.append([f"RobustBench reference: {anchor.method}, {anchor.architecture} ({different})",
                             f"`{anchor.model_name}`", f"{anchor.clean_acc:.2f}", f"{anchor.corruptions_acc:.2f}", "–",
                             "–"])
        for setting, value in (("clean", anchor.clean_acc), ("corruptions_acc", anchor.corruptions_acc)):
            rows.append(table_csv_row(group, None, anchor.model_name, EVALUATION, setting, None, value,
                                      f"reference point ({different}), not ours",
                                      f"{CORRUPTION_ANCHOR_SOURCE}; {anchor.architecture}"))
    blocks = [Block("Accuracy (%) under common corruptions, calibration and the error relative to our baseline",
                    ["Model", "Run", "Clean", "Mean over the 15 × 5 sets (RobustBench's corruptions_acc, %)",
                     "ECE under corruption (mean over the 75 sets, points)", RCE_HEADER], summary_rows),
              Block("Accuracy (%) per corruption, mean over its severities",
                    ["Model", *(corruption_label(n) for n in shown)], per_rows)]
    ordering = ordering_block(comparisons)
    if ordering is not None:
        blocks.append(ordering)
    notes = [
        "Each cell: accuracy (%) on the same test images. The mean is RobustBench's `corruptions_acc` (the plain mean "
        "over the 75 standard sets; the extra corruptions never count), shown when all 75 sets are there. ECE: expected "
        "calibration error in percentage points (15 confidence bins), mean over the 75 sets. Relative corruption "
        "error: for each corruption, the model's errors summed over the five severities divided by the baseline's "
        "(its mean over seeds), then the mean over the 15 corruptions, in % (100 = the baseline's error). This is "
        "RobustBench's mCE arithmetic with our baseline in AlexNet's place — relative to our baseline; the AlexNet "
        "normalisation is ImageNet-only.",
        f"Uncertainty: {UNCERTAINTY_NOTE}. Means over sets (and ECE) have no binomial interval: the sets share their "
        "images, so a one-seed mean shows its value alone; the orderings below carry paired intervals.",
        anchor_notes(group), *_difference_notes(group)]
    if ordering is not None:
        notes.append(TEST_NOTE)
    return Section(group.heading, _facts(group), notes, blocks, rows)


def corruptions_sections(groups: Sequence[Group], orderings: Sequence[Section]) -> list[Section]:
    """The corruptions table of every group; each group's corruption orderings also join its orderings section
    (a block, CSV rows in orderings.csv's columns, and the count in its "In short" note)."""
    sections = []
    for group, ordering_section in zip(groups, orderings):
        comparisons = compare_corruption_group(group.models)
        block = ordering_block(comparisons)
        if block is not None:
            ordering_section.blocks.append(block)
            ordering_section.rows.extend(corruption_ordering_rows(group, comparisons))
            ordering_section.notes.append(TEST_NOTE)
            short = f"Common corruptions: {tally(comparisons)}"
            notes = ordering_section.notes
            if notes and notes[0].startswith("**In short:**"):
                notes[0] = notes[0].removesuffix(".") + f"; {short}."
            else:
                notes.insert(0, f"**In short:** {short}.")
        sections.append(corruptions_section(group, comparisons))
    return sections


def index_part(section: Section) -> list[str]:
    """index.md's lines for one group's corruptions: the summary block, the orderings, a link to the rest."""
    parts = [f"### {TITLE}", ""]
    for block in [section.blocks[0], *section.blocks[2:]]:
        parts += [f"**{block.caption}**", "", markdown_table(block), ""]
    parts += ["Accuracy per corruption, the header facts (source of the corrupted images, which corruptions differ "
              "from the reference and how) and the notes: [corruptions.md](corruptions.md).", ""]
    return parts
