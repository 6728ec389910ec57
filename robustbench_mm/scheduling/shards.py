"""Sharded deformation evaluation: each shard measures a test-index range, the merge writes deform.json.

A shard stores per-example outcomes (correct, NLL) for every set in
``<attacks>/<run>/.shards/<evaluation>-<start>-<stop>.safetensors`` (``<attacks>/<run>/best/.shards/`` for the
best weights: beside their results, runs/results.py `results_dir`), tagged with the model, the settings
and its range; a restarted shard whose file is already there with the same tags does nothing. The
merge concatenates the shards in index order and writes through the same code as a single-process
`mm-robust deform` (deform_eval.result_entries/store_result), so the file is the same bit for bit
except the wall times; the shard files are removed once the result is written.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from robustbench_mm.common.runtime import resolve_device
from robustbench_mm.config import DeformConfig
from robustbench_mm.data.deformations import evaluation_name
from robustbench_mm.data.images import load_dataset
from robustbench_mm.errors import MMRobustError
from robustbench_mm.evaluation.deform import (
    Measured, _TestDataCache, build_test_data, measure_model, result_entries, result_settings, store_result,
    stored_sets)
from robustbench_mm.evaluation.test_sets import TestSets
from robustbench_mm.runs.checkpoints import load_model, load_tensors, save_tensors
from robustbench_mm.runs.results import as_json, finished_result, result_path, results_dir
from robustbench_mm.sources.loading import ModelSource, from_run

SHARD_FOLDER = ".shards"


def shard_path(out_root: str | Path, run: str, config: DeformConfig, example_range: tuple[int, int]) -> Path:
    start, stop = example_range
    name = f"{evaluation_name(config.convention, config.fill)}-{start}-{stop}.safetensors"
    return results_dir(out_root, run, config.checkpoint) / SHARD_FOLDER / name


def _identity(summary: dict[str, Any], config: DeformConfig, example_range: tuple[int, int]) -> str:
    return json.dumps(as_json({"model": summary, "settings": result_settings(config), "sets": config.sets,
                               "example_range": example_range}), sort_keys=True)


def write_shard(path: Path, identity: str, measured: Measured) -> None:
    tensors = {f"{name}.{field}": value for name, outcome in measured.outcomes.items() for field, value in outcome.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, tensors, {"identity": identity, "seconds": json.dumps(measured.seconds)})


def read_shard_outcomes(path: Path, identity: str) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]] | None:
    """(outcomes per set, metadata) of the shard stored at `path` if it is there, readable, and made for exactly
    this model, settings and range; a deformation and a corruption shard are stored alike."""
    if not path.is_file():
        return None
    try:
        tensors, metadata = load_tensors(path)
    except MMRobustError:  # a damaged shard is simply measured again
        return None
    if metadata.get("identity") != identity:
        return None
    outcomes: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, field = key.rsplit(".", 1)
        outcomes.setdefault(name, {})[field] = value
    return outcomes, metadata


def read_shard(path: Path, identity: str) -> Measured | None:
    stored = read_shard_outcomes(path, identity)
    return None if stored is None else Measured(stored[0], json.loads(stored[1]["seconds"]))


def concatenate(parts: list[Measured]) -> Measured:
    """Shards in index order -> one Measured, as if one pass had covered all their examples."""
    names = list(parts[0].outcomes)
    return Measured({name: {field: torch.cat([p.outcomes[name][field] for p in parts])
                            for field in parts[0].outcomes[name]} for name in names},
                    {name: sum(p.seconds[name] for p in parts) for name in names})


def _finished(config: DeformConfig, out_root: Path, summary: dict[str, Any], run: str) -> bool:
    stored = finished_result(result_path(out_root, run, evaluation_name(config.convention, config.fill),
                                         config.checkpoint), summary, result_settings(config))
    return set(config.sets) <= stored_sets(stored)


def _test_images(source: ModelSource, config: DeformConfig):
    return load_dataset(source.dataset, False, config.data_dir or source.data_dir, source.download).subset(
        config.n_examples)


def deform_shard(config: DeformConfig, checkpoints_root: str | Path, out_root: str | Path, run: str,
                 example_range: tuple[int, int]) -> Path | None:
    """Measure every set of `config` on test images start..stop-1 of `run`'s model; returns the shard file."""
    out_root = Path(out_root)
    loaded = from_run(load_model(Path(checkpoints_root) / run, config.checkpoint, "cpu"))
    summary = loaded.summary
    if _finished(config, out_root, summary, run):
        return None
    path = shard_path(out_root, run, config, example_range)
    identity = _identity(summary, config, example_range)
    if read_shard(path, identity) is not None:
        return path  # finished before a restart
    device = resolve_device(config.device)
    test_data = build_test_data(_test_images(loaded, config), config, device).examples(*example_range, config.sets)
    measured = measure_model(loaded.model.to(device), test_data, config.sets, config.batch_size)
    write_shard(path, identity, measured)
    return path


def deform_merge(config: DeformConfig, checkpoints_root: str | Path, out_root: str | Path, run: str,
                 ranges: list[tuple[int, int]]) -> Path:
    """Write `run`'s deform.json from its shards over `ranges` (contiguous, from 0); remove the shards."""
    out_root = Path(out_root)
    loaded = from_run(load_model(Path(checkpoints_root) / run, config.checkpoint, "cpu"))
    summary = loaded.summary
    path = result_path(out_root, run, evaluation_name(config.convention, config.fill), loaded.checkpoint)
    _TestDataCache(config, torch.device("cpu"), out_root, TestSets()).ensure_grid(loaded)
    if _finished(config, out_root, summary, run):
        return path
    shard_paths = [shard_path(out_root, run, config, r) for r in ranges]
    parts = [read_shard(p, _identity(summary, config, r)) for p, r in zip(shard_paths, ranges)]
    missing = [str(p) for p, part in zip(shard_paths, parts) if part is None]
    if missing:
        raise MMRobustError(f"cannot merge {run}'s deformation shards: missing or made with other settings: "
                            f"{', '.join(missing)}; run the shards again")
    measured = concatenate(parts)
    clean, entries = result_entries(measured, config.sets, config.seed)
    test_data = build_test_data(_test_images(loaded, config), config, torch.device("cpu"))  # no warp is planned
    store_result(path, summary, config, test_data, clean, entries, measured)
    for shard in shard_paths:
        shard.unlink()
    with contextlib.suppress(OSError):  # kept while shards of another evaluation are still there
        shard_paths[0].parent.rmdir()
    return path
