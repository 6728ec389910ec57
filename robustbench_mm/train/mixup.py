"""Input and manifold mixup: pure functions for lambda, mixing points and soft targets (the losses: models/losses.py)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from robustbench_mm.models.preact import MixSpec

# Eligible mixing points (0 = input, k = output of stage k).
MIX_POINTS = {
    "baseline": (),
    "input": (0,),
    "manifold": {"paper": (0, 1, 2), "all": (0, 1, 2, 3)},
    "adversarial": (),  # PGD adversarial training (train/adversarial.py) mixes nothing
    "thermometer": (),  # thermometer encoding trains like the baseline
}


def eligible_mix_points(method: str, mix_layers: str = "paper") -> tuple[int, ...]:
    points = MIX_POINTS[method]
    return points[mix_layers] if isinstance(points, dict) else points


def sample_mix(
    rng: np.random.Generator, alpha: float, points: Sequence[int], batch_size: int, device: torch.device,
    perm_generator: torch.Generator,
) -> MixSpec | None:
    """One lambda ~ Beta(alpha, alpha) and one mixing point per mini-batch; partner = a permutation.

    Lambda and the point are drawn on the host (they steer Python control flow), the
    permutation on the data's device, so nothing here waits for the GPU.
    """
    if not points:
        return None
    lam = float(rng.beta(alpha, alpha))
    layer = int(points[rng.integers(len(points))])
    perm = torch.randperm(batch_size, device=device, generator=perm_generator)
    return MixSpec(layer=layer, lam=lam, perm=perm)


def soft_targets(labels: torch.Tensor, num_classes: int, mix: MixSpec | None) -> torch.Tensor:
    """One-hot targets, mixed with the same lambda and partner as the inputs."""
    one_hot = F.one_hot(labels, num_classes).float()
    if mix is None:
        return one_hot
    return mix.lam * one_hot + (1.0 - mix.lam) * one_hot[mix.perm]
