"""Tables 1 and 2 of the paper: test accuracy and NLL of every trained model beside the paper's.

Our numbers are the test accuracy and NLL that training measured for the last and the best
checkpoint (``checkpoints/<run>/meta.json``), one row each; ECE comes from
``attacks/<run>/calibration.json`` and sits on the row of the checkpoint it measured. Table 1
holds every group that is not CIFAR-100 (CIFAR-10, and the offline digits as a sanity check
against CIFAR-10), Table 2 the CIFAR-100 groups. Paper rows with no trained model of their
dataset and architecture are listed as missing: the report never fills in a number.
"""

from __future__ import annotations

from typing import Any

from robustbench_mm.paper import SUPERVISED, SupervisedRow
from robustbench_mm.report.records import DATASET_NAMES, Group, ModelRuns, RunRecord
from robustbench_mm.report.sections import Block, Section, header_facts
from robustbench_mm.stats.estimates import Estimate, SeedValue, estimate, estimate_columns
from robustbench_mm.stats.significance import mean_std


TABLES = {"table1": "cifar10", "table2": "cifar100"}
TITLES = {
    "table1": "Table 1 — CIFAR-10 test accuracy and NLL, with calibration",
    "table2": "Table 2 — CIFAR-100 test accuracy and NLL, with calibration",
}
PAPER_EPOCHS, PAPER_WIDTH = 1200, 64
TEST_SIZES = {"cifar10": 10000, "cifar100": 10000, "digits": 357}
CHECKPOINTS = ("last", "best")


def table_of(dataset: str) -> str:
    return "table2" if dataset == "cifar100" else "table1"


def mix_layers(record: RunRecord) -> str:
    return (record.meta or {}).get("config", {}).get("mix_layers", "paper")


def matches(model: ModelRuns, row: SupervisedRow) -> bool:
    """Our model is the paper row's model: same method, α and (for mixup) the same set of mixing layers."""
    record = model.runs[0]
    if record.model["key"] != row.key or record.model["arch"] != row.arch:
        return False
    return row.method == "baseline" or mix_layers(record) == row.mix_layers


def fmt_paper(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"  # the paper's own precision


def reference(row: SupervisedRow) -> str:
    return f"{row.table.replace('table', 'Table ')}, {row.arch}: {row.label} ({row.source})"


def _delta(ours: float | None, paper: float | None, digits: int) -> str:
    return f"{ours - paper:+.{digits}f}" if ours is not None and paper is not None else "–"


# ---- one model (its seeds together) at one checkpoint -------------------------------------------


def checkpoint_entry(record: RunRecord, which: str) -> tuple[dict[str, Any] | None, str]:
    """(the meta.json entry of checkpoint `which`, or None with the reason in words)."""
    if record.meta is None:
        return None, f"no checkpoints/{record.name}/meta.json"
    entry = record.meta["checkpoints"].get(which)
    if entry is None:
        return None, f"{record.name} has no {which} checkpoint"
    return entry, ""


def n_test(record: RunRecord, dataset: str) -> int | None:
    return (record.meta or {}).get("config", {}).get("n_test") or TEST_SIZES.get(dataset)


def accuracy_estimate(model: ModelRuns, which: str, dataset: str) -> tuple[Estimate | None, str]:
    """Test accuracy over seeds: mean ± std with several, an exact interval over test examples with one."""
    values, missing, why = [], [], ""
    for record in model.runs:
        entry, reason = checkpoint_entry(record, which)
        value = entry.get("test_accuracy") if entry else None
        if value is None:
            missing.append(record.name)
            why = why or reason or f"meta.json has no {which} accuracy"
        else:
            values.append(SeedValue(record.name, record.seed, float(value), n_test(record, dataset)))
    return estimate(values, missing), why


def spread_text(values: list[float], digits: int) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f} ({len(values)} seeds)"


def nll_values(model: ModelRuns, which: str) -> tuple[list[float], str]:
    values, why = [], ""
    for record in model.runs:
        entry, reason = checkpoint_entry(record, which)
        if entry and entry.get("test_nll") is not None:
            values.append(float(entry["test_nll"]))
        else:
            why = why or reason or f"meta.json has no {which} NLL"
    return values, why


