"""`mm-robust deform`: every model on its clean test set and on each deformation test set of Table 7.

Each dataset's test images go to the device once, and each set's warp (the source pixel of every
output pixel, computed on the host in float64, see `deformations`) once per set; every model is then
evaluated on them in large batches, each batch warped by one gather on the device just before the
forward pass. Per-image correct flags and summed NLL stay on the device until the set is
done, so there is one host synchronisation per set, not one per batch. The flags are stored too
(``per_example``), so the statistics can pair models image by image.

One JSON per model and (convention, fill), ``attacks/<run>/deform.json`` for ours + black and
``deform-authors.json``, ``deform-mean.json``, ``deform-authors-mean.json`` for the others, written only
when that model is complete. A re-run with the same settings skips sets already stored and adds any
new ones (``force`` redoes them).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from robustbench_mm.common.progress import progress_bar
from robustbench_mm.common.runtime import evaluation_batch, resolve_device
from robustbench_mm.common.storage import ensure_writable_dir, folder_lock, read_json
from robustbench_mm.config import DeformConfig
from robustbench_mm.data.deformations import (
    DEFORM_SETS, Warp, evaluation_name, fill_values, plan_warp, set_matrices, set_seed)
from robustbench_mm.data.images import ImageSet, to_unit_float
from robustbench_mm.evaluation.test_sets import TestSets
from robustbench_mm.figures.deform_samples import grid_is_current, save_sample_grid
from robustbench_mm.paper import paper_table7
from robustbench_mm.runs.checkpoints import load_model, resolve_runs
from robustbench_mm.runs.files import deform_samples_file
from robustbench_mm.runs.matching import SettingsSource, same_named_options
from robustbench_mm.runs.results import (
    OWN_COMMAND, ConflictHint, check_result_targets, dropped_note, encode_mask, finished_result, replaced_result,
    result_path, write_result)
from robustbench_mm.sources.loading import ModelSource, check_contracts, from_run

SAMPLE_IMAGES = 8
# Settings that change how fast the numbers come, not what they are: not part of a result's identity.
NOT_RESULT_SETTINGS = ("sets", "batch_size", "device")
CONVENTION_NOTES = {
    "ours": "linear warp about the exact image centre ((size - 1) / 2), source points inside the pixel edges "
            "[-0.5, size - 0.5) sampled, positive rotation counter-clockwise as displayed, exact half-pixel "
            "ties to the lower-right pixel",
    "authors": "the authors' warp (affine_transforms.py, scipy affine_transform order=0 mode='constant'): centre "
               "size / 2 + 0.5, source points beyond the outermost pixel centres [0, size - 1] filled, positive "
               "rotation clockwise as displayed, half-pixel ties as scipy's float64 arithmetic falls",
}
FILL_NOTES = {"black": "black (0) outside the image",
              "mean": "the dataset's mean pixel (zero after normalization) outside the image"}


def method_note(convention: str, fill: str) -> str:
    return ("each image gets its own parameter drawn uniformly from the set's range by a generator seeded from "
            f"(seed, set name); zoom sets use their one fixed scale. {convention} convention: "
            f"{CONVENTION_NOTES[convention]}; "
            f"{FILL_NOTES[fill]}; shear uses the authors' matrix [[1, -sin s], [0, cos s]] on (row, column) "
            "coordinates; source pixels computed on the host in float64, so every device gives the same pixels")


@dataclass
class DeformTestData:
    """One dataset's test images on the device, and each set's warp there, planned when first needed."""

    images: ImageSet
    seed: int
    convention: str
    interpolation: str
    fill: torch.Tensor | None  # per-channel [0, 1] fill pixel on the device; None = black
    warps: dict[str, Warp] = field(default_factory=dict)

    def warp(self, name: str) -> Warp:
        if name in self.warps:
            return self.warps[name]
        _, maps = set_matrices(name, len(self.images), self.seed, self.convention)
        warp = plan_warp(maps, self.images.images.shape[-1], self.convention, self.interpolation)
        warp = warp.to(self.images.images.device)
        if self.interpolation == "nearest":  # 2 bytes a pixel: kept for the next model; bilinear's 24 are not
            self.warps[name] = warp
        return warp

    def examples(self, start: int, stop: int, names: tuple[str, ...]) -> "DeformTestData":
        """Test images start..stop-1 with the warps they get in the whole set: one shard of an evaluation."""
        images = self.images
        shard = DeformTestData(ImageSet(images.name, images.images[start:stop], images.labels[start:stop],
                                        images.num_classes), self.seed, self.convention, self.interpolation, self.fill)
        shard.warps = {name: self.warp(name)[start:stop] for name in names}
        return shard


def build_test_data(data: ImageSet, config: DeformConfig, device: torch.device) -> DeformTestData:
    fill = fill_values(config.fill, data.name)
    return DeformTestData(data.to(device), config.seed, config.convention, config.interpolation,
                          None if fill is None else fill.to(device))


@torch.no_grad()
def outcomes_on(model: torch.nn.Module, data: ImageSet, warp: Warp | None, batch_size: int,
                fill: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per image of `data`: {"correct": bool, "nll": float32}, on the CPU.

    Each image is warped by its row of `warp` (None = clean), empty space filled with `fill` (None = black).
    Per-image outcomes, not running sums, so that shards over disjoint index ranges concatenate to
    exactly what one pass over all images gives, and the summary is computed once from them.
    """
    model.eval()
    device = data.images.device
    batch_size = evaluation_batch(batch_size, device)
    correct = torch.empty(len(data), dtype=torch.bool, device=device)
    nll = torch.empty(len(data), dtype=torch.float32, device=device)
    for start in range(0, len(data), batch_size):
        x = to_unit_float(data.images[start:start + batch_size])
        if warp is not None:
            x = warp[start:start + batch_size].apply(x, fill)
        labels = data.labels[start:start + batch_size]
        logits = model(x).float()
        correct[start:start + len(labels)] = logits.argmax(1) == labels
        nll[start:start + len(labels)] = F.cross_entropy(logits, labels, reduction="none")
    return {"correct": correct.cpu(), "nll": nll.cpu()}  # the first .cpu() is the one sync of this set


