"""FGSM and PGD on models that take [0, 1] pixels, and the automatic gradient-masking checks.

The attacks work on one batch on the model's device and never wait for it: they return
per-example results as device tensors (boolean masks, gradient sizes), so a caller can loop
over batches and steps and synchronise once at the end. The checks are plain functions of
those results after that one synchronisation.

Two FGSM protocols (SPEC §6):

- ``standard``: eps on the [0, 1] pixel scale, cross-entropy, clip to [0, 1]; the same
  arithmetic as ``torchattacks.FGSM``.
- ``paper``: the authors' code perturbed the *normalized* input, x_norm + eps * sign(grad),
  with BCE on softmax against one-hot targets and no clipping. Normalization is the model's
  first layer, so on the pixel scale that is x + eps * std_c * sign(grad_x) (std > 0 keeps
  the sign): about 4x weaker on CIFAR than the standard protocol at the same eps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .mixup import bce_on_softmax

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepCallback = Callable[[], None]

# Logits of two identical passes may differ by this much relative to their size: bit-identical
# on a CPU, and still far below anything a randomised defence would produce.
DETERMINISM_TOLERANCE = 1e-6
GRADIENT_HISTOGRAM_EDGES = tuple(range(-40, 5))  # log10 of max |input gradient| per example
BOUNDED_PGD_STEP_FACTOR = 2.5  # Madry et al.: step = 2.5 * eps / steps, so the ball's far side is reachable


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch, exactly as torchattacks' ``nn.CrossEntropyLoss()``."""
    return F.cross_entropy(logits, labels)


def bce_on_softmax_one_hot(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The authors' training loss, against one-hot targets."""
    return bce_on_softmax(logits, F.one_hot(labels, logits.shape[1]).float())


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    loss_name: str
    loss: LossFn
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
        eps_on_normalized_input=False, clip=True),
    "paper": Protocol(
        "paper", "the authors' convention: eps on the normalized input (pixel step eps*std per channel), "
                 "BCE on softmax against one-hot targets, no clipping", "bce-on-softmax", bce_on_softmax_one_hot,
        eps_on_normalized_input=True, clip=False),
}


# ---- one batch ---------------------------------------------------------------------------------


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


def fgsm(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float,
         protocol: Protocol) -> torch.Tensor:
    """One FGSM step of size eps in `protocol`."""
    grad, _ = input_gradient(model, x, labels, protocol.loss)
    return signed_step(x, grad, protocol.pixel_step(model, eps), protocol.clip).detach()


def gradient_size(grad: torch.Tensor) -> torch.Tensor:
    """max |grad| per example: 0 when the gradient vanished, NaN/inf when any entry is non-finite."""
    return grad.flatten(1).abs().amax(dim=1)


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


@dataclass
class PgdRun:
    adversarial: torch.Tensor
    correct: torch.Tensor  # bool (steps + 1, batch): row 0 = clean, row t = after t steps


def pgd(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, protocol: Protocol, steps: int,
        step_size: float, eps: float | None = None, on_step: StepCallback | None = None) -> PgdRun:
    """Signed-gradient PGD from x itself (no random start), in `protocol`'s scale, loss and clipping.

    `eps` None is the unbounded attack of Athalye et al.: no projection at all. Otherwise each
    iterate is projected onto the L-inf ball of radius eps around x. Correctness after every
    step is kept on the device; `on_step` (e.g. a progress bar) is called from the host only.
    """
    step = protocol.pixel_step(model, step_size)
    radius = None if eps is None else protocol.pixel_step(model, eps)
    adversarial = x.detach()
    correct = []
    for _ in range(steps):
        grad, logits = input_gradient(model, adversarial, labels, protocol.loss)
        correct.append(logits.argmax(1) == labels)
        adversarial = adversarial + step * grad.sign()
        if radius is not None:
            adversarial = torch.maximum(torch.minimum(adversarial, x + radius), x - radius)
        if protocol.clip:
            adversarial = adversarial.clamp(0, 1)
        if on_step is not None:
            on_step()
    with torch.no_grad():
        correct.append(model(adversarial).argmax(1) == labels)
    return PgdRun(adversarial.detach(), torch.stack(correct))


