"""The automatic gradient-masking checks: plain functions of per-example attack results.

Each returns a `Check` whose `figure` dict holds the numbers its panel in
gradient-masking.png shows, so the picture can always be redrawn from the JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from robustbench_mm.attacks.core import percent
from robustbench_mm.attacks.indicators import (
    INCOMPLETE_THRESHOLD, INCOMPLETE_WINDOW, SILENT_SUCCESS_MAX_SHARE, incomplete_optimisation, loss_movement,
    silent_success)

DETERMINISM_TOLERANCE = 1e-6
# Pintor et al.'s indicators judge the attack, not the model: a failure says that attack's numbers cannot be trusted
# (stopped early, or miscounted), which is no evidence of gradient masking; they are reported, not part of `flagged`.
ATTACK_FAILURE_INDICATORS = ("optimisation-complete", "success-flags-agree-with-model")
MAX_UNSETTLED_SHARE = 20.0  # % of failed examples whose loss may still be moving when the attack stops
GRADIENT_HISTOGRAM_EDGES = tuple(range(-40, 5))  # log10 of max |input gradient| per example


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


def check_unbounded_pgd(curves: dict[str, list[float]], threshold: float, verdict_protocol: str) -> Check:
    """Unbounded PGD must drive accuracy to about 0 (Athalye et al.; the paper's Appendix D).

    `curves`: protocol -> worst-case accuracy (%) after every step. The verdict is taken from
    `verdict_protocol` (the paper's own convention when it was run); the others are shown beside it.
    """
    curve = curves[verdict_protocol]
    final = curve[-1]
    passed = final <= threshold
    steps = len(curve) - 1
    others = {p: c for p, c in curves.items() if p != verdict_protocol}
    detail = (f"unbounded PGD ({verdict_protocol} protocol) brings accuracy from {curve[0]:.2f} % to {final:.2f} % "
              f"in {steps} steps ({'<=' if passed else '>'} {threshold:g} %)")
    if others:
        detail += "; " + ", ".join(f"{p} protocol: {c[-1]:.2f} %" for p, c in others.items())
    return Check("unbounded-pgd-reaches-zero", passed, final, detail,
                 {"kind": "curve", "protocol": verdict_protocol, "accuracy_per_step": curve, "threshold": threshold,
                  "others": others})


def check_black_box_not_stronger(robust_after_white_box: torch.Tensor, robust_after_square: torch.Tensor,
                                 eps: float, max_share: float) -> Check:
    """Square (no gradients) must not fool examples every white-box attack failed on.

    Masks are per example, over the same examples: robust after APGD-CE, APGD-T and FAB-T, and
    robust after Square too. `value` is the share (%) Square alone fooled; AutoAttack's own
    check (`check_square_sr`) warns above 0.2 points.
    """
    square_only = robust_after_white_box & robust_after_square.logical_not()
    share = percent(square_only)
    passed = share <= max_share
    detail = (f"at eps {eps:g}: Square fooled {int(square_only.sum())} of {robust_after_white_box.numel()} examples "
              f"({share:.2f} %, allowed {max_share:g} %) that APGD-CE, APGD-T and FAB-T all failed on; "
              f"white-box robust accuracy {percent(robust_after_white_box):.2f} %, after Square "
              f"{percent(robust_after_square):.2f} %")
    return Check("black-box-not-stronger-than-white-box", passed, share, detail, {
        "kind": "black-box", "eps": eps, "white_box_accuracy": percent(robust_after_white_box),
        "after_square_accuracy": percent(robust_after_square), "fooled_by_square_only": int(square_only.sum()),
        "n_examples": robust_after_white_box.numel(), "max_share": max_share})


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


# ---- Pintor et al.'s indicators of attack failure, as checks (attacks/indicators.py) ---------------

TRACES_DRAWN = 20  # loss traces the panel draws (the value is over all of them)


def check_incomplete_optimisation(losses: torch.Tensor, failed: torch.Tensor, what: str,
                                  window: int = INCOMPLETE_WINDOW, threshold: float = INCOMPLETE_THRESHOLD,
                                  max_share: float = MAX_UNSETTLED_SHARE) -> Check:
    """The attack's loss must have settled where it failed (Pintor et al.'s *incomplete optimisation*).

    `losses`: (iterates, N) each example's loss at every iterate (`pgd(..., record_losses=True)`);
    `failed`: bool (N,), the examples the attack did not fool. Only their traces count: an example
    already fooled has nothing left to find, and its loss may rise forever. A trace is unsettled when its best
    loss so far still moved by more than `threshold` of its range over the last `window` iterates (or is not
    finite); `value` is the share (%) of unsettled traces, which may be at most `max_share` (a fixed-step attack
    leaves a few examples creeping along the ball's boundary; most of them still climbing means it stopped early).
    """
    failed = torch.as_tensor(failed).bool().cpu()
    traces = torch.as_tensor(losses).double().cpu()[:, failed]
    n_failed = int(failed.sum())
    if n_failed == 0:
        value, passed, movement = 0.0, True, np.zeros(0)
        detail = f"{what}: fooled every example, so no failed optimisation to inspect"
    else:
        indicator = incomplete_optimisation(traces, window, threshold)
        movement = loss_movement(traces, window)
        unsettled = int(sum(1 for m in movement if not (math.isfinite(m) and m <= threshold)))
        finite = all(math.isfinite(m) for m in movement)
        value = 100.0 * unsettled / n_failed if finite else None
        passed = finite and value <= max_share
        detail = (f"{what}, on the {n_failed} examples it failed on: {unsettled} ({100.0 * unsettled / n_failed:.1f} %) "
                  f"still moved by more than {threshold:g} of their range over the last {window} iterates (allowed "
                  f"{max_share:g} %); {indicator.explanation}")
    shown = traces[:, :TRACES_DRAWN].numpy()
    return Check("optimisation-complete", passed, value, detail, {
        "kind": "loss-trace", "what": what, "window": window, "threshold": threshold, "n_failed": n_failed,
        "max_share": max_share,
        "movement": [float(m) if math.isfinite(m) else None for m in movement[:TRACES_DRAWN]],
        "traces": [[float(v) if math.isfinite(v) else None for v in shown[:, j]] for j in range(shown.shape[1])]})


def check_silent_success(claimed_success: torch.Tensor, reevaluated_correct: torch.Tensor, what: str,
                         max_share: float = SILENT_SUCCESS_MAX_SHARE) -> Check:
    """The attack's own success flags must agree with the model on its adversarial images (Pintor et al.'s
    *silent success*, both directions: a fooled image reported as a failure, a reported success that is not)."""
    indicator = silent_success(claimed_success, reevaluated_correct, max_share)
    claimed = torch.as_tensor(claimed_success).bool().flatten().cpu()
    fooled = ~torch.as_tensor(reevaluated_correct).bool().flatten().cpu()
    return Check("success-flags-agree-with-model", not indicator.tripped, indicator.value,
                 f"{what}: {indicator.explanation}", {
                     "kind": "silent-success", "what": what, "n_examples": claimed.numel(),
                     "claimed_fooled": int(claimed.sum()), "reevaluated_fooled": int(fooled.sum()),
                     "silent": int((fooled & ~claimed).sum()), "overclaimed": int((claimed & ~fooled).sum()),
                     "max_share": max_share})
