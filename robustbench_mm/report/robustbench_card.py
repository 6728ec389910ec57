"""RobustBench's model card, exactly: the files a RobustBench submission holds, written from our result files.

RobustBench (github.com/RobustBench/robustbench, robustbench/utils.py) keeps one JSON per model at
``model_info/<dataset>/<threat model>/<model name>.json``, written by `update_json` as
``json.dumps(dataclasses.asdict(ModelInfo(...)), indent=2)``: every `ModelInfo` field, in its order,
null where unknown; accuracies as strings, ``str(round(accuracy * 100, 2))`` (e.g. "94.78"); `eps`
as the leaderboard's string ("8/255", null for corruptions); `additional_data` a bool,
`number_forward_passes` an int. Its corruptions evaluation (robustbench/eval.py,
`corruptions_evaluation`) adds each model's 75 per-set accuracies to
``model_info/<dataset>/corruptions/unaggregated_results.csv``: pandas' ``DataFrame.to_csv`` of a
frame with (corruption, severity) columns, so two header rows (corruption names, then severities,
each with an empty first cell), then one row per model name, values fractions in [0, 1], columns in
RobustBench's corruption order (robustbench/data.py `CORRUPTIONS`).

We write a Linf card for every run with an AutoAttack result (8/255 where it ran, else its first
eps) and a corruptions card and CSV row for every run with all 75 standard corruption sets. The
model name is the run's folder name. Fields we cannot fill honestly stay null: `reported` (the
paper reports neither number), `corruptions_mce` (RobustBench normalises by AlexNet's errors, which
we do not have), `link`, `authors`, `venue`. The `footnote` says how the numbers were measured.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable

from robustbench_mm.data.corruptions import SEVERITIES
from robustbench_mm.report.records import RunRecord
from robustbench_mm.report.tables.robustness import autoattack_evaluations

MODEL_INFO_DIR = "model_info"
LINF, CORRUPTIONS_THREAT = "Linf", "corruptions"
THREAT_FOLDERS = (LINF, "L2", CORRUPTIONS_THREAT)  # RobustBench's ThreatModel values that have model_info folders
CSV_NAME = "unaggregated_results.csv"
# robustbench/utils.py ModelInfo, its fields in order.
CARD_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
               "architecture", "eps", "clean_acc", "reported", "corruptions_acc", "corruptions_acc_3d",
               "corruptions_mce", "corruptions_mce_3d", "autoattack_acc", "footnote")
# robustbench/data.py CORRUPTIONS: the order of unaggregated_results.csv's columns.
ROBUSTBENCH_CORRUPTIONS = ("shot_noise", "motion_blur", "snow", "pixelate", "gaussian_noise", "defocus_blur",
                           "brightness", "fog", "zoom_blur", "frost", "glass_blur", "impulse_noise", "contrast",
                           "jpeg_compression", "elastic_transform")
ARCH_NAMES = {"preactresnet18": "PreActResNet-18", "preactresnet34": "PreActResNet-34",
              "preactresnet152": "PreActResNet-152"}
FULL_WIDTH = 64


def robustbench_accuracy(percent: float) -> str:
    """An accuracy as RobustBench's update_json writes it: str(round(accuracy * 100, 2)), e.g. '94.78', '86.6'."""
    return str(round(float(percent), 2))


def architecture(model: dict[str, Any]) -> str:
    name = ARCH_NAMES.get(model.get("arch"), model.get("arch") or "unknown")
    width = model.get("width")
    return name if width in (None, FULL_WIDTH) else f"{name} (width {width})"


def card(**fields: Any) -> dict[str, Any]:
    """A ModelInfo as dataclasses.asdict gives it: every field, in order, None where not given."""
    unknown = set(fields) - set(CARD_FIELDS)
    if unknown:
        raise ValueError(f"not ModelInfo fields: {sorted(unknown)}")
    return {name: fields.get(name) for name in CARD_FIELDS}


def card_text(info: dict[str, Any]) -> str:
    """The file's text, as update_json writes a new one: json.dumps(..., indent=2), no trailing newline."""
    return json.dumps(info, indent=2)


def _model(record: RunRecord) -> dict[str, Any]:
    return record.model | next((r["model"] for r in record.results.values()), {})


def _name(record: RunRecord, model: dict[str, Any]) -> str:
    seed = model.get("train_seed")
    return (f"{record.label}, {architecture(model)}, {model.get('preset')} preset"
            + (f", training seed {seed}" if seed is not None else "") + f" (mm-robust run {record.name})")