def bounded_pgd_step_size(eps: float, steps: int) -> float:
    return BOUNDED_PGD_STEP_FACTOR * eps / steps


# ---- gradient-masking checks -------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One sign of gradient masking tested: `value` is the number the verdict compares."""

    name: str
    passed: bool
    value: float | None  # None where the measured number is not finite
    detail: str
    figure: dict  # the numbers its panel in gradient-masking.png shows

    def to_dict(self) -> dict:
        return asdict(self)


def percent(mask: torch.Tensor) -> float:
    """Share of True in `mask`, in %, computed as 100 * (count / n) in double precision everywhere,
    so equal counts always give equal numbers."""
    return 100.0 * mask.double().mean().item() if mask.numel() else 0.0


def check_unbounded_pgd(accuracy_per_step: list[float], threshold: float) -> Check:
    final = accuracy_per_step[-1]
    passed = final <= threshold
    steps = len(accuracy_per_step) - 1
    detail = (f"unbounded PGD brings accuracy from {accuracy_per_step[0]:.2f} % to {final:.2f} % in {steps} steps "
              f"({'<=' if passed else '>'} {threshold:g} %)")
    return Check("unbounded-pgd-reaches-zero", passed, final, detail,
                 {"kind": "curve", "accuracy_per_step": accuracy_per_step, "threshold": threshold})


def check_iterative_beats_single_step(fgsm_correct: torch.Tensor, pgd_correct: torch.Tensor, eps: float,
                                      pgd_steps: int, max_fgsm_only_share: float) -> Check:
    """Bounded PGD at the same eps must be at least as strong as FGSM, overall and per example.

    `value` is the share of examples (%) that FGSM fools but PGD does not; in a model whose
    gradients are informative this is (nearly) empty.
    """
    fgsm_only = fgsm_correct.logical_not() & pgd_correct
    pgd_only = pgd_correct.logical_not() & fgsm_correct
    fgsm_accuracy, pgd_accuracy = percent(fgsm_correct), percent(pgd_correct)
    share = percent(fgsm_only)
    passed = pgd_accuracy <= fgsm_accuracy and share <= max_fgsm_only_share
    detail = (f"at eps {eps:g}: {pgd_steps}-step PGD accuracy {pgd_accuracy:.2f} % vs FGSM {fgsm_accuracy:.2f} %; "
              f"{int(fgsm_only.sum())} of {fgsm_correct.numel()} examples ({share:.2f} %, allowed "
              f"{max_fgsm_only_share:g} %) fooled by FGSM only, {int(pgd_only.sum())} by PGD only")
    return Check("iterative-at-least-single-step", passed, share, detail, {
        "kind": "bars", "eps": eps, "fgsm_accuracy": fgsm_accuracy, "pgd_accuracy": pgd_accuracy,
        "fooled_by_fgsm_only": int(fgsm_only.sum()), "fooled_by_pgd_only": int(pgd_only.sum()),
        "fooled_by_both": int((fgsm_correct.logical_not() & pgd_correct.logical_not()).sum()),
        "n_examples": fgsm_correct.numel()})


def largest_rise(accuracy: list[float]) -> float:
    """How far accuracy ever climbs above its lowest value at a smaller eps (0 if it never does)."""
    rise, lowest = 0.0, math.inf
    for value in accuracy:
        rise = max(rise, value - lowest)
        lowest = min(lowest, value)
    return rise


