"""Sharded common-corruption evaluation: each shard measures a test-index range, the merge writes corruptions.json.

As the deformation shards (shards.py): a shard stores per-example outcomes (correct, NLL, confidence) of
the clean pass and of every (corruption, severity) set in
``<attacks>/<run>/.shards/corruptions-<start>-<stop>.safetensors`` (under ``best/`` for the best weights),
tagged with the model, the settings, the sets and its range; a restarted shard whose file is already there
with the same tags does nothing (a shard is all or nothing: one that is stopped is measured again). Generated sets are seeded per test index, so a
shard makes exactly the images of a whole run. The merge concatenates the shards in index order and writes
through the same code as a single-process `mm-robust corrupt` (corrupt.result_entries/store_result), so the
file is the same bit for bit except the wall times; the shard files are removed once the result is written.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from robustbench_mm.common.runtime import resolve_device
from robustbench_mm.config import CorruptConfig
from robustbench_mm.errors import MMRobustError
from robustbench_mm.evaluation.corrupt import _TestDataCache, measure_model, planned_sets
from robustbench_mm.evaluation.corrupt_results import (
    EVALUATION, Measured, result_entries, result_settings, set_label, store_result, stored_sets)
from robustbench_mm.runs.checkpoints import load_model, save_tensors
from robustbench_mm.runs.results import as_json, finished_result, result_path, results_dir
from robustbench_mm.scheduling.shards import SHARD_FOLDER, read_shard_outcomes
from robustbench_mm.sources.loading import ModelSource, from_run


def shard_path(out_root: str | Path, run: str, example_range: tuple[int, int], weights: str = "last") -> Path:
    start, stop = example_range
    return results_dir(out_root, run, weights) / SHARD_FOLDER / f"{EVALUATION}-{start}-{stop}.safetensors"


def _identity(summary: dict[str, Any], config: CorruptConfig, source: str, example_range: tuple[int, int]) -> str:
    return json.dumps(as_json({"model": summary, "settings": result_settings(config, source),
                               "sets": planned_sets(config), "example_range": example_range}), sort_keys=True)


def write_shard(path: Path, identity: str, measured: Measured) -> None:
    tensors = {f"{name}.{field}": value for name, outcome in measured.outcomes.items() for field, value in outcome.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, tensors, {"identity": identity, "seconds": json.dumps(measured.seconds),
                                 "generate_seconds": json.dumps(measured.generate_seconds)})


def read_shard(path: Path, identity: str) -> Measured | None:
    stored = read_shard_outcomes(path, identity)
    if stored is None:
        return None
    outcomes, metadata = stored
    return Measured(outcomes, json.loads(metadata["seconds"]), json.loads(metadata["generate_seconds"]))


def concatenate(parts: list[Measured]) -> Measured:
    """Shards in index order -> one Measured, as if one pass had covered all their examples (times summed)."""
    names = list(parts[0].outcomes)
    return Measured({name: {field: torch.cat([p.outcomes[name][field] for p in parts])
                            for field in parts[0].outcomes[name]} for name in names},
                    {name: sum(p.seconds[name] for p in parts) for name in names},
                    {name: sum(p.generate_seconds[name] for p in parts) for name in parts[0].generate_seconds})


def _loaded(config: CorruptConfig, checkpoints_root: str | Path, run: str) -> ModelSource:
    return from_run(load_model(Path(checkpoints_root) / run, config.checkpoint, "cpu"))


def _finished(config: CorruptConfig, out_root: Path, summary: dict[str, Any], run: str, source: str) -> bool:
    stored = finished_result(result_path(out_root, run, EVALUATION, config.checkpoint), summary,
                             result_settings(config, source))
    return {set_label(*s) for s in planned_sets(config)} <= stored_sets(stored)


def corrupt_shard(config: CorruptConfig, checkpoints_root: str | Path, out_root: str | Path, run: str,
                  example_range: tuple[int, int]) -> Path | None:
    """Measure every set of `config` on test images start..stop-1 of `run`'s model; returns the shard file."""
    out_root = Path(out_root)
    loaded = _loaded(config, checkpoints_root, run)
    test_data = _TestDataCache(config, out_root).get(loaded)
    if _finished(config, out_root, loaded.summary, run, test_data.source):
        return None
    path = shard_path(out_root, run, example_range, config.checkpoint)
    identity = _identity(loaded.summary, config, test_data.source, example_range)
    if read_shard(path, identity) is not None:
        return path  # finished before a restart
    device = resolve_device(config.device)
    measured = measure_model(loaded.model.to(device), test_data.examples(*example_range), planned_sets(config),
                             config.batch_size, device)
    loaded.model.to("cpu")
    write_shard(path, identity, measured)
    return path


def corrupt_merge(config: CorruptConfig, checkpoints_root: str | Path, out_root: str | Path, run: str,
                  ranges: list[tuple[int, int]]) -> Path:
    """Write `run`'s corruptions.json from its shards over `ranges` (contiguous, from 0); remove the shards."""
    out_root = Path(out_root)
    loaded = _loaded(config, checkpoints_root, run)
    cache = _TestDataCache(config, out_root)
    test_data = cache.get(loaded)
    path = result_path(out_root, run, EVALUATION, config.checkpoint)
    cache.ensure_grid(loaded)
    if _finished(config, out_root, loaded.summary, run, test_data.source):
        return path
    shard_paths = [shard_path(out_root, run, r, config.checkpoint) for r in ranges]
    parts = [read_shard(p, _identity(loaded.summary, config, test_data.source, r)) for p, r in zip(shard_paths, ranges)]
    missing = [str(p) for p, part in zip(shard_paths, parts) if part is None]
    if missing:
        raise MMRobustError(f"cannot merge {run}'s corruption shards: missing or made with other settings: "
                            f"{', '.join(missing)}; run the shards again")
    measured = concatenate(parts)
    clean, entries = result_entries(measured, planned_sets(config))
    store_result(path, loaded.summary, config, test_data.source, len(test_data), clean, entries, measured)
    for shard in shard_paths:
        shard.unlink()
    with contextlib.suppress(OSError):  # kept while shards of another evaluation are still there
        shard_paths[0].parent.rmdir()
    return path
