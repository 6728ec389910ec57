"""Checkpoint folders: safetensors weights, a JSON meta file and one-file resumable state.

Layout of ``checkpoints/<run>/``:

- ``last.safetensors`` / ``best.safetensors``: model weights (best = highest test accuracy seen
  during training, which is what the paper reports; last = the end of training);
- ``meta.json``: config, dataset, method, alpha, epoch, metrics history, seed, versions, commit;
- ``state.safetensors``: everything ``--resume`` needs (weights, optimizer buffers, RNG states,
  history) in *one* file, so a single atomic rename makes the resume point consistent.

Nothing is ever unpickled: safetensors holds raw tensors and JSON holds the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_bytes, save_file

from robustbench_mm.common.storage import atomic_write, irregular_kind
from robustbench_mm.config import TrainConfig
from robustbench_mm.errors import UsageError
from robustbench_mm.models.factory import model_from_config
from robustbench_mm.runs.meta import META_FILE, read_meta

STATE_FILE = "state.safetensors"
WEIGHT_FILES = {"last": "last.safetensors", "best": "best.safetensors"}
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")


def _cpu_contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = _cpu_contiguous(tensors)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file; a truncated or tampered file is a clear error, never garbage."""
    tensors, metadata, _ = load_tensors_with_digest(path)
    return tensors, metadata


def load_tensors_with_digest(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """(tensors, metadata, SHA-256 of the file's bytes): the file is read once, so the digest is of
    exactly the bytes the tensors came from, even if the file is replaced while we read it."""
    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise UsageError(f"refusing to load {str(path)!r}: pickle-based checkpoints can run code when loaded; "
                         "mm-robust only reads .safetensors")
    if irregular_kind(path) is not None:
        raise UsageError(f"checkpoint {str(path)!r} is not a regular file ({irregular_kind(path)}); give a .safetensors file")
    if not path.is_file():
        raise UsageError(f"missing checkpoint file {str(path)!r}")
    try:
        data = path.read_bytes()
        tensors = load_bytes(data)
        metadata = _safetensors_metadata(data)
    except (SafetensorError, OSError, ValueError, RuntimeError, struct.error) as exc:
        raise UsageError(f"corrupted checkpoint {str(path)!r} (truncated or tampered: {exc})") from None
    return tensors, metadata, hashlib.sha256(data).hexdigest()


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's JSON header (8-byte little-endian length, then the header)."""
    (length,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8:8 + length]).get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise ValueError("__metadata__ is not an object")
    return metadata


def safetensors_damage(path: Path) -> str | None:
    """Why the safetensors file at `path` cannot be whole (its header unreadable, or its tensors' data running past
    the end of the file, as in a truncated copy), else None. Reads the header only."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            (length,) = struct.unpack("<Q", handle.read(8))
            if 8 + length > size:  # a garbled length must not be read (it can ask for exabytes)
                return f"it is {size} bytes but its header claims {length} (truncated or not a safetensors file)"
            header = json.loads(handle.read(length))
        end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
    except (OSError, ValueError, struct.error, KeyError, TypeError, IndexError) as exc:
        return f"its header is unreadable ({type(exc).__name__})"
    if 8 + length + end > size:
        return f"it is {size} bytes but its header needs {8 + length + end} (truncated)"
    return None


def save_weights(path: Path, model: torch.nn.Module, epoch: int | None = None) -> None:
    """The weights, with the epoch they are of in the file's metadata: a run still training replaces them
    before its meta.json, and a reader in between must not label them with meta.json's older epoch."""
    save_tensors(path, model.state_dict(), None if epoch is None else {"epoch": str(epoch)})