def check_sweep_does_not_rise(sweeps: dict[str, tuple[list[float], list[float]]], max_rise: float) -> Check:
    """`sweeps`: protocol -> (eps ascending, accuracy %). A stronger attack must not do worse."""
    rises = {protocol: largest_rise(accuracy) for protocol, (_, accuracy) in sweeps.items()}
    worst = max(rises.values())
    passed = worst <= max_rise
    detail = "largest rise of FGSM accuracy along the eps sweep: " + ", ".join(
        f"{p} {r:.2f} pp" for p, r in rises.items()) + f" (allowed {max_rise:g} pp)"
    return Check("accuracy-does-not-rise-with-eps", passed, worst, detail, {
        "kind": "sweep", "sweeps": {p: {"eps": e, "accuracy": a} for p, (e, a) in sweeps.items()},
        "max_rise": max_rise})


def check_eps_zero_is_clean(sweeps: dict[str, tuple[list[float], list[float]]], clean_accuracy: float) -> Check:
    """FGSM at eps 0 leaves the image unchanged, so its accuracy must equal the clean accuracy."""
    at_zero = {protocol: accuracy[eps.index(0.0)] for protocol, (eps, accuracy) in sweeps.items()}
    gap = max(abs(value - clean_accuracy) for value in at_zero.values())
    detail = f"clean {clean_accuracy:.2f} %; FGSM at eps 0: " + ", ".join(
        f"{p} {v:.2f} %" for p, v in at_zero.items())
    return Check("eps-zero-equals-clean", gap <= 1e-6, gap, detail,  # float32 clean accuracy may round
                 {"kind": "eps-zero", "clean_accuracy": clean_accuracy, "eps_zero_accuracy": at_zero})


def gradient_histogram(sizes: torch.Tensor) -> dict:
    """Counts of log10(max |grad|) per example in fixed bins, with zero and non-finite counted apart."""
    values = sizes.double().cpu().numpy()
    finite = np.isfinite(values)
    positive = values[finite & (values > 0)]
    counts, _ = np.histogram(np.log10(positive).clip(GRADIENT_HISTOGRAM_EDGES[0], GRADIENT_HISTOGRAM_EDGES[-1]),
                             bins=GRADIENT_HISTOGRAM_EDGES)
    return {"log10_edges": list(GRADIENT_HISTOGRAM_EDGES), "counts": counts.tolist(),
            "zero": int((values[finite] == 0).sum()), "non_finite": int((~finite).sum())}


def check_input_gradients(gradient_sizes: dict[str, torch.Tensor], max_share: float) -> Check:
    """Share of inputs whose attack gradient (per protocol) is all zero or has a non-finite entry.

    sign(0) = 0, so such an input is never moved by FGSM or PGD and looks robust for free.
    """
    shares = {}
    for protocol, sizes in gradient_sizes.items():
        shares[protocol] = percent(~torch.isfinite(sizes) | (sizes == 0))
    worst = max(shares.values())
    passed = worst <= max_share
    detail = "inputs with an all-zero or non-finite input gradient: " + ", ".join(
        f"{p} {s:.2f} %" for p, s in shares.items()) + f" (allowed {max_share:g} %)"
    return Check("input-gradients-nonzero-and-finite", passed, worst, detail, {
        "kind": "gradient-histogram", "shares": shares,
        "histograms": {p: gradient_histogram(s) for p, s in gradient_sizes.items()}})


def check_deterministic(first: torch.Tensor, second: torch.Tensor) -> Check:
    """Logits of two identical passes must agree: randomness in the forward pass hides gradients."""
    difference = (first - second).abs()
    largest = difference.max().item() if difference.numel() else 0.0
    scale = max(1.0, first.abs().max().item()) if first.numel() else 1.0
    finite = bool(torch.isfinite(difference).all())
    passed = finite and largest <= DETERMINISM_TOLERANCE * scale
    differing = int((difference != 0).sum())
    detail = (f"largest logit difference between two passes {largest:.3g} "
              f"({differing} of {difference.numel()} logits differ; allowed {DETERMINISM_TOLERANCE:g} x {scale:.3g})")
    return Check("logits-deterministic", passed, largest if finite else None, detail, {
        "kind": "determinism", "max_abs_difference": largest if finite else None, "differing": differing,
        "n_logits": difference.numel()})
