"""The pieces every report table is made of: header facts, sections, markdown and CSV rendering.

A `Section` is one group's part of a table (header facts, notes, markdown blocks and tidy CSV rows);
each module of report/tables/ builds one table family from them, with the cell formatting here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from robustbench_mm.report.records import DATASET_NAMES, Group, ModelRuns
from robustbench_mm.stats.estimates import ESTIMATE_COLUMNS, Estimate, estimate_columns


# `ours` is the cell's number: the mean over seeds (the only value with one seed).
CSV_COLUMNS = (
    "dataset", "arch", "preset", "model", "run", "evaluation", "setting", "ours", *ESTIMATE_COLUMNS, "paper", "delta",
    "status",
    "epochs_trained", "checkpoint", "checkpoint_epoch", "n_examples", "train_seed", "eval_seed", "eval_commit",
    "paper_reference",
)


def distinct_text(values: Iterable[Any]) -> str:
    """The distinct values in first-seen order, joined by ', '."""
    return ", ".join(dict.fromkeys(str(v) for v in values))


def short_commit(commit: str | None) -> str:
    if not commit:
        return "unknown"
    base, dirty, _ = commit.partition("+")
    return base[:10] + ("+dirty" if dirty else "")


def one_or_each(values: dict[str, str]) -> str:
    """One value when every model agrees, else 'model: value' for each."""
    distinct = set(values.values())
    if not values:
        return "no results yet"
    if len(distinct) == 1:
        return distinct.pop()
    return "; ".join(f"{label}: {value}" for label, value in values.items())


def header_facts(group: Group, evaluations: tuple[str, ...], protocol: str) -> list[tuple[str, str]]:
    """Dataset, preset, epochs, checkpoint, protocol, examples, seeds and commits, per model when they differ."""
    epochs, checkpoint, examples, seeds, train_commits, eval_commits = {}, {}, {}, {}, {}, {}
    models = group.models
    for model in models:
        label = model.key if [m.key for m in models].count(model.key) == 1 else model.name
        if any(r.meta for r in model.runs):
            epochs[label] = distinct_text(f"{r.meta['epoch']} of {r.meta['epochs']} "
                                      f"({'complete' if r.meta['complete'] else 'incomplete'})"
                                      for r in model.runs if r.meta)
        per_run = [(r, [r.results[e] for e in evaluations if e in r.results]) for r in model.runs]
        per_run = [(r, results) for r, results in per_run if results]
        if not per_run:
            continue
        summaries = [results[0]["model"] for _, results in per_run]
        if label not in epochs:
            epochs[label] = "trained elsewhere" if all(r.external for r in model.runs) else \
                distinct_text(s.get("epochs_trained") for s in summaries)
        checkpoint[label] = distinct_text(checkpoint_text(s) for s in summaries)
        examples[label] = distinct_text(sorted({str(r["n_examples"]) for _, results in per_run for r in results}))
        # The training seed comes from the checkpoint the numbers were measured on (digests matched).
        train_seeds = (r.meta["config"]["seed"] if r.meta else results[0]["model"].get("train_seed")
                       for r, results in per_run)
        train_seeds = [seed for seed in train_seeds if seed is not None]  # none for a model trained elsewhere
        seeds[label] = (f"training {distinct_text(train_seeds)}, " if train_seeds else "") + \
            f"evaluation {distinct_text(results[0]['settings'].get('seed') for _, results in per_run)}"
        train_commits[label] = distinct_text(short_commit(s.get("train_git_commit")) for s in summaries)
        eval_commits[label] = distinct_text(sorted({short_commit(r.get("git_commit")) for _, results in per_run
                                                for r in results}))
    n_test = {"cifar10": 10000, "cifar100": 10000, "digits": 357}.get(group.dataset)
    example_text = one_or_each(examples)
    if n_test and examples:
        example_text += f" (of the {n_test} test images; the first N in the fixed test order)"
    presets = {r.meta["config"]["preset"] for r in group.runs if r.meta} or {group.preset}
    return [
        ("dataset", DATASET_NAMES.get(group.dataset, group.dataset)),
        ("architecture", architecture_text(group)),
        ("preset", ", ".join(sorted(presets))),
        ("epochs trained", one_or_each(epochs)),
        ("checkpoint evaluated", one_or_each(checkpoint)),
        ("protocol", protocol),
        ("test examples", example_text),
        ("seed", one_or_each(seeds)),
        ("uncertainty", UNCERTAINTY_NOTE),
        ("commit (training)", one_or_each(train_commits)),
        ("commit (evaluation)", one_or_each(eval_commits)),
    ]


# What a model contract flag (sources/contract.py) means for the numbers shown.
FLAG_NOTES = {"outputs-probabilities": "outputs probabilities, not logits (gradient attacks stall on them: its "
                                       "robustness looks better than it is)",
              "not-deterministic": "not deterministic (two identical passes differed)"}


def external_text(model: dict[str, Any]) -> str:
    """What is known of a model trained elsewhere (no width, no epochs), its contract flags included."""
    flags = [FLAG_NOTES.get(flag, flag) for flag in model.get("contract_flags") or ()]
    return ", ".join([f"external model {model.get('arch')}", *flags])


def architecture_text(group: Group) -> str:
    ours = {r.key: str(r.model.get("width")) for r in group.runs if not r.external}
    parts = [f"{group.arch}, width {one_or_each(ours)}"] if ours else []
    return "; ".join(parts + [f"{r.name}: {external_text(r.model)}" for r in group.runs if r.external])


def checkpoint_text(summary: dict[str, Any]) -> str:
    """The weights a result measured; a model trained elsewhere has no epoch, and its weights file is named."""
    if summary.get("external"):
        name = summary.get("weights_file")
        return f"its own weights ({Path(name).name})" if name else "its own weights"
    return f"{summary.get('checkpoint')} (epoch {summary.get('checkpoint_epoch')})"


UNCERTAINTY_NOTE = ("several seeds: mean ± standard deviation over seeds (n seeds); one seed: value [exact binomial "
                    "(Clopper-Pearson) 95 % interval over the test examples]")


@dataclass
class Block:
    """One markdown table: a caption, column names and rows of cell text."""

    caption: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """One group's part of a table: the header facts, notes, markdown blocks and tidy CSV rows."""

    heading: str
    facts: list[tuple[str, str]]
    notes: list[str]
    blocks: list[Block]
    rows: list[dict[str, Any]]  # one per cell, for CSV and summary.json


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(block: Block) -> str:
    lines = ["| " + " | ".join(map(_md_escape, block.columns)) + " |",
             "|" + "|".join("---" for _ in block.columns) + "|"]
    lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in block.rows]
    return "\n".join(lines)