def summarize(outcome: dict[str, torch.Tensor]) -> dict[str, float]:
    """Accuracy (%) and mean NLL from per-image outcomes."""
    n = len(outcome["correct"])
    return {"accuracy": 100.0 * int(outcome["correct"].sum()) / n, "nll": float(outcome["nll"].double().sum()) / n}


def evaluate_on(model: torch.nn.Module, data: ImageSet, warp: Warp | None, batch_size: int,
                fill: torch.Tensor | None = None) -> tuple[dict[str, float], torch.Tensor]:
    """(accuracy % and mean NLL, per-image correct mask on the CPU) of `model` on `data`."""
    outcome = outcomes_on(model, data, warp, batch_size, fill)
    return summarize(outcome), outcome["correct"]


def _timed(measure):
    start = time.perf_counter()
    result = measure()  # ends with a host sync, so the time includes all queued device work
    return result, time.perf_counter() - start


@dataclass
class Measured:
    """Per-image outcomes of the clean pass and of each set, and the seconds each took."""

    outcomes: dict[str, dict[str, torch.Tensor]]  # "clean" or set name -> {"correct", "nll"}
    seconds: dict[str, float]


def measure_model(model: torch.nn.Module, test_data: DeformTestData, names: tuple[str, ...], batch_size: int,
                  progress: bool = False, desc: str = "") -> Measured:
    data = test_data.images
    # One warm-up batch through the warp and the model, so first-call costs land in neither timing.
    warm = ImageSet(data.name, data.images[:batch_size], data.labels[:batch_size], data.num_classes)
    outcomes_on(model, warm, test_data.warp(names[0])[:len(warm)] if names else None, batch_size, test_data.fill)
    bar = progress_bar(total=1 + len(names), desc=desc, unit="set", disable=not progress, leave=False)
    measured = Measured({}, {})
    measured.outcomes["clean"], measured.seconds["clean"] = _timed(lambda: outcomes_on(model, data, None, batch_size))
    bar.update()
    for name in names:
        warp = test_data.warp(name)  # planned outside the timing: once per set, not per model
        measured.outcomes[name], measured.seconds[name] = _timed(
            lambda: outcomes_on(model, data, warp, batch_size, test_data.fill))
        bar.update()
    bar.close()
    return measured