def ece_values(model: ModelRuns, which: str) -> tuple[dict[str, list[float]], str]:
    """ECE per condition over the seeds whose calibration.json measured checkpoint `which`."""
    values: dict[str, list[float]] = {}
    why = ""
    for record in model.runs:
        result = record.result("calibration")
        if result is None:
            why = why or f"missing ({record.why_missing('calibration')})"
        elif result["model"].get("checkpoint") != which:
            why = why or f"– (measured on the {result['model'].get('checkpoint')} checkpoint)"
        else:
            for name, condition in result["conditions"].items():
                values.setdefault(name, []).append(float(condition["ece"]))
    return values, why


def checkpoint_text(model: ModelRuns, which: str) -> str:
    epochs = sorted({entry["epoch"] for entry in (checkpoint_entry(r, which)[0] for r in model.runs) if entry})
    return f"{which} (epoch{'s' if len(epochs) > 1 else ''} {'/'.join(map(str, epochs)) or '?'})"


def csv_row(group: Group, model: ModelRuns | None, key: str, evaluation: str, setting: str, ours: float | None,
            paper: float | None, status: str, ref: str, which: str = "", cell: Estimate | None = None,
            spread: list[float] | None = None) -> dict[str, Any]:
    records = model.runs if model else []
    metas = [r.meta for r in records if r.meta]
    entries = [m["checkpoints"].get(which, {}) for m in metas] if which else []
    columns = estimate_columns(cell)
    if cell is None and spread:
        mean, std = mean_std(spread)
        columns.update(n_seeds=len(spread), per_seed=";".join(f"{v:g}" for v in spread),
                       std=None if std is None else round(std, 6),
                       uncertainty="std over seeds" if std is not None else "one seed, no interval")
    calibrations = [r.result("calibration") for r in records if r.result("calibration")]
    return {
        "dataset": group.dataset, "arch": group.arch, "preset": group.preset, "model": key,
        "run": ", ".join(r.name for r in records), "evaluation": evaluation, "setting": setting,
        "ours": ours, **columns, "paper": paper,
        "delta": round(ours - paper, 6) if ours is not None and paper is not None else None,
        "status": status, "epochs_trained": "/".join(sorted({str(m["epoch"]) for m in metas})) or None,
        "checkpoint": which or None,
        "checkpoint_epoch": "/".join(sorted({str(e["epoch"]) for e in entries if "epoch" in e})) or None,
        "n_examples": (calibrations[0]["n_examples"] if evaluation == "calibration" and calibrations else
                       (n_test(records[0], group.dataset) if metas else None)),
        "train_seed": "/".join(str(r.seed) for r in records) or None,
        "eval_seed": calibrations[0]["settings"].get("seed") if evaluation == "calibration" and calibrations else None,
        "eval_commit": ", ".join(sorted({str(source.get("git_commit"))
                                         for source in (calibrations if evaluation == "calibration" else metas)})) or None,
        "paper_reference": ref,
    }


def model_rows(group: Group, model: ModelRuns, row: SupervisedRow | None,
               conditions: tuple[str, str, str]) -> tuple[list[list[str]], list[dict]]:
    """Two table rows (last, best) for one of our models over its seeds, beside `row` of the paper (None: not in it)."""
    paper_acc, paper_nll = (row.accuracy, row.nll) if row else (None, None)
    ref = reference(row) if row else "not in the paper"
    md, csv = [], []
    for which in CHECKPOINTS:
        accuracy, why_accuracy = accuracy_estimate(model, which, group.dataset)
        nlls, why_nll = nll_values(model, which)
        eces, why_ece = ece_values(model, which)
        nll_mean = mean_std(nlls)[0] if nlls else None
        md.append([
            model.label, f"`{model.folders}`", checkpoint_text(model, which),
            accuracy.text() if accuracy else f"missing ({why_accuracy})",
            fmt_paper(paper_acc) if row else "– (not in the paper)",
            _delta(accuracy.mean if accuracy else None, paper_acc, 2),
            spread_text(nlls, 4) if nlls else f"missing ({why_nll})",
            fmt_paper(paper_nll) if row else "–", _delta(nll_mean, paper_nll, 4),
            *[spread_text(eces[c], 2) if c in eces else (why_ece if i == 0 else "–")
              for i, c in enumerate(conditions)],
        ])
        csv.append(csv_row(group, model, model.key, "training", "test_accuracy", accuracy.mean if accuracy else None,
                           paper_acc, "measured" if accuracy else f"missing: {why_accuracy}", ref, which, cell=accuracy))
        csv.append(csv_row(group, model, model.key, "training", "test_nll", nll_mean, paper_nll,
                           "measured" if nlls else f"missing: {why_nll}", ref, which, spread=nlls))
        for condition, values in eces.items():
            csv.append(csv_row(group, model, model.key, "calibration", f"ece:{condition}", mean_std(values)[0], None,
                               "measured", ref, which, spread=values))
    return md, csv


