"""What `mm-robust corrupt` stores: corruptions.json's settings, provenance of the images, per-set
entries and RobustBench's aggregate, and the terminal summary of a run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustbench_mm.common.storage import folder_lock, read_json
from robustbench_mm.config import CorruptConfig
from robustbench_mm.data.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, LABELS, PARAMETERS, SEVERITIES
from robustbench_mm.evaluation.calibrate import expected_calibration_error
from robustbench_mm.runs.results import encode_mask, finished_result, write_result

NOT_RESULT_SETTINGS = ("corruptions", "extra", "severities", "batch_size", "device")
ECE_BINS = 15  # as `mm-robust calibrate`'s default
EVALUATION = "corruptions"  # attacks/<run>/corruptions.json


STANDARD_SETS = len(CORRUPTIONS) * len(SEVERITIES)  # RobustBench's corruptions_acc averages these 75


REFERENCE = ("make_cifar_c.py (github.com/hendrycks/robustness, ImageNet-C/create_c), its CIFAR parameters; "
             "each image seeded by (seed, corruption, severity, test index)")


DIFFERS_FROM_REFERENCE = {
    "motion_blur": "the reference blurs with ImageMagick's MotionBlurImage (through Wand); ours is imagecorruptions' "
                   "re-implementation: a one-sided Gaussian line kernel of width 2*radius+1, the image shifted along "
                   "the angle with edge pixels repeated",
    "snow": "the snow layer's streaks use imagecorruptions' motion-blur kernel instead of ImageMagick's (as "
            "motion_blur); the blurred layer is rounded to uint8 as the PNG out of ImageMagick is",
    "impulse_noise": "skimage's random_noise(mode='s&p') as it is today (each value flipped with probability amount); "
                     "skimage 0.14, which made the published files, drew ceil(amount*size/2) coordinates with "
                     "randint(0, n-1) and so never touched the last row, column or channel",
}


ARITHMETIC_NOTE = ("generated on the CPU, brightness, saturate, pixelate, JPEG, frost, fog, glass, Gaussian and motion "
                   "blur, elastic and spatter are the reference's arithmetic bit for bit; elsewhere (the other "
                   "corruptions, and all of them on a GPU) float32 arithmetic where the reference uses float64 can "
                   "move a value by one uint8 level (at most ~2 % of values, defocus blur severity 5)")


UNITS = {"accuracy": "percent", "corruptions_accuracy": "percent", "corruptions_acc": "fraction in [0, 1] "
         "(RobustBench's field and unit)", "nll": "nats per image", "ece": f"percentage points, {ECE_BINS} equal-width "
         "confidence bins", "seconds": "wall time", "generate_seconds": "wall time to generate or load the set "
         "(once per invocation, shared by the models evaluated on it)"}


def set_label(name: str, severity: int) -> str:
    """A set's key in ``sets`` and in the per-example masks: '<corruption>-<severity>', e.g. 'fog-3'."""
    return f"{name}-{severity}"


def result_settings(config: CorruptConfig, source: str) -> dict[str, Any]:
    """The settings a stored corruptions.json must match to be reused; the source as resolved, not 'auto'."""
    settings = {k: v for k, v in config.to_dict().items() if k not in NOT_RESULT_SETTINGS}
    settings["source"] = source
    if source == "official":
        settings["seed"] = None  # the official files draw nothing of ours
    return settings


def source_fields(source: str, names) -> dict[str, Any]:
    """How the sets were made, for the result file: the source and, generated, what differs from the reference."""
    if source == "official":
        return {"source": "official", "reference": "the published CIFAR-10-C / CIFAR-100-C files (Hendrycks & "
                "Dietterich, 2019)", "differs_from_reference": {}}
    return {"source": "generated", "reference": REFERENCE,
            "differs_from_reference": {name: DIFFERS_FROM_REFERENCE[name] for name in DIFFERS_FROM_REFERENCE
                                       if name in names},
            "arithmetic_note": ARITHMETIC_NOTE}