def result_entries(measured: Measured, names: tuple[str, ...],
                   seed: int) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """(clean result, {set name: result entry}) as stored in the result file; each carries its time in seconds."""
    clean = {**summarize(measured.outcomes["clean"]), "seconds": measured.seconds["clean"]}
    entries = {}
    for name in names:
        deform_set = DEFORM_SETS[name]
        entries[name] = {
            **summarize(measured.outcomes[name]), "seed": set_seed(seed, name), "kind": deform_set.kind,
            "range": deform_set.magnitude, "unit": deform_set.unit, "label": deform_set.label,
            "seconds": measured.seconds[name],
        }
    return clean, entries


def evaluate_model(model: torch.nn.Module, test_data: DeformTestData, names: tuple[str, ...], batch_size: int,
                   progress: bool = False,
                   desc: str = "") -> tuple[dict[str, float], dict[str, dict[str, Any]], Measured]:
    """(clean result, {set name: result entry}, the per-image outcomes they summarise) for one model."""
    measured = measure_model(model, test_data, names, batch_size, progress, desc)
    return (*result_entries(measured, names, test_data.seed), measured)


def result_settings(config: DeformConfig) -> dict[str, Any]:
    """The settings a stored deform.json must match to be reused."""
    return {k: v for k, v in config.to_dict().items() if k not in NOT_RESULT_SETTINGS}


def stored_sets(stored: dict[str, Any] | None) -> set[str]:
    """Sets a stored deform.json holds with their per-image masks; older files without masks are redone."""
    if stored is None:
        return set()
    masks = stored.get("per_example", {}).get("correct", {})
    return {name for name in stored["sets"] if name in masks}


def _log(message: str) -> None:
    print(f"deform: {message}", file=sys.stderr)


class _TestDataCache:
    """Each dataset's test images (from the shared `TestSets`), on the device once, and its sample grid."""

    def __init__(self, config: DeformConfig, device: torch.device, out_root: Path, test_sets: TestSets):
        self.config = config
        self.device = device
        self.out_root = out_root
        self.test_sets = test_sets
        self.on_device: dict[tuple[str, str], DeformTestData] = {}
        self.grids_checked: set[str] = set()

    def _key(self, loaded: ModelSource) -> tuple[str, str]:
        return loaded.dataset, self.config.data_dir or loaded.data_dir

    def test_images(self, loaded: ModelSource) -> ImageSet:
        dataset, data_dir = self._key(loaded)
        return self.test_sets.get(dataset, data_dir, loaded.download, self.config.n_examples)

    def get(self, loaded: ModelSource) -> DeformTestData:
        key = self._key(loaded)
        if key not in self.on_device:
            self.on_device[key] = build_test_data(self.test_images(loaded), self.config, self.device)
        return self.on_device[key]

    def ensure_grid(self, loaded: ModelSource) -> None:
        """Draw the dataset's sample grid unless the one on disk already shows these settings."""
        dataset = loaded.dataset
        path = self.out_root / deform_samples_file(dataset, evaluation_name(self.config.convention, self.config.fill))
        if dataset in self.grids_checked:
            return
        self.grids_checked.add(dataset)
        look = dict(convention=self.config.convention, fill=self.config.fill)
        if grid_is_current(path, dataset, self.config.seed, self.config.interpolation, **look):
            return
        images = self.test_images(loaded).images[:SAMPLE_IMAGES]
        save_sample_grid(path, images, self.config.seed, self.config.interpolation, dataset=dataset, **look)
        _log(f"sample grid -> {path}")


