"""AutoAttack, "standard" L-inf (Croce & Hein, 2020), at the reference settings.

The four components are configured one by one (`REFERENCE`, pinned by a test) and run in the
reference order, each only on the examples every earlier stage failed to fool; torchattacks
3.5.1's own ``AutoAttack`` class is not the reference (APGD, APGD-T and FAB at 10 steps instead
of 100, n_classes - 1 targets instead of 9, a seed from the clock). All four components are our
own, each the reference arithmetic with the active set inside the stage, and each gives the same
per-example flags as its torchattacks counterpart from the same seed (tested; torchattacks is
only the tests' and benchmarks' reference, not a dependency):

- APGD-CE and APGD-T (`apgd`): an example leaves at the first iterate that fools it;
- FAB-T (`fab`): an example leaves at the first misclassified iterate inside the eps-ball;
- Square (`square`): queries only the examples not yet fooled, as the reference does.

`AutoAttackFlags.example_steps` counts forward+backward passes for the white-box stages and
queries (forward passes) for Square, summed over examples. A clean error counts as not robust.
Every stage's output is checked the same way before an example counts as fooled: misclassified,
inside the eps-ball (up to float rounding) and inside [0, 1].

The runner works on an explicit half-open range of test indices [start, stop), split into
chunks aligned to absolute multiples of `chunk_size`; every stage reseeds torch from `seed` at
the start of every chunk (as the reference's components do on every call). A chunk's result
therefore depends only on the chunk, so shards over ranges whose ends are multiples of
`chunk_size` merge into exactly the flags one run over the whole range gives, and a killed run
that kept the flags of its finished chunks resumes with the same result.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from robustbench_mm.attacks.apgd import ApgdSettings, apgd
from robustbench_mm.attacks.fab import FabSettings, fab
from robustbench_mm.attacks.pgd import unit_images
from robustbench_mm.attacks.square import SquareSettings, square

STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
STAGE_LABELS = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square"}
WHITE_BOX_STAGES = ("apgd-ce", "apgd-t", "fab-t")
BALL_TOLERANCE = 1e-5  # float32 rounding of x + eps; the reference accepts the same order of slack


@dataclass(frozen=True)
class AutoAttackSettings:
    """Every knob of the "standard" version; the defaults are the reference values (SPEC §10)."""

    norm: str = "Linf"
    apgd_ce_steps: int = 100
    apgd_ce_restarts: int = 1
    apgd_rho: float = 0.75
    apgd_t_steps: int = 100
    apgd_t_restarts: int = 1
    apgd_t_targets: int = 9
    fab_t_steps: int = 100
    fab_t_restarts: int = 1
    fab_t_targets: int = 9
    square_queries: int = 5000
    square_p_init: float = 0.8
    square_restarts: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


REFERENCE = AutoAttackSettings()
# A budget small enough for the 2-core smoke demo, same stages in the same order: its numbers are an
# upper bound on what the reference settings give, and every table that shows them says so.
# Measured on the digits baseline (357 images, 2 loaded cores): with 20 steps and 300 queries AutoAttack
# took 515 of the attack stage's 882 s (APGD-CE alone 297 s: torchattacks' APGD, which this package then used,
# attacks every example for every step), so the demo budget is 10 steps and 100 queries.
SMOKE = AutoAttackSettings(apgd_ce_steps=10, apgd_t_steps=10, apgd_t_targets=3, fab_t_steps=10, fab_t_targets=3,
                           square_queries=100)
BUDGETS = {"standard": REFERENCE, "smoke": SMOKE}


def eps_name(eps: float) -> str:
    """'8_255' for eps = 8/255 (a whole number of grey levels), else '0.03': for file names and labels."""
    levels = eps * 255
    return f"{round(levels)}_255" if abs(levels - round(levels)) < 1e-9 else f"{eps:g}"


def eps_text(eps: float) -> str:
    return eps_name(eps).replace("_", "/")


def build_stages(model: torch.nn.Module, eps: float, num_classes: int, seed: int,
                 settings: AutoAttackSettings = REFERENCE) -> dict[str, ApgdSettings | FabSettings | SquareSettings]:
    """The four components, configured; targets are capped at the classes there are.

    `model` is unused (the stages are plain settings, the model is given when they run); it stays
    so that callers need not change.
    """
    s = settings
    targets = {"apgd-t": min(s.apgd_t_targets, num_classes - 1), "fab-t": min(s.fab_t_targets, num_classes - 1)}
    apgd_ce = ApgdSettings(loss="ce", eps=eps, steps=s.apgd_ce_steps, restarts=s.apgd_ce_restarts, rho=s.apgd_rho,
                           seed=seed)
    apgd_t = ApgdSettings(loss="dlr-targeted", eps=eps, steps=s.apgd_t_steps, restarts=s.apgd_t_restarts,
                          rho=s.apgd_rho, seed=seed, targets=targets["apgd-t"])
    fab_t = FabSettings(eps=eps, steps=s.fab_t_steps, restarts=s.fab_t_restarts, targets=targets["fab-t"], seed=seed)
    square_stage = SquareSettings(eps=eps, queries=s.square_queries, p_init=s.square_p_init,
                                  restarts=s.square_restarts, seed=seed)
    return {"apgd-ce": apgd_ce, "apgd-t": apgd_t, "fab-t": fab_t, "square": square_stage}


def stage_adversarials(model: torch.nn.Module, attack: ApgdSettings | FabSettings | SquareSettings, x: torch.Tensor,
                       labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(what one component returns for (x, labels), the example-steps it spent).

    The images are adversarial where the component found one, else x. An example-step is one
    forward+backward pass for the white-box stages and one query (a forward pass) for Square.
    """
    if isinstance(attack, ApgdSettings):
        outcome = apgd(model, x, labels, attack)
        return outcome.adversarial, outcome.example_steps
    if isinstance(attack, FabSettings):
        run = fab(model, x, labels, attack)
        return run.adversarial, run.example_steps
    queried = square(model, x, labels, attack)
    return queried.adversarial, queried.example_queries


