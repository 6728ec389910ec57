"""FAB-T (Croce & Hein, 2020), targeted, L-inf, as AutoAttack's "standard" version runs it.

The arithmetic is the reference's (fra31/auto-attack ``fab_pt.py`` / ``fab_base.py``, as
torchattacks 3.5.1's ``FAB`` with ``multi_targeted=True`` transcribes it), operation for
operation: per target class, the decision boundary between the label and the target is
linearised at the iterate; the iterate and the clean image are both projected onto that
hyperplane inside [0, 1] (minimal L-inf move, `linf_projection`); the step mixes the two
projections (alpha <= alpha_max, overshoot eta), and an iterate that is misclassified is pulled
back towards the clean image by beta. Restarts after the first start from a random point in
half the ball. A test compares the flags with torchattacks' example by example.

What counts in AutoAttack is not FAB's smallest perturbation but whether it found one inside
the eps-ball: the reference keeps the smallest misclassified iterate and then asks whether its
L-inf distance is <= eps. The distance it keeps only falls, so that question is settled, yes,
at the first misclassified iterate within eps. Here an example leaves the batch then (the
active set). Everything FAB keeps is per example (the linearisation is the gradient of a sum
of per-example margins, the projection works row by row), so the others' iterates do not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

ALPHA_MAX = 0.1  # the largest weight of the clean image's projection in a step
ETA = 1.05  # overshoot past the linearised boundary
BETA = 0.9  # a misclassified iterate moves this fraction of the way back from the clean image
RANDOM_START_SCALE = 0.5  # restarts start at a random point of the ball of radius eps / 2


@dataclass(frozen=True)
class FabSettings:
    """FAB-T: `targets` target classes (ranked 2nd .. (targets + 1)th by the clean logits), each `restarts` times."""

    eps: float
    steps: int
    restarts: int
    targets: int
    seed: int
    alpha_max: float = ALPHA_MAX
    eta: float = ETA
    beta: float = BETA


@dataclass
class FabOutcome:
    fooled: torch.Tensor  # bool (n,)
    adversarial: torch.Tensor  # the first misclassified iterate within eps for fooled examples; x elsewhere
    example_steps: int  # forward+backward passes, summed over examples (each step also costs one forward)


def linf_projection(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d per row: the smallest L-inf move with w . (points + d) = b and points + d in [0, 1].

    Rows (flattened images) are independent. Where the hyperplane cannot be reached inside the
    box, d moves every coordinate to the box side that goes towards it. The method: with radius
    r, coordinate i moves min(r, room_i) towards its side, so w . d falls piecewise linearly in r;
    a bisection over the coordinates sorted by room finds the piece that reaches b.
    """
    w, b = w.clone(), b.clone()
    # Orient the hyperplane so that the points lie on its non-negative side: w . z must fall.
    side = 2 * ((w * points).sum(1) - b >= 0) - 1
    w.mul_(side.unsqueeze(1))
    b.mul_(side)

    up = (w < 0).float()  # 1: the coordinate rises towards 1; 0: it falls towards 0
    to_side = (up - points) * (w != 0).float()  # the move all the way to that side
    room = up - points * (2 * up - 1)  # |to_side| (for w != 0): how far the coordinate can move
    by_room = torch.argsort(room, dim=1)

    needed = b - (w * points).sum(1)  # the change of w . z that reaches the hyperplane (<= 0)
    at_sides = (w * to_side).sum(1)  # the change with every coordinate at its side, the most there is

    # In order of decreasing room: slope[k] is the fall of w . d per unit of radius while the k + 1
    # roomiest coordinates still move; reached[k] what the others, already at their sides, add.
    descending = by_room.flip((1,))
    w_sorted = w.gather(1, descending)
    slope = torch.cumsum(w_sorted.abs(), dim=1)
    reached = torch.cumsum(-w_sorted * to_side.gather(1, descending), dim=1) + at_sides.unsqueeze(1)

    # Inside the smallest room every coordinate moves by the radius: one linear piece.
    within_smallest = needed - (reached[:, -1] - slope[:, -1] * room.gather(1, by_room[:, 0:1]).squeeze(1)) > 0
    bisect = (needed - at_sides > 0) & ~within_smallest  # reachable, beyond the smallest room

    low = torch.zeros(int(bisect.sum()), device=points.device)
    high = torch.full_like(low, w.shape[1] - 1)
    by_room_b, reached_b, slope_b, room_b, needed_b = (
        by_room[bisect], reached[bisect], slope[bisect], room[bisect], needed[bisect])
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        middle = torch.floor((low + high) / 2)
        k = middle.long().unsqueeze(1)
        kth_roomiest = by_room_b.gather(1, by_room_b.size(1) - 1 - k)
        change_at_kth_room = (reached_b.gather(1, k) - slope_b.gather(1, k) * room_b.gather(1, kth_roomiest)).squeeze(1)
        beyond = needed_b - change_at_kth_room > 0  # the radius is below the k-th largest room
        low = torch.where(beyond, middle, low)
        high = torch.where(beyond, high, middle)
    piece = low.long()

    d = to_side
    if within_smallest.any():
        radius = torch.clamp_min((needed[within_smallest] - reached[within_smallest, -1])
                                 / (-slope[within_smallest, -1]), min=0).unsqueeze(-1)
        d[within_smallest] = (2 * up[within_smallest] - 1) * radius
    radius = torch.clamp_min((needed[bisect] - reached[bisect, piece]) / (-slope[bisect, piece]), min=0).unsqueeze(-1)
    d[bisect] = torch.min(radius, d[bisect]) * up[bisect] + torch.max(-radius, d[bisect]) * (1 - up[bisect])
    return d * (w != 0).float()


