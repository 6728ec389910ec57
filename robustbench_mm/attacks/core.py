"""What every attack shares: the two protocols (scale, loss, clipping), one input gradient, one signed step.

Two protocols (SPEC §6):

- ``standard``: eps on the [0, 1] pixel scale, cross-entropy, clip to [0, 1]; the same
  arithmetic as ``torchattacks.FGSM``.
- ``paper``: the authors' code perturbed the *normalized* input, x_norm + eps * sign(grad),
  with BCE on softmax against one-hot targets and no clipping. Normalization is the model's
  first layer, so on the pixel scale that is x + eps * std_c * sign(grad_x) (std > 0 keeps
  the sign): about 4x weaker on CIFAR than the standard protocol at the same eps.

FGSM takes the batch-mean loss (exactly torchattacks' arithmetic). Iterative attacks take the
batch *sum*: every example's gradient is then the gradient of its own loss, whatever else is
in the batch, which is what lets fooled examples leave the batch without changing the others
(the sign of a gradient is the same under both; the sum also cannot underflow to zero on a
large batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from robustbench_mm.models.losses import bce_on_softmax

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[], None]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch, exactly as torchattacks' ``nn.CrossEntropyLoss()``."""
    return F.cross_entropy(logits, labels)


def bce_on_softmax_one_hot(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The authors' training loss, against one-hot targets."""
    return bce_on_softmax(logits, F.one_hot(labels, logits.shape[1]).float())


def cross_entropy_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="sum")


def bce_on_softmax_one_hot_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`bce_on_softmax_one_hot` times the batch size: each example's own loss, summed."""
    return bce_on_softmax_one_hot(logits, labels) * logits.shape[0]


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    loss_name: str
    loss: LossFn  # batch mean: FGSM
    summed_loss: LossFn  # batch sum: iterative attacks (per-example gradients independent of the batch)
    eps_on_normalized_input: bool  # then a pixel-scale step is eps * std, per channel
    clip: bool  # clip adversarial images to [0, 1]

    def pixel_step(self, model: torch.nn.Module, eps: float) -> float | torch.Tensor:
        """How far one signed step of size `eps` moves each pixel, on the [0, 1] scale."""
        if not self.eps_on_normalized_input:
            return eps
        std = getattr(model, "std", None)
        if not isinstance(std, torch.Tensor):
            raise TypeError(f"the {self.name!r} protocol needs the model's normalization buffer `std`")
        return eps * std


PROTOCOLS = {
    "standard": Protocol(
        "standard", "matches torchattacks.FGSM (eps on [0,1], CE, clip)", "cross-entropy", cross_entropy,
        cross_entropy_sum, eps_on_normalized_input=False, clip=True),
    "paper": Protocol(
        "paper", "the authors' convention: eps on the normalized input (pixel step eps*std per channel), "
                 "BCE on softmax against one-hot targets, no clipping", "bce-on-softmax", bce_on_softmax_one_hot,
        bce_on_softmax_one_hot_sum, eps_on_normalized_input=True, clip=False),
}


NO_PIXEL_STD = "the model has no pixel-scale normalization `std` (an input encoding comes first)"


def protocol_applies(protocol: Protocol, model: torch.nn.Module) -> bool:
    """False for a protocol that measures eps on the normalized input (`paper`) on a model without a
    pixel-scale `std` buffer (e.g. thermometer encoding, whose first layer is a code, not a normalization)."""
    return not protocol.eps_on_normalized_input or isinstance(getattr(model, "std", None), torch.Tensor)


def input_gradient(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor,
                   loss: LossFn) -> tuple[torch.Tensor, torch.Tensor]:
    """(d loss / d x, the logits at x); only the input gradient is computed, not the weights'."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(loss(logits, labels), x)
    return grad, logits.detach()


def signed_step(x: torch.Tensor, grad: torch.Tensor, step: float | torch.Tensor, clip: bool) -> torch.Tensor:
    """x + step * sign(grad), clipped to [0, 1] when asked (same operation order as torchattacks)."""
    moved = x + step * grad.sign()
    return torch.clamp(moved, min=0, max=1) if clip else moved


def gradient_size(grad: torch.Tensor) -> torch.Tensor:
    """max |grad| per example: 0 when the gradient vanished, NaN/inf when any entry is non-finite."""
    return grad.flatten(1).abs().amax(dim=1)


def percent(mask: torch.Tensor) -> float:
    """Share of True in `mask`, in %, computed as 100 * (count / n) in double precision everywhere,
    so equal counts always give equal numbers."""
    return 100.0 * mask.double().mean().item() if mask.numel() else 0.0
