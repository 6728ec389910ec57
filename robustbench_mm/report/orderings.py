"""Do the paper's orderings hold on our runs? Paired evidence on the same test examples, and over seeds.

For each `paper.Claim` ("model A ahead of model B on measurement M") and each FGSM protocol, the two
models' seeds are paired (by seed number where they share seeds) and each pair's per-example masks are read from
the result files (``per_example``, the shared format of runs/results.py), over the test examples both
masks cover. The evidence is then

- one pair: the exact McNemar test on the examples where the two models disagree (p < 0.05 decides),
  with a paired bootstrap interval of the difference for the plot;
- several pairs: a bootstrap that resamples seeds and test examples together; the 95 % interval of
  the mean difference decides;
- result files without masks: with several seeds a Student-t interval over the per-seed differences
  (not paired by example); with one seed nothing can be said.

The verdict is "holds" (our difference has the paper's sign), "reversed" (the opposite sign), or
"not distinguishable at this sample size". This module reads runs duck-typed (anything with the
report's `ModelRuns` attributes), so it does not import the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from robustbench_mm.attacks.autoattack import eps_name
from robustbench_mm.paper import TABLE5_EPS, Claim, autoattack_claims, ordering_claims
from robustbench_mm.runs.evaluations import Evaluation, Family
from robustbench_mm.runs.results import decode_mask, eps_label, fgsm_accuracy
from robustbench_mm.stats.significance import (
    HOLDS, REVERSED, mcnemar_exact, paired_bootstrap_difference, t_interval, verdict_from_interval,
    verdict_from_test)


PROTOCOLS = ("standard", "paper")
UNTESTED = "not tested (no per-example results)"
AUTOATTACK_MASK = "final"  # an AutoAttack result's per-example label: correct after every stage
ORDERINGS_CSV_COLUMNS = (
    "dataset", "arch", "preset", "protocol", "evaluation", "source", "setting", "better", "worse", "better_runs",
    "worse_runs",
    "paper_better", "paper_worse", "ours_better", "ours_worse", "difference", "ci_low", "ci_high", "n_pairs",
    "n_examples", "paired", "p_value", "per_seed_difference", "verdict", "evidence",
)


@dataclass(frozen=True)
class Comparison:
    """One claim tested on one pair of models (and one FGSM protocol): differences are better − worse, in points."""

    claim: Claim
    protocol: str | None  # FGSM protocol; None for deformations
    evaluation: str  # the result file compared, e.g. "fgsm-standard" or "deform"
    better: Any  # the report's ModelRuns of the model the paper puts ahead
    worse: Any
    ours_better: float | None  # mean accuracy (%) over the paired seeds
    ours_worse: float | None
    differences: tuple[float, ...]  # per paired seed
    interval: tuple[float, float] | None
    n_examples: int | None  # examples per paired seed (paired evidence only)
    paired: bool
    p_value: float | None  # exact McNemar, one pair only
    verdict: str
    evidence: str

    @property
    def difference(self) -> float | None:
        return float(np.mean(self.differences)) if self.differences else None


def mask_label(claim: Claim) -> str:
    """The per-example label in result files the claim reads: an FGSM eps, AutoAttack's final mask or a set name."""
    if claim.evaluation == "fgsm":
        return eps_label(claim.eps)
    return AUTOATTACK_MASK if claim.evaluation == "autoattack" else claim.label


def claim_evaluation(claim: Claim, protocol: str | None, deform_evaluation: str = "deform") -> str:
    """The result file a claim reads: fgsm-<protocol>, autoattack-<eps> or the deformation result shown first."""
    if claim.evaluation == "fgsm":
        return f"fgsm-{protocol}"
    if claim.evaluation == "autoattack":
        return Evaluation(Family.AUTOATTACK, eps_name(claim.eps)).name
    return deform_evaluation


def block_of(comparison: Comparison) -> str | None:
    """Which block of the orderings table a comparison goes in: its FGSM protocol, "autoattack", or None (deform)."""
    return "autoattack" if comparison.claim.evaluation == "autoattack" else comparison.protocol


