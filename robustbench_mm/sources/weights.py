"""Reading weights from files we did not write, without ever running code from them.

``.safetensors`` holds raw tensors only. Anything else goes through
``torch.load(weights_only=True)``, whose restricted unpickler builds tensors, containers and
numbers and refuses every other global *before* calling it: a pickle that needs code execution
is refused and its payload never runs.
"""

from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from robustbench_mm.common.storage import irregular_kind
from robustbench_mm.errors import UsageError

SAFETENSORS_SUFFIX = ".safetensors"
# Containers a training script commonly wraps its state dict in (the authors' code: {"state_dict": ...}).
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net")
DATA_PARALLEL_PREFIX = "module."
LISTED = 4  # keys named per kind in a mismatch message


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """A digest of tensor names, dtypes, shapes and values, independent of how they were stored."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _torch_load_weights_only(path: Path):
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise, the refusal below says it all
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0].split(". Please")[0][:160]
        raise UsageError(
            f"refusing to load {str(path)!r}: it is a pickle that needs code execution to load ({blocked}); "
            "mm-robust reads only tensors. In your own trusted environment save just the weights, e.g. "
            "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot read weights {str(path)!r} (truncated or not a PyTorch file: {first})") from None


def _as_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded object: a state dict, or one nested under a usual key."""
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise UsageError(f"weights file {str(path)!r} holds no state dict (a mapping of names to tensors)")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = sorted(str(k) for k in obj if not isinstance(obj[k], torch.Tensor))
    if others or not all(isinstance(k, str) for k in obj):
        raise UsageError(f"weights file {str(path)!r} is not a flat state dict: non-tensor entries {others[:LISTED]}")
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in tensors):  # saved from nn.DataParallel
        tensors = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in tensors.items()}
    return tensors


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a PyTorch file read with weights_only=True."""
    path = Path(path)
    if irregular_kind(path) is not None:
        raise UsageError(f"weights file {str(path)!r} is not a regular file ({irregular_kind(path)}); "
                         "give a .safetensors, .pt or .pth file")
    if not path.is_file():
        raise UsageError(f"missing weights file {str(path)!r}")
    if path.suffix == SAFETENSORS_SUFFIX:
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise UsageError(f"corrupted weights file {str(path)!r} (truncated or tampered: {exc})") from None
    return _as_state_dict(_torch_load_weights_only(path), path)


def mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """'' when `given` fits `expected` exactly, else which keys are missing, unexpected or mis-shaped."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shaped = sorted(k for k in set(expected) & set(given) if expected[k].shape != given[k].shape)
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} key(s) {missing[:LISTED]}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s) {unexpected[:LISTED]}")
    if shaped:
        parts.append(f"{len(shaped)} mis-shaped: " + ", ".join(
            f"{k} {tuple(given[k].shape)} where the model has {tuple(expected[k].shape)}" for k in shaped[:LISTED]))
    return "; ".join(parts)


def load_strict(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load `tensors` into `model`, refusing any missing, unexpected or mis-shaped key by name."""
    problem = mismatch(model.state_dict(), tensors)
    if problem:
        raise UsageError(f"weights {source!r} do not fit the model: {problem}")
    if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
        raise UsageError(f"weights {source!r} hold non-finite values")
    model.load_state_dict(tensors)
