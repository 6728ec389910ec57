"""Tables 3, 5 and 7 rebuilt from result files, next to the paper's numbers.

Reading (`load_records`) turns ``checkpoints/<run>/meta.json`` and ``attacks/<run>/*.json`` into
plain `RunRecord`s; everything after that is pure: records -> table sections -> markdown, CSV,
``summary.json`` and ``index.md`` text. `write_report` is the one function that writes files.

A number in a table is always copied from a result file; where a model or an evaluation is
missing the cell says which file is missing, it never shows a number.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from robustbench_mm.common.runtime import git_commit
from robustbench_mm.common.storage import (
    TEMP_PREFIX, DiskFull, atomic_write_json, atomic_write_text, ensure_writable_dir, folder_lock, read_json)
from robustbench_mm.errors import UsageError
from robustbench_mm.paper import PGD_UNBOUNDED, TABLE3_SETS, TABLE5, TABLE5_EPS, TABLE7, paper_table7
from robustbench_mm.report.orderings import ORDERINGS_CSV_COLUMNS, Comparison, csv_row, tally
from robustbench_mm.report.records import (
    DATASET_NAMES, PROTOCOLS, Group, ModelRuns, RunRecord, column_label, deform_cell, deform_evaluations,
    deform_look, deform_set_label, group_records, load_records, table7_columns)
from robustbench_mm.report.sections import (
    CSV_COLUMNS, UNCERTAINTY_NOTE, Block, Section, distinct_text, header_facts, markdown_table, render_csv,
    render_section, short_commit)
from robustbench_mm.report.tables import robustness as robustness_table
from robustbench_mm.runs.checkpoints import file_sha256
from robustbench_mm.runs.results import eps_label, fgsm_accuracy
from robustbench_mm.stats.estimates import Estimate, estimate_columns

REPORT_FORMAT = "mm-robust-report/1"
REPORT_MANIFEST = ".mm-robust-report-files.json"  # what the last report wrote, so only those are ever replaced
MODEL_INFO_DIR = "model_info"  # RobustBench-style model_info/<run>.json: the one subfolder a report writes into
# Appendix D's unbounded-PGD verdict comes from the authors' convention; the other protocol is shown beside it.
PGD_PROTOCOLS = ("paper", "standard")
PAPER_TABLE5_ONLY = ("Thermometer (Buckman et al.)", "Adv. training (Madry et al.)")
PAPER_SETUP = {  # what the paper trained for each table
    "table5": {"arch": "preactresnet18", "epochs": 1200, "width": 64},
    "table7": {"dataset": "cifar100", "arch": "preactresnet34", "epochs": 1200, "width": 64},
}


# ---- cells ----------------------------------------------------------------------------------


def fmt(value: float) -> str:
    return f"{value:.2f}"


def fmt_delta(ours: float, paper: float) -> str:
    return f"{ours - paper:+.2f}"


def comparison_cell(ours: Estimate | float | None, paper: float | None, missing: str = "") -> str:
    """'ours / paper (Δ)' for the markdown tables, ours with its uncertainty; the missing reason instead of a number.

    Δ compares the paper's number with our mean over seeds.
    """
    if ours is None:
        return f"missing ({missing})" + (f" / {fmt(paper)}" if paper is not None else "")
    text, mean = (ours.text(), ours.mean) if isinstance(ours, Estimate) else (fmt(ours), ours)
    if paper is None:
        return f"{text} / – (not in the paper)"
    return f"{text} / {fmt(paper)} ({fmt_delta(mean, paper)})"


def estimate_cell(cell: Estimate | None, missing: str) -> str:
    return cell.text() if cell is not None else f"missing ({missing})"


# ---- facts stated in every table header -------------------------------------------------------


def _comparison_note(group: Group, table: str) -> tuple[str, str]:
    """(what the paper's numbers are, warning or ''); the warning makes a mismatch impossible to miss."""
    setup = PAPER_SETUP[table]
    paper_dataset = setup.get("dataset") or ("cifar100" if group.dataset == "cifar100" else "cifar10")
    reference = f"{DATASET_NAMES[paper_dataset]}, {setup['arch']}, {setup['epochs']} epochs"
    if group.dataset != paper_dataset:
        return reference, (f"**Sanity check only:** these models were trained on {DATASET_NAMES.get(group.dataset, group.dataset)}, "
                           f"the paper's numbers are for {DATASET_NAMES[paper_dataset]}. The differences show how far "
                           "apart the two settings are, not whether the paper reproduces.")
    differences = []
    if group.arch != setup["arch"]:
        differences.append(f"architecture {group.arch} (paper: {setup['arch']})")
    epochs = {r.meta["epochs"] for r in group.runs if r.meta}
    if epochs and epochs != {setup["epochs"]}:
        differences.append(f"{'/'.join(map(str, sorted(epochs)))} training epochs (paper: {setup['epochs']})")
    widths = {r.model.get("width") for r in group.runs if not r.external}
    if widths != {setup["width"]}:
        differences.append(f"width {'/'.join(map(str, sorted(w for w in widths if w)))} (paper: {setup['width']})")
    if differences:
        return reference, "**Not the paper's setting:** " + "; ".join(differences) + "."
    return reference, ""


# ---- sections -------------------------------------------------------------------------------


def _csv_row(group: Group, model: ModelRuns | None, key: str, evaluation: str, setting: str,
             cell: Estimate | None, paper: float | None, status: str, reference: str) -> dict[str, Any]:
    results = [r.results[evaluation] for r in model.runs if evaluation in r.results] if model else []
    summaries = [result["model"] for result in results]

    def joined(values: Iterable[Any]) -> Any:
        """The one value all seeds share, else the distinct values joined by ';'."""
        distinct = list(dict.fromkeys(v for v in values if v is not None))
        return distinct[0] if len(distinct) == 1 else ";".join(map(str, distinct)) or None

    ours = cell.mean if cell is not None else None
    return {
        "dataset": group.dataset, "arch": group.arch, "preset": group.preset, "model": key,
        "run": ";".join(r.name for r in model.runs) if model else "", "evaluation": evaluation, "setting": setting,
        "ours": ours, **estimate_columns(cell), "paper": paper,
        "delta": round(ours - paper, 6) if ours is not None and paper is not None else None,
        "status": status,
        "epochs_trained": joined(s.get("epochs_trained") for s in summaries),
        "checkpoint": joined(s.get("checkpoint") for s in summaries),
        "checkpoint_epoch": joined(s.get("checkpoint_epoch") for s in summaries),
        "n_examples": joined(r.get("n_examples") for r in results),
        "train_seed": joined(s.get("train_seed") for s in summaries),
        "eval_seed": joined(r["settings"].get("seed") for r in results),
        "eval_commit": joined(r.get("git_commit") for r in results), "paper_reference": reference,
    }


def _status(cell: Estimate | None, why: str) -> str:
    if cell is None:
        return f"missing: {why}"
    if not cell.missing:
        return "measured"
    return f"measured ({len(cell.missing)} of {cell.n_seeds + len(cell.missing)} seeds missing: {why})"


def _protocol_text(group: Group) -> str:
    descriptions = {}
    for record in group.runs:
        for protocol in PROTOCOLS:
            result = record.result(f"fgsm-{protocol}")
            if result and result.get("protocol_description"):
                descriptions.setdefault(protocol, result["protocol_description"])
    parts = [f"`{p}`: {descriptions.get(p, 'see README')}" for p in PROTOCOLS]
    attacked = "" if group.fgsm_eps == TABLE5_EPS else f" (the paper's), and ε = {group.fgsm_eps:g} (attacked at)"
    return f"FGSM, ε = {TABLE5_EPS:g}{attacked}, one step, model in eval mode. " + "; ".join(parts)


def _clean_accuracy(result: dict[str, Any]) -> float:
    return result["clean"]["accuracy"]


def table5_section(group: Group) -> Section:
    reference, warning = _comparison_note(group, "table5")
    paper_values = TABLE5["cifar100" if group.dataset == "cifar100" else "cifar10"]
    notes = [warning] if warning else []
    notes.append(f"Paper: {reference}, measured with the authors' own FGSM (the `paper` protocol). "
                 "The `standard` columns compare a stronger attack against the same paper numbers. "
                 f"Uncertainty: {UNCERTAINTY_NOTE}; Δ = our mean − paper.")
    fgsm_rows, pgd_rows, rows = [], [], []
    for model in group.models:
        paper = paper_values.get(model.key)
        source = next((f"fgsm-{p}" for p in PROTOCOLS if any(r.result(f"fgsm-{p}") for r in model.runs)),
                      "fgsm-standard")
        clean, why = model.cell(source, _clean_accuracy, "")
        cells = [model.label, f"`{model.folders}`", estimate_cell(clean, why)]
        rows.append(_csv_row(group, model, model.key, source, "clean", clean, None, _status(clean, why), reference))
        for protocol in PROTOCOLS:
            evaluation = f"fgsm-{protocol}"
            ours, why = model.cell(evaluation, lambda r: fgsm_accuracy(r, TABLE5_EPS),
                                   f"{evaluation}.json has no ε = {TABLE5_EPS:g}")
            paper_text = fmt(paper) if paper is not None else "– (not in the paper)"
            if ours is None:
                cells += [f"missing ({why})", paper_text, "–"]
            else:
                cells += [ours.text(), paper_text, fmt_delta(ours.mean, paper) if paper is not None else "–"]
            rows.append(_csv_row(group, model, model.key, evaluation, eps_label(TABLE5_EPS), ours, paper,
                                 _status(ours, why), reference))
        fgsm_rows.append(cells)
        pgd_cells, pgd, why = _pgd_cells(model)
        pgd_rows.append(pgd_cells)
        for protocol in PGD_PROTOCOLS:
            evaluation = f"pgd-unbounded-{protocol}"
            steps = distinct_text(r.result(evaluation)["steps"] for r in model.runs if r.result(evaluation))
            final, why = model.cell(evaluation, lambda r: r["final_accuracy"], "")
            rows.append(_csv_row(group, model, model.key, evaluation, f"steps={steps}" if final else "",
                                 final, PGD_UNBOUNDED.get(model.key), _status(final, why), reference))
    for label, value in paper_values.items():
        if label in PAPER_TABLE5_ONLY:
            fgsm_rows.append([f"{label} — paper only", "–", "–", "not run here", fmt(value), "–", "not run here",
                              fmt(value), "–"])
            rows.append(_csv_row(group, None, label, "fgsm-paper", eps_label(TABLE5_EPS), None, value, "paper only",
                                 reference))
    fgsm_columns = ["Model", "Run", "Clean accuracy (%)",
                    "FGSM standard: ours", "paper", "Δ", "FGSM paper protocol: ours", "paper", "Δ"]
    pgd_columns = ["Model", "Unbounded PGD, paper protocol: ours", "paper (Appendix D)", "Δ", "Sanity check",
                   "standard protocol (stronger)", "Gradient-masking checks"]
    blocks = [Block(f"FGSM test accuracy (%) at ε = {TABLE5_EPS:g}", fgsm_columns, fgsm_rows)]
    if group.fgsm_eps != TABLE5_EPS:
        at_eps_rows = _attacked_eps_rows(group, reference, rows)
        blocks.append(Block(f"FGSM test accuracy (%) at the attacked ε = {group.fgsm_eps:g} (the paper reports none "
                            "at this ε)", ["Model", "Run", "FGSM standard: ours", "FGSM paper protocol: ours"],
                            at_eps_rows))
    blocks += [
        Block("Unbounded PGD sanity check (Athalye et al., 2018; paper Appendix D): worst-case accuracy (%) over "
              "the iterates, no ε-ball, no random start. The verdict uses the paper protocol (the authors' "
              "convention: steps on the normalized input, BCE on softmax, no clipping); the standard protocol "
              "(pixel-scale steps, cross-entropy, clipping) is shown beside it. Accuracy that does not fall to ≈ 0 "
              "suggests gradient masking.", pgd_columns, pgd_rows),
    ]
    facts = header_facts(group, ("fgsm-standard", "fgsm-paper", "pgd-unbounded-paper", "pgd-unbounded-standard"),
                         _protocol_text(group))
    return Section(group.heading, facts, notes, blocks, rows)


def _attacked_eps_rows(group: Group, reference: str, rows: list[dict[str, Any]]) -> list[list[str]]:
    """Each model's FGSM accuracy at the eps it was attacked at, where that is not the paper's (CSV rows too)."""
    eps = group.fgsm_eps
    md_rows = []
    for model in group.models:
        cells = [model.label, f"`{model.folders}`"]
        for protocol in PROTOCOLS:
            evaluation = f"fgsm-{protocol}"
            ours, why = model.cell(evaluation, lambda r: fgsm_accuracy(r, eps), f"{evaluation}.json has no ε = {eps:g}")
            cells.append(estimate_cell(ours, why))
            rows.append(_csv_row(group, model, model.key, evaluation, eps_label(eps), ours, None, _status(ours, why),
                                 reference))
        md_rows.append(cells)
    return md_rows


def _per_seed(model: ModelRuns, failing: list[str], what: str) -> str:
    """'' when every seed passed; else which runs did not (all of them for a single run)."""
    if not failing:
        return ""
    if len(model.runs) == 1:
        return what
    return f"{what} in {len(failing)} of {len(model.runs)} seeds ({', '.join(failing)})"


def _pgd_cells(model: ModelRuns) -> tuple[list[str], Estimate | None, str]:
    """The model's row of the PGD block, its final-accuracy estimate and why a seed lacks one."""
    paper = PGD_UNBOUNDED.get(model.key)
    paper_text = fmt(paper) if paper is not None else "– (not in the paper)"
    final, why = model.cell("pgd-unbounded-paper", lambda r: r["final_accuracy"], "")
    results = [(r.name, r.result("pgd-unbounded-paper")) for r in model.runs if r.result("pgd-unbounded-paper")]
    if final is None:
        cells = [model.label, f"missing ({why})", paper_text, "–", "–"]
    else:
        first = results[0][1]
        failed = _per_seed(model, [name for name, r in results if not r.get("passed")], "**FAILED**")
        verdict = failed or ("passed" if len(model.runs) == 1 else f"passed in all {len(results)} seeds")
        if first.get("threshold") is not None:
            verdict += f" (needs ≤ {first['threshold']:g} %)"
        cells = [model.label, f"{final.text()} after {first['steps']} steps of {first.get('step_size')}", paper_text,
                 fmt_delta(final.mean, paper) if paper is not None else "–", verdict]
    standard, why_standard = model.cell("pgd-unbounded-standard", lambda r: r["final_accuracy"], "")
    cells.append(standard.text() if standard else f"missing ({why_standard})")
    masking = [(r.name, r.result("gradient-masking")) for r in model.runs if r.result("gradient-masking")]
    if not masking:
        cells.append(f"missing ({model.runs[0].why_missing('gradient-masking')})")
    else:
        failed = sorted({c["name"] for _, m in masking for c in m["checks"] if not c.get("passed")})
        flagged = [name for name, m in masking if any(not c.get("passed") for c in m["checks"])]
        if failed:
            cells.append(f"**flagged**: {', '.join(failed)}" + (f" ({len(flagged)} of {len(masking)} seeds)"
                                                                 if len(model.runs) > 1 else ""))
        else:
            cells.append(f"all {len(masking[0][1]['checks'])} passed" + (f" in {len(masking)} seeds"
                                                                        if len(model.runs) > 1 else ""))
    return cells, final, why


def deform_section(group: Group, sets: tuple[str, ...]) -> Section:
    reference, warning = _comparison_note(group, "table7")
    notes = [warning] if warning else []
    notes.append(f"Paper: {reference} (Table 7), the authors' own warp. Each cell: ours / paper (our mean − paper), "
                 f"test accuracy in %. Uncertainty: {UNCERTAINTY_NOTE}.")
    columns = table7_columns(group)
    evaluations = deform_evaluations(group)
    clean = []
    for key, model in columns:
        cell = next((c for c in (model.cell(e, _clean_accuracy, "")[0] for e in evaluations) if c), None) \
            if model else None
        if cell:
            clean.append(f"{key} {cell.text()}")
    if clean:
        notes.append("Clean test accuracy of the same examples (not in the paper's table): " + ", ".join(clean) + ".")
    header = ["Test set"] + [column_label(key, m) + (f" `{m.folders}`" if m and not m.runs[0].external and
              [k for k, _ in columns].count(key) > 1 else "") for key, m in columns]
    blocks, rows = [], []
    for index, evaluation in enumerate(evaluations):
        md_rows = []
        for set_name in sets:
            cells = [deform_set_label(set_name)]
            for key, model in columns:
                paper = paper_table7(set_name, key)
                ours, why = deform_cell(model, key, set_name, evaluation)
                cells.append(comparison_cell(ours, paper, why))
                rows.append(_csv_row(group, model, key, evaluation, set_name, ours, paper, _status(ours, why),
                                     reference))
            md_rows.append(cells)
        role = "main table" if index == 0 else "the same models under another warp"
        blocks.append(Block(f"Test accuracy (%) under deformations never seen in training — {deform_look(evaluation)}; "
                            f"{role}", header, md_rows))
    interpolation = {r.results[e].get("interpolation") for r in group.runs for e in evaluations if e in r.results}
    protocol = ("each test image deformed once with its own parameter drawn uniformly from the range (seeded, so "
                f"the set is fixed), {'/'.join(sorted(map(str, interpolation))) or 'unknown'} interpolation")
    facts = header_facts(group, tuple(evaluations), protocol)
    looks = [deform_look(e) + (" — main table" if i == 0 else "") for i, e in enumerate(evaluations)]
    facts.insert(facts.index(("protocol", protocol)) + 1, ("warp convention and fill", "; ".join(looks)))
    return Section(group.heading, facts, notes, blocks, rows)


# ---- do the paper's orderings hold? ---------------------------------------------------------------


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


# ---- rendering ------------------------------------------------------------------------------


def robustness_section(group: Group) -> Section:
    """The "How robust is it really?" table: one row per model (seeds aggregated), every attack side by side."""
    number_columns, breakdowns = robustness_table.columns([r.results for r in group.runs], group.fgsm_eps)
    md_rows, rows = [], []
    for model in group.models:
        cells = [model.label, f"`{model.folders}`"]
        for column in number_columns:
            cell, why = model.cell(column.evaluation, column.value_of, f"{column.evaluation}.json has no such number")
            cells.append(estimate_cell(cell, why))
            rows.append(_csv_row(group, model, model.key, column.evaluation, column.setting, cell, None,
                                 _status(cell, why), "not in the paper"))
        stage_texts = []
        for evaluation, stage_columns in breakdowns:
            stages = [(c, model.cell(evaluation, c.value_of, "")[0]) for c in stage_columns]
            if all(cell is not None for _, cell in stages):
                stage_texts.append(f"{evaluation[len('autoattack-'):].replace('_', '/')}: " +
                                   " → ".join(f"{c.label} {cell.mean:.1f}" for c, cell in stages))
                rows += [_csv_row(group, model, model.key, evaluation, c.setting, cell, None, _status(cell, ""),
                                  "not in the paper") for c, cell in stages]
        md_rows.append([*cells, "; ".join(stage_texts) or "–"])
    evaluations = tuple(dict.fromkeys(c.evaluation for c in number_columns))
    facts = header_facts(group, evaluations, "see the note below the table")
    header = ["Model", "Run", *(c.label for c in number_columns), "AutoAttack robust accuracy after each stage"]
    return Section(group.heading, facts, list(robustness_table.NOTES),
                   [Block("Robust accuracy (%) under every attack", header, md_rows)], rows)


TABLE_TITLES = {
    "table5": "Table 5 — FGSM robustness (and the unbounded-PGD sanity check of Appendix D)",
    "table7": "Table 7 — accuracy under novel deformations",
    "table3": "Table 3 — accuracy under novel deformations (the paper's short version of Table 7)",
    "robustness": robustness_table.TITLE,
    "orderings": "Do the paper's orderings hold?",
}
CSV_COLUMNS_OF = {"orderings": ORDERINGS_CSV_COLUMNS}


def render_markdown(table: str, sections: list[Section], problems: list[str]) -> str:
    parts = [f"# {TABLE_TITLES[table]}", "",
             "Regenerated by `mm-robust report` from the result files; every number of ours is copied from "
             "`attacks/<run>/*.json`, the paper's from `robustbench_mm/paper.py`. Δ = ours − paper (our mean over seeds). "
             f"Uncertainty: {UNCERTAINTY_NOTE}.", ""]
    if not sections:
        parts += ["No trained models or results were found.", ""]
    parts += [render_section(s) for s in sections]
    if problems:
        parts += ["## Problems found while reading", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(parts)


# ---- the whole report -----------------------------------------------------------------------


@dataclass
class Report:
    """Everything `write_report` writes, as text and data, before any file is touched."""

    groups: list[Group]
    tables: dict[str, list[Section]]
    problems: list[str]


def build_report(records: list[RunRecord], problems: list[str]) -> Report:
    groups = group_records(records)
    tables = {
        "table5": [table5_section(g) for g in groups],
        "table7": [deform_section(g, tuple(TABLE7)) for g in groups],
        "table3": [deform_section(g, TABLE3_SETS) for g in groups],
        "robustness": [robustness_section(g) for g in groups],
        "orderings": [orderings_section(g) for g in groups],
    }
    return Report(groups, tables, problems)


def summary(report: Report, plots: dict[str, dict[str, str]], sources: dict[str, str]) -> dict[str, Any]:
    """Machine-readable report: every cell (ours, paper, Δ, provenance), per-model facts and plot files."""
    groups = []
    for index, group in enumerate(report.groups):
        groups.append({
            "dataset": group.dataset, "arch": group.arch, "preset": group.preset, "slug": group.slug,
            "fgsm_eps": group.fgsm_eps, "paper_fgsm_eps": TABLE5_EPS,
            "models": [{"run": r.name, **r.model,
                        "epochs_trained": r.meta["epoch"] if r.meta else None,
                        "complete": r.meta["complete"] if r.meta else None,
                        "missing": r.missing,
                        "gradient_masking": r.results["gradient-masking"]["checks"]
                        if "gradient-masking" in r.results else None}
                       for r in group.runs],
            "facts": {table: dict(report.tables[table][index].facts) for table in report.tables},
            "cells": {table: report.tables[table][index].rows for table in report.tables},
            "plots": list(plots.get(group.slug, {})),
        })
    return {
        "format": REPORT_FORMAT,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "sources": sources,
        "tables": {t: {"markdown": f"{t}.md", "csv": f"{t}.csv"} for t in report.tables},
        "groups": groups,
        "problems": report.problems,
    }


def render_index(report: Report, plots: dict[str, dict[str, str]], sources: dict[str, str]) -> str:
    parts = ["# mm-robust report", "",
             f"Built by `mm-robust report` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC at commit "
             f"`{short_commit(git_commit())}` from `{sources['checkpoints']}` (trained models) and "
             f"`{sources['attacks']}` (evaluation results).", "",
             "## Files", "",
             *[f"- [{TABLE_TITLES[t]}]({t}.md) · [{t}.csv]({t}.csv)"
               for t in ("table5", "robustness", "table3", "table7", "orderings")],
             "- [Table 1 — CIFAR-10 accuracy and NLL, with calibration](table1.md) · [table1.csv](table1.csv)",
             "- [Table 2 — CIFAR-100 accuracy and NLL, with calibration](table2.md) · [table2.csv](table2.csv)",
             "- [table5-epochs.csv](table5-epochs.csv): FGSM accuracy at every training epoch (Table 5, right)",
             "- [summary.json](summary.json): every cell with its provenance, machine-readable", ""]
    if not report.groups:
        parts += ["No trained models or results were found. Run `mm-robust reproduce` (or `mm-robust train`, "
                  "`mm-robust attack`, `mm-robust deform`) first.", ""]
    for index, group in enumerate(report.groups):
        parts += [f"## {group.heading}", ""]
        for table in ("table5", "robustness", "table3"):
            section = report.tables[table][index]
            parts += [f"> {note}\n" for note in section.notes[:1] if note.startswith("**")]
            for block in section.blocks:
                parts += [f"**{TABLE_TITLES[table].split(' — ')[0]}: {block.caption}**", "", markdown_table(block), ""]
        orderings = report.tables["orderings"][index]
        parts += [f"### {TABLE_TITLES['orderings']}", ""]
        parts += [f"> {note}\n" for note in orderings.notes if note.startswith("**In short")]
        for block in orderings.blocks[:2]:  # the FGSM orderings; the deformation ones are in orderings.md
            parts += [f"**{block.caption}**", "", markdown_table(block), ""]
        parts += ["Every ordering, deformations included, with how each was tested: [orderings.md](orderings.md).", ""]
        parts += ["Header facts (epochs, checkpoint, examples, seeds, commits) are in [table5.md](table5.md) and "
                  "[table7.md](table7.md).", ""]
        for name, caption in plots.get(group.slug, {}).items():
            parts += [f"### {caption}", "", f"![{caption}]({name})", ""]
    if report.problems:
        parts += ["## Problems found while reading", ""] + [f"- {p}" for p in report.problems] + [""]
    parts += ["## Where the files come from", "",
              "| folder | written by | holds |", "|---|---|---|",
              "| `checkpoints/<run>/` | `mm-robust train` | weights (safetensors), `meta.json` with config and per-epoch history |",
              "| `attacks/<run>/` | `mm-robust attack`, `mm-robust deform` | one JSON per evaluation: "
              "`fgsm-standard`, `fgsm-paper`, `pgd-unbounded-paper`, `pgd-unbounded-standard`, `pgd-bounded`, "
              "`gradient-masking`, `deform`; saved adversarial examples |",
              "| `reports/` | `mm-robust report` | these tables, `summary.json` and the plots |", ""]
    return "\n".join(parts)


def write_report(checkpoints_root: str | Path = "checkpoints", attacks_root: str | Path = "attacks",
                 reports_root: str | Path = "reports") -> Path:
    """Read both folders, write tables, summary, plots and index.md into `reports_root`; return index.md.

    The report is drawn into a temporary folder first; its files then replace only files an earlier
    report wrote (listed with their digests in a manifest), and files of an earlier report that
    this one no longer has are removed only if nobody changed them since. A user's file is never
    replaced or deleted: a name clash is refused before anything in `reports_root` changes.
    """
    from robustbench_mm.report import paper_eval as paper_eval_report
    from robustbench_mm.report import figures  # matplotlib is only imported when a report is actually drawn

    for flag, folder, writer in (("--checkpoints", checkpoints_root, "train"), ("--attacks", attacks_root, "attack")):
        if Path(folder).exists() and not Path(folder).is_dir():
            raise UsageError(f"{flag} {str(folder)!r} is a file; give the folder that `mm-robust {writer}` wrote")
    records, problems = load_records(checkpoints_root, attacks_root)
    if not records:
        raise UsageError(f"nothing to report: no trained models in {str(checkpoints_root)!r} and no results in "
                         f"{str(attacks_root)!r}; run `mm-robust reproduce` or pass --checkpoints/--attacks")
    report = build_report(records, problems)
    reports_root = ensure_writable_dir(Path(reports_root), "--reports")
    sources = {"checkpoints": str(checkpoints_root), "attacks": str(attacks_root)}
    with folder_lock(reports_root):
        staging = Path(tempfile.mkdtemp(dir=reports_root, prefix=TEMP_PREFIX + "report-", suffix=".tmp"))
        try:
            drawn = {group.slug: figures.draw_group(group, staging, Path(attacks_root)) for group in report.groups}
            # Tables 1, 2, 5 (right) and calibration
            paper_eval = paper_eval_report.write_parts(report.groups, report.problems, staging)
            for slug, figures in paper_eval["figures"].items():
                drawn[slug].update(figures)
            for table, sections in report.tables.items():
                atomic_write_text(staging / f"{table}.md", render_markdown(table, sections, report.problems))
                atomic_write_text(staging / f"{table}.csv", render_csv(sections, CSV_COLUMNS_OF.get(table, CSV_COLUMNS)))
            atomic_write_json(staging / "summary.json", {**summary(report, drawn, sources), **paper_eval["summary"]})
            atomic_write_text(staging / "index.md", render_index(report, drawn, sources))
            for record in records:  # RobustBench-style model_info, where AutoAttack ran
                info = robustness_table.model_info(record.name, record.model | next(
                    (r["model"] for r in record.results.values()), {}), record.results)
                if info is not None:
                    (staging / MODEL_INFO_DIR).mkdir(exist_ok=True)
                    atomic_write_json(staging / MODEL_INFO_DIR / f"{record.name}.json", info)
            _publish(staging, reports_root)
        except DiskFull:
            raise DiskFull(reports_root) from None  # name the folder the user chose, not our staging folder
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return reports_root / "index.md"


def _publish(staging: Path, reports_root: Path) -> None:
    """Move the staged report into `reports_root`, touching only files a report wrote there before.

    Files are named by their path relative to `reports_root` (``index.md``, ``model_info/<run>.json``).
    A file already there may be replaced only if the manifest lists it with its current digest, or if
    it already holds exactly the new bytes (nothing is lost; e.g. a model_info written before the
    manifest listed them).
    """
    new = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    ours = _files_written_before(reports_root)
    folders = sorted({name.partition("/")[0] for name in new if "/" in name})
    foreign = [folder for folder in folders if _occupied(reports_root / folder)
               and ((reports_root / folder).is_symlink() or not (reports_root / folder).is_dir())]
    foreign += [name for name in new if _clashes(reports_root / name, ours.get(name), _digest(staging / name))]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise UsageError(f"{str(reports_root)!r} holds files mm-robust report did not write ({shown}); "
                         "move them away or choose another --reports")
    written = {name: _digest(staging / name) for name in new}
    for folder in folders:
        (reports_root / folder).mkdir(exist_ok=True)
    for name in new:
        os.replace(staging / name, reports_root / name)
    for name in sorted(set(ours) - set(new)):  # an earlier report's file this one no longer has would mislead
        if "/" in name and (reports_root / name).parent.is_symlink():
            continue  # a folder now linked elsewhere: what it holds is not the file the manifest names
        if _digest(reports_root / name) == ours[name]:
            (reports_root / name).unlink()
    for folder in sorted({name.partition("/")[0] for name in ours if "/" in name} - set(folders)):
        path = reports_root / folder
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()  # emptied of the files an earlier report put there
    atomic_write_json(reports_root / REPORT_MANIFEST, {"format": REPORT_FORMAT, "files": written})


def _occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _clashes(target: Path, written_before: str | None, new: str | None) -> bool:
    """Something is at `target` that is neither the file an earlier report wrote nor these very bytes."""
    if not _occupied(target):
        return False
    digest = _digest(target)
    return digest is None or digest not in (written_before, new)


def _digest(path: Path) -> str | None:
    try:
        return file_sha256(path) if path.is_file() else None
    except OSError:
        return None


def _files_written_before(reports_root: Path) -> dict[str, str]:
    """{relative path: SHA-256 when written} of the last report in `reports_root`.

    Only a file name, or one inside a report subfolder (``model_info/<run>.json``), is taken from
    the manifest: never an absolute path, ``..`` or a deeper path, so a damaged or hostile
    manifest cannot point the clean-up outside `reports_root`.
    """
    def plain(names):
        return {n for n in names if _safe_report_path(n)}

    try:
        manifest = read_json(reports_root / REPORT_MANIFEST)
        files = manifest["files"]
        return {name: files[name] for name in plain(files) if isinstance(files[name], str)}
    except (UsageError, KeyError, TypeError):
        pass
    # A report written before the manifest existed: the files its summary.json lists, as they are now.
    try:
        old = read_json(reports_root / "summary.json")
        if old.get("format") != REPORT_FORMAT:
            return {}
        names = {"summary.json", "index.md"} | {f"{t}.{ext}" for t in old["tables"] for ext in ("md", "csv")}
        names |= {name for group in old["groups"] for name in group["plots"]}
    except (UsageError, KeyError, TypeError, AttributeError):
        return {}
    return {name: digest for name in plain(names) if (digest := _digest(reports_root / name))}


def _safe_report_path(name: Any) -> bool:
    """'index.md' or 'model_info/<run>.json': a plain name, at most one report subfolder deep."""
    if not isinstance(name, str) or "\\" in name or "\0" in name:
        return False
    parts = name.split("/")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != MODEL_INFO_DIR):
        return False
    return all(part and part not in (".", "..") for part in parts)