def still_robust(model: torch.nn.Module, x: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor,
                 eps: float) -> torch.Tensor:
    """bool per example: the adversarial image does not count (classified right, or outside the ball or [0, 1])."""
    with torch.no_grad():
        wrong = model(adversarial).argmax(1) != labels
    distance = (adversarial - x).flatten(1).abs().amax(1)
    valid = (distance <= eps + BALL_TOLERANCE) & (adversarial.flatten(1).amin(1) >= 0) & \
        (adversarial.flatten(1).amax(1) <= 1)
    return ~(wrong & valid)


def chunks(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) cut at the absolute multiples of `size`: the same chunks whatever the shard."""
    edges = [start, *range((start // size + 1) * size, stop, size), stop]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


@dataclass
class AutoAttackFlags:
    """Per example of [start, stop): correct when clean, and still robust after each stage; which are done."""

    start: int
    stop: int
    clean: torch.Tensor
    after: dict[str, torch.Tensor]  # stage -> bool (n,)
    done: torch.Tensor  # bool (n,): the example's chunk has finished every stage
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, summed over the chunks this run did
    # per stage, likewise: forward+backward passes (APGD-CE, APGD-T, FAB-T) or queries (Square), summed over examples
    example_steps: dict[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls, start: int, stop: int) -> "AutoAttackFlags":
        n = stop - start
        return cls(start, stop, torch.zeros(n, dtype=torch.bool), {s: torch.zeros(n, dtype=torch.bool) for s in STAGES},
                   torch.zeros(n, dtype=torch.bool), {s: 0.0 for s in STAGES})

    @property
    def final(self) -> torch.Tensor:
        return self.after[STAGES[-1]]

    def complete(self) -> bool:
        return bool(self.done.all())


def run_autoattack(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, eps: float, num_classes: int,
                   start: int, stop: int, chunk_size: int, seed: int, settings: AutoAttackSettings = REFERENCE,
                   flags: AutoAttackFlags | None = None,
                   after_chunk: Callable[[AutoAttackFlags], None] | None = None) -> AutoAttackFlags:
    """AutoAttack on test examples [start, stop) of `images`/`labels` (indexed by absolute test index).

    `flags` from an earlier, killed run are continued: chunks already done are skipped.
    `after_chunk(flags)` is called after every chunk, e.g. to save the flags so far.
    """
    flags = flags or AutoAttackFlags.empty(start, stop)
    stages = build_stages(model, eps, num_classes, seed, settings)
    for a, b in chunks(start, stop, chunk_size):
        local = slice(a - start, b - start)
        if bool(flags.done[local].all()):
            continue
        x = unit_images(images[a:b])
        y = labels[a:b]
        with torch.no_grad():
            robust = model(x).argmax(1) == y
        flags.clean[local] = robust.cpu()
        for name, attack in stages.items():
            began = time.perf_counter()
            index = robust.nonzero().flatten()
            if len(index):
                adversarial, passes = stage_adversarials(model, attack, x[index], y[index])
                robust[index] = still_robust(model, x[index], adversarial, y[index], eps)
                flags.example_steps[name] = flags.example_steps.get(name, 0) + passes
            flags.after[name][local] = robust.cpu()
            flags.seconds[name] = flags.seconds.get(name, 0.0) + time.perf_counter() - began
        flags.done[local] = True
        if after_chunk is not None:
            after_chunk(flags)
    return flags
