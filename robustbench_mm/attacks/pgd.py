"""Signed-gradient PGD (bounded or unbounded), robust accuracy as the worst case over iterates,
and the active set: examples already fooled leave the batch.

Worst case over iterations (SPEC §10, as AutoAttack and fast_adversarial count it): an example
counts as fooled after t steps if *any* of the iterates 0..t (0 = the clean image) is
misclassified. `WorstCase.fooled_at[n]` is the first such iterate, so "accuracy after t steps"
is the share of examples with ``fooled_at > t`` and can never rise with t.

Active set: once an example is fooled its outcome is settled, so `pgd_worst_case` stops
spending forward and backward passes on it and fills its slot with the next example still
waiting, keeping batches full. Each example's gradient is that of its own loss (the protocol's
summed loss) and the model is in eval mode, so its iterates, and with them `fooled_at`, are
exactly those of attacking the whole set in one batch (tested per example).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from robustbench_mm.attacks.core import Protocol, StepCallback, input_gradient
from robustbench_mm.data.images import to_unit_float

BOUNDED_PGD_STEP_FACTOR = 2.5  # Madry et al.: step = 2.5 * eps / steps, so the ball's far side is reachable
WORST_CASE_DEFINITION = ("worst case over iterates: an example counts as fooled after t steps if any of the "
                         "iterates 0..t (0 = clean) is misclassified; examples leave the batch once fooled")


def bounded_pgd_step_size(eps: float, steps: int) -> float:
    return BOUNDED_PGD_STEP_FACTOR * eps / steps


def pgd_step(adversarial: torch.Tensor, clean: torch.Tensor, grad: torch.Tensor, step: float | torch.Tensor,
             radius: float | torch.Tensor | None, clip: bool) -> torch.Tensor:
    """One signed step, projected onto the L-inf ball around `clean` (unless radius is None), then clipped."""
    adversarial = adversarial + step * grad.sign()
    if radius is not None:
        adversarial = torch.maximum(torch.minimum(adversarial, clean + radius), clean - radius)
    return adversarial.clamp(0, 1) if clip else adversarial


@dataclass
class PgdRun:
    adversarial: torch.Tensor  # the last iterate
    correct: torch.Tensor  # bool (steps + 1, batch): row t = iterate t classified correctly (0 = clean)
    # float (steps + 1, batch) on the CPU when asked for (`record_losses`): row t = each example's own
    # protocol loss at iterate t (0 = clean), the trace `attacks.indicators.incomplete_optimisation` reads
    losses: torch.Tensor | None = None

    def worst_case(self) -> torch.Tensor:
        """bool (steps + 1, batch): row t = no iterate 0..t fooled the example."""
        return self.correct.cumprod(dim=0).bool()


def per_example_losses(protocol: Protocol, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each example's own loss, (batch,): the protocol's summed loss of its row alone (exact, one call per row)."""
    with torch.no_grad():
        return torch.stack([protocol.summed_loss(logits[i:i + 1], labels[i:i + 1]) for i in range(len(labels))])