def linf_card(record: RunRecord) -> dict[str, Any] | None:
    runs = [result for _, result in autoattack_evaluations([record.results])]
    if not runs:
        return None
    main = next((r for r in runs if abs(r["eps"] - 8 / 255) < 1e-9), runs[0])
    model = _model(record)
    budget = main.get("budget", "standard")
    footnote = (f"mm-robust: AutoAttack (standard L-inf version: APGD-CE, APGD-T, FAB-T, Square; our implementation) "
                f"on the first {main['n_examples']} test images")
    if budget != "standard":
        footnote += f", {budget} budget (fewer steps and queries: an upper bound on the standard robust accuracy)"
    return card(name=_name(record, model), additional_data=False, number_forward_passes=1,
                dataset=model.get("dataset"), architecture=architecture(model), eps=main["eps_text"],
                clean_acc=robustbench_accuracy(main["clean"]["accuracy"]),
                autoattack_acc=robustbench_accuracy(main["robust_accuracy"]), footnote=footnote + ".")


def _complete_corruptions(record: RunRecord) -> dict[str, Any] | None:
    result = record.result(CORRUPTIONS_THREAT)
    if result is None or result["summary"].get("corruptions_accuracy") is None:
        return None
    if any(f"{name}-{s}" not in result["sets"] for name in ROBUSTBENCH_CORRUPTIONS for s in SEVERITIES):
        return None
    return result


def corruptions_card(record: RunRecord) -> dict[str, Any] | None:
    result = _complete_corruptions(record)
    if result is None:
        return None
    model = _model(record)
    if result["source"] == "official":
        how = "the published CIFAR-10-C / CIFAR-100-C files"
    else:
        differs = ", ".join(result.get("differs_from_reference") or {}) or "none"
        how = (f"generated with make_cifar_c.py's CIFAR parameters (differ from the published files: {differs}), "
               f"seed {result.get('seed')}")
    footnote = (f"mm-robust: 15 corruptions x 5 severities on the first {result['n_examples']} test images, {how}. "
                "corruptions_mce is null: RobustBench normalises by AlexNet's errors, which mm-robust does not have.")
    return card(name=_name(record, model), additional_data=False, number_forward_passes=1,
                dataset=model.get("dataset"), architecture=architecture(model),
                clean_acc=robustbench_accuracy(result["clean"]["accuracy"]),
                corruptions_acc=robustbench_accuracy(result["summary"]["corruptions_accuracy"]), footnote=footnote)


def unaggregated_csv(records: Iterable[RunRecord]) -> str | None:
    """RobustBench's unaggregated_results.csv for the runs with all 75 standard sets; None when there are none."""
    rows = [(record.name, result) for record in records if (result := _complete_corruptions(record)) is not None]
    if not rows:
        return None
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["", *(name for name in ROBUSTBENCH_CORRUPTIONS for _ in SEVERITIES)])
    writer.writerow(["", *(severity for _ in ROBUSTBENCH_CORRUPTIONS for severity in SEVERITIES)])
    for name, result in rows:
        writer.writerow([name, *(repr(round(result["sets"][f"{c}-{s}"]["accuracy"] / 100, 10))
                                 for c in ROBUSTBENCH_CORRUPTIONS for s in SEVERITIES)])
    return buffer.getvalue()


def card_files(records: list[RunRecord]) -> dict[str, str]:
    """{path under reports/: text} of every card and CSV: model_info/<dataset>/<threat>/<run>.json and
    model_info/<dataset>/corruptions/unaggregated_results.csv."""
    files: dict[str, str] = {}
    by_dataset: dict[str, list[RunRecord]] = {}
    for record in records:
        dataset = _model(record).get("dataset")
        if not isinstance(dataset, str):
            continue
        by_dataset.setdefault(dataset, []).append(record)
        for threat, make in ((LINF, linf_card), (CORRUPTIONS_THREAT, corruptions_card)):
            info = make(record)
            if info is not None:
                files[f"{MODEL_INFO_DIR}/{dataset}/{threat}/{record.name}.json"] = card_text(info)
    for dataset, members in by_dataset.items():
        text = unaggregated_csv(members)
        if text is not None:
            files[f"{MODEL_INFO_DIR}/{dataset}/{CORRUPTIONS_THREAT}/{CSV_NAME}"] = text
    return files
