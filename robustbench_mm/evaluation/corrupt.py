"""`mm-robust corrupt`: every model on its clean test set and on CIFAR-10-C style common corruptions.

The 15 corruptions of Hendrycks & Dietterich (2019) at severities 1-5 (and, asked for, the 4 extra
ones), each (corruption, severity) one test set. Sets come from one of two sources, recorded in
every result file:

- "official": the CIFAR-10-C / CIFAR-100-C files under ``<data dir>/CIFAR-10-C`` (RobustBench's
  layout: ``<corruption>.npy`` of 50,000 x 32 x 32 x 3 uint8, ``labels.npy``), read and checked by
  `data.corruptions.load_official`;
- "generated": made by `data.corruptions.corrupt` with make_cifar_c.py's CIFAR parameters, each image
  seeded by (seed, corruption, severity, its index in the whole test set), so a subset
  (``--n-examples``) and a shard get exactly the images of a whole run.

A set is made once per invocation, batch by batch on the evaluation device (the random draws are
counter-based, computed on the host for the whole batch from each image's key, and go to the device
with the batch), and kept as uint8 (the
corrupted pixels are multiples of 1/255, so nothing is lost); every model that needs it is then
evaluated on it, corruption by corruption. After each corruption a model's result file is written,
so a stopped run keeps every finished corruption, and a rerun with the same settings measures only
what is missing (``force`` redoes the asked sets and keeps the others).

One JSON per model, ``attacks/<run>/corruptions.json``: per set accuracy (%), NLL, ECE (percentage
points, `calibrate.expected_calibration_error`, 15 bins) and the per-example correctness masks of the
shared contract; and the mean over the 15 x 5 standard sets, RobustBench's ``corruptions_acc`` (a
fraction in [0, 1], RobustBench's unit) beside ``corruptions_accuracy`` (the same number in %).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_mm.common.progress import progress_bar
from robustbench_mm.common.runtime import evaluation_batch, resolve_device
from robustbench_mm.common.storage import ensure_writable_dir, read_json
from robustbench_mm.config import CorruptConfig
from robustbench_mm.data.corruptions import LABELS, corrupt, load_official
from robustbench_mm.data.images import ImageSet, to_unit_float
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation.corrupt_results import (
    EVALUATION, Measured, result_entries, result_settings, set_label, store_result, stored_sets)
from robustbench_mm.evaluation.test_sets import TestSets
from robustbench_mm.figures.corrupt_samples import grid_description, grid_is_current, save_sample_grid
from robustbench_mm.runs.checkpoints import load_model, resolve_runs
from robustbench_mm.runs.files import corrupt_samples_file
from robustbench_mm.runs.matching import SettingsSource, same_named_options
from robustbench_mm.runs.results import (
    OWN_COMMAND, ConflictHint, check_result_targets, dropped_note, finished_result, replaced_result, result_path)
from robustbench_mm.sources.loading import ModelSource, check_contracts, from_run

# Which sets and how fast: not part of a result's identity (a rerun with more sets adds them to the file).
SAMPLE_INDEX = 0  # the test image the sample grid shows
OFFICIAL_FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}  # under the data dir, as RobustBench has them

# Generated corruptions that cannot match the reference's published files (data/corruptions.py says how).


def planned_sets(config: CorruptConfig) -> tuple[tuple[str, int], ...]:
    return tuple((name, severity) for name in config.corruptions for severity in config.severities)


def official_folder(dataset: str, data_dir: str | Path) -> Path | None:
    """Where the official files of `dataset` would be (None: there are none for it, e.g. digits)."""
    return Path(data_dir) / OFFICIAL_FOLDERS[dataset] if dataset in OFFICIAL_FOLDERS else None


def resolve_source(config: CorruptConfig, dataset: str, data_dir: str | Path) -> str:
    """'official' or 'generated' for one dataset: 'auto' takes the official files when their labels.npy is there."""
    folder = official_folder(dataset, data_dir)
    present = folder is not None and (folder / "labels.npy").is_file()
    if config.source == "official" and not present:
        if folder is None:
            raise UsageError(f"--source official: there are no official corrupted files for {dataset} (only "
                             f"{', '.join(OFFICIAL_FOLDERS)}); use --source generated or auto")
        raise UsageError(f"--source official: {str(folder / 'labels.npy')!r} not found; put CIFAR-10-C / CIFAR-100-C "
                         f"there (RobustBench's layout) or pass --data-dir, or use --source generated")
    if config.source == "generated":
        return "generated"
    return "official" if present else "generated"


# ---- the test sets ---------------------------------------------------------------------------------------


@dataclass
class CorruptTestData:
    """One dataset's test images (uint8, on the host) and how each corrupted set of them is made."""

    images: ImageSet
    source: str  # "generated" or "official"
    seed: int
    start: int = 0  # test index of images[0]: a shard's images keep the draws they get in the whole set
    folder: Path | None = None  # official files
    official_labels: np.ndarray | None = None  # all clean test labels, which load_official checks labels.npy against

    def __len__(self) -> int:
        return len(self.images)

    def examples(self, start: int, stop: int) -> CorruptTestData:
        """Test images start..stop-1 (of these) with the corruptions they get in the whole set."""
        images = self.images
        part = ImageSet(images.name, images.images[start:stop], images.labels[start:stop], images.num_classes)
        return CorruptTestData(part, self.source, self.seed, self.start + start, self.folder, self.official_labels)

    def check_official(self, sets) -> None:
        """Every official file this evaluation reads: there, of the right shape and dtype, labels in order."""
        for name, severity in sets:
            load_official(self.folder, self.images.name, name, severity, self.official_labels,
                          len(self.official_labels))

    def corrupted(self, name: str, severity: int, device: torch.device, batch_size: int) -> torch.Tensor:
        """The set (corruption `name` at `severity`) of these images: uint8 (N, 3, H, W) on `device`."""
        n = len(self)
        if self.source == "official":
            rows = load_official(self.folder, self.images.name, name, severity, self.official_labels,
                                 len(self.official_labels))
            array = np.array(rows[self.start:self.start + n])  # (n, 32, 32, 3): a writable copy out of the memmap
            return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().to(device)
        out = torch.empty(self.images.images.shape, dtype=torch.uint8, device=device)
        for first in range(0, n, batch_size):
            x = to_unit_float(self.images.images[first:first + batch_size].to(device))
            indices = range(self.start + first, self.start + first + len(x))
            # corrupt returns float32 multiples of 1/255: uint8 holds them exactly, and to_unit_float gives them back
            corrupted = corrupt(x, name, severity, self.seed, indices)
            out[first:first + len(x)] = corrupted.mul_(255).round_().to(torch.uint8)
        return out