def random_start(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Madry et al.'s random start on the [0, 1] pixel scale: x + U(-eps, eps) per pixel, clipped to [0, 1].

    Drawn on x's device from `generator` (same shape and memory format as x), so it never waits for the device.
    """
    noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    return (x.detach() + noise).clamp(0, 1)


def pgd(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, protocol: Protocol, steps: int,
        step_size: float, eps: float | None = None, on_step: StepCallback | None = None,
        record_losses: bool = False, start: torch.Tensor | None = None, final_forward: bool = True) -> PgdRun:
    """Signed-gradient PGD on one whole batch, in `protocol`, from x itself or from `start`.

    `eps` None is the unbounded attack of Athalye et al.: no projection at all. Every example is
    attacked for every step and nothing waits for the device; `pgd_worst_case` is the cheaper
    runner that gives the same per-example worst case. `record_losses` also keeps each example's
    loss at every iterate (`PgdRun.losses`), read from the logits the attack computes anyway: the
    iterates are the same with or without it.

    `start` (e.g. `random_start(x, eps)`) is iterate 0 instead of x; every step is still projected
    onto the ball around x, and row 0 of `correct` is then the start, not the clean image.
    `final_forward=False` skips the last forward pass, which only classifies the last iterate:
    `correct` then has `steps` rows (iterates 0..steps-1). Adversarial training
    (`robustbench_mm.train.adversarial`) uses both; the iterates do not depend on either option.
    """
    step = protocol.pixel_step(model, step_size)
    radius = None if eps is None else protocol.pixel_step(model, eps)
    adversarial = x.detach() if start is None else start.detach()
    correct, losses = [], []
    for _ in range(steps):
        grad, logits = input_gradient(model, adversarial, labels, protocol.summed_loss)
        correct.append(logits.argmax(1) == labels)
        if record_losses:
            losses.append(per_example_losses(protocol, logits, labels))
        adversarial = pgd_step(adversarial, x, grad, step, radius, protocol.clip)
        if on_step is not None:
            on_step()
    if final_forward:
        with torch.no_grad():
            logits = model(adversarial)
            correct.append(logits.argmax(1) == labels)
            if record_losses:
                losses.append(per_example_losses(protocol, logits, labels))
    return PgdRun(adversarial.detach(), torch.stack(correct), torch.stack(losses).cpu() if record_losses else None)


@dataclass
class WorstCase:
    """Per example, the first iterate that fooled it; `steps + 1` where none did."""

    fooled_at: torch.Tensor  # long (N,) on the CPU
    steps: int
    example_steps: int  # forward+backward passes spent, summed over examples (the attack's cost)

    def correct_after(self, t: int) -> torch.Tensor:
        """bool (N,): not fooled by any of the iterates 0..t."""
        return self.fooled_at > t

    @property
    def final(self) -> torch.Tensor:
        return self.correct_after(self.steps)

    def accuracy_per_step(self) -> list[float]:
        """Accuracy (%) after t = 0..steps steps, each 100 * count / N in double precision."""
        n = max(len(self.fooled_at), 1)
        counts = torch.bincount(self.fooled_at.clamp(max=self.steps + 1), minlength=self.steps + 2)
        surviving = len(self.fooled_at) - counts.cumsum(0)[:-1]
        return (100.0 * (surviving.double() / n)).tolist()


def unit_images(images: torch.Tensor) -> torch.Tensor:
    """Images on the [0, 1] scale as float: uint8 pixels are divided by 255, floats taken as they are."""
    return to_unit_float(images) if images.dtype == torch.uint8 else images.float()


def pgd_worst_case(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, protocol: Protocol,
                   steps: int, step_size: float, eps: float | None, batch_size: int,
                   memory_format: torch.memory_format = torch.contiguous_format,
                   on_done: Callable[[int], None] | None = None) -> WorstCase:
    """PGD on every example of `images` (uint8 or [0, 1] float, on the model's device), active set.

    A batch holds up to `batch_size` examples, each at its own step. After every forward pass,
    the examples it shows misclassified leave (their first fooling iterate is recorded), as do
    those that survived iterate `steps` and those whose last step did not move them (a fixed point: every
    later step would return the same image, so they stay correct to the end); the rest take one step and
    the free slots are filled with the next waiting examples at step 0. The host learns which examples left once per
    pass (that is what re-batching needs). `on_done(k)` is told how many examples finished.
    """
    n = len(labels)
    device = labels.device
    step = protocol.pixel_step(model, step_size)
    radius = None if eps is None else protocol.pixel_step(model, eps)
    fooled_at = torch.full((n,), steps + 1, dtype=torch.long, device=device)
    index = torch.empty(0, dtype=torch.long, device=device)
    adversarial = clean = None
    taken = torch.empty(0, dtype=torch.long, device=device)  # steps each active example has taken
    stalled = torch.empty(0, dtype=torch.bool, device=device)  # its last step did not move it
    next_waiting, spent = 0, 0
    while True:
        free = batch_size - len(index)
        if free > 0 and next_waiting < n:
            new = torch.arange(next_waiting, min(n, next_waiting + free), device=device)
            next_waiting += len(new)
            new_images = unit_images(images[new])
            index = torch.cat([index, new])
            clean = new_images if clean is None else torch.cat([clean, new_images])
            adversarial = new_images if adversarial is None else torch.cat([adversarial, new_images])
            clean = clean.contiguous(memory_format=memory_format)
            adversarial = adversarial.contiguous(memory_format=memory_format)
            taken = torch.cat([taken, torch.zeros(len(new), dtype=torch.long, device=device)])
            stalled = torch.cat([stalled, torch.zeros(len(new), dtype=torch.bool, device=device)])
        if len(index) == 0:
            break
        grad, logits = input_gradient(model, adversarial, labels[index], protocol.summed_loss)
        spent += len(index)
        correct = logits.argmax(1) == labels[index]
        fooled_at[index[~correct]] = taken[~correct]
        keep = correct & (taken < steps) & ~stalled
        finished = len(index) - int(keep.sum())
        index, taken = index[keep], taken[keep] + 1
        clean = clean[keep]
        before = adversarial[keep]
        adversarial = pgd_step(before, clean, grad[keep], step, radius, protocol.clip).detach()
        # An iterate the step left where it was (a zero input gradient, or pinned at the ball's edge) is a fixed point
        # of a deterministic model: every later step returns it, still correct, so it leaves after its next pass
        # (found without a second wait for the device per step).
        stalled = (adversarial - before).flatten(1).abs().amax(1) == 0
        if on_done is not None and finished:
            on_done(finished)
    return WorstCase(fooled_at.cpu(), steps, spent)