def stored_accuracy(result: dict[str, Any], claim: Claim) -> float | None:
    """The accuracy (%) a result file reports for the claim's measurement."""
    if claim.evaluation == "autoattack":
        value = result.get("robust_accuracy")
        return None if value is None else float(value)
    if claim.evaluation == "deform":
        entry = result.get("sets", {}).get(claim.label)
        return float(entry["accuracy"]) if entry else None
    return fgsm_accuracy(result, claim.eps)


def stored_mask(result: dict[str, Any], label: str) -> tuple[int, np.ndarray] | None:
    """(first test index, correctness mask) for `label`, or None when the file has no usable mask."""
    per_example = result.get("per_example") or {}
    encoded = (per_example.get("correct") or {}).get(label)
    if encoded is None or "example_range" not in per_example:
        return None
    try:
        mask = decode_mask(encoded)
        start, stop = (int(i) for i in per_example["example_range"])
    except (ValueError, TypeError):
        return None
    return (start, mask) if stop - start == mask.size else None


def _aligned(masks: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, int] | None:
    """All masks cut to the test examples every one of them covers, stacked; None if they share none."""
    start = max(s for s, _ in masks)
    stop = min(s + m.size for s, m in masks)
    if stop <= start:
        return None
    return np.stack([m[start - s:stop - s] for s, m in masks]), stop - start


def compare(claim: Claim, protocol: str | None, better: Any, worse: Any,
            deform_evaluation: str = "deform") -> Comparison:
    """Test `claim` on two models' runs (seeds paired by `paired_seeds`); deformation claims read `deform_evaluation`."""
    evaluation = claim_evaluation(claim, protocol, deform_evaluation)
    pairs = paired_seeds(_with_result(better, evaluation, claim), _with_result(worse, evaluation, claim))
    if not pairs:
        return Comparison(claim, protocol, evaluation, better, worse, None, None, (), None, None, False, None,
                          UNTESTED, f"no {evaluation} result with this measurement for one of the two models")
    accuracies = np.array([[stored_accuracy(b, claim), stored_accuracy(w, claim)] for b, w in pairs])
    ours_better, ours_worse = (float(v) for v in accuracies.mean(axis=0))
    differences = tuple(float(d) for d in accuracies[:, 0] - accuracies[:, 1])
    masks = [stored_mask(r, mask_label(claim)) for pair in pairs for r in pair]
    aligned = _aligned(masks) if all(m is not None for m in masks) else None
    common = Comparison(claim, protocol, evaluation, better, worse, ours_better, ours_worse, differences, None, None,
                        False, None, UNTESTED, "")
    if aligned is None:
        return _unpaired(common, len(pairs))
    stacked, n_examples = aligned
    a, b = stacked[0::2], stacked[1::2]
    differences = tuple(float(d) for d in 100 * (a.mean(axis=1) - b.mean(axis=1)))
    low, high = (100 * v for v in paired_bootstrap_difference(a, b))
    if len(pairs) == 1:
        test = mcnemar_exact(a[0], b[0])
        verdict = verdict_from_test(differences[0], test.p_value)
        evidence = (f"exact McNemar on {n_examples} paired examples: {test.only_a} right only for A, "
                    f"{test.only_b} only for B, p {_p_text(test.p_value)}")
        return replace(common, differences=differences, ours_better=100 * float(a.mean()),
                        ours_worse=100 * float(b.mean()), interval=(low, high), n_examples=n_examples, paired=True,
                        p_value=test.p_value, verdict=verdict, evidence=evidence)
    per_seed = [mcnemar_exact(x, y) for x, y in zip(a, b)]
    agree = sum(verdict_from_test(d, t.p_value) == HOLDS for d, t in zip(differences, per_seed))
    against = sum(verdict_from_test(d, t.p_value) == REVERSED for d, t in zip(differences, per_seed))
    evidence = (f"paired bootstrap over {len(pairs)} seeds × {n_examples} examples; per seed, McNemar p < 0.05 "
                f"with the paper in {agree}, against it in {against} of {len(pairs)}")
    return replace(common, differences=differences, ours_better=100 * float(a.mean()),
                    ours_worse=100 * float(b.mean()), interval=(low, high), n_examples=n_examples, paired=True,
                    verdict=verdict_from_interval(low, high), evidence=evidence)