def result_entries(measured: Measured, sets) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """(clean result, {set label: entry}) as stored in the result file; each carries its times in seconds."""
    clean = {**summarize(measured.outcomes["clean"]), "seconds": measured.seconds["clean"]}
    entries = {}
    for name, severity in sets:
        label = set_label(name, severity)
        if label not in measured.outcomes:
            continue
        entries[label] = {"corruption": name, "severity": severity, "label": f"{LABELS[name]} {severity}",
                          **summarize(measured.outcomes[label]), "parameters": PARAMETERS[name][severity - 1],
                          "seconds": measured.seconds[label],
                          "generate_seconds": measured.generate_seconds.get(label)}
    return clean, entries


def aggregate(sets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """RobustBench's corruptions_acc (the plain mean over the 15 x 5 standard sets) and per-corruption means.

    corruptions_acc is a fraction, corruptions_accuracy the same in %; both None until all 75 standard
    sets are stored (the extra corruptions never count). per_corruption: the mean over the severities stored.
    """
    standard = [sets.get(set_label(name, s)) for name in CORRUPTIONS for s in SEVERITIES]
    complete = all(entry is not None for entry in standard)
    mean = sum(e["accuracy"] for e in standard) / STANDARD_SETS if complete else None
    per_corruption = {}
    for name in dict.fromkeys(entry["corruption"] for entry in sets.values()):
        entries = [entry for entry in sets.values() if entry["corruption"] == name]
        per_corruption[name] = {"accuracy": sum(e["accuracy"] for e in entries) / len(entries),
                                "ece": sum(e["ece"] for e in entries) / len(entries),
                                "severities": [e["severity"] for e in entries]}
    return {"complete": complete,
            "corruptions_acc": None if mean is None else mean / 100.0,
            "corruptions_accuracy": mean,
            "corruptions_ece": sum(e["ece"] for e in standard) / STANDARD_SETS if complete else None,
            "per_corruption": per_corruption}


def stored_sets(stored: dict[str, Any] | None) -> set[str]:
    """Set labels a stored corruptions.json holds with their per-image masks."""
    if stored is None:
        return set()
    masks = stored.get("per_example", {}).get("correct", {})
    return {label for label in stored.get("sets", {}) if label in masks}


def store_result(path: Path, summary: dict[str, Any], config: CorruptConfig, source: str, n_examples: int,
                 clean: dict[str, float], entries: dict[str, dict[str, Any]], measured: Measured) -> None:
    """Write the result file, keeping the sets a stored file for the same model and settings already has."""
    settings = result_settings(config, source)
    with folder_lock(path.parent):
        latest = finished_result(path, summary, settings)  # another process may have added sets meanwhile
        kept = stored_sets(latest) - set(entries)
        merged = {**{label: latest["sets"][label] for label in kept}, **entries}
        masks = {**{label: latest["per_example"]["correct"][label] for label in kept},
                 **{label: encode_mask(outcome["correct"]) for label, outcome in measured.outcomes.items()}}
        order = [set_label(name, s) for name in ALL_CORRUPTIONS for s in SEVERITIES]
        sets = {label: merged[label] for label in order if label in merged}
        write_result(path, EVALUATION, summary, settings, {
            **source_fields(source, {entry["corruption"] for entry in sets.values()}),
            "n_examples": n_examples,
            "seed": config.seed if source == "generated" else None,
            "units": UNITS,
            "clean": clean,
            "summary": aggregate(sets),
            "sets": sets,
            # Which test images each set got right ("clean" and one mask per set), for paired statistics.
            "per_example": {"example_range": [0, n_examples],
                            "correct": {label: masks[label] for label in ("clean", *order) if label in masks}},
        })


def timing(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """Mean over sets and models: evaluating a corrupted set / a clean pass, and making a set / evaluating it."""
    pairs = [(entry["seconds"], result["clean"]["seconds"], entry.get("generate_seconds"))
             for result in results for entry in result["sets"].values()
             if result["clean"].get("seconds") and entry.get("seconds")]
    if not pairs:
        return None
    made = [(g, s) for s, _, g in pairs if g is not None]
    return {"relative_cost": sum(s / c for s, c, _ in pairs) / len(pairs),
            "generation_vs_evaluation": sum(g / s for g, s in made) / len(made) if made else float("nan"),
            "generate_seconds": sum(g for g, _ in made) / len(made) if made else float("nan"),
            "evaluate_seconds": sum(s for s, _, _ in pairs) / len(pairs)}


def format_summary(results: list[dict[str, Any]]) -> str:
    """Accuracy (%) per corruption (mean over the severities stored), one column per model, and the 15 x 5 mean."""
    keys = [r["model"]["key"] for r in results]
    headers = [r["model"]["key"] if keys.count(r["model"]["key"]) == 1 and not r["model"].get("external")
               else r["model"]["run"] for r in results]
    names = [n for n in LABELS if any(n in r["summary"]["per_corruption"] for r in results)]
    rows = [["clean"] + [f"{r['clean']['accuracy']:.2f}" for r in results]]
    for name in names:
        cells = [LABELS[name]]
        for result in results:
            entry = result["summary"]["per_corruption"].get(name)
            if entry is None:
                cells.append("missing")
            elif len(entry["severities"]) == len(SEVERITIES):
                cells.append(f"{entry['accuracy']:.2f}")
            else:
                cells.append(f"{entry['accuracy']:.2f} (s{','.join(map(str, entry['severities']))})")
        rows.append(cells)
    rows.append(["mean of 15 x 5 (corruptions_acc)"] + [
        f"{r['summary']['corruptions_accuracy']:.2f}" if r["summary"]["corruptions_accuracy"] is not None
        else "incomplete" for r in results])
    table = [["corruption"] + headers] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    models = sorted({f"{r['model']['dataset']} {r['model']['arch']} ({r['model']['preset']} preset)" for r in results})
    n_examples = sorted({r["n_examples"] for r in results})
    sources = sorted({r["source"] for r in results})
    notes = [("Common corruptions (CIFAR-10-C style): test accuracy (%) per corruption, mean over severities 1-5 "
              "(other severities in brackets); the last row is RobustBench's corruptions_acc in %."),
             f"Models: {', '.join(models)}; {'/'.join(map(str, n_examples))} test images; sets {'/'.join(sources)}."]
    differs = {name: note for r in results for name, note in r.get("differs_from_reference", {}).items()}
    if differs:
        notes.append("Generated sets differ from make_cifar_c.py in: " + "; ".join(
            f"{name} ({note})" for name, note in differs.items()) + ".")
    times = timing(results)
    if times is not None:
        notes.append(f"Evaluating one corrupted set took {times['relative_cost']:.2f}x the time of a clean evaluation "
                     f"pass; making a set took {times['generate_seconds']:.3f} s, "
                     f"{times['generation_vs_evaluation']:.2f}x one model's evaluation of it "
                     "(mean over sets and models; each set is made once per invocation for all models).")
    return "\n".join(notes[:2] + [""] + lines + [""] + notes[2:])


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    return [read_json(path) for path in paths]


def summarize(outcome: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy (%), mean NLL and ECE (percentage points) from per-image outcomes."""
    n = len(outcome["correct"])
    return {"accuracy": 100.0 * int(outcome["correct"].sum()) / n, "nll": float(outcome["nll"].double().sum()) / n,
            "ece": expected_calibration_error(outcome["confidence"].double().numpy(), outcome["correct"].numpy(),
                                              ECE_BINS)}


@dataclass
class Measured:
    """Per-image outcomes of the clean pass and of each set ("clean" or set label), and the seconds each took."""

    outcomes: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # the model's evaluation of each
    generate_seconds: dict[str, float] = field(default_factory=dict)  # making (or loading) each set