# ---- the measurement -------------------------------------------------------------------------------------


@torch.no_grad()
def outcomes_on(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                batch_size: int) -> dict[str, torch.Tensor]:
    """Per image: {"correct": bool, "nll": float32, "confidence": float32 (top softmax probability)}, on the CPU.

    `images` uint8 and `labels` on the model's device. Per-image outcomes, so shards over disjoint index
    ranges concatenate to exactly what one pass gives, and every summary (ECE included) is computed once.
    """
    model.eval()
    device = images.device
    batch_size = evaluation_batch(batch_size, device)
    correct = torch.empty(len(labels), dtype=torch.bool, device=device)
    nll = torch.empty(len(labels), dtype=torch.float32, device=device)
    confidence = torch.empty(len(labels), dtype=torch.float32, device=device)
    for start in range(0, len(labels), batch_size):
        logits = model(to_unit_float(images[start:start + batch_size])).float()
        batch = labels[start:start + batch_size]
        stop = start + len(batch)
        correct[start:stop] = logits.argmax(1) == batch
        nll[start:stop] = F.cross_entropy(logits, batch, reduction="none")
        confidence[start:stop] = F.softmax(logits, dim=1).amax(1)
    return {"correct": correct.cpu(), "nll": nll.cpu(), "confidence": confidence.cpu()}  # one sync per set