def check_deform_targets(config: DeformConfig, models: list[ModelSource], out_root: str | Path, force: bool,
                         hint: ConflictHint = OWN_COMMAND) -> None:
    """Refuse, before anything is written, every result `deform` would lose or cannot write (see runs/results.py)."""
    evaluation = evaluation_name(config.convention, config.fill)
    settings = result_settings(config)
    source = SettingsSource("deform", config, result_settings, {name: name for name in settings},
                            same_named_options(settings))
    check_result_targets([(result_path(out_root, loaded.name, evaluation, loaded.checkpoint), loaded.summary,
                           settings, source) for loaded in models], force, hint)


def run_deform(config: DeformConfig, checkpoints_root: str | Path = "checkpoints", out_root: str | Path = "attacks",
               runs: list[str] | None = None, force: bool = False, progress: bool = True,
               sources: list[ModelSource] | None = None, hint: ConflictHint = OWN_COMMAND,
               test_sets: TestSets | None = None) -> list[Path]:
    """Evaluate every model under `checkpoints_root` (or those named in `runs`, or the given `sources`); one
    result file per model, named by the convention and fill (`deformations.evaluation_name`). `hint` names
    the options a refusal points to."""
    device = resolve_device(config.device)
    # Every checkpoint is read before any work starts, so a bad one stops the run before anything is written.
    models = sources if sources is not None else [
        from_run(load_model(run_dir, config.checkpoint, "cpu")) for run_dir in resolve_runs(checkpoints_root, runs)]
    settings = result_settings(config)
    cache = _TestDataCache(config, device, Path(out_root), test_sets or TestSets())
    contracts = check_contracts(models, [cache.test_images(loaded) for loaded in models])
    check_deform_targets(config, models, out_root, force, hint)
    evaluation = evaluation_name(config.convention, config.fill)
    out_root = ensure_writable_dir(Path(out_root), hint.out_option)
    paths = []
    for loaded in models:
        contracts.write(loaded, out_root, force)
        path = result_path(out_root, loaded.name, evaluation, loaded.checkpoint)
        summary = loaded.summary
        stored = finished_result(path, summary, settings)
        done = stored_sets(stored)
        todo = tuple(n for n in config.sets if force or n not in done)
        if stored is None:
            note_dropped(path, summary, settings, todo)
        paths.append(path)
        cache.ensure_grid(loaded)
        if not todo:
            _log(f"{loaded.name}: all {len(config.sets)} sets already in {path}; skipped (--force redoes them)")
            continue
        test_data = cache.get(loaded)
        model = loaded.model.to(device)
        clean, entries, measured = evaluate_model(model, test_data, todo, config.batch_size, progress,
                                                  desc=loaded.name)
        loaded.model.to("cpu")  # free the device for the next model
        store_result(path, summary, config, test_data, clean, entries, measured)
        _log(f"{loaded.name}: clean {clean['accuracy']:.2f} %, {len(todo)} sets evaluated -> {path}")
    return paths


def note_dropped(path: Path, summary: dict[str, Any], settings: dict[str, Any], todo: tuple[str, ...]) -> None:
    """Say which stored sets a rewrite of `path` loses: only those of the same weights and settings are kept."""
    replaced = replaced_result(path, summary, settings)
    if replaced is not None:
        stored, why = replaced
        dropped = [name for name in DEFORM_SETS if name in stored.get("sets", {}) and name not in todo]
        if dropped:
            _log(dropped_note(path, why, dropped))


