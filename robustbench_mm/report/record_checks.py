"""Checks across a run's files before the report shows them: every result file measured the model it is shown
for (its run, method and key agree with the checkpoint's meta.json), and one seed of one model is one sample,
however many folders hold it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustbench_mm.common.storage import file_sha256
from robustbench_mm.runs.checkpoints import WEIGHT_FILES, safetensors_damage
from robustbench_mm.runs.seeds import split_seed_suffix


def identity_mismatch(name: str, identity: dict[str, Any], model: dict[str, Any]) -> str | None:
    """Why a result's model summary is not the model of run `name` (identity from its meta.json), or None."""
    if model.get("run") != name:
        return f"it measured run {model.get('run')!r}, not {name!r} (a results folder copied from another run?)"
    for field in ("method", "key"):
        if identity.get(field) is not None and model.get(field) != identity[field]:
            return (f"it measured a model with {field} {model.get(field)!r}, but checkpoints/{name}/meta.json says "
                    f"{identity[field]!r}; one of them was edited or copied, rerun the evaluation")
    return None


def one_folder_per_seed(records: list) -> tuple[list, list[str]]:
    """`records` with one run per (model, seed): where two folders hold the same seed of the same model (a plain
    `<run>` trained with seed 0 and `<run>-s0`), the `-s<seed>` folder is kept and the other is named in the
    problems returned, never averaged in as a second sample."""
    by_sample: dict[tuple, list] = {}
    for record in records:
        if record.seed is not None and not record.external:
            model = record.model
            sample = (model["dataset"], model["arch"], model["preset"], record.key, split_seed_suffix(record.name)[0],
                      record.seed)
            by_sample.setdefault(sample, []).append(record)
    dropped, problems = set(), []
    for sample, same in by_sample.items():
        if len(same) > 1:
            base, seed = sample[-2:]
            kept = next((r for r in same if r.name == f"{base}-s{seed}"), sorted(same, key=lambda r: r.name)[0])
            for other in same:
                if other is not kept:
                    dropped.add(other.name)
                    problems.append(f"{other.name}: seed {seed} of this model is already shown from {kept.name}; "
                                    "one seed is one sample, so it is not counted twice")
    return [r for r in records if r.name not in dropped], problems


def stale_reason(run_dir: Path, model: dict[str, Any], stage: str, digests: dict[str, tuple[str | None, str]]) -> str | None:
    """Why a result's model summary does not match the weights in `run_dir`, or None when it does.

    `digests` caches (digest or None, why not) per weights file, each hashed once; only regular files are read."""
    kind = model.get("checkpoint")
    if kind not in WEIGHT_FILES:
        return f"it names no known checkpoint ({kind!r}), rerun {stage}"
    path = run_dir / WEIGHT_FILES[kind]
    if kind not in digests:
        try:
            digests[kind] = (file_sha256(path), "")
        except OSError as exc:  # NotARegularFile says what the path is
            digests[kind] = (None, exc.strerror if exc.strerror and "regular" in exc.strerror else "")
    digest, why = digests[kind]
    stored = model.get("weights_sha256")
    if digest is None:
        return (f"checkpoints/{run_dir.name}/{WEIGHT_FILES[kind]} is {why}; results cannot be checked against it" if why
                else f"no readable {WEIGHT_FILES[kind]} in checkpoints/{run_dir.name} to check it against, rerun {stage}")
    if stored is None:
        return f"results predate weight digests, so they cannot be tied to these weights, rerun {stage}"
    if stored != digest:
        damage = safetensors_damage(path)
        if damage is not None:
            return (f"checkpoints/{run_dir.name}/{WEIGHT_FILES[kind]} is corrupted ({damage}): retrain or restore it; "
                    f"rerunning {stage} cannot help")
        return f"results are for other weights, rerun {stage}"
    return None