def _timed(measure: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = measure()  # ends with a host sync (outcomes_on) or a finished device tensor
    if isinstance(result, torch.Tensor) and result.is_cuda:
        torch.cuda.synchronize(result.device)
    return result, time.perf_counter() - start


def measure_clean(model: torch.nn.Module, data: ImageSet, batch_size: int, measured: Measured) -> None:
    """The clean pass, after one warm-up batch so first-call costs land in no timing."""
    outcomes_on(model, data.images[:batch_size], data.labels[:batch_size], batch_size)
    measured.outcomes["clean"], measured.seconds["clean"] = _timed(
        lambda: outcomes_on(model, data.images, data.labels, batch_size))


def measure_set(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, label: str,
                generate_seconds: float, measured: Measured) -> None:
    measured.outcomes[label], measured.seconds[label] = _timed(lambda: outcomes_on(model, images, labels, batch_size))
    measured.generate_seconds[label] = generate_seconds


def measure_model(model: torch.nn.Module, test_data: CorruptTestData, sets, batch_size: int,
                  device: torch.device) -> Measured:
    """Clean pass and every set of `sets` for one model alone (a shard): each set made here, then evaluated."""
    data = test_data.images.to(device)
    measured = Measured()
    measure_clean(model, data, batch_size, measured)
    for name, severity in sets:
        images, seconds = _timed(lambda n=name, s=severity: test_data.corrupted(n, s, device, batch_size))
        measure_set(model, images, data.labels, batch_size, set_label(name, severity), seconds, measured)
    return measured


# ---- the stage -------------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"corrupt: {message}", file=sys.stderr)


class _TestDataCache:
    """Each dataset's test images loaded once per invocation, their source resolved, and its sample grid."""

    def __init__(self, config: CorruptConfig, out_root: Path, test_sets: TestSets | None = None):
        self.config = config
        self.out_root = out_root
        self.test_sets = test_sets or TestSets()
        self.data: dict[tuple[str, str], CorruptTestData] = {}
        self.grids_checked: set[str] = set()

    def key(self, loaded: ModelSource) -> tuple[str, str]:
        return loaded.dataset, self.config.data_dir or loaded.data_dir

    def test_images(self, loaded: ModelSource) -> ImageSet:
        return self.get(loaded).images

    def get(self, loaded: ModelSource) -> CorruptTestData:
        """The test data of `loaded`'s dataset; official files are checked here, before anything is written."""
        key = self.key(loaded)
        if key not in self.data:
            dataset, data_dir = key
            source = resolve_source(self.config, dataset, data_dir)
            full = self.test_sets.get(dataset, data_dir, loaded.download, None)  # official files need every label
            data = CorruptTestData(full.subset(self.config.n_examples), source, self.config.seed)
            if source == "official":  # the files hold 5 x the whole test set (10,000 images per severity)
                data.folder, data.official_labels = official_folder(dataset, data_dir), full.labels.numpy()
                data.check_official(planned_sets(self.config))
            self.data[key] = data
        return self.data[key]

    def ensure_grid(self, loaded: ModelSource) -> None:
        """Draw the dataset's sample grid unless the one on disk already shows these settings."""
        dataset = loaded.dataset
        if dataset in self.grids_checked:
            return
        self.grids_checked.add(dataset)
        data = self.get(loaded)
        path = self.out_root / corrupt_samples_file(dataset)
        config = self.config
        description = grid_description(dataset, data.source, config.seed, config.corruptions, config.severities,
                                       SAMPLE_INDEX)
        if grid_is_current(path, description):
            return
        one = data.examples(SAMPLE_INDEX, SAMPLE_INDEX + 1)
        cpu = torch.device("cpu")
        rows = [(LABELS[name], torch.cat([to_unit_float(one.corrupted(name, s, cpu, 1)) for s in config.severities]))
                for name in config.corruptions]
        seed = f", seed {config.seed}" if data.source == "generated" else ""
        title = f"Common corruptions, {dataset} test image {SAMPLE_INDEX} ({data.source}{seed})"
        save_sample_grid(path, to_unit_float(one.images.images[0]), rows, config.severities, description, title)
        _log(f"sample grid -> {path}")


def check_corrupt_targets(config: CorruptConfig, models: list[ModelSource], out_root: str | Path, force: bool,
                          hint: ConflictHint = OWN_COMMAND, cache: _TestDataCache | None = None) -> None:
    """Refuse, before anything is written, every result `corrupt` would lose or cannot write (see runs/results.py);
    also every official file that is missing or malformed."""
    cache = cache or _TestDataCache(config, Path(out_root))
    fields = list(result_settings(config, "generated"))
    planned = []
    for loaded in models:
        data_dir = cache.key(loaded)[1]
        source = SettingsSource("corrupt", config,
                                lambda c, d=loaded.dataset, r=data_dir: result_settings(c, resolve_source(c, d, r)),
                                {name: name for name in fields}, same_named_options(fields))
        planned.append((result_path(out_root, loaded.name, EVALUATION, loaded.checkpoint), loaded.summary,
                        result_settings(config, cache.get(loaded).source), source))
    check_result_targets(planned, force, hint)


def note_dropped(path: Path, summary: dict[str, Any], settings: dict[str, Any], todo) -> None:
    """Say which stored sets a rewrite of `path` loses: only those of the same weights and settings are kept."""
    replaced = replaced_result(path, summary, settings)
    if replaced is not None:
        stored, why = replaced
        redone = {set_label(*s) for s in todo}
        dropped = [label for label in stored.get("sets", {}) if label not in redone]
        if dropped:
            _log(dropped_note(path, why, dropped))


@dataclass
class _Job:
    """One model's share of the work: what it still needs and what it measured so far."""

    loaded: ModelSource
    path: Path
    source: str
    todo: tuple[tuple[str, int], ...]
    measured: Measured = field(default_factory=Measured)


def run_corrupt(config: CorruptConfig, checkpoints_root: str | Path = "checkpoints", out_root: str | Path = "attacks",
                runs: list[str] | None = None, force: bool = False, progress: bool = True,
                sources: list[ModelSource] | None = None, hint: ConflictHint = OWN_COMMAND,
                test_sets: TestSets | None = None) -> list[Path]:
    """Evaluate every model under `checkpoints_root` (or those named in `runs`, or the given `sources`) on the
    corrupted sets of `config`; one ``corruptions.json`` per model. `hint` names the options a refusal points to."""
    device = resolve_device(config.device)
    # Every checkpoint is read before any work starts, so a bad one stops the run before anything is written.
    models = sources if sources is not None else [
        from_run(load_model(run_dir, config.checkpoint, "cpu")) for run_dir in resolve_runs(checkpoints_root, runs)]
    cache = _TestDataCache(config, Path(out_root), test_sets)
    contracts = check_contracts(models, [cache.test_images(loaded) for loaded in models])
    check_corrupt_targets(config, models, out_root, force, hint, cache)
    out_root = ensure_writable_dir(Path(out_root), hint.out_option)
    cache.out_root = out_root
    paths, jobs = [], []
    for loaded in models:
        contracts.write(loaded, out_root, force)
        path = result_path(out_root, loaded.name, EVALUATION, loaded.checkpoint)
        source = cache.get(loaded).source
        settings = result_settings(config, source)
        stored = finished_result(path, loaded.summary, settings)
        done = stored_sets(stored)
        todo = tuple(s for s in planned_sets(config) if force or set_label(*s) not in done)
        if stored is None:
            note_dropped(path, loaded.summary, settings, todo)
        paths.append(path)
        cache.ensure_grid(loaded)
        if todo:
            jobs.append(_Job(loaded, path, source, todo))
        else:
            _log(f"{loaded.name}: all {len(planned_sets(config))} sets already in {path}; skipped "
                 "(--force redoes them)")
    for key in dict.fromkeys(cache.key(job.loaded) for job in jobs):
        evaluate_group(config, cache.data[key], [job for job in jobs if cache.key(job.loaded) == key], device,
                       progress)
    return paths


def evaluate_group(config: CorruptConfig, test_data: CorruptTestData, jobs: list[_Job], device: torch.device,
                   progress: bool) -> None:
    """The models of one test set: each set made once, every model that needs it evaluated on it, and each
    model's file written after every corruption (a stop loses at most the corruption under way)."""
    data = test_data.images.to(device)
    total = sum(len(job.todo) for job in jobs)
    bar = progress_bar(total=total, desc=f"corrupt {data.name}", unit="set", disable=not progress, leave=False)
    for name in config.corruptions:
        wanted = [job for job in jobs if any(n == name for n, _ in job.todo)]
        if not wanted:
            continue
        severities = [s for s in config.severities if any((name, s) in job.todo for job in wanted)]
        made = {s: _timed(lambda n=name, s=s: test_data.corrupted(n, s, device, config.batch_size)) for s in severities}
        for job in wanted:
            model = job.loaded.model.to(device)
            if "clean" not in job.measured.outcomes:
                measure_clean(model, data, config.batch_size, job.measured)
            for severity in severities:
                if (name, severity) in job.todo:
                    images, seconds = made[severity]
                    measure_set(model, images, data.labels, config.batch_size, set_label(name, severity), seconds,
                                job.measured)
                    bar.update()
            job.loaded.model.to("cpu")  # free the device for the next model
            clean, entries = result_entries(job.measured, [(name, s) for s in severities if (name, s) in job.todo])
            store_result(job.path, job.loaded.summary, config, job.source, len(data), clean, entries,
                         Measured({label: job.measured.outcomes[label] for label in ("clean", *entries)}))
        del made
    bar.close()
    for job in jobs:
        result = read_json(job.path)
        mean = result["summary"]["corruptions_accuracy"]
        overall = f", corruptions_acc {mean:.2f} %" if mean is not None else ""
        _log(f"{job.loaded.name}: clean {result['clean']['accuracy']:.2f} %{overall}, {len(job.todo)} sets evaluated "
             f"({job.source}) -> {job.path}")


# ---- the summary -----------------------------------------------------------------------------------------


