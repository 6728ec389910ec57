"""FGSM, one eps or a sweep of eps from one gradient, in either protocol."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustbench_mm.attacks.core import Protocol, gradient_size, input_gradient, signed_step


def fgsm(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float,
         protocol: Protocol) -> torch.Tensor:
    """One FGSM step of size eps in `protocol`."""
    grad, _ = input_gradient(model, x, labels, protocol.loss)
    return signed_step(x, grad, protocol.pixel_step(model, eps), protocol.clip).detach()


@dataclass
class FgsmSweep:
    """FGSM at several eps from one gradient: correct[i, n] is example n still right at eps_values[i]."""

    correct: torch.Tensor  # bool (len(eps_values), batch)
    gradient_size: torch.Tensor  # (batch,) see `gradient_size`


def fgsm_sweep(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, eps_values: list[float],
               protocol: Protocol) -> FgsmSweep:
    """FGSM at every eps in `eps_values`: one forward+backward, then one forward per eps."""
    grad, _ = input_gradient(model, x, labels, protocol.loss)
    correct = []
    with torch.no_grad():
        for eps in eps_values:
            adversarial = signed_step(x, grad, protocol.pixel_step(model, eps), protocol.clip)
            correct.append(model(adversarial).argmax(1) == labels)
    return FgsmSweep(torch.stack(correct), gradient_size(grad))
