"""What the evaluation stages evaluate: a model taking [0, 1] images, whoever trained it.

`ModelSource` is the one seam between "where a model comes from" and "what attack/deform do
with it": ours come from a run folder (`from_run`), models trained elsewhere from a factory and
a weights file or straight from Python (`external_source`). Both write the same result files
through runs/results.py; the `summary` stored in each file says which kind it was (``external: true``
plus factory, weights SHA-256 and normalization for models trained elsewhere).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from robustbench_mm.common.storage import folder_locked, read_json
from robustbench_mm.config import DATASETS
from robustbench_mm.data.images import NORMALIZATION, ImageSet, to_unit_float
from robustbench_mm.errors import UsageError
from robustbench_mm.runs.checkpoints import LoadedModel
from robustbench_mm.runs.meta import META_FILE
from robustbench_mm.runs.results import (
    EXTERNAL, RESULT_FORMAT, finished_result, model_summary, result_path, write_result)
from robustbench_mm.sources.contract import ContractReport, check_model_contract

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "digits": 10}


@dataclass(frozen=True)
class ModelSource:
    """One model to evaluate and everything the stages need to know about it."""

    model: nn.Module  # maps [0, 1] images (N, 3, H, W) to logits (N, classes)
    name: str  # its folder under the results root
    dataset: str
    summary: dict[str, Any]  # the "model" entry of every result file
    data_dir: str
    download: bool
    checkpoint: str  # "last"/"best" for ours, "external" otherwise

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.dataset]

    @property
    def external(self) -> bool:
        return bool(self.summary.get("external"))


def from_run(loaded: LoadedModel) -> ModelSource:
    """One of our trained models, as `checkpoints.load_model` read it; a run still training is named, with the epoch
    its weights are of (the result files record it as `checkpoint_epoch`)."""
    if folder_locked(loaded.run_dir):
        print(f"warning: run {loaded.name!r} is still training (epoch {loaded.meta['epoch']} of "
              f"{loaded.config.epochs} saved): evaluating its {loaded.which} weights of epoch {loaded.epoch}, and "
              "the results record that epoch", file=sys.stderr)
    return ModelSource(loaded.model, loaded.name, loaded.config.dataset, model_summary(loaded),
                       loaded.config.data_dir, loaded.config.download, loaded.which)


class Normalized(nn.Module):
    """`model` preceded by (x - mean) / std, so it takes [0, 1] pixels like ours.

    The `mean` and `std` buffers carry the names our PreActResNet uses, so the paper's FGSM
    protocol (eps on the normalized input, a pixel step of eps * std) applies to it as well.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.inner = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x - self.mean) / self.std)


Normalization = tuple[tuple[float, ...], tuple[float, ...]]


