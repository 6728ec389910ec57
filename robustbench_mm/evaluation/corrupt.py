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

A set is made once per invocation, batch by batch on the evaluation device (the random draws come
from per-image host generators and go to the device with the batch), and kept as uint8 (the
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
from robustbench_mm.common.runtime import resolve_device
from robustbench_mm.common.storage import ensure_writable_dir, folder_lock, read_json
from robustbench_mm.config import CorruptConfig
from robustbench_mm.data.corruptions import (
    ALL_CORRUPTIONS, CORRUPTIONS, LABELS, PARAMETERS, SEVERITIES, corrupt, load_official)
from robustbench_mm.data.images import ImageSet, load_dataset, to_unit_float
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation.calibrate import expected_calibration_error
from robustbench_mm.figures.corrupt_samples import grid_description, grid_is_current, save_sample_grid
from robustbench_mm.runs.checkpoints import load_model, resolve_runs
from robustbench_mm.runs.files import corrupt_samples_file
from robustbench_mm.runs.results import (
    OWN_COMMAND, ConflictHint, check_result_targets, encode_mask, finished_result, result_path, write_result)
from robustbench_mm.sources.loading import ModelSource, check_contracts, from_run

EVALUATION = "corruptions"  # attacks/<run>/corruptions.json
# Which sets and how fast: not part of a result's identity (a rerun with more sets adds them to the file).
NOT_RESULT_SETTINGS = ("corruptions", "extra", "severities", "batch_size", "device")
ECE_BINS = 15  # as `mm-robust calibrate`'s default
SAMPLE_INDEX = 0  # the test image the sample grid shows
OFFICIAL_FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}  # under the data dir, as RobustBench has them
STANDARD_SETS = len(CORRUPTIONS) * len(SEVERITIES)  # RobustBench's corruptions_acc averages these 75

REFERENCE = ("make_cifar_c.py (github.com/hendrycks/robustness, ImageNet-C/create_c), its CIFAR parameters; "
             "each image seeded by (seed, corruption, severity, test index)")
# Generated corruptions that cannot match the reference's published files (data/corruptions.py says how).
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
ARITHMETIC_NOTE = ("float32 arithmetic where the reference uses float64 can move a value by one uint8 level "
                   "(at most ~2 % of values, defocus blur severity 5)")
UNITS = {"accuracy": "percent", "corruptions_accuracy": "percent", "corruptions_acc": "fraction in [0, 1] "
         "(RobustBench's field and unit)", "nll": "nats per image", "ece": f"percentage points, {ECE_BINS} equal-width "
         "confidence bins", "seconds": "wall time", "generate_seconds": "wall time to generate or load the set "
         "(once per invocation, shared by the models evaluated on it)"}


def set_label(name: str, severity: int) -> str:
    """A set's key in ``sets`` and in the per-example masks: '<corruption>-<severity>', e.g. 'fog-3'."""
    return f"{name}-{severity}"


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


# ---- the stage -------------------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"corrupt: {message}", file=sys.stderr)


class _TestDataCache:
    """Each dataset's test images loaded once per invocation, their source resolved, and its sample grid."""

    def __init__(self, config: CorruptConfig, out_root: Path):
        self.config = config
        self.out_root = out_root
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
            full = load_dataset(dataset, train=False, data_dir=data_dir, download=loaded.download)
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
    check_result_targets([(result_path(out_root, loaded.name, EVALUATION), loaded.summary,
                           result_settings(config, cache.get(loaded).source)) for loaded in models], force, hint)


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
                sources: list[ModelSource] | None = None, hint: ConflictHint = OWN_COMMAND) -> list[Path]:
    """Evaluate every model under `checkpoints_root` (or those named in `runs`, or the given `sources`) on the
    corrupted sets of `config`; one ``corruptions.json`` per model. `hint` names the options a refusal points to."""
    device = resolve_device(config.device)
    # Every checkpoint is read before any work starts, so a bad one stops the run before anything is written.
    models = sources if sources is not None else [
        from_run(load_model(run_dir, config.checkpoint, "cpu")) for run_dir in resolve_runs(checkpoints_root, runs)]
    cache = _TestDataCache(config, Path(out_root))
    contracts = check_contracts(models, [cache.test_images(loaded) for loaded in models])
    check_corrupt_targets(config, models, out_root, force, hint, cache)
    out_root = ensure_writable_dir(Path(out_root), hint.out_option)
    cache.out_root = out_root
    paths, jobs = [], []
    for loaded in models:
        contracts.write(loaded, out_root, force)
        path = result_path(out_root, loaded.name, EVALUATION)
        source = cache.get(loaded).source
        done = stored_sets(finished_result(path, loaded.summary, result_settings(config, source)))
        todo = tuple(s for s in planned_sets(config) if force or set_label(*s) not in done)
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