def stored_metadata(path: Path) -> dict[str, str] | None:
    """The metadata of a safetensors file, or None when it is absent or unreadable (then it is redone)."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return None


@dataclass
class LoadedModel:
    """A trained model ready for evaluation, with the settings it was trained with."""

    model: torch.nn.Module  # a PreActResNet, or a ThermometerPreActResNet for a thermometer run
    config: TrainConfig
    meta: dict[str, Any]
    run_dir: Path
    which: str  # "last" or "best"
    weights_sha256: str  # of the weights file loaded: results are tied to these exact bytes

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def epoch(self) -> int:
        return int(self.meta["checkpoints"][self.which]["epoch"])


def load_model(run_dir: str | Path, which: str = "last", device: torch.device | str = "cpu") -> LoadedModel:
    """Build the architecture from meta.json and load the `which` weights, strictly."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"checkpoint folder {str(run_dir)!r} does not exist")
    meta = read_meta(run_dir)
    if which not in WEIGHT_FILES:
        raise UsageError(f"unknown checkpoint kind {which!r}; valid: {', '.join(WEIGHT_FILES)}")
    if which not in meta["checkpoints"]:
        raise UsageError(f"{str(run_dir)!r} has no {which!r} checkpoint yet; valid here: {', '.join(meta['checkpoints'])}")
    config = TrainConfig.from_dict(meta["config"])
    model = model_from_config(config)
    meta, tensors, digest = _consistent_read(run_dir, which, meta)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        detail = (missing and f"missing {missing[:3]}") or (unexpected and f"unexpected {unexpected[:3]}") or f"wrong shape {wrong[:3]}"
        raise UsageError(f"checkpoint {str(run_dir / WEIGHT_FILES[which])!r} does not match its meta.json architecture: {detail}")
    if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
        raise UsageError(f"checkpoint {str(run_dir / WEIGHT_FILES[which])!r} holds non-finite weights")
    model.load_state_dict(tensors)
    model.to(device).eval()
    return LoadedModel(model, config, meta, run_dir, which, digest)


def _consistent_read(run_dir: Path, which: str, meta: dict[str, Any],
                     tries: int = 20) -> tuple[dict[str, Any], dict[str, torch.Tensor], str]:
    """(meta.json, weights, their digest) of one epoch. A run still training writes its weights, then its
    meta.json: weights whose metadata names another epoch than meta.json are read again after it."""
    for attempt in range(tries):
        tensors, metadata, digest = load_tensors_with_digest(run_dir / WEIGHT_FILES[which])
        if metadata.get("epoch") in (None, str(meta["checkpoints"][which]["epoch"])):
            return meta, tensors, digest
        time.sleep(0.1)
        meta = read_meta(run_dir)
    raise UsageError(f"{str(run_dir / WEIGHT_FILES[which])!r} holds the weights of epoch {metadata['epoch']} but "
                     f"meta.json says epoch {meta['checkpoints'][which]['epoch']} (is it still being written?); "
                     "rerun when its training has saved the epoch")


def find_runs(root: str | Path) -> list[Path]:
    """Run folders (those with a meta.json) under `root`, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / META_FILE).is_file())


def resolve_runs(root: str | Path, names: list[str] | None) -> list[Path]:
    """The runs named with --checkpoint (a folder path or a name under `root`), else all of them."""
    root = Path(root)
    if not names:
        runs = find_runs(root)
        if not runs:
            raise UsageError(f"no trained models found in {str(root)!r}; run `mm-robust train` first or pass --checkpoint")
        return runs
    runs = []
    for name in names:
        candidate = Path(name)
        if candidate.suffix in PICKLE_SUFFIXES or candidate.suffix == ".safetensors":
            load_tensors(candidate)  # refuses pickles with a clear message before anything else
            raise UsageError(f"--checkpoint takes a run folder (with meta.json), not the file {name!r}")
        if not candidate.is_dir():
            candidate = root / name
        if not (candidate / META_FILE).is_file():
            valid = ", ".join(p.name for p in find_runs(root)) or "none"
            raise UsageError(f"checkpoint {name!r} not found (no meta.json); runs in {str(root)!r}: {valid}")
        if any(candidate.resolve() == run.resolve() for run in runs):
            raise UsageError(f"--checkpoint {name!r} names a run already given; each run is evaluated once")
        runs.append(candidate)
    return runs


def state_metadata(payload: dict[str, Any]) -> dict[str, str]:
    return {"state": json.dumps(payload)}


def parse_state_metadata(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    try:
        payload = json.loads(metadata["state"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise UsageError(f"corrupted training state {str(path)!r}: {exc}") from None
    if not isinstance(payload, dict):
        raise UsageError(f"corrupted training state {str(path)!r}: expected a JSON object")
    return payload