def paper_only_row(row: SupervisedRow, why: str) -> list[str]:
    return [f"{row.label} — paper only" if not row.compared else row.label, "–", "–", why, fmt_paper(row.accuracy),
            "–", why if row.compared else "not run here", fmt_paper(row.nll), "–", "–", "–", "–"]


# ---- sections ---------------------------------------------------------------------------------


def columns(deform_set: str, fgsm: str) -> list[str]:
    return ["Model", "Run", "Checkpoint", "Test accuracy (%): ours", "accuracy: paper", "accuracy: Δ",
            "Test NLL: ours", "NLL: paper", "NLL: Δ",
            "ECE (%) clean", f"ECE (%) {deform_set}", f"ECE (%) {fgsm}"]


def condition_names(group: Group) -> tuple[str, str]:
    for record in group.runs:
        result = record.result("calibration")
        if result:
            names = list(result["conditions"])
            return names[1], names[2]
    return "deformed", "FGSM"


def comparison_notes(group: Group, table: str) -> list[str]:
    paper_dataset = TABLES[table]
    notes = []
    if group.dataset != paper_dataset:
        notes.append(f"**Sanity check only:** these models were trained on {DATASET_NAMES.get(group.dataset, group.dataset)}, "
                     f"the paper's numbers are for {DATASET_NAMES[paper_dataset]}. The differences show how far apart "
                     "the two settings are, not whether the paper reproduces.")
    else:
        differences = []
        epochs = {r.meta["epochs"] for r in group.runs if r.meta}
        if epochs and epochs != {PAPER_EPOCHS}:
            differences.append(f"{'/'.join(map(str, sorted(epochs)))} training epochs (paper: {PAPER_EPOCHS})")
        widths = {r.model.get("width") for r in group.runs}
        if widths != {PAPER_WIDTH}:
            differences.append(f"width {'/'.join(str(w) for w in sorted(w for w in widths if w))} (paper: {PAPER_WIDTH})")
        if differences:
            notes.append("**Not the paper's setting:** " + "; ".join(differences) + ".")
    notes.append(f"Paper: {DATASET_NAMES[paper_dataset]}, {PAPER_EPOCHS} epochs, the best test accuracy seen during "
                 "training. Ours: both checkpoints, each with the test accuracy and NLL training measured for it. "
                 "Rows quoted by the paper from Zhang et al. (2017) are shown as paper only. ECE: expected calibration "
                 "error over 15 equal-width confidence bins, in percentage points (beyond the paper; 0 = confidence "
                 "matches accuracy), from calibration.json, on the row of the checkpoint it measured.")
    return notes


