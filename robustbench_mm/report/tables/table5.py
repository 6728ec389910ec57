"""Table 5: FGSM at the paper's ε (and at the attacked one) beside the paper's numbers, and Appendix D's
unbounded-PGD sanity check with the gradient-masking verdicts."""

from __future__ import annotations

from typing import Any

from robustbench_mm.attacks.checks import ATTACK_FAILURE_INDICATORS
from robustbench_mm.paper import PGD_UNBOUNDED, TABLE5, TABLE5_CONTROLS, TABLE5_EPS
from robustbench_mm.report.records import PROTOCOLS, Group, ModelRuns, adversarial_steps_fact, model_label
from robustbench_mm.report.sections import (
    UNCERTAINTY_NOTE, Block, Section, cell_status, clean_accuracy, comparison_note, distinct_text, estimate_cell,
    fmt, fmt_delta, header_facts, table_csv_row)
from robustbench_mm.runs.results import eps_label, fgsm_accuracy
from robustbench_mm.stats.estimates import Estimate


# Appendix D's unbounded-PGD verdict comes from the authors' convention; the other protocol is shown beside it.
PGD_PROTOCOLS = ("paper", "standard")
PAPER_TABLE5_ONLY = TABLE5_CONTROLS  # rows the paper quotes from other papers; ours beside them when trained here


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


def table5_section(group: Group) -> Section:
    reference, warning = comparison_note(group, "table5")
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
        clean, why = model.cell(source, clean_accuracy, "")
        cells = [model.label, f"`{model.folders}`", estimate_cell(clean, why)]
        rows.append(table_csv_row(group, model, model.key, source, "clean", clean, None, cell_status(clean, why), reference))
        for protocol in PROTOCOLS:
            evaluation = f"fgsm-{protocol}"
            ours, why = model.cell(evaluation, lambda r: fgsm_accuracy(r, TABLE5_EPS),
                                   f"{evaluation}.json has no ε = {TABLE5_EPS:g}")
            paper_text = fmt(paper) if paper is not None else "– (not in the paper)"
            if ours is None:
                cells += [estimate_cell(None, why), paper_text, "–"]
            else:
                cells += [ours.text(), paper_text, fmt_delta(ours.mean, paper) if paper is not None else "–"]
            rows.append(table_csv_row(group, model, model.key, evaluation, eps_label(TABLE5_EPS), ours, paper,
                                 cell_status(ours, why), reference))
        fgsm_rows.append(cells)
        if any(r.result("fgsm-standard-bpda") for r in model.runs):
            fgsm_rows.append(_bpda_fgsm_cells(group, model, paper, reference, rows))
        pgd_cells, pgd, why = _pgd_cells(model)
        pgd_rows.append(pgd_cells)
        if any(r.result("pgd-unbounded-standard-bpda") for r in model.runs):
            bpda_final, why = model.cell("pgd-unbounded-standard-bpda", lambda r: r["final_accuracy"], "")
            pgd_rows.append([f"{model.label} — BPDA", BPDA_PAPER_PROTOCOL, "–", "–", "–", estimate_cell(bpda_final, why),
                             "(the checks test the plain model)"])
            rows.append(table_csv_row(group, model, model.key, "pgd-unbounded-standard-bpda", "final", bpda_final, None,
                                      cell_status(bpda_final, why), reference))
        for protocol in PGD_PROTOCOLS:
            evaluation = f"pgd-unbounded-{protocol}"
            steps = distinct_text(r.result(evaluation)["steps"] for r in model.runs if r.result(evaluation))
            final, why = model.cell(evaluation, lambda r: r["final_accuracy"], "")
            rows.append(table_csv_row(group, model, model.key, evaluation, f"steps={steps}" if final else "",
                                 final, PGD_UNBOUNDED.get(model.key), cell_status(final, why), reference))
    trained = {model.key for model in group.models}
    for key, value in paper_values.items():
        if key in PAPER_TABLE5_ONLY and key not in trained:
            label = model_label(key, None)
            fgsm_rows.append([f"{label} — paper only", "–", "–", "not run here", fmt(value), "–", "not run here",
                              fmt(value), "–"])
            rows.append(table_csv_row(group, None, label, "fgsm-paper", eps_label(TABLE5_EPS), None, value, "paper only",
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
    steps = adversarial_steps_fact(group)
    if steps:
        facts.append(steps)
    if any(r.result("fgsm-standard-bpda") for r in group.runs):
        notes.append("Rows marked **BPDA** attack the same model through the differentiable surrogate of its "
                     "non-differentiable input layer (Athalye et al., 2018), standard protocol only; the paper's "
                     "number beside them is its (non-BPDA) FGSM number, to show the defence before and after.")
    return Section(group.heading, facts, notes, blocks, rows)


BPDA_PAPER_PROTOCOL = "not applicable (BPDA runs the standard protocol)"


def _bpda_fgsm_cells(group: Group, model: ModelRuns, paper: float | None, reference: str,
                     rows: list[dict[str, Any]]) -> list[str]:
    """The model's FGSM row again, attacked through its BPDA surrogates (standard protocol only)."""
    ours, why = model.cell("fgsm-standard-bpda", lambda r: fgsm_accuracy(r, TABLE5_EPS),
                           f"fgsm-standard-bpda.json has no ε = {TABLE5_EPS:g}")
    rows.append(table_csv_row(group, model, model.key, "fgsm-standard-bpda", eps_label(TABLE5_EPS), ours, paper,
                              cell_status(ours, why), reference))
    paper_text = fmt(paper) if paper is not None else "– (not in the paper)"
    delta = fmt_delta(ours.mean, paper) if ours is not None and paper is not None else "–"
    return [f"{model.label} — BPDA", f"`{model.folders}`", "–", estimate_cell(ours, why), paper_text, delta,
            BPDA_PAPER_PROTOCOL, "–", "–"]


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
            rows.append(table_csv_row(group, model, model.key, evaluation, eps_label(eps), ours, None, cell_status(ours, why),
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
        cells = [model.label, estimate_cell(None, why), paper_text, "–", "–"]
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
        cells.append(masking_cell(masking, several_seeds=len(model.runs) > 1))
    return cells, final, why


def masking_cell(masking: list[tuple[str, dict]], several_seeds: bool) -> str:
    """The gradient-masking checks of (run, gradient-masking.json) pairs. An attack-failure indicator that
    tripped is named apart: it questions the attack's own numbers, not the model (report/verdicts.py)."""
    failed = sorted({c["name"] for _, m in masking for c in m["checks"] if not c.get("passed")})
    masked = [name for name in failed if name not in ATTACK_FAILURE_INDICATORS]
    indicators = [name for name in failed if name in ATTACK_FAILURE_INDICATORS]
    n_checks = sum(c["name"] not in ATTACK_FAILURE_INDICATORS for c in masking[0][1]["checks"])
    flagged = [name for name, m in masking if any(c["name"] in masked for c in m["checks"] if not c.get("passed"))]
    if masked:
        text = f"**flagged**: {', '.join(masked)}" + (f" ({len(flagged)} of {len(masking)} seeds)" if several_seeds
                                                       else "")
    else:
        text = f"all {n_checks} passed" + (f" in {len(masking)} seeds" if several_seeds else "")
    if indicators:
        text += f"; attack-failure indicator tripped: {', '.join(indicators)} (questions the attack, not the model)"
    return text
