"""Models trained elsewhere, from the command line (`--model package.module:factory --weights FILE`)
or from Python (`robustbench_mm.evaluate`): built, loaded, checked and described before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_mm.common.storage import file_sha256
from robustbench_mm.errors import UsageError
from robustbench_mm.sources.factory import build_from_factory, split_spec
from robustbench_mm.sources.loading import (
    ModelSource, Normalization, check_name, check_no_collision, check_not_a_run, external_source,
    parse_normalization)
from robustbench_mm.sources.weights import load_strict, read_state_dict, state_dict_sha256


PAPER_PROTOCOL = "paper"


def has_normalization_buffer(model: nn.Module) -> bool:
    """The paper's FGSM protocol measures eps on the normalized input, so it needs the model's `std`."""
    return isinstance(getattr(model, "std", None), torch.Tensor)


def protocols_for(source: ModelSource, requested: tuple[str, ...] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """The FGSM protocols to run: the default less `paper` where the model has no normalization to measure it on."""
    if has_normalization_buffer(source.model):
        return requested or default
    if requested and PAPER_PROTOCOL in requested:
        raise UsageError(f"the paper protocol measures eps on the normalized input, but model {source.name!r} has no "
                         "normalization: pass --normalization mean,std (or normalization=(mean, std)) or "
                         "--protocol standard")
    return requested or tuple(p for p in default if p != PAPER_PROTOCOL)


def source_from_factory(spec: str, weights: str | None, dataset: str | None, name: str | None,
                        normalization: Any, data_dir: str | None, out_root: str | Path,
                        checkpoints_root: str | Path | None, force: bool) -> ModelSource:
    """`--model` and its companions as a ModelSource; every mistake is a UsageError before anything is written."""
    if dataset is None:
        raise UsageError("--model needs --dataset: the test set to evaluate on (cifar10, cifar100 or digits)")
    if not weights:
        raise UsageError("--model needs --weights FILE (.safetensors, or .pt/.pth read with weights_only=True)")
    parsed = parse_normalization(normalization)
    name = name or split_spec(spec)[1].split(".")[-1]
    check_name(name)
    check_not_a_run(name, None if checkpoints_root is None else Path(checkpoints_root), force)
    model = build_from_factory(spec)
    load_strict(model, read_state_dict(weights), weights)
    source = external_source(model, name, dataset, file_sha256(Path(weights)), parsed, factory=spec,
                             weights_file=str(weights), data_dir=data_dir or "data")
    check_no_collision(name, Path(out_root), source.summary, force)
    return source


def source_from_module(model: nn.Module, dataset: str, name: str | None, normalization: Normalization | Any,
                       data_dir: str, download: bool, out_root: str | Path, checkpoints_root: str | Path | None,
                       force: bool) -> ModelSource:
    """A model handed over in Python; its identity is a digest of its state dict."""
    if not isinstance(model, nn.Module):
        raise UsageError(f"evaluate() takes a torch.nn.Module, got {type(model).__name__}")
    digest = state_dict_sha256(model.state_dict())
    name = name or f"{type(model).__name__}-{digest[:8]}"
    check_name(name)
    check_not_a_run(name, None if checkpoints_root is None else Path(checkpoints_root), force)
    source = external_source(model, name, dataset, digest, parse_normalization(normalization),
                             data_dir=data_dir, download=download)
    check_no_collision(name, Path(out_root), source.summary, force)
    return source
