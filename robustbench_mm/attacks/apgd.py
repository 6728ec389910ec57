"""APGD-CE and APGD-T (Croce & Hein, 2020), L-inf, with the active set.

The arithmetic is the reference's (fra31/auto-attack ``apgd-attack.py``, as torchattacks 3.5.1's
``APGD`` and ``APGDT`` transcribe it), operation for operation: the random start drawn on the
CPU generator, the momentum step with a = 0.75, the step-size halving at the checkpoints
(oscillation or no improvement since the last one), the restarts from the best point, the
targeted DLR loss. A test compares the flags with torchattacks' example by example.

What differs is the cost, not the result: the reference attacks every example for every
step and keeps the last iterate that fooled it. Here an example leaves the batch at the first
iterate that fools it (its outcome is settled: robust accuracy counts an example as fooled if
any iterate is). Every quantity APGD keeps is per example (its loss, best point, step size,
checkpoint history) and the loss is summed over the batch, so the others' iterates do not
change. The checkpoints depend only on the iteration number, the same for every example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

MOMENTUM = 0.75  # the reference's a for every step after the first
INITIAL_STEP_FACTOR = 2.0  # step size starts at 2 * eps


@dataclass(frozen=True)
class ApgdSettings:
    """One APGD stage: loss "ce" (APGD-CE) or "dlr-targeted" (APGD-T, over `targets` target classes)."""

    loss: str
    eps: float
    steps: int
    restarts: int
    rho: float
    seed: int
    targets: int = 0  # APGD-T: the classes ranked 2nd .. (targets + 1)th by the clean logits


@dataclass
class ApgdOutcome:
    fooled: torch.Tensor  # bool (n,)
    adversarial: torch.Tensor  # the first iterate that fooled each fooled example; x elsewhere
    example_steps: int  # forward+backward passes, summed over examples
    best_loss: torch.Tensor | None = None  # single_run: the highest loss reached, NaN for examples that left


def checkpoint_windows(steps: int) -> list[tuple[int, int]]:
    """(i, k): after iteration i (0-based) the step size may be halved, judging the last k steps.

    k starts at 0.22 * steps and falls by 0.03 * steps after each checkpoint down to 0.06 * steps
    (each at least 1); the next checkpoint is k iterations later.
    """
    k, k_min, decrease = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    windows, since_last = [], 0
    for i in range(steps):
        since_last += 1
        if since_last == k:
            windows.append((i, k))
            since_last, k = 0, max(k - decrease, k_min)
    return windows


def oscillating(loss_steps: torch.Tensor, i: int, k: int, rho: float) -> torch.Tensor:
    """bool per example: the loss rose in at most rho * k of the last k steps.

    As in the reference, row i - k (read as Python indexes: the last row, still zero, at the
    first checkpoint) is the first step's predecessor.
    """
    now = torch.arange(i - k + 1, i + 1, device=loss_steps.device)  # i >= k - 1 at every checkpoint
    before = (now - 1) % len(loss_steps)
    rises = (loss_steps[now] > loss_steps[before]).sum(0)
    return rises <= k * rho


def cross_entropy_per_example(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def targeted_dlr(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), the reference's targeted DLR loss."""
    ranked, _ = logits.sort(dim=1)
    rows = torch.arange(len(labels), device=logits.device)
    return -(logits[rows, labels] - logits[rows, target]) / (
        ranked[:, -1] - 0.5 * ranked[:, -3] - 0.5 * ranked[:, -4] + 1e-12)


PerExampleLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def loss_and_gradient(model: torch.nn.Module, x_adv: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
                      loss_of: PerExampleLoss) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        loss = loss_of(logits, labels, target)
        (grad,) = torch.autograd.grad(loss.sum(), x_adv)
    return loss.detach(), grad.detach(), logits.detach()


