"""Sharded AutoAttack: each shard attacks a test-index range, the merge writes autoattack-<eps>.json.

A shard runs the same chunked, reseeded AutoAttack as `mm-robust attack` (attacks.autoattack) on
its range, whose ends lie on chunk boundaries, and saves its per-example flags after every chunk in
``<attacks>/<run>/.shards/autoattack-<eps>-<start>-<stop>.partial.json`` (under ``best/`` for the best
weights; the format of the
single run's resumable ``.partial.json``, tagged with the model and settings): a retried shard
continues from its finished chunks. The merge concatenates the flags in index order and writes
through the single run's own payload code, so the result is the same bit for bit except its wall
times; the shard files are removed once it is written. The gradient-masking check, run later by the
model's attack task, reads the merged result's per-example flags as it reads a single run's.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from robustbench_mm.attacks.autoattack import BUDGETS, run_autoattack
from robustbench_mm.common.runtime import memory_format, resolve_device, seed_everything
from robustbench_mm.common.storage import folder_lock
from robustbench_mm.config import AttackConfig
from robustbench_mm.errors import MMRobustError
from robustbench_mm.evaluation.attack import ModelAttacks, load_test_set
from robustbench_mm.evaluation.attack_plan import autoattack_eps, autoattack_evaluation, check_num_classes
from robustbench_mm.evaluation.autoattack_state import AutoAttackState
from robustbench_mm.evaluation.test_sets import TestSets
from robustbench_mm.pipeline import reproduce_hint
from robustbench_mm.runs.checkpoints import load_model
from robustbench_mm.runs.results import check_result_targets, result_file, results_dir, write_result
from robustbench_mm.scheduling.shards import SHARD_FOLDER
from robustbench_mm.sources.loading import from_run


def autoattack_shard_path(out_root: str | Path, run: str, evaluation: str, example_range: tuple[int, int],
                          weights: str = "last") -> Path:
    start, stop = example_range
    return results_dir(out_root, run, weights) / SHARD_FOLDER / f"{evaluation}-{start}-{stop}.partial.json"


def _model_and_images(config: AttackConfig, checkpoints_root: str | Path, run: str):
    loaded = from_run(load_model(Path(checkpoints_root) / run, config.checkpoint, "cpu"))
    data = load_test_set(loaded, config, TestSets())
    check_num_classes(loaded, data)
    return loaded, data


def _shard_state(attacks: ModelAttacks, evaluation: str, path: Path,
                 example_range: tuple[int, int]) -> AutoAttackState | None:
    """The state saved at `path` for this model, settings and exactly this range, else None."""
    state = AutoAttackState.load(path, attacks.summary, attacks.settings(evaluation))
    return state if state is not None and (state.flags.start, state.flags.stop) == tuple(example_range) else None


def autoattack_shard(config: AttackConfig, checkpoints_root: str | Path, out_root: str | Path, run: str,
                     example_range: tuple[int, int]) -> list[Path]:
    """AutoAttack at every eps of `config` on test images start..stop-1 of `run`'s model; returns the shard files."""
    device = resolve_device(config.device)
    loaded, data = _model_and_images(config, checkpoints_root, run)
    start, stop = example_range
    chunk = config.batch_size
    if not 0 <= start < stop <= len(data) or start % chunk or (stop % chunk and stop != len(data)):
        # Only whole chunks of the single run give its flags bit for bit (attacks.autoattack reseeds per chunk).
        raise ValueError(f"AutoAttack shard [{start}, {stop}) of {len(data)} test images must start and end on "
                         f"multiples of the chunk size {chunk} (or end at the last image)")
    # Prepared as `run_attacks` prepares them: same device, memory layout and seed.
    seed_everything(config.seed)
    loaded.model.to(device).eval()
    loaded.model.to(memory_format=memory_format(device))
    attacks = ModelAttacks(loaded, data.to(device), config, results_dir(out_root, run, loaded.checkpoint), device,
                           force=False, progress=False)
    evaluations = {autoattack_evaluation(eps): eps for eps in autoattack_eps(config)}
    # A finished result made with other settings is refused now, not after the attack (as `attack` does).
    check_result_targets([(result_file(attacks.out_dir, e), attacks.summary, attacks.settings(e))
                          for e in evaluations], force=False, hint=reproduce_hint("attack"))
    paths = []
    for evaluation, eps in evaluations.items():
        if attacks.stored(evaluation) is not None:
            continue  # already merged: the command was run again
        path = autoattack_shard_path(out_root, run, evaluation, example_range, loaded.checkpoint)
        state = _shard_state(attacks, evaluation, path, example_range)
        flags = state.flags if state is not None else None
        if flags is None or not flags.complete():
            images = attacks.data
            run_autoattack(attacks.model, images.images, images.labels, eps, images.num_classes, start, stop,
                           config.batch_size, config.seed, BUDGETS[config.aa_budget], flags,
                           lambda done, e=evaluation, p=path: attacks.save_flags(e, done, p))
        paths.append(path)
    return paths


def autoattack_merge(config: AttackConfig, checkpoints_root: str | Path, out_root: str | Path, run: str,
                     ranges: list[tuple[int, int]]) -> list[Path]:
    """Write `run`'s autoattack-<eps>.json from its shards over `ranges` (contiguous, from 0); remove the shards."""
    evaluations = {autoattack_evaluation(eps): eps for eps in autoattack_eps(config)}
    loaded, data = _model_and_images(config, checkpoints_root, run)
    shard_paths = {e: [autoattack_shard_path(out_root, run, e, r, loaded.checkpoint) for r in ranges]
                   for e in evaluations}
    # Computes nothing, so model and images stay on the CPU; the payload records the device the shards ran on.
    attacks = ModelAttacks(loaded, data, config, results_dir(out_root, run, loaded.checkpoint), torch.device("cpu"),
                           force=False, progress=False)
    with folder_lock(attacks.out_dir):
        for evaluation, eps in evaluations.items():
            if attacks.stored(evaluation) is not None:
                continue  # written before a retry
            parts = [_shard_state(attacks, evaluation, p, r) for p, r in zip(shard_paths[evaluation], ranges)]
            missing = [str(p) for p, part in zip(shard_paths[evaluation], parts)
                       if part is None or not part.flags.complete()]
            if missing:
                raise MMRobustError(f"cannot merge {run}'s AutoAttack shards: unfinished, missing or made with other "
                                    f"settings: {', '.join(missing)}; run the shards again")
            merged = AutoAttackState.merge(parts)
            attacks.device = torch.device(merged.device)  # the payload records where the shards ran
            attacks.use_autoattack_flags(evaluation, merged.flags)
            write_result(result_file(attacks.out_dir, evaluation), evaluation, attacks.summary,
                         attacks.settings(evaluation), attacks.autoattack_payload(eps))
    for path in (p for paths in shard_paths.values() for p in paths):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # kept while shards of another evaluation are still there
        (attacks.out_dir / SHARD_FOLDER).rmdir()
    return [result_file(attacks.out_dir, e) for e in evaluations]
