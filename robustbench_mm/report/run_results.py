"""Which result files of one run the report reads: those of the weights it shows, never the other's.

A run's results of its last weights live in ``attacks/<run>/``, those of its best weights in
``attacks/<run>/best/`` (runs/results.py `results_dir`). The report shows one of the two; an
evaluation that only the other weights have is missing with the option that shows it. Versions
before that folder wrote best results into ``attacks/<run>/`` itself: each file's model summary says
which weights it measured, so such a file is shown for the best weights and missing for the last.
Models trained elsewhere have one set of weights (``attacks/<run>/``) and are shown either way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustbench_mm.report.result_checks import EVALUATIONS, FAMILY_REQUIRED_KEYS, read_result
from robustbench_mm.runs.checkpoints import WEIGHT_FILES, stored_metadata
from robustbench_mm.runs.files import EXAMPLES_FILE
from robustbench_mm.runs.results import EXTERNAL, result_file, results_dir


def other_weights(weights: str) -> str:
    return next(kind for kind in WEIGHT_FILES if kind != weights)


def only_other_weights(other: str) -> str:
    """Why the report shows no result where the run's `other` weights have one: a table cell's words."""
    return f"measured on the {other} weights only; `mm-robust report --weights {other}` shows it"


def checkpoint_of(model: Any) -> Any:
    """The weights a result's model summary says it measured ("last", "best", "external"), else None."""
    return model.get("checkpoint") if isinstance(model, dict) else None


@dataclass
class FolderResults:
    """The usable result files of one folder, why the others are not usable, and where each came from."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    other_weights: set[str] = field(default_factory=set)  # evaluations measured on the run's other weights too


def read_folder(folder: Path, name: str) -> FolderResults:
    """Every result file in `folder` the report knows, checked (result_checks.read_result)."""
    found = FolderResults()
    paths = [(result_file(folder, evaluation), evaluation) for evaluation in EVALUATIONS]
    for family in FAMILY_REQUIRED_KEYS:  # one file per setting, e.g. autoattack-8_255.json
        paths += [(path, path.stem) for path in sorted(folder.glob(f"{family.value}-*.json"))
                  if not path.name.endswith(".partial.json")]  # a run still going (or killed): not a result yet
    for path, evaluation in paths:
        result, why = read_result(path, evaluation)
        if result is None:
            found.missing[evaluation] = f"{why} for {name}"
            if path.exists() and evaluation in EVALUATIONS:  # a file that is there but unusable: under Problems
                found.problems.append(f"unreadable result {str(path)!r}: {why}")
        else:
            found.results[evaluation] = result
            found.sources[evaluation] = path
    return found


def read_run_results(attacks_root: Path, name: str, weights: str) -> FolderResults:
    """`name`'s results measured on `weights` ("last" or "best"), with the other weights' ones named as missing."""
    top = read_folder(results_dir(attacks_root, name, "last"), name)
    if weights == "best":
        own = read_folder(results_dir(attacks_root, name, "best"), name)
        for evaluation in [e for e, r in own.results.items() if checkpoint_of(r["model"]) == "last"]:
            path = own.sources.pop(evaluation)  # copied or linked in: shown as best, it would be another model's number
            del own.results[evaluation]
            own.missing[evaluation] = f"{path.name} in best/ measured the last weights"
            own.problems.append(f"result {str(path)!r} measured the last weights but lies in the best weights' folder")
        for evaluation, result in top.results.items():  # a best result from before best/, or a model from elsewhere
            if evaluation not in own.results and checkpoint_of(result["model"]) in ("best", EXTERNAL):
                own.results[evaluation], own.sources[evaluation] = result, top.sources[evaluation]
                own.missing.pop(evaluation, None)
        other = {e for e, r in top.results.items() if checkpoint_of(r["model"]) == "last"}
    else:
        own = top
        other = {e for e, r in own.results.items() if checkpoint_of(r["model"]) == "best"}
        for evaluation in other:
            del own.results[evaluation], own.sources[evaluation]
        other |= set(read_folder(results_dir(attacks_root, name, "best"), name).results)
    for evaluation in other - set(own.results):
        own.missing[evaluation] = only_other_weights(other_weights(weights))
    own.other_weights = other
    return own


def examples_model(path: Path) -> dict[str, Any]:
    """The model summary the adversarial-examples file was written for ({} when it has none)."""
    try:
        model = json.loads((stored_metadata(path) or {})["model"])
    except (KeyError, TypeError, ValueError):
        return {}
    return model if isinstance(model, dict) else {}


def examples_file(attacks_root: Path, name: str, weights: str) -> Path | None:
    """The adversarial-examples file of `name`'s `weights`, if there is one (for best: one from before best/ too)."""
    for path in (results_dir(attacks_root, name, weights) / EXAMPLES_FILE,
                 results_dir(attacks_root, name, "last") / EXAMPLES_FILE):
        if path.is_file() and checkpoint_of(examples_model(path)) != other_weights(weights):
            return path
    return None