def margin_and_gradient(model: torch.nn.Module, x_adv: torch.Tensor, labels: torch.Tensor,
                        target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_target - z_label, its gradient) per example: the boundary FAB-T linearises."""
    x_adv = x_adv.clone().requires_grad_(True)
    rows = torch.arange(len(labels), device=x_adv.device)
    with torch.enable_grad():
        logits = model(x_adv)
        margin = -(logits[rows, labels] - logits[rows, target])
        (grad,) = torch.autograd.grad(margin.sum(), x_adv)
    return margin.detach(), grad.detach()


def fab_step(x_adv: torch.Tensor, x: torch.Tensor, margin: torch.Tensor, grad: torch.Tensor,
             settings: FabSettings) -> torch.Tensor:
    """The next iterate: project x_adv and x onto the linearised boundary and mix the two moves."""
    n = len(x)
    w = grad.reshape([n, -1])
    b = -margin + (grad * x_adv).view(n, -1).sum(dim=-1)
    d = linf_projection(torch.cat((x_adv.reshape([n, -1]), x.reshape([n, -1])), 0), torch.cat((w, w), 0),
                        torch.cat((b, b), 0))
    d_adv, d_clean = d[:n].reshape(x.shape), d[n:].reshape(x.shape)
    size = d.abs().max(dim=1, keepdim=True)[0].view(-1, *[1] * (x.dim() - 1))
    size = torch.max(size, 1e-8 * torch.ones(size.shape, device=x.device))
    size_adv, size_clean = size[:n], size[n:]
    # The closer the clean image's projection is, the more of it the step takes (at most alpha_max).
    alpha = torch.min(torch.max(size_adv / (size_adv + size_clean), torch.zeros(size_adv.shape, device=x.device)),
                      settings.alpha_max * torch.ones(size_adv.shape, device=x.device))
    return ((x_adv + settings.eta * d_adv) * (1 - alpha) + (x + d_clean * settings.eta) * alpha).clamp(0.0, 1.0)


def random_start(x: torch.Tensor, eps: float) -> torch.Tensor:
    """A random point at L-inf distance eps / 2 from x, clipped to [0, 1] (drawn on the CPU generator)."""
    n, shape = len(x), [-1, *[1] * (x.dim() - 1)]
    t = 2 * torch.rand(x.shape).to(x.device) - 1
    radius = eps * torch.ones([n], device=x.device).reshape(shape)  # the reference's min(eps, 1e10) at a run's start
    return (x + radius * t / t.reshape([n, -1]).abs().max(dim=1, keepdim=True)[0].reshape(shape)
            * RANDOM_START_SCALE).clamp(0.0, 1.0)


def single_run(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               settings: FabSettings, use_random_start: bool, active_set: bool = True) -> FabOutcome:
    """One FAB-T run towards `target`; an example is fooled by a misclassified iterate within eps."""
    n, device = len(labels), x.device
    x_adv = random_start(x, settings.eps) if use_random_start else x.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=device)
    found = x.clone()
    index = torch.arange(n, device=device)  # which of the n examples each row of the state is
    x_run, labels_run, target_run = x, labels, target
    spent = 0
    for _ in range(settings.steps):
        if len(index) == 0:
            break
        margin, grad = margin_and_gradient(model, x_adv, labels_run, target_run)
        spent += len(index)
        with torch.no_grad():
            x_adv = fab_step(x_adv, x_run, margin, grad, settings)
            wrong = model(x_adv).max(dim=1)[1] != labels_run
            distance = (x_adv - x_run).reshape([len(index), -1]).abs().max(dim=1)[0]
            new = wrong & (distance <= settings.eps) & ~fooled[index]
            found[index[new]] = x_adv[new]
            fooled[index[new]] = True
            # A misclassified iterate moves back towards x: FAB looks for a smaller perturbation.
            x_adv = torch.where(wrong.view(-1, *[1] * (x.dim() - 1)), x_run + (x_adv - x_run) * settings.beta, x_adv)
            if active_set and bool(new.any()):
                keep = ~new
                index, x_adv, x_run, labels_run, target_run = (
                    index[keep], x_adv[keep], x_run[keep], labels_run[keep], target_run[keep])
    return FabOutcome(fooled, found, spent)


def fab(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, settings: FabSettings,
        active_set: bool = True) -> FabOutcome:
    """FAB-T on images `x` ([0, 1] float): the reference's ``perturb`` with ``multi_targeted``.

    The generator is seeded once; every run (each target class, each restart) attacks the
    examples no earlier run fooled. A clean error is counted as fooled by x itself.
    """
    with torch.no_grad():
        robust = model(x).argmax(1) == labels
    adversarial = x.clone()
    torch.manual_seed(settings.seed)  # every device's generator, as the reference seeds them
    spent = 0
    for rank in range(2, settings.targets + 2):
        for restart in range(settings.restarts):
            index = robust.nonzero().flatten()
            if len(index) == 0:
                return FabOutcome(~robust, adversarial, spent)
            x_run, labels_run = x[index], labels[index]
            with torch.no_grad():
                target = model(x_run).sort(dim=-1)[1][:, -rank]
            run = single_run(model, x_run, labels_run, target, settings, use_random_start=restart > 0,
                             active_set=active_set)
            adversarial[index[run.fooled]] = run.adversarial[run.fooled]
            robust[index[run.fooled]] = False
            spent += run.example_steps
    return FabOutcome(~robust, adversarial, spent)
