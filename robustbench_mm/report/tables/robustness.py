""""How robust is it really?": every attack on one line per model, and RobustBench-style model_info.

Columns: clean, FGSM in both protocols, PGD-20 at the check eps (worst case over iterates) and
AutoAttack at every eps it ran, with its per-stage breakdown (robust accuracy after APGD-CE,
APGD-T, FAB-T and Square). Which number each column takes from which result file is declared
here (`columns`); report/build.py turns them into cells over seeds like every other table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from robustbench_mm.attacks.autoattack import STAGES, STAGE_LABELS
from robustbench_mm.report.records import Group, adversarial_steps_fact
from robustbench_mm.report.verdicts import RULE, UNKNOWN, model_verdict
from robustbench_mm.report.sections import Block, Section, cell_status, estimate_cell, header_facts, table_csv_row
from robustbench_mm.runs.evaluations import Family, in_family
from robustbench_mm.runs.results import eps_label, fgsm_accuracy


TITLE = "How robust is it really? — FGSM, PGD-20 and AutoAttack on the same models"


@dataclass(frozen=True)
class Column:
    """One number per model: which result file it comes from and how to read it."""

    label: str
    evaluation: str
    setting: str  # for the CSV
    value_of: Callable[[dict[str, Any]], float | None]


BPDA_LABEL = "BPDA"


def autoattack_label(result: dict[str, Any]) -> str:
    budget = result.get("budget", "standard")
    return f"AutoAttack ε = {result.get('eps_text', result['eps'])}" + ("" if budget == "standard" else f" ({budget} budget)") \
        + (f" — {BPDA_LABEL}" if is_bpda_result(result) else "")


def is_bpda_result(result: dict[str, Any]) -> bool:
    """The result of an attack run through the model's BPDA surrogates (runs/evaluations.py)."""
    return bool(result.get("bpda")) or bool((result.get("settings") or {}).get("bpda"))


