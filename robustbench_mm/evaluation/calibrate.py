"""`mm-robust calibrate`: expected calibration error and reliability diagrams, beyond the paper.

The paper argues manifold mixup gives better test NLL; calibration shows whether that is better
confidence: how often a model is right when it says it is p sure. Each model is measured on the
clean test set, on one deformation test set (the same seeded set `mm-robust deform` builds) and
under FGSM, and ``attacks/<run>/calibration.json`` keeps, per condition, accuracy, NLL, ECE, the
reliability-diagram bins and the per-example correctness masks of the shared contract.

ECE (Guo et al., 2017): confidences (the top softmax probability) fall into equal-width bins,
bin i holding (i/B, (i+1)/B]; ECE = sum over bins of |B_i|/n * |accuracy(B_i) - mean confidence(B_i)|,
reported in percentage points like every accuracy here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_mm.attacks import PROTOCOLS, fgsm, percent
from robustbench_mm.common.runtime import evaluation_batch, memory_format, resolve_device
from robustbench_mm.common.storage import ensure_writable_dir, folder_lock
from robustbench_mm.config import CalibrationConfig
from robustbench_mm.data.deformations import DEFORM_SETS, plan_warp, set_matrices, set_seed
from robustbench_mm.data.images import ImageSet, to_unit_float
from robustbench_mm.evaluation.test_sets import TestSets
from robustbench_mm.runs.checkpoints import load_model, resolve_runs
from robustbench_mm.runs.matching import SettingsSource, same_named_options
from robustbench_mm.runs.results import (
    OWN_COMMAND, ConflictHint, check_result_targets, encode_mask, finished_result, model_summary, result_path,
    write_result)
from robustbench_mm.sources.loading import ModelSource, from_run

EVALUATION = "calibration"
NOT_RESULT_SETTINGS = ("batch_size", "device", "data_dir")  # how fast, not what


# ---- the maths ------------------------------------------------------------------------------


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin i holds confidences in (i/n_bins, (i+1)/n_bins]; a confidence of exactly 0 joins bin 0."""
    return np.clip(np.ceil(np.asarray(confidence, dtype=np.float64) * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_bins(confidence, correct, n_bins: int = 15) -> dict[str, list]:
    """Per equal-width bin: example count, accuracy (%) and mean confidence (%); None for an empty bin."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    index = bin_index(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins)
    hits = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    total_confidence = np.bincount(index, weights=confidence, minlength=n_bins)
    return {
        "edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "count": count.tolist(),
        "accuracy": [100.0 * h / c if c else None for h, c in zip(hits, count)],
        "confidence": [100.0 * s / c if c else None for s, c in zip(total_confidence, count)],
    }


def expected_calibration_error(confidence, correct, n_bins: int = 15) -> float:
    """ECE in percentage points: sum over bins of |B|/n * |accuracy(B) - mean confidence(B)|."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.size == 0:
        return 0.0
    index = bin_index(confidence, n_bins)
    gap = np.bincount(index, weights=correct.astype(np.float64) - confidence, minlength=n_bins)  # per bin: hits - summed confidence
    return 100.0 * float(np.abs(gap).sum()) / confidence.size


def condition_summary(logits: torch.Tensor, labels: torch.Tensor, n_bins: int) -> tuple[dict[str, Any], torch.Tensor]:
    """(accuracy, NLL, ECE, mean confidence and the bins for one set of logits, its correctness mask)."""
    logits, labels = logits.float().cpu(), labels.cpu()
    confidence, prediction = F.softmax(logits, dim=1).max(dim=1)
    correct = prediction == labels
    confidence_np, correct_np = confidence.double().numpy(), correct.numpy()
    return {
        "accuracy": percent(correct),
        "nll": F.cross_entropy(logits, labels).item(),
        "ece": expected_calibration_error(confidence_np, correct_np, n_bins),
        "mean_confidence": 100.0 * float(confidence_np.mean()) if confidence_np.size else 0.0,
        "reliability": reliability_bins(confidence_np, correct_np, n_bins),
    }, correct


# ---- the measurement -----------------------------------------------------------------------


def fgsm_label(config: CalibrationConfig) -> str:
    return f"fgsm-{config.protocol} eps={config.eps:g}"


def condition_logits(model: torch.nn.Module, data: ImageSet, config: CalibrationConfig,
                     device: torch.device) -> dict[str, torch.Tensor]:
    """Logits on the clean images, the deformed ones and the FGSM ones, in test-set order."""
    model.eval()
    _, maps = set_matrices(config.deform_set, len(data), config.seed, config.convention)
    warp = plan_warp(maps, data.images.shape[-1], config.convention, config.interpolation).to(device)
    layout = memory_format(device)
    outputs: dict[str, list[torch.Tensor]] = {"clean": [], config.deform_set: [], fgsm_label(config): []}
    batch_size = evaluation_batch(config.batch_size, device)  # FGSM, like the rest, is per image
    for start in range(0, len(data), batch_size):
        x = to_unit_float(data.images[start:start + batch_size]).contiguous(memory_format=layout)
        labels = data.labels[start:start + batch_size]
        adversarial = fgsm(model, x, labels, config.eps, PROTOCOLS[config.protocol])
        with torch.no_grad():
            outputs["clean"].append(model(x).float())
            warped = warp[start:start + batch_size].apply(x)  # black fill, as `mm-robust deform` by default
            outputs[config.deform_set].append(model(warped.contiguous(memory_format=layout)).float())
            outputs[fgsm_label(config)].append(model(adversarial).float())
    return {name: torch.cat(parts) for name, parts in outputs.items()}


def calibration_payload(model: torch.nn.Module, data: ImageSet, config: CalibrationConfig,
                        device: torch.device) -> dict[str, Any]:
    logits = condition_logits(model, data, config, device)
    conditions, masks = {}, {}
    deform_set = DEFORM_SETS[config.deform_set]
    descriptions = {
        "clean": "the clean test images",
        config.deform_set: f"{deform_set.label}: each image deformed once (seed {set_seed(config.seed, config.deform_set)}, "
                           f"{config.interpolation} sampling, {config.convention} convention, black fill), "
                           "the set `mm-robust deform` evaluates",
        fgsm_label(config): f"FGSM at eps {config.eps:g}, {config.protocol} protocol ({PROTOCOLS[config.protocol].description})",
    }
    for name, values in logits.items():
        conditions[name], correct = condition_summary(values, data.labels, config.bins)
        conditions[name]["description"] = descriptions[name]
        masks[name] = encode_mask(correct)
    return {
        "n_examples": len(data),
        "bins": config.bins,
        "conditions": conditions,
        "per_example": {"example_range": [0, len(data)], "correct": masks},
    }


def result_settings(config: CalibrationConfig, dataset: str) -> dict[str, Any]:
    settings = {k: v for k, v in config.to_dict().items() if k not in NOT_RESULT_SETTINGS}
    return {**settings, "dataset": dataset}


def check_calibration_targets(config: CalibrationConfig, models: list[ModelSource], out_root: str | Path,
                              force: bool, hint: ConflictHint = OWN_COMMAND) -> None:
    """Refuse, before anything is written, every result `calibrate` would lose or cannot write (see runs/results.py)."""
    fields = [name for name in result_settings(config, "") if name != "dataset"]
    check_result_targets([(result_path(out_root, loaded.name, EVALUATION, loaded.checkpoint), loaded.summary,
                           result_settings(config, loaded.dataset),
                           SettingsSource("calibrate", config, lambda c, d=loaded.dataset: result_settings(c, d),
                                          {name: name for name in fields}, same_named_options(fields)))
                          for loaded in models], force, hint)


def run_calibration(config: CalibrationConfig, checkpoints_root: str | Path = "checkpoints",
                    out_root: str | Path = "attacks", runs: list[str] | None = None, force: bool = False,
                    progress: bool = True, hint: ConflictHint = OWN_COMMAND,
                    test_sets: TestSets | None = None) -> list[Path]:
    """Measure every model under `checkpoints_root` (or the named `runs`); one calibration.json per model.
    `hint` names the options a refusal points to."""
    device = resolve_device(config.device)
    models = [load_model(run_dir, config.checkpoint, "cpu") for run_dir in resolve_runs(checkpoints_root, runs)]
    check_calibration_targets(config, [from_run(loaded) for loaded in models], out_root, force, hint)
    out_root = ensure_writable_dir(Path(out_root), hint.out_option)
    test_sets = test_sets or TestSets()
    on_device: dict[tuple[str, str], ImageSet] = {}
    paths = []
    for loaded in models:
        path = result_path(out_root, loaded.name, EVALUATION, loaded.which)
        summary = model_summary(loaded)
        settings = result_settings(config, loaded.config.dataset)
        paths.append(path)
        if not force and finished_result(path, summary, settings) is not None:
            _log(progress, f"{loaded.name}: {path} already made with these settings; skipped")
            continue
        key = (loaded.config.dataset, config.data_dir or loaded.config.data_dir)
        if key not in on_device:
            on_device[key] = test_sets.get(*key, loaded.config.download, config.n_examples).to(device)
        model = loaded.model.to(device)
        model.to(memory_format=memory_format(device))
        payload = calibration_payload(model, on_device[key], config, device)
        loaded.model.to("cpu")
        with folder_lock(path.parent):
            write_result(path, EVALUATION, summary, settings, payload)
        eces = ", ".join(f"{name} {c['ece']:.2f}" for name, c in payload["conditions"].items())
        _log(progress, f"{loaded.name}: ECE (%) {eces} -> {path}")
    return paths


def _log(progress: bool, message: str) -> None:
    if progress:
        print(f"calibrate: {message}", file=sys.stderr)
