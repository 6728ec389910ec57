"""What a model must do before it is attacked: eval mode, (batch, classes) logits, the same output twice.

A model that outputs probabilities saturates: the gradient of the loss through a softmax of
probabilities is tiny, so gradient attacks stall and robustness looks better than it is. A model
whose output changes between identical passes (dropout left on, random transforms) hides its
gradients the same way. Both are flagged, not refused; a wrong output shape is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from robustbench_mm.attacks import check_deterministic
from robustbench_mm.errors import UsageError

PROBABILITY_TOLERANCE = 1e-3  # rows of non-negative outputs summing to 1 within this are probabilities


@dataclass(frozen=True)
class ContractReport:
    outputs: str  # "logits" or "probabilities"
    deterministic: bool
    max_difference: float | None  # largest output difference between two identical passes (None: not finite)
    flags: tuple[str, ...]  # what makes gradient attacks on this model misleading; () when none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def looks_like_probabilities(outputs: torch.Tensor) -> bool:
    """Every entry >= 0 and every row summing to 1: softmax outputs, not logits."""
    return bool((outputs >= 0).all()) and bool(((outputs.sum(dim=1) - 1).abs() <= PROBABILITY_TOLERANCE).all())


@torch.no_grad()
def check_model_contract(model: torch.nn.Module, images: torch.Tensor, num_classes: int, name: str) -> ContractReport:
    """Put `model` in eval mode and check it on `images` ([0, 1], a small batch); a wrong shape is a UsageError."""
    model.eval()
    first = model(images)
    if not isinstance(first, torch.Tensor):
        raise UsageError(f"model {name!r} returned a {type(first).__name__}, not a tensor of logits")
    expected = (images.shape[0], num_classes)
    if tuple(first.shape) != expected:
        raise UsageError(f"model {name!r} outputs shape {tuple(first.shape)} for {images.shape[0]} images; "
                         f"expected (batch, classes) = {expected} for this dataset")
    if not first.is_floating_point() or not bool(torch.isfinite(first).all()):
        raise UsageError(f"model {name!r} outputs non-finite or non-float values on clean test images")
    determinism = check_deterministic(first.float().cpu(), model(images).float().cpu())
    probabilities = looks_like_probabilities(first.float())
    flags = (("outputs-probabilities",) if probabilities else ()) + (() if determinism.passed else ("not-deterministic",))
    return ContractReport("probabilities" if probabilities else "logits", determinism.passed,
                          None if determinism.value is None else float(determinism.value), flags)
