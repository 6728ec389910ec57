"""Indicators of attack failure (Pintor et al., NeurIPS 2022) that the gradient-masking checks lack.

`checks` already covers Pintor et al.'s *unavailable gradients* (`check_input_gradients`) and
*unconstrained attack failure* (`check_unbounded_pgd`), and `check_deterministic` the random
part of *unstable predictions*; *transfer failure* needs a surrogate-model attack, which the
suite does not run. This module adds:

- *incomplete optimisation* (`incomplete_optimisation`): the attack's best loss so far is still
  moving over its last iterates, so more iterations would likely have found more. Transcribes
  pralab/IndicatorsOfAttackFailure ``incomplete_optimization_indicator``: rescale each trace
  to [0, 1] by its own min and max, keep the best value reached so far (their
  ``always_decreasing``; our attacks *raise* the loss, so by default the running maximum),
  take the last ``min(len, 10)`` iterates and trip where that window spans more than 0.05.
  A constant trace moves 0 (theirs divides by zero there); a trace with a non-finite value
  trips (nothing says the optimisation finished).
- *silent success* (`silent_success`, `reevaluate`, `check_silent_success`): the attack's own
  per-example success flags disagree with the model's predictions on the adversarial images
  it returned. Both directions count: fooled examples reported as failures (Pintor et al.'s
  silent success: robust accuracy overstated) and reported successes the model classifies
  correctly (robust accuracy understated: a stale iterate, a changed model, a lossy save).

Each returns an `Indicator`: pure values, no plotting.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from robustbench_mm.attacks.core import percent
from robustbench_mm.attacks.pgd import unit_images

INCOMPLETE_WINDOW = 10  # Pintor et al.: the last min(10, len) iterates of the loss trace
INCOMPLETE_THRESHOLD = 0.05  # ... may move the best loss by at most 5 % of the trace's whole range
SILENT_SUCCESS_MAX_SHARE = 0.0  # % of examples whose success flag may disagree with the model: none


@dataclass(frozen=True)
class Indicator:
    """One indicator of attack failure: `tripped` when `value` is beyond `threshold` (or not finite)."""

    name: str
    value: float
    threshold: float
    tripped: bool
    explanation: str

    def to_dict(self) -> dict:
        return asdict(self)


def _as_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


def loss_movement(history, window: int = INCOMPLETE_WINDOW, maximize: bool = True) -> np.ndarray:
    """Per trace, how far the best loss so far moved over the last `window` iterates, as a share of its range.

    `history`: (iterates,) for one trace (e.g. the batch mean) or (iterates, traces), e.g.
    `PgdRun.losses`. Returns (traces,) in [0, 1]: 0 for a constant trace, NaN for one with a
    non-finite value. `maximize` False is for attacks that lower their loss (Pintor et al.'s).
    """
    h = _as_array(history)
    if h.ndim == 1:
        h = h[:, None]
    if h.ndim != 2 or len(h) == 0:
        raise ValueError(f"a loss history is (iterates,) or (iterates, traces) with iterates > 0, got {h.shape}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if not maximize:
        h = -h
    finite = np.isfinite(h).all(axis=0)
    safe = np.where(np.isfinite(h), h, 0.0)
    span = safe.max(axis=0) - safe.min(axis=0)
    best = np.maximum.accumulate(safe, axis=0)
    k = min(window, len(h))
    moved = best[-1] - best[-k]
    share = np.divide(moved, span, out=np.zeros_like(moved), where=span > 0)
    return np.where(finite, share, np.nan)


def incomplete_optimisation(history, window: int = INCOMPLETE_WINDOW, threshold: float = INCOMPLETE_THRESHOLD,
                            maximize: bool = True) -> Indicator:
    """Tripped when any trace's best loss still moved more than `threshold` of its range over its last iterates.

    `value` is the largest such movement over the traces (`loss_movement`); NaN where a trace
    has a non-finite loss, which trips too.
    """
    movement = loss_movement(history, window, maximize)
    n, k = len(movement), min(window, len(_as_array(history)))
    non_finite = int(np.isnan(movement).sum())
    value = math.nan if non_finite else float(movement.max())
    moving = int((movement > threshold).sum())
    tripped = non_finite > 0 or moving > 0
    explanation = (f"best loss so far moved by up to {value:.3g} of its range over the last {k} iterates; "
                   f"{moving} of {n} traces moved more than {threshold:g}")
    if non_finite:
        explanation += f", {non_finite} had a non-finite loss"
    return Indicator("incomplete-optimisation", value, threshold, tripped, explanation)


def silent_success(claimed_success: torch.Tensor, model_correct: torch.Tensor,
                   max_share: float = SILENT_SUCCESS_MAX_SHARE) -> Indicator:
    """Tripped when more than `max_share` % of examples have a success flag the model's predictions contradict.

    `claimed_success[n]`: the attack says it fooled example n (untargeted). `model_correct[n]`:
    the model classifies the returned adversarial image n correctly (`reevaluate`). `value` is
    the share (%) of examples where the two disagree, in either direction.
    """
    claimed = torch.as_tensor(claimed_success).bool().flatten().cpu()
    fooled = ~torch.as_tensor(model_correct).bool().flatten().cpu()
    if claimed.shape != fooled.shape:
        raise ValueError(f"{claimed.numel()} success flags for {fooled.numel()} re-evaluated examples")
    silent = fooled & ~claimed
    overclaimed = claimed & ~fooled
    share = percent(silent | overclaimed)
    explanation = (f"{int(silent.sum())} of {claimed.numel()} examples the model misclassifies were reported as "
                   f"attack failures (silent successes), {int(overclaimed.sum())} reported as fooled are classified "
                   f"correctly ({share:.2f} % disagree, allowed {max_share:g} %)")
    return Indicator("silent-success", share, max_share, share > max_share, explanation)


def reevaluate(model: torch.nn.Module, adversarial: torch.Tensor, labels: torch.Tensor,
               batch_size: int = 256) -> torch.Tensor:
    """bool (N,) on the CPU: the model classifies adversarial image n (uint8 or [0, 1] float) as labels[n].

    Runs the model as it is (put it in the mode the attack used, normally eval), without gradients,
    on the device of `labels`.
    """
    correct = []
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            images = unit_images(adversarial[start:start + batch_size].to(labels.device))
            correct.append((model(images).argmax(1) == labels[start:start + batch_size]).cpu())
    return torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)


def check_silent_success(model: torch.nn.Module, adversarial: torch.Tensor, labels: torch.Tensor,
                         claimed_success: torch.Tensor, batch_size: int = 256,
                         max_share: float = SILENT_SUCCESS_MAX_SHARE) -> Indicator:
    """`silent_success` of the attack's flags against `reevaluate` of its adversarial images."""
    return silent_success(claimed_success, reevaluate(model, adversarial, labels, batch_size), max_share)


__all__ = [
    "INCOMPLETE_THRESHOLD", "INCOMPLETE_WINDOW", "SILENT_SUCCESS_MAX_SHARE", "Indicator", "check_silent_success",
    "incomplete_optimisation", "loss_movement", "reevaluate", "silent_success",
]