def parse_normalization(value: Any) -> Normalization | None:
    """(mean, std) per channel from a dataset name, 'm1,m2,m3,s1,s2,s3', 'm,s', or a (mean, std) pair."""
    if value is None:
        return None
    if isinstance(value, str) and value in NORMALIZATION:
        mean, std = NORMALIZATION[value]
        return tuple(mean), tuple(std)
    if isinstance(value, str):
        try:
            numbers = [float(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"--normalization {value!r}: expected mean,std numbers (3 means then 3 stds, or one "
                             f"of each) or a dataset name ({', '.join(NORMALIZATION)})") from None
        if len(numbers) not in (2, 6):
            raise UsageError(f"--normalization takes 2 values (mean,std) or 6 (3 means, 3 stds), got {len(numbers)}")
        half = len(numbers) // 2
        mean, std = numbers[:half], numbers[half:]
    else:
        try:
            mean, std = value
            mean, std = [float(v) for v in (mean if isinstance(mean, Sequence) else [mean])], \
                [float(v) for v in (std if isinstance(std, Sequence) else [std])]
        except (TypeError, ValueError):
            raise UsageError(f"normalization must be (mean, std) with 1 or 3 numbers each, got {value!r}") from None
        if len(mean) != len(std) or len(mean) not in (1, 3):
            raise UsageError(f"normalization needs 1 or 3 means and as many stds, got {len(mean)} and {len(std)}")
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    if not all(math.isfinite(v) for v in (*mean, *std)):
        raise UsageError(f"normalization values must be finite, got mean {mean} std {std}")
    if any(s <= 0 for s in std):
        raise UsageError(f"normalization std must be > 0 for every channel, got {std}")
    return tuple(mean), tuple(std)


def check_dataset_name(dataset: str) -> None:
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")


def check_name(name: str) -> None:
    """A result folder name: one plain path component."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(f"--name {name!r} must be a plain folder name (no '/', not starting with '.')")


def check_not_a_run(name: str, checkpoints_root: Path | None, force: bool) -> None:
    """Refuse a name that belongs to one of our trained runs, unless `force`."""
    if not force and checkpoints_root is not None and (Path(checkpoints_root) / name / META_FILE).is_file():
        raise UsageError(f"--name {name!r} is a trained run in {str(checkpoints_root)!r}; choose another name "
                         "or pass --force")


def check_no_collision(name: str, out_root: Path, summary: dict[str, Any], force: bool) -> None:
    """Refuse a name whose result folder holds results of another model, unless `force`."""
    if force:
        return
    folder = Path(out_root) / name
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            stored = read_json(path)
        except UsageError:
            continue
        if not isinstance(stored, dict) or stored.get("format") != RESULT_FORMAT:
            continue
        other = stored.get("model", {})
        if not isinstance(other, dict) or other.get("weights_sha256") != summary.get("weights_sha256") or \
                other.get("model_class") != summary.get("model_class") or not other.get("external"):
            raise UsageError(f"--name {name!r} already holds results of another model in {str(folder)!r}; "
                             "choose another name or pass --force")


def external_summary(name: str, dataset: str, model: nn.Module, weights_sha256: str,
                     normalization: Normalization | None, factory: str | None,
                     weights_file: str | None) -> dict[str, Any]:
    """The provenance of a model trained elsewhere, stored as the "model" entry of its result files."""
    return {
        "run": name, "key": EXTERNAL, "external": True, "dataset": dataset, "method": EXTERNAL, "alpha": None,
        "arch": type(model).__name__, "width": None, "preset": EXTERNAL,
        "epochs_trained": None, "checkpoint": EXTERNAL, "checkpoint_epoch": None,
        "train_seed": None, "train_git_commit": None,
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "factory": factory, "weights_file": weights_file, "weights_sha256": weights_sha256,
        "normalization": None if normalization is None else {"mean": list(normalization[0]),
                                                             "std": list(normalization[1])},
    }


def external_source(model: nn.Module, name: str, dataset: str, weights_sha256: str,
                    normalization: Normalization | None = None, factory: str | None = None,
                    weights_file: str | None = None, data_dir: str = "data", download: bool = True) -> ModelSource:
    """A model trained elsewhere; wrapped in `Normalized` when it expects normalized inputs."""
    check_dataset_name(dataset)
    check_name(name)
    summary = external_summary(name, dataset, model, weights_sha256, normalization, factory, weights_file)
    wrapped = model if normalization is None else Normalized(model, *normalization)
    return ModelSource(wrapped.eval(), name, dataset, summary, data_dir, download, EXTERNAL)


# ---- the model contract, checked before any attack or deformation --------------------------------

CONTRACT_EVALUATION = "model-contract"
CONTRACT_PROBE_IMAGES = 16  # the first test images, passed twice through the model


@dataclass(frozen=True)
class Contracts:
    """Each source's contract report, by name; `write` stores one as ``<out>/<name>/model-contract.json``."""

    reports: dict[str, ContractReport]

    def write(self, source: ModelSource, out_root: Path, force: bool) -> list[Path]:
        path = result_path(out_root, source.name, CONTRACT_EVALUATION, source.checkpoint)
        settings = {"dataset": source.dataset, "probe_images": CONTRACT_PROBE_IMAGES}
        if force or finished_result(path, source.summary, settings) is None:
            report = self.reports[source.name]
            write_result(path, CONTRACT_EVALUATION, source.summary, settings,
                         {"contract": report.to_dict(), "flagged": bool(report.flags)})
        return [path]


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def check_contracts(sources: Sequence[ModelSource], datasets: Sequence[ImageSet]) -> Contracts:
    """Every model in eval mode, its output shape checked (a UsageError) and its flags printed, before any work."""
    reports = {}
    for source, data in zip(sources, datasets):
        model = source.model
        images = to_unit_float(data.images[:CONTRACT_PROBE_IMAGES]).to(_device_of(model))
        report = check_model_contract(model, images, source.num_classes, source.name)
        for flag in report.flags:
            print(f"warning: model {source.name!r}: {CONTRACT_WARNINGS[flag]}", file=sys.stderr)
        if report.flags:  # into every result file of it, so the report can say what its numbers are worth
            source.summary["contract_flags"] = list(report.flags)
        reports[source.name] = report
    return Contracts(reports)


CONTRACT_WARNINGS = {
    "outputs-probabilities": "its outputs are probabilities (rows sum to 1), not logits; gradient attacks through "
                             "a softmax of probabilities stall, so robustness will look better than it is",
    "not-deterministic": "two identical passes gave different outputs (dropout or randomness left on?); gradient "
                         "attacks on a random model look stronger than the model is robust",
}
