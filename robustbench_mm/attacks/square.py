"""Square attack (Andriushchenko et al., 2020), L-inf, margin loss, as AutoAttack's "standard" version runs it.

The arithmetic is the reference's (fra31/auto-attack ``square.py``, as torchattacks 3.5.1's
``Square`` transcribes it), draw for draw from the CPU generator: the start is x plus
vertical stripes of +-eps; every iteration draws one square (its side from the schedule
`p_selection`, its place and one sign per channel), shared by every example still standing,
adds +-2 eps on it, projects onto the eps-ball and [0, 1], and keeps the result for the
examples whose margin z_y - max_{k != y} z_k fell. An example is fooled once its margin is <= 0.

The reference already queries only the examples not yet fooled (the active set): here the
state of the standing examples is kept packed, so a query copies nothing while no example
falls, and only the square's window is touched (outside it the point is already in the ball).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Rescaled iteration (it / n_queries * 10000) after which p halves again: p_init, p_init / 2, ..., / 512.
P_SCHEDULE_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@dataclass(frozen=True)
class SquareSettings:
    eps: float
    queries: int
    p_init: float
    restarts: int
    seed: int


@dataclass
class SquareOutcome:
    fooled: torch.Tensor  # bool (n,)
    adversarial: torch.Tensor  # the first point with margin <= 0 for fooled examples; x elsewhere
    example_queries: int  # forward passes, summed over examples (the start counts one per example)


def p_selection(iteration: int, queries: int, p_init: float) -> float:
    """The share of the image a square covers at `iteration` (0-based), the schedule rescaled to `queries`."""
    rescaled = int(iteration / queries * 10000)
    return p_init / 2 ** sum(rescaled > bound for bound in P_SCHEDULE_BOUNDS)


def square_side(p: float, channels: int, height: int, width: int) -> int:
    """Side of a square covering about p of each channel's pixels, at least 1."""
    return max(round(math.sqrt(p * (channels * height * width) / channels)), 1)


def random_signs(shape: list[int], device: torch.device) -> torch.Tensor:
    """+-1 (0 with probability ~0) from the CPU generator, as the reference draws them."""
    return torch.sign(2 * torch.rand(shape).to(device) - 1)


def random_offset(high: int) -> int:
    """An integer in [0, high) (0 when high is 0) from one CPU draw, as the reference's ``random_int``."""
    return int((high * torch.rand([1])).long())


def margin(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_label - max of the other logits, per example: <= 0 means misclassified."""
    logits = model(x)
    rows = torch.arange(len(labels), device=x.device)
    correct = logits[rows, labels].clone()
    logits[rows, labels] = -float("inf")
    return correct - logits.max(dim=-1)[0]


def single_run(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, settings: SquareSettings) -> SquareOutcome:
    """One run of `settings.queries` iterations from a random stripes start."""
    n, (channels, height, width), eps = len(x), x.shape[1:], settings.eps
    start = torch.clamp(x + eps * random_signs([n, channels, 1, width], x.device), 0.0, 1.0)
    best_margin = margin(model, start, labels)
    spent = n
    fooled = best_margin <= 0.0
    found = torch.where(fooled.view(-1, 1, 1, 1), start, x)
    standing = ~fooled
    index = standing.nonzero().flatten()  # which of the n examples each row of the state is
    x_run, labels_run, x_best, best_margin = x[standing], labels[standing], start[standing], best_margin[standing]
    for iteration in range(settings.queries):
        if len(index) == 0:
            break
        side = square_side(p_selection(iteration, settings.queries, settings.p_init), channels, height, width)
        top, left = random_offset(height - side), random_offset(width - side)
        window = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
        step = 2.0 * eps * random_signs([channels, 1, 1], x.device)
        x_new = x_best.clone()
        x_new[window] = torch.clamp(torch.min(torch.max(x_best[window] + step, x_run[window] - eps),
                                              x_run[window] + eps), 0.0, 1.0)
        new_margin = margin(model, x_new, labels_run)
        spent += len(index)
        # With the margin as loss the reference's loss and margin records coincide; a non-positive
        # margin always improves on a standing example's positive one.
        improved = new_margin < best_margin
        best_margin = torch.where(improved, new_margin, best_margin)
        x_best = torch.where(improved.view(-1, 1, 1, 1), x_new, x_best)
        now_fooled = new_margin <= 0.0
        if bool(now_fooled.any()):
            fooled[index[now_fooled]] = True
            found[index[now_fooled]] = x_new[now_fooled]
            keep = ~now_fooled
            index, x_run, labels_run, x_best, best_margin = (
                index[keep], x_run[keep], labels_run[keep], x_best[keep], best_margin[keep])
    return SquareOutcome(fooled, found, spent)


def square(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, settings: SquareSettings) -> SquareOutcome:
    """Square on images `x` ([0, 1] float): the reference's ``perturb`` (untargeted, margin loss).

    The generator is seeded once; every restart attacks the examples no earlier one fooled.
    A clean error is counted as fooled by x itself.
    """
    with torch.no_grad():
        robust = model(x).argmax(1) == labels
        adversarial = x.clone()
        torch.manual_seed(settings.seed)  # every device's generator, as the reference seeds them
        spent = 0
        for _ in range(settings.restarts):
            index = robust.nonzero().flatten()
            if len(index) == 0:
                break
            run = single_run(model, x[index], labels[index], settings)
            adversarial[index[run.fooled]] = run.adversarial[run.fooled]
            robust[index[run.fooled]] = False
            spent += run.example_queries
    return SquareOutcome(~robust, adversarial, spent)