def _unpaired(common: Comparison, n_pairs: int) -> Comparison:
    if n_pairs == 1:
        return replace(common, evidence="the result files keep no per-example correctness (rerun attack/deform "
                                         "to store it), and one seed gives no spread to test against")
    low, high = t_interval(common.differences)
    return replace(common, interval=(low, high), verdict=verdict_from_interval(low, high),
                    evidence=f"Student t over {n_pairs} per-seed differences (not paired by example: the result "
                             "files keep no per-example correctness)")


def _p_text(p: float) -> str:
    return f"= {p:.2g}" if p >= 0.001 else "< 0.001"


def paired_seeds(better: list[tuple[int | None, Any]], worse: list[tuple[int | None, Any]]) -> list[tuple[Any, Any]]:
    """Pair two models' (seed, result) lists: by seed number where they share seeds (the same seed gives the same
    initial weights and data order), else in seed order, so two single runs of different seeds still pair."""
    by_seed_better, by_seed_worse = dict(better), dict(worse)
    common = sorted(set(by_seed_better) & set(by_seed_worse) - {None})
    if common:
        return [(by_seed_better[seed], by_seed_worse[seed]) for seed in common]
    return [(b, w) for (_, b), (_, w) in zip(better, worse)]


def _with_result(model: Any, evaluation: str, claim: Claim) -> list[tuple[int | None, dict[str, Any]]]:
    """(seed, result file) of the model's runs, in seed order, that hold the claim's measurement."""
    results = [(run.seed, run.result(evaluation)) for run in model.runs]
    return [(seed, r) for seed, r in results if r is not None and stored_accuracy(r, claim) is not None]


def compare_group(models: Sequence[Any], dataset: str, deform_evaluation: str = "deform",
                  fgsm_eps: float = TABLE5_EPS) -> list[Comparison]:
    """Every claim that applies to `dataset`, for every pair of models with the claim's keys; FGSM claims are
    tested at `fgsm_eps`, deformation claims on the `deform_evaluation` result (the deform convention and fill
    the tables show first), and the positive control (`paper.autoattack_claims`) on AutoAttack at 8/255."""
    comparisons = []
    for claim in ordering_claims(dataset, fgsm_eps) + autoattack_claims(m.key for m in models):
        betters = [m for m in models if m.key == claim.better]
        worses = [m for m in models if m.key == claim.worse]
        for protocol in (PROTOCOLS if claim.evaluation == "fgsm" else (None,)):
            comparisons += [compare(claim, protocol, b, w, deform_evaluation) for b in betters for w in worses]
    return comparisons


def tally(comparisons: Sequence[Comparison]) -> str:
    """'2 hold, 0 reversed, 1 not distinguishable at this sample size' (only the verdicts that occur)."""
    counts: dict[str, int] = {}
    for comparison in comparisons:
        counts[comparison.verdict] = counts.get(comparison.verdict, 0) + 1
    words = {HOLDS: "hold"}
    return ", ".join(f"{n} {words.get(v, v) if n != 1 else v}" for v, n in counts.items()) or "nothing to compare"


def csv_row(comparison: Comparison) -> dict[str, Any]:
    c = comparison
    return {
        "protocol": c.protocol or "", "evaluation": c.evaluation, "source": c.claim.source,
        "setting": (f"{mask_label(c.claim)} at ε = {eps_name(c.claim.eps)}" if block_of(c) == "autoattack"
                    else mask_label(c.claim)),
        "better": c.claim.better, "worse": c.claim.worse,
        "better_runs": ";".join(r.name for r in c.better.runs), "worse_runs": ";".join(r.name for r in c.worse.runs),
        "paper_better": c.claim.paper_better, "paper_worse": c.claim.paper_worse,
        "ours_better": _round(c.ours_better), "ours_worse": _round(c.ours_worse), "difference": _round(c.difference),
        "ci_low": _round(c.interval[0]) if c.interval else None,
        "ci_high": _round(c.interval[1]) if c.interval else None,
        "n_pairs": len(c.differences), "n_examples": c.n_examples, "paired": c.paired,
        "p_value": _round(c.p_value), "per_seed_difference": ";".join(f"{d:.4g}" for d in c.differences),
        "verdict": c.verdict, "evidence": c.evidence,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)