def autoattack_evaluations(all_results: list[dict[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """(evaluation name, one result of it) for every AutoAttack evaluation any model has, smallest eps first."""
    found: dict[str, dict[str, Any]] = {}
    for results in all_results:
        for name, result in results.items():
            if in_family(name, Family.AUTOATTACK):
                found.setdefault(name, result)
    return sorted(found.items(), key=lambda item: (item[1]["eps"], is_bpda_result(item[1])))


def _stage_value(stage: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: next((s["robust_accuracy"] for s in r["stages"] if s["stage"] == stage), None)


def columns(all_results: list[dict[str, dict[str, Any]]],
            fgsm_eps: float) -> tuple[list[Column], list[tuple[str, list[Column]]]]:
    """The table's number columns (FGSM at `fgsm_eps`, the eps the models were attacked at), and per
    AutoAttack evaluation the stage columns of its breakdown."""
    at_eps = lambda r: fgsm_accuracy(r, fgsm_eps)  # noqa: E731
    table = [
        Column("Clean", "fgsm-standard", "clean", lambda r: r["clean"]["accuracy"]),
        Column(f"FGSM standard ε = {fgsm_eps:g}", "fgsm-standard", eps_label(fgsm_eps), at_eps),
        Column(f"FGSM paper protocol ε = {fgsm_eps:g}", "fgsm-paper", eps_label(fgsm_eps), at_eps),
        Column("PGD-20 (worst case)", "pgd-bounded", "final", lambda r: r["accuracy"]),
    ]
    if any("pgd-bounded-bpda" in results for results in all_results):  # a model with a BPDA layer: before and after
        table += [Column(f"FGSM standard ε = {fgsm_eps:g} — {BPDA_LABEL}", "fgsm-standard-bpda", eps_label(fgsm_eps),
                         at_eps),
                  Column(f"PGD-20 (worst case) — {BPDA_LABEL}", "pgd-bounded-bpda", "final", lambda r: r["accuracy"])]
    breakdowns = []
    for name, result in autoattack_evaluations(all_results):
        table.append(Column(autoattack_label(result), name, "final", lambda r: r["robust_accuracy"]))
        breakdowns.append((name, [Column(STAGE_LABELS[stage], name, stage, _stage_value(stage)) for stage in STAGES]))
    return table, breakdowns


NOTES = [
    "Robust accuracy (%) on the same test examples. FGSM `standard`: ε on the [0, 1] pixel scale, cross-entropy, "
    "clipping; `paper`: the authors' convention (ε on the normalized input, ≈ 4× weaker on CIFAR). PGD-20 and "
    "AutoAttack count an example as fooled if any iterate fooled it. AutoAttack is the \"standard\" L-inf version "
    "(APGD-CE, APGD-T on the targeted DLR loss with 9 targets, FAB-T with 9 targets, Square with 5000 queries, "
    "each on the examples still robust, fixed seed), all four stages our own active-set implementations; a column "
    "marked with another budget ran the same stages with fewer steps and queries, so its numbers are an upper bound on the "
    "standard ones.",
]


def model_info(run: str, model: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """RobustBench-style model_info for one model: clean and AutoAttack accuracy at its first AutoAttack eps."""
    every = [result for _, result in autoattack_evaluations([results])]
    runs = [result for result in every if not is_bpda_result(result)]
    bpda_runs = [result for result in every if is_bpda_result(result)]
    if not runs:
        return None
    main = next((r for r in runs if abs(r["eps"] - 8 / 255) < 1e-9), runs[0])
    return {
        "name": run,
        "architecture": model.get("arch"),
        "dataset": model.get("dataset"),
        "training": {"method": model.get("method"), "alpha": model.get("alpha"), "preset": model.get("preset"),
                     "epochs": model.get("epochs_trained"), "seed": model.get("train_seed")},
        "threat_model": "Linf",
        "eps": main["eps_text"],
        "clean_acc": f"{main['clean']['accuracy']:.2f}",
        "autoattack_acc": f"{main['robust_accuracy']:.2f}",
        "autoattack_budget": main.get("budget", "standard"),
        "autoattack_stages": {s["stage"]: f"{s['robust_accuracy']:.2f}" for s in main["stages"]},
        "n_examples": main["n_examples"],
        "additional_data": False,
        "number_forward_passes": 1,
        "reported": None,  # the paper reports no AutoAttack number
        "other_eps": {r["eps_text"]: f"{r['robust_accuracy']:.2f}" for r in runs if r is not main},
        "weights_sha256": model.get("weights_sha256"),
        **({"bpda_autoattack_acc": {r["eps_text"]: f"{r['robust_accuracy']:.2f}" for r in bpda_runs}}
           if bpda_runs else {}),
    }


def stage_series(results: dict[str, dict[str, Any]]) -> list[tuple[str, list[str], list[float]]]:
    """Per AutoAttack result: (column label, stage names with 'clean' first, robust accuracy after each)."""
    series = []
    for _, result in autoattack_evaluations([results]):
        names = ["clean", *(STAGE_LABELS[s["stage"]] for s in result["stages"])]
        values = [result["clean"]["accuracy"], *(s["robust_accuracy"] for s in result["stages"])]
        series.append((autoattack_label(result), names, values))
    return series


def robustness_section(group: Group) -> Section:
    """The "How robust is it really?" table: one row per model (seeds aggregated), every attack side by side."""
    number_columns, breakdowns = columns([r.results for r in group.runs], group.fgsm_eps)
    md_rows, rows = [], []
    # The columns come from separate commands: when they measured different numbers of test examples, every
    # number says how many it measured and the caption does not claim the same examples.
    sizes = {r.results[c.evaluation].get("n_examples") for r in group.runs for c in number_columns
             if c.evaluation in r.results}
    mixed = len(sizes) > 1
    for model in group.models:
        cells = [model.label, f"`{model.folders}`"]
        for column in number_columns:
            cell, why = model.cell(column.evaluation, column.value_of, f"{column.evaluation}.json has no such number")
            n = sorted({r.results[column.evaluation].get("n_examples") for r in model.runs
                        if column.evaluation in r.results}, key=str)
            cells.append(estimate_cell(cell, why) + (f" (n = {', '.join(map(str, n))})" if mixed and cell else ""))
            rows.append(table_csv_row(group, model, model.key, column.evaluation, column.setting, cell, None,
                                 cell_status(cell, why), "not in the paper"))
        stage_texts = []
        for evaluation, stage_columns in breakdowns:
            stages = [(c, model.cell(evaluation, c.value_of, "")[0]) for c in stage_columns]
            if all(cell is not None for _, cell in stages):
                first = next(r.results[evaluation] for r in model.runs if evaluation in r.results)
                eps = first["eps_text"] + (f" {BPDA_LABEL}" if is_bpda_result(first) else "")
                stage_texts.append(f"{eps}: " +
                                   " → ".join(f"{c.label} {cell.mean:.1f}" for c, cell in stages))
                rows += [table_csv_row(group, model, model.key, evaluation, c.setting, cell, None, cell_status(cell, ""),
                                  "not in the paper") for c, cell in stages]
        judged = model_verdict(model)
        md_rows.append([*cells, "; ".join(stage_texts) or "–", f"**{judged.text}**" if judged.word != UNKNOWN else
                        f"– ({judged.reason})"])
        rows.append({**table_csv_row(group, model, model.key, "verdict", judged.text, None, None, judged.word,
                                     "not in the paper"), "ours": None})
    evaluations = tuple(dict.fromkeys(c.evaluation for c in number_columns))
    facts = header_facts(group, evaluations, "see the note below the table")
    header = ["Model", "Run", *(c.label for c in number_columns), "AutoAttack robust accuracy after each stage",
              "Verdict"]
    steps = adversarial_steps_fact(group)
    if steps:
        facts.append(steps)
    notes = [NOTES[0].replace("on the same test examples", "on different numbers of test examples: each number "
                              f"says how many (n) it measured ({', '.join(map(str, sorted(sizes, key=str)))})")
             if mixed else NOTES[0], *NOTES[1:], RULE]
    return Section(group.heading, facts, notes,
                   [Block("Robust accuracy (%) under every attack", header, md_rows)], rows)
