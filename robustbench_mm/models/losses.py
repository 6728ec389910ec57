"""The training losses on logits against (possibly mixed) soft targets; attacks use them too."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bce_on_softmax(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The authors' loss: BCELoss(softmax(logits), targets), in fp32 even under autocast.

    BCELoss raises on a NaN probability (on the GPU it is a device-side assert), so NaN becomes
    0.5 first: a diverged step must reach the trainer's once-per-epoch finiteness check instead
    of crashing mid-epoch. For finite logits this changes neither the value nor the gradient.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probabilities = F.softmax(logits.float(), dim=1).nan_to_num(nan=0.5)
        return F.binary_cross_entropy(probabilities, targets.float())


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """lam * CE(y_a) + (1 - lam) * CE(y_b), written as CE against the soft target."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


LOSSES = {"bce": bce_on_softmax, "ce": soft_cross_entropy}
