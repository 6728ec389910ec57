"""Device choice, seeding and provenance (library versions, git commit) for saved results."""

from __future__ import annotations

import platform
import random
import os
import subprocess
from pathlib import Path

import numpy as np
import torch

from robustbench_mm.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was given but no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    return torch.device(name)


# Forward passes on the CPU fall out of cache above a few hundred 32x32 images: the 357 digits test images
# through the demo's width-16 PreActResNet18 took 0.48 s in one batch and 0.09 s in batches of 128 or 64
# (idle 2-core AMD EPYC, torch 2.14.1). Where the batch size only sets speed (deform, corrupt, calibrate:
# per-image outcomes), the CPU evaluates at most this many images at a time.
CPU_EVALUATION_BATCH = 128


def evaluation_batch(batch_size: int, device: torch.device) -> int:
    """The images per forward pass of an evaluation whose outcomes do not depend on the batch size."""
    return min(batch_size, CPU_EVALUATION_BATCH) if device.type == "cpu" else batch_size


GPU_SETTINGS_ENV = "MM_ROBUST_GPU_SETTINGS"


def gpu_settings(device: torch.device) -> bool:
    """Whether the GPU configuration applies on `device`: bf16 autocast in training (with `precision` bf16) and
    channels-last memory (with `channels_last`). Always on CUDA; on another device only when
    MM_ROBUST_GPU_SETTINGS=1, which is how the tests run exactly the GPU code paths on the CPU."""
    return device.type == "cuda" or os.environ.get(GPU_SETTINGS_ENV) == "1"


def memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last where the GPU configuration applies (faster convolutions there), else contiguous."""
    return torch.channels_last if gpu_settings(device) else torch.contiguous_format


def seed_everything(seed: int) -> None:
    """Seed the global generators too, for any library code that draws from them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def git_commit() -> str:
    """The commit of the mm-robust checkout, with '+dirty' when it has local changes; 'unknown' outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    from robustbench_mm import __version__

    info = {
        "mm_robust": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda or "none",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def provenance() -> dict[str, object]:
    return {"versions": versions(), "git_commit": git_commit()}
