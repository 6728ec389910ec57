"""What a result file must hold before the report shows a number from it: required keys and the
type of every field a table reads. A file that fails is listed under Problems, never rendered."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from robustbench_mm.attacks.core import PROTOCOLS as ATTACK_PROTOCOLS
from robustbench_mm.common.storage import read_json
from robustbench_mm.data.deformations import DEFORM_EVALUATIONS
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation.attack_plan import BPDA_VERSION
from robustbench_mm.runs.evaluations import Evaluation, Family
from robustbench_mm.runs.results import RESULT_FORMAT, decode_mask


PROTOCOLS = tuple(ATTACK_PROTOCOLS)  # the FGSM protocols, in the tables' column order


REQUIRED_KEYS = {
    "fgsm-standard": ("n_examples", "clean", "eps", "accuracy"),
    "fgsm-paper": ("n_examples", "clean", "eps", "accuracy"),
    "pgd-unbounded-paper": ("n_examples", "steps", "accuracy_per_step", "final_accuracy"),
    "pgd-unbounded-standard": ("n_examples", "steps", "accuracy_per_step", "final_accuracy"),
    "pgd-bounded": ("n_examples", "eps", "steps", "accuracy", "clean"),
    "gradient-masking": ("checks", "flagged"),
    **{evaluation: ("n_examples", "clean", "sets") for evaluation in DEFORM_EVALUATIONS},
    "calibration": ("n_examples", "bins", "conditions"),
    "corruptions": ("n_examples", "source", "clean", "sets", "summary"),
}
# The BPDA results of a model with a non-differentiable layer (runs/evaluations.py): the same keys as the plain ones.
BPDA_EVALUATIONS = ("fgsm-standard-bpda", "pgd-unbounded-standard-bpda", "pgd-bounded-bpda")
REQUIRED_KEYS.update({name: REQUIRED_KEYS[Evaluation.of(name).plain.name] for name in BPDA_EVALUATIONS})


EVALUATIONS = tuple(REQUIRED_KEYS)


FAMILY_REQUIRED_KEYS = {Family.AUTOATTACK: ("n_examples", "eps", "clean", "stages", "robust_accuracy")}


def read_result(path: Path, evaluation: str) -> tuple[dict[str, Any] | None, str | None]:
    """(result, None) for a usable file, else (None, why not) in words fit for a table cell."""
    if not path.exists():
        return None, f"no {path.name}"
    if not path.is_file():  # a FIFO would block the read and /dev/zero never end it
        return None, f"{path.name} is not a regular file"
    try:
        result = read_json(path)
    except UsageError:
        return None, f"{path.name} is not valid JSON" if path.is_file() else f"{path.name} is not a file"
    if not isinstance(result, dict) or result.get("format") != RESULT_FORMAT:
        return None, f"{path.name} is not an mm-robust result"
    required = REQUIRED_KEYS.get(evaluation) or FAMILY_REQUIRED_KEYS[Evaluation.of(evaluation).family]
    absent = [k for k in (*required, "model", "settings") if k not in result]
    if absent:
        return None, f"{path.name} lacks {', '.join(absent)}"
    wrong = malformed_fields(result, evaluation)
    if wrong:
        return None, f"{path.name} has malformed {', '.join(wrong)}"
    impossible = impossible_values(result)
    if impossible:
        return None, f"{path.name} has impossible values: {'; '.join(impossible)}"
    parsed = Evaluation.of(evaluation)
    settings = result["settings"] if isinstance(result["settings"], dict) else {}
    if parsed is not None and parsed.bpda and settings.get("bpda") != BPDA_VERSION:
        return None, (f"{path.name} was measured through another BPDA surrogate (version {settings.get('bpda')!r}; "
                      f"this mm-robust's is {BPDA_VERSION}); rerun mm-robust attack with --force")
    return result, None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and all(map(_number, value))


def _accuracy_dict(value: Any) -> bool:
    return isinstance(value, dict) and _number(value.get("accuracy"))


def _fgsm_ok(result: dict[str, Any]) -> dict[str, bool]:
    sweep = result.get("sweep", {"eps": [], "accuracy": []})
    return {"clean": _accuracy_dict(result["clean"]), "eps": _numbers(result["eps"]),
            "accuracy": _numbers(result["accuracy"]) and (not _numbers(result["eps"]) or
                                                          len(result["eps"]) == len(result["accuracy"])),
            "sweep": isinstance(sweep, dict) and _numbers(sweep.get("eps")) and _numbers(sweep.get("accuracy"))}


FIELD_CHECKS = {
    "fgsm-standard": _fgsm_ok,
    "fgsm-paper": _fgsm_ok,
    **{f"pgd-unbounded-{protocol}": lambda r: {
        "steps": isinstance(r["steps"], int), "accuracy_per_step": _numbers(r["accuracy_per_step"]),
        "final_accuracy": _number(r["final_accuracy"])} for protocol in PROTOCOLS},
    "fgsm-standard-bpda": _fgsm_ok,
    "gradient-masking": lambda r: {"checks": isinstance(r["checks"], list) and all(
        isinstance(c, dict) and isinstance(c.get("name"), str) for c in r["checks"]),
        "flagged": isinstance(r["flagged"], bool)},
    **{evaluation: lambda r: {"clean": _accuracy_dict(r["clean"]), "sets": isinstance(r["sets"], dict) and all(
        _accuracy_dict(entry) for entry in r["sets"].values())} for evaluation in DEFORM_EVALUATIONS},
}


def _percent(value: Any) -> bool:
    return _number(value) and 0 <= value <= 100


def _fraction_or_none(value: Any) -> bool:
    return value is None or (_number(value) and 0 <= value <= 1)


def _corruption_set_ok(entry: Any) -> bool:
    return (isinstance(entry, dict) and _percent(entry.get("accuracy")) and _number(entry.get("ece"))
            and isinstance(entry.get("corruption"), str) and isinstance(entry.get("severity"), int)
            and not isinstance(entry.get("severity"), bool) and 1 <= entry["severity"] <= 5)


def _corruptions_summary_ok(summary: Any) -> bool:
    """`mm-robust corrupt`'s aggregate: corruptions_acc a fraction, corruptions_accuracy the same in % (or both
    None until the 75 standard sets are all there), and the per-corruption means in %."""
    if not isinstance(summary, dict) or not isinstance(summary.get("complete"), bool):
        return False
    acc, accuracy = summary.get("corruptions_acc"), summary.get("corruptions_accuracy")
    if not _fraction_or_none(acc) or not (accuracy is None or _percent(accuracy)) or (acc is None) != (accuracy is None):
        return False
    if summary["complete"] != (accuracy is not None) or not (summary.get("corruptions_ece") is None or
                                                              _number(summary["corruptions_ece"])):
        return False
    per = summary.get("per_corruption")
    return isinstance(per, dict) and all(isinstance(v, dict) and _percent(v.get("accuracy")) for v in per.values())


def _corruptions_ok(result: dict[str, Any]) -> dict[str, bool]:
    differs = result.get("differs_from_reference", {})
    return {"source": result["source"] in ("generated", "official"),
            "differs_from_reference": isinstance(differs, dict) and all(isinstance(v, str) for v in differs.values()),
            "clean": _accuracy_dict(result["clean"]) and _percent(result["clean"]["accuracy"]),
            "sets": isinstance(result["sets"], dict) and all(map(_corruption_set_ok, result["sets"].values())),
            "summary": _corruptions_summary_ok(result["summary"]),
            "per_example": isinstance(result.get("per_example", {}), dict)}


FIELD_CHECKS["corruptions"] = _corruptions_ok


MODEL_FIELDS = ("run", "key", "dataset", "arch", "preset", "method")


OPTIONAL_MODEL_FIELDS = {"checkpoint": str, "weights_sha256": str, "train_git_commit": str, "width": int,
                         "epochs_trained": int, "checkpoint_epoch": int, "train_seed": int, "alpha": (int, float),
                         "external": bool, "contract_flags": list}


def _model_ok(model: Any) -> bool:
    if not isinstance(model, dict) or not all(isinstance(model.get(k), str) for k in MODEL_FIELDS):
        return False
    for key, kind in OPTIONAL_MODEL_FIELDS.items():
        value = model.get(key)
        if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
            return False
    return True


def malformed_fields(result: dict[str, Any], evaluation: str) -> list[str]:
    """Names of the fields of a result that have the wrong type (nulls included)."""
    wrong = [] if isinstance(result["settings"], dict) else ["settings"]
    if not _model_ok(result["model"]):
        wrong.append("model")
    if "n_examples" in result and (not isinstance(result["n_examples"], int) or isinstance(result["n_examples"], bool)):
        wrong.append("n_examples")
    checks = FIELD_CHECKS.get(evaluation)
    return wrong + ([name for name, ok in checks(result).items() if not ok] if checks else [])


FIELD_CHECKS["pgd-unbounded-standard-bpda"] = FIELD_CHECKS["pgd-unbounded-standard"]


# ---- values a result can hold at all --------------------------------------------------------


def _accuracies(result: dict[str, Any]) -> list[tuple[str, Any]]:
    """(field, value) of every accuracy (a percentage) a result holds, wherever its evaluation keeps them."""
    found: list[tuple[str, Any]] = []

    def add(name: str, value: Any) -> None:
        for i, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            found.append((name if i is None else f"{name}[{i}]", item))

    for key in ("accuracy", "final_accuracy", "robust_accuracy", "accuracy_per_step"):
        if key in result and not isinstance(result[key], str):
            add(key, result[key])
    for key in ("clean", "sweep"):
        if isinstance(result.get(key), dict) and "accuracy" in result[key]:
            add(f"{key}.accuracy", result[key]["accuracy"])
    for name, entry in (result.get("sets") or {}).items() if isinstance(result.get("sets"), dict) else ():
        if isinstance(entry, dict):
            add(f"sets.{name}.accuracy", entry.get("accuracy"))
    for i, stage in enumerate(result.get("stages") or []) if isinstance(result.get("stages"), list) else ():
        if isinstance(stage, dict) and "robust_accuracy" in stage:
            add(f"stages[{i}].robust_accuracy", stage["robust_accuracy"])
    return found


def impossible_values(result: dict[str, Any]) -> list[str]:
    """'field = value (why)' for every number outside what it can be: accuracies outside [0, 100], negative counts,
    per-example masks whose length is not the example range they say they cover."""
    bad = [f"{name} = {value!r} (not a percentage in [0, 100])" for name, value in _accuracies(result)
           if not (_number(value) and 0 <= value <= 100)]
    for key in ("n_examples", "steps"):
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value >= 0:
            bad.append(f"{key} = {value!r} (a count, must be >= 0)")
    return bad + _mask_problems(result.get("per_example"))


def _mask_problems(per_example: Any) -> list[str]:
    if per_example is None:
        return []
    span = per_example.get("example_range") if isinstance(per_example, dict) else None
    if not (isinstance(span, list) and len(span) == 2 and all(isinstance(v, int) for v in span) and
            0 <= span[0] <= span[1]) or not isinstance(per_example.get("correct"), dict):
        return [f"per_example = {str(per_example)[:60]!r} (needs example_range [start, stop] and correct masks)"]
    bad = []
    for name, mask in per_example["correct"].items():
        try:
            length = len(decode_mask(mask))
        except ValueError as exc:
            bad.append(f"per_example.correct.{name} ({exc})")
            continue
        if length != span[1] - span[0]:
            bad.append(f"per_example.correct.{name} holds {length} flags for the {span[1] - span[0]} examples "
                       f"of example_range {span}")
    return bad