def single_run(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, target: torch.Tensor, eps: float,
               steps: int, rho: float, loss_of: PerExampleLoss, active_set: bool = True) -> ApgdOutcome:
    """One APGD run from a random start in the eps-ball; fooled examples leave when `active_set`."""
    n, device = len(labels), x.device
    t = 2 * torch.rand(x.shape).to(device) - 1  # the CPU generator, as the reference draws it
    x_adv = x + eps * torch.ones([n, 1, 1, 1], device=device) * t / \
        t.reshape([n, -1]).abs().max(dim=1, keepdim=True)[0].reshape([-1, 1, 1, 1])
    x_adv = x_adv.clamp(0.0, 1.0)
    found = x.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=device)
    windows = dict(checkpoint_windows(steps))

    loss, grad, logits = loss_and_gradient(model, x_adv, labels, target, loss_of)
    spent = n
    index = torch.arange(n, device=device)  # which of the n examples each row of the state is
    state = {
        "x": x, "labels": labels, "target": target, "x_adv": x_adv, "x_adv_old": x_adv.clone(), "grad": grad,
        "x_best": x_adv.clone(), "grad_best": grad.clone(), "loss_best": loss.clone(),
        "loss_best_last_check": loss.clone(), "reduced_last_check": torch.ones(n, dtype=torch.bool, device=device),
        "step_size": eps * torch.ones([n, 1, 1, 1], device=device) * INITIAL_STEP_FACTOR,
        "loss_steps": torch.zeros([steps, n], device=device),
    }

    def record(wrong: torch.Tensor) -> bool:
        """The examples this iterate fooled for the first time: the iterate is their adversarial image.

        Returns whether any example is fooled, the one thing the host learns per step.
        """
        if not bool(wrong.any()):
            return False
        new = wrong & ~fooled[index]
        found[index[new]] = state["x_adv"][new]
        fooled[index[new]] = True
        return True

    def leave(wrong: torch.Tensor) -> None:
        nonlocal index, state
        keep = ~wrong
        index = index[keep]
        state = {name: value[:, keep] if name == "loss_steps" else value[keep] for name, value in state.items()}

    wrong = logits.argmax(1) != labels
    if record(wrong) and active_set:
        leave(wrong)
    for i in range(steps):
        if len(index) == 0:
            break
        s = state
        with torch.no_grad():
            grad2 = s["x_adv"] - s["x_adv_old"]
            s["x_adv_old"] = s["x_adv"].clone()
            a = MOMENTUM if i > 0 else 1.0
            x_adv, x0 = s["x_adv"], s["x"]
            x_adv_1 = x_adv + s["step_size"] * torch.sign(s["grad"])
            x_adv_1 = torch.clamp(torch.min(torch.max(x_adv_1, x0 - eps), x0 + eps), 0.0, 1.0)
            x_adv_1 = torch.clamp(torch.min(torch.max(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a), x0 - eps),
                                            x0 + eps), 0.0, 1.0)
            s["x_adv"] = x_adv_1
        loss, grad, logits = loss_and_gradient(model, s["x_adv"], s["labels"], s["target"], loss_of)
        spent += len(index)
        s["grad"] = grad
        wrong = logits.argmax(1) != s["labels"]
        any_wrong = record(wrong)  # before a checkpoint may move the iterate back to the best point
        with torch.no_grad():
            s["loss_steps"][i] = loss
            better = loss > s["loss_best"]
            s["x_best"] = torch.where(better[:, None, None, None], s["x_adv"], s["x_best"])
            s["grad_best"] = torch.where(better[:, None, None, None], grad, s["grad_best"])
            s["loss_best"] = torch.where(better, loss, s["loss_best"])
            if i in windows:
                halve = oscillating(s["loss_steps"], i, windows[i], rho) | \
                    (~s["reduced_last_check"] & (s["loss_best_last_check"] >= s["loss_best"]))
                s["reduced_last_check"] = halve
                s["loss_best_last_check"] = s["loss_best"].clone()
                column = halve[:, None, None, None]
                s["step_size"] = torch.where(column, s["step_size"] / 2.0, s["step_size"])
                s["x_adv"] = torch.where(column, s["x_best"], s["x_adv"])
                s["grad"] = torch.where(column, s["grad_best"], s["grad"])
        if any_wrong and active_set:
            leave(wrong)
    best_loss = torch.full((n,), float("nan"), device=device)
    best_loss[index] = state["loss_best"]
    return ApgdOutcome(fooled, found, spent, best_loss)


def apgd(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, settings: ApgdSettings,
         active_set: bool = True) -> ApgdOutcome:
    """APGD-CE or APGD-T on images `x` ([0, 1] float): the reference's ``perturb``.

    The generator is seeded once; every run (restart, and target class for APGD-T) attacks
    the examples no earlier run fooled. A clean error is counted as fooled by x itself.
    """
    with torch.no_grad():
        robust = model(x).argmax(1) == labels
    adversarial = x.clone()
    torch.manual_seed(settings.seed)  # every device's generator, as the reference seeds them
    if settings.loss == "ce":
        runs = [(cross_entropy_per_example, None)] * settings.restarts
    elif settings.loss == "dlr-targeted":
        runs = [(targeted_dlr, rank) for rank in range(2, settings.targets + 2) for _ in range(settings.restarts)]
    else:
        raise ValueError(f"unknown APGD loss {settings.loss!r}; valid: 'ce', 'dlr-targeted'")
    spent = 0
    for loss_of, rank in runs:
        index = robust.nonzero().flatten()
        if len(index) == 0:
            break
        x_run, labels_run = x[index], labels[index]
        if rank is None:
            target = labels_run
        else:
            with torch.no_grad():
                target = model(x_run).sort(dim=1)[1][:, -rank]
        run = single_run(model, x_run, labels_run, target, settings.eps, settings.steps, settings.rho, loss_of,
                         active_set)
        adversarial[index[run.fooled]] = run.adversarial[run.fooled]
        robust[index[run.fooled]] = False
        spent += run.example_steps
    return ApgdOutcome(~robust, adversarial, spent)