def group_facts(group: Group) -> list[tuple[str, str]]:
    """The header facts of Tables 3, 5 and 7, with what accuracy/NLL and ECE were each measured on."""
    facts = dict(header_facts(group, ("calibration",), ""))
    sizes = {}
    for record in group.runs:
        if record.meta:
            n_test = record.meta["config"].get("n_test")
            sizes[record.key] = str(n_test) if n_test else f"all {TEST_SIZES.get(group.dataset, '')}".strip()
    accuracy_examples = "; ".join(sorted(set(sizes.values()))) or "no meta.json"
    facts["checkpoint evaluated"] = ("last and best, one row each (best = highest test accuracy seen during training); "
                                     f"ECE: {facts['checkpoint evaluated']}")
    facts["protocol"] = ("accuracy and NLL on the clean test set, measured by training at each checkpoint's epoch; "
                         "ECE on the clean, one deformed and the FGSM test images (see the ECE columns)")
    facts["test examples"] = f"accuracy/NLL: {accuracy_examples} (the first N in the fixed test order); ECE: {facts['test examples']}"
    commits = sorted({r.meta.get("git_commit", "unknown")[:10] for r in group.runs if r.meta})
    facts["commit (training)"] = ", ".join(commits) or facts["commit (training)"]
    return list(facts.items())


def supervised_section(group: Group, table: str) -> Section:
    rows_here = [r for r in SUPERVISED if r.table == table and r.arch == group.arch]
    conditions = ("clean", *condition_names(group))
    md, csv, used = [], [], set()
    for row in rows_here:
        if not row.compared:
            md.append(paper_only_row(row, "not run here"))
            csv.append(csv_row(group, None, row.label, "training", "test_accuracy", None, row.accuracy,
                               "paper only", reference(row)))
            continue
        found = [m for m in group.models if matches(m, row)]
        if not found:
            why = f"no trained {row.key}" + (" all-layers" if row.mix_layers == "all" else "") + " model"
            md.append(paper_only_row(row, f"missing ({why})"))
            for setting, value in (("test_accuracy", row.accuracy), ("test_nll", row.nll)):
                csv.append(csv_row(group, None, row.key, "training", setting, None, value, f"missing: {why}",
                                   reference(row)))
        for model in found:
            used.add(model.name)
            model_md, model_csv = model_rows(group, model, row, conditions)
            md += model_md
            csv += model_csv
    for model in group.models:
        if model.name not in used:
            model_md, model_csv = model_rows(group, model, None, conditions)
            md += model_md
            csv += model_csv
    caption = f"Test accuracy (%) and NLL beside the paper's {table.replace('table', 'Table ')}, with calibration"
    return Section(group.heading, group_facts(group), comparison_notes(group, table),
                   [Block(caption, columns(*conditions[1:]), md)], csv)


def untrained_section(table: str, arch: str, rows: list[SupervisedRow]) -> Section:
    """The paper's rows for a dataset and architecture no trained model here has."""
    dataset = TABLES[table]
    why = f"no {dataset} {arch} model trained"
    md, csv = [], []
    group = Group(dataset, arch, "none", [])
    for row in rows:
        md.append(paper_only_row(row, f"missing ({why})" if row.compared else "not run here"))
        for setting, value in (("test_accuracy", row.accuracy), ("test_nll", row.nll)):
            csv.append(csv_row(group, None, row.key if row.compared else row.label, "training", setting, None, value,
                               f"missing: {why}" if row.compared else "paper only", reference(row)))
    heading = f"{DATASET_NAMES[dataset]} · {arch} · not trained here"
    facts = [("dataset", DATASET_NAMES[dataset]), ("architecture", arch), ("models", "none trained")]
    notes = [f"The paper's {table.replace('table', 'Table ')} rows for {arch}; no model of this dataset and "
             "architecture was found, so every one of our cells is missing."]
    return Section(heading, facts, notes, [Block("The paper's numbers alone", columns("deformed", "FGSM"), md)], csv)


def supervised_tables(groups: list[Group]) -> dict[str, list[Section]]:
    """{"table1": sections, "table2": sections}: one per group of that table, then the untrained paper rows."""
    tables: dict[str, list[Section]] = {table: [] for table in TABLES}
    for group in groups:
        table = table_of(group.dataset)
        tables[table].append(supervised_section(group, table))
    for table, dataset in TABLES.items():
        trained = {g.arch for g in groups if g.dataset == dataset}
        for arch in dict.fromkeys(r.arch for r in SUPERVISED if r.table == table):
            if arch not in trained:
                tables[table].append(untrained_section(table, arch, [r for r in SUPERVISED
                                                                      if r.table == table and r.arch == arch]))
    return tables