def store_result(path: Path, summary: dict[str, Any], config: DeformConfig, test_data: DeformTestData,
                 clean: dict[str, float], entries: dict[str, dict[str, Any]], measured: Measured) -> None:
    """Write the result file, keeping the sets a stored file for the same model and settings already has."""
    settings = result_settings(config)
    with folder_lock(path.parent):
        latest = finished_result(path, summary, settings)  # another process may have added sets meanwhile
        kept = stored_sets(latest)
        merged = {**{name: latest["sets"][name] for name in kept}, **entries}
        merged_masks = {**{name: latest["per_example"]["correct"][name] for name in kept},
                        **{label: encode_mask(outcome["correct"]) for label, outcome in measured.outcomes.items()}}
        write_result(path, evaluation_name(config.convention, config.fill), summary, settings, {
            "interpolation": config.interpolation,
            "convention": config.convention,
            "fill": config.fill,
            "fill_pixel": [0.0] * test_data.images.images.shape[1] if test_data.fill is None
            else test_data.fill.tolist(),
            "n_examples": len(test_data.images),
            "seed": config.seed,
            "method": method_note(config.convention, config.fill),
            "clean": clean,
            "sets": {name: merged[name] for name in DEFORM_SETS if name in merged},
            # Which test images each set got right ("clean" and one mask per set), for paired statistics.
            "per_example": {"example_range": [0, len(test_data.images)],
                            "correct": {label: merged_masks[label] for label in ("clean", *DEFORM_SETS)
                                        if label in merged_masks}},
        })


def relative_cost(results: list[dict[str, Any]]) -> float | None:
    """Mean time of deforming and evaluating one set over the time of a clean pass on the same images."""
    ratios = [entry["seconds"] / result["clean"]["seconds"] for result in results
              for entry in result["sets"].values() if result["clean"].get("seconds") and "seconds" in entry]
    return sum(ratios) / len(ratios) if ratios else None


def format_summary(results: list[dict[str, Any]]) -> str:
    """Table 7 side by side with the paper: one column per model, each cell 'ours / paper' in %."""
    keys = [r["model"]["key"] for r in results]
    headers = [r["model"]["key"] if keys.count(r["model"]["key"]) == 1 and not r["model"].get("external")
               else r["model"]["run"] for r in results]
    names = [n for n in DEFORM_SETS if any(n in r["sets"] for r in results)]
    rows = [["clean"] + [f"{r['clean']['accuracy']:.2f} / -" for r in results]]
    for name in names:
        cells = [DEFORM_SETS[name].label]
        for result in results:
            entry = result["sets"].get(name)
            paper = paper_table7(name, result["model"]["key"])
            ours = f"{entry['accuracy']:.2f}" if entry else "missing"
            cells.append(f"{ours} / {paper:.2f}" if paper is not None else f"{ours} / -")
        rows.append(cells)
    table = [["test set"] + headers] + rows
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in table]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    models = sorted({f"{r['model']['dataset']} {r['model']['arch']} ({r['model']['preset']} preset)" for r in results})
    n_examples = sorted({r["n_examples"] for r in results})
    interpolation = sorted({r["interpolation"] for r in results})
    looks = sorted({f"{r.get('convention', 'ours')} convention, {r.get('fill', 'black')} fill" for r in results})
    notes = ["Table 7: test accuracy (%) under deformations never seen in training; each cell ours / paper.",
             f"Ours: {', '.join(models)}; {'/'.join(map(str, n_examples))} test images; "
             f"{'/'.join(interpolation)} sampling; {'; '.join(looks)}. "
             "Paper: CIFAR-100, PreActResNet34, nearest sampling, the authors' warp."]
    cost = relative_cost(results)
    if cost is not None:
        notes.append(f"Deforming and evaluating one set took {cost:.2f}x the time of a clean evaluation pass "
                     f"(mean over sets and models).")
    return "\n".join(notes[:2] + [""] + lines + [""] + notes[2:])


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    return [read_json(path) for path in paths]
