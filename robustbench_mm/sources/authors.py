"""State dicts in the layout of the Manifold Mixup authors' PreActResNet, read into ours.

Their model (github.com/vikasverma1077/manifold_mixup, supervised/models/preresnet.py) names its
stages ``layer1`` ... ``layer4`` and wraps each projection shortcut in an ``nn.Sequential``
(``shortcut.0.weight``); ours names them ``stages.0`` ... ``stages.3`` with a bare ``shortcut``
conv. Everything else (BN and conv names, ``linear``) is the same and the forward passes agree:
theirs pools with ``avg_pool2d(out, 4)`` over the 4x4 map a 32x32 input leaves, ours averages
globally. Their model takes normalized images (the data loader normalizes); ours normalizes
inside, so the import stores the normalization as our ``mean``/``std`` buffers.
Not covered: their ``per_img_std`` option (per-image standardization) and a stride-2 stem (their
Tiny-ImageNet setting); neither leaves a trace in the weights, so say so rather than guess.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from robustbench_mm.common.storage import ensure_writable_dir, file_sha256
from robustbench_mm.config import METHODS, train_config_for_preset
from robustbench_mm.data.images import NORMALIZATION
from robustbench_mm.errors import UsageError, check_choice
from robustbench_mm.models.factory import model_from_config
from robustbench_mm.models.preact import ARCHITECTURES, PreActBlock, PreActBottleneck
from robustbench_mm.runs.checkpoints import STATE_FILE, WEIGHT_FILES, save_weights
from robustbench_mm.runs.meta import RunMeta
from robustbench_mm.sources.loading import NUM_CLASSES, check_dataset_name, check_name, parse_normalization
from robustbench_mm.sources.weights import load_strict, read_state_dict

AUTHORS_STAGE = re.compile(r"^layer([1-4])\.(\d+)\.(.+)$")


def to_our_keys(theirs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their key names -> ours; keys outside the stages (conv1, linear) keep their names."""
    ours = {}
    for key, tensor in theirs.items():
        match = AUTHORS_STAGE.match(key)
        if match:
            stage, block, rest = match.groups()
            rest = "shortcut.weight" if rest == "shortcut.0.weight" else rest
            key = f"stages.{int(stage) - 1}.{block}.{rest}"
        ours[key] = tensor
    return ours


def infer_architecture(theirs: dict[str, torch.Tensor]) -> tuple[str, int, int]:
    """(our architecture name, width, number of classes) from the shapes and names of their weights."""
    for key in ("conv1.weight", "linear.weight"):
        if key not in theirs:
            raise UsageError(f"not the authors' PreActResNet layout: no {key!r} "
                             f"(keys start {sorted(theirs)[:4]})")
    blocks = []
    for stage in range(1, 5):
        indices = {int(m.group(2)) for k in theirs if (m := AUTHORS_STAGE.match(k)) and m.group(1) == str(stage)}
        if not indices:
            raise UsageError(f"not the authors' PreActResNet layout: no 'layer{stage}.*' keys")
        blocks.append(max(indices) + 1)
    block = PreActBottleneck if any(k.endswith(".conv3.weight") for k in theirs) else PreActBlock
    for name, (kind, counts) in ARCHITECTURES.items():
        if kind is block and tuple(blocks) == counts:
            return name, int(theirs["conv1.weight"].shape[0]), int(theirs["linear.weight"].shape[0])
    supported = ", ".join(f"{n} {list(c)}" for n, (_, c) in ARCHITECTURES.items())
    raise UsageError(f"the weights are a PreActResNet with {block.__name__} blocks {blocks}, which mm-robust does not "
                     f"build; supported: {supported}")


def import_authors_run(weights: str | Path, dataset: str, name: str, method: str, alpha: float | None,
                       checkpoints_root: str | Path, normalization: Any = None, preset: str = "paper",
                       epochs: int | None = None, force: bool = False) -> Path:
    """Write ``checkpoints_root/name/`` (last.safetensors + meta.json) from a state dict in the authors' layout,
    so attack, deform and report treat it like a run `mm-robust train` wrote. Returns the run folder."""
    check_dataset_name(dataset)
    check_name(name)
    check_choice("method", method, METHODS)
    if method == "thermometer":
        raise UsageError("the authors' layout is a plain PreActResNet on pixels; a thermometer model's first layer "
                         "takes a 3 * levels channel code, so it cannot be imported this way")
    mean, std = parse_normalization(normalization) or NORMALIZATION[dataset]
    run_dir = Path(checkpoints_root) / name
    if run_dir.exists() and not force:
        raise UsageError(f"{str(run_dir)!r} already exists; choose another --name or pass --force to replace it")
    theirs = read_state_dict(weights)
    arch, width, classes = infer_architecture(theirs)
    if classes != NUM_CLASSES[dataset]:
        raise UsageError(f"the weights predict {classes} classes but {dataset} has {NUM_CLASSES[dataset]}; "
                         "pass the --dataset they were trained on")
    config = train_config_for_preset(preset, dataset=dataset, method=method, alpha=alpha, arch=arch, width=width,
                                     epochs=epochs, run_name=name, out=str(checkpoints_root))
    model = model_from_config(config)
    ours = to_our_keys(theirs)
    ours["mean"] = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    ours["std"] = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    load_strict(model, ours, str(weights))
    ensure_writable_dir(Path(checkpoints_root))
    run_dir.mkdir(exist_ok=True)
    save_weights(run_dir / WEIGHT_FILES["last"], model)
    RunMeta(config, config.epochs,
            {"last": {"file": WEIGHT_FILES["last"], "epoch": config.epochs, "test_accuracy": None, "test_nll": None,
                      "selection": "imported from the authors' layout"}},
            imported={"from": "authors", "weights_file": str(weights), "weights_sha256": file_sha256(Path(weights)),
                      "normalization": {"mean": list(mean), "std": list(std)},
                      "note": "trained with the authors' code; epochs, seed and preset are not known from the weights"},
            ).write(run_dir)
    for stale in (WEIGHT_FILES["best"], STATE_FILE):  # from a run this one replaced (--force)
        (run_dir / stale).unlink(missing_ok=True)
    return run_dir