def render_section(section: Section, level: int = 2) -> str:
    parts = [f"{'#' * level} {section.heading}", ""]
    if section.facts:
        parts += ["| setting | value |", "|---|---|"]
        parts += [f"| {name} | {_md_escape(value)} |" for name, value in section.facts]
        parts.append("")
    parts += [f"> {note}\n" for note in section.notes]
    for block in section.blocks:
        parts += [f"**{block.caption}**", "", markdown_table(block), ""]
    return "\n".join(parts)


def render_csv(sections: list[Section], columns: tuple[str, ...] = CSV_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for section in sections:
        for row in section.rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in columns})
    return buffer.getvalue()


PAPER_SETUP = {  # what the paper trained for each table
    "table5": {"arch": "preactresnet18", "epochs": 1200, "width": 64},
    "table7": {"dataset": "cifar100", "arch": "preactresnet34", "epochs": 1200, "width": 64},
}


def clean_accuracy(result: dict[str, Any]) -> float:
    return result["clean"]["accuracy"]


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


def not_applicable(why: str) -> bool:
    """`why` says the measurement cannot be made on this model (e.g. the paper protocol on an input encoding)."""
    return why.startswith("not applicable")


def estimate_cell(cell: Estimate | None, missing: str) -> str:
    if cell is None:
        return missing if not_applicable(missing) else f"missing ({missing})"
    return cell.text()


def comparison_note(group: Group, table: str) -> tuple[str, str]:
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


def table_csv_row(group: Group, model: ModelRuns | None, key: str, evaluation: str, setting: str,
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


def cell_status(cell: Estimate | None, why: str) -> str:
    if cell is None:
        return why if not_applicable(why) else f"missing: {why}"
    if not cell.missing:
        return "measured"
    return f"measured ({len(cell.missing)} of {cell.n_seeds + len(cell.missing)} seeds missing: {why})"
