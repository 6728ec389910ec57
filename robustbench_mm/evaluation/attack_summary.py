"""The terminal summary `mm-robust attack` prints: a Table-5-style table of the result files it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustbench_mm.attacks import PROTOCOLS
from robustbench_mm.common.storage import read_json
from robustbench_mm.evaluation.attack_plan import verdict_protocol
from robustbench_mm.paper import PGD_UNBOUNDED, TABLE5, TABLE5_EPS
from robustbench_mm.runs.evaluations import Family, in_family


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def paper_fgsm_value(model: dict[str, Any]) -> tuple[float | None, bool]:
    """The paper's Table 5 number for this kind of model, and whether it is for the model's own dataset."""
    own = model["dataset"] in TABLE5
    return TABLE5[model["dataset"] if own else "cifar10"].get(model["key"]), own


def _summary_rows(results: dict[str, dict]) -> list[list[str]]:
    fgsm_results = [results[f"fgsm-{p}"] for p in PROTOCOLS if f"fgsm-{p}" in results]
    model = fgsm_results[0]["model"]
    # Named from the result, not its folder: the best weights' results sit in <run>/best/.
    run = model["run"] + (" (best weights)" if model.get("checkpoint") == "best" else "")
    paper_value, own_dataset = paper_fgsm_value(model)
    paper_text = _fmt(paper_value) + ("" if own_dataset or paper_value is None else " (CIFAR-10)")
    masking = results.get("gradient-masking")
    pgd_runs = {p: results[f"pgd-unbounded-{p}"] for p in PROTOCOLS if f"pgd-unbounded-{p}" in results}
    pgd_text = "–"
    if pgd_runs:
        verdict = verdict_protocol(list(pgd_runs))
        pgd = pgd_runs[verdict]
        others = "".join(f"; {p}-protocol {r['final_accuracy']:.2f}" for p, r in pgd_runs.items() if p != verdict)
        pgd_text = (f"{pgd['final_accuracy']:.2f} {'ok' if pgd['passed'] else 'FAILED'} ({verdict}-protocol{others}; "
                    f"Appendix D {_fmt(PGD_UNBOUNDED.get(model['key']))})")
    masking_text = "–" if masking is None else (
        "FLAGGED: " + ", ".join(masking["failed"]) if masking["flagged"] else f"all {len(masking['checks'])} passed")
    rows = []
    for index, result in enumerate(fgsm_results):
        first = index == 0
        rows.append([model["key"] if first else "", result["protocol"], _fmt(result["clean"]["accuracy"]),
                     *(_fmt(a) for a in result["accuracy"]), paper_text,
                     pgd_text if first else "", masking_text if first else "", run if first else ""])
    return rows


def attack_summary(paths: list[Path]) -> str:
    """A Table-5-style table of the result files in `paths`: per model and protocol, beside the paper."""
    by_run: dict[Path, dict[str, dict]] = {}
    for path in paths:
        if path.suffix == ".json":
            by_run.setdefault(path.parent, {})[path.stem] = read_json(path)
    by_run = {run_dir: results for run_dir, results in sorted(by_run.items())
              if any(f"fgsm-{p}" in results for p in PROTOCOLS)}
    if not by_run:
        return "no FGSM results to summarise"
    first = next(r for results in by_run.values() for k, r in results.items() if in_family(k, Family.FGSM))
    header = ["model", "protocol", "clean", *(f"FGSM eps={e:g}" for e in first["eps"]), f"paper eps={TABLE5_EPS:g}",
              "unbounded PGD", "gradient masking", "run"]
    rows = [row for results in by_run.values() for row in _summary_rows(results)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"Test accuracy (%) under FGSM (Table 5) and unbounded PGD (Appendix D), "
             f"first {first['n_examples']} test images",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if any(not paper_fgsm_value(r["model"])[1] for results in by_run.values() for r in results.values()):
        lines.append("(CIFAR-10): the paper's CIFAR-10 value beside a model of another dataset, for scale only.")
    return "\n".join(lines)
