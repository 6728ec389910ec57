"""Is each mixup model ahead of the baseline under common corruptions? Paired evidence on the same test images.

The measurement is RobustBench's ``corruptions_acc``: the mean accuracy over the 15 corruptions x 5
severities. Its paired test works per test image: each image's score is the fraction of its 75
corrupted versions the model classifies correctly (from the per-example masks of
``corruptions.json``), and the two models' scores are compared image by image with the report's
paired bootstrap (`stats.significance.paired_bootstrap_difference`: test images, and seeds where
there are several, resampled together). The 75 versions of one image are resampled as one unit,
because they are not independent: an exact McNemar test on the 75 x n concatenated masks would
count each image 75 times and overstate the evidence, so it is not used here. The interval decides:
"holds" (excludes 0 on the mixup side), "reversed", or "not distinguishable at this sample size".

Seeds are paired as every other ordering pairs them (`orderings.paired_seeds`). Result files without
masks fall back to a Student-t interval over per-seed differences (several seeds) or to no test.
Runs are read duck-typed (anything with the report's `ModelRuns` attributes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from robustbench_mm.data.corruptions import CORRUPTIONS, SEVERITIES
from robustbench_mm.report.orderings import UNTESTED, paired_seeds, stored_mask
from robustbench_mm.stats.significance import paired_bootstrap_difference, t_interval, verdict_from_interval

EVALUATION = "corruptions"
MIXUP_METHODS = ("input", "manifold")
STANDARD_LABELS = tuple(f"{name}-{severity}" for name in CORRUPTIONS for severity in SEVERITIES)
SOURCE = "mm-robust's question (not in the paper): mixup ahead of no mixup under common corruptions"
TEST_NOTE = (
    "Mixup ahead of the baseline under corruption: the measurement is the mean accuracy over the 15 × 5 corrupted "
    "sets. Paired test: per test image, the fraction of its 75 corrupted versions classified correctly, compared "
    "image by image with a paired bootstrap over test images (and seeds, where there are several); the interval "
    "decides. The 75 versions of one image are resampled together: they are not independent, so McNemar on the "
    "concatenated masks (which would count each image 75 times) is not used.")


@dataclass(frozen=True)
class CorruptionComparison:
    """One mixup model against one baseline: differences are mixup − baseline, in accuracy points."""

    better: Any  # ModelRuns of the mixup model (the one the question puts ahead)
    worse: Any  # ModelRuns of the baseline
    ours_better: float | None
    ours_worse: float | None
    differences: tuple[float, ...]  # per paired seed
    interval: tuple[float, float] | None
    n_examples: int | None
    paired: bool
    verdict: str
    evidence: str

    @property
    def difference(self) -> float | None:
        return float(np.mean(self.differences)) if self.differences else None


def image_scores(result: dict[str, Any], labels: Sequence[str] = STANDARD_LABELS) -> tuple[int, np.ndarray] | None:
    """(first test index, per-image fraction of the `labels` sets classified correctly), or None without masks."""
    masks = [stored_mask(result, label) for label in labels]
    if not masks or any(m is None for m in masks):
        return None
    starts = {start for start, _ in masks}
    sizes = {mask.size for _, mask in masks}
    if len(starts) != 1 or len(sizes) != 1:
        return None
    return starts.pop(), np.stack([mask for _, mask in masks]).mean(axis=0)


def _mean_accuracy(result: dict[str, Any]) -> float | None:
    return result.get("summary", {}).get("corruptions_accuracy")


def _with_result(model: Any) -> list[tuple[int | None, dict[str, Any]]]:
    results = [(run.seed, run.result(EVALUATION)) for run in model.runs]
    return [(seed, r) for seed, r in results if r is not None and _mean_accuracy(r) is not None]


def compare_under_corruption(better: Any, worse: Any,
                             labels: Sequence[str] = STANDARD_LABELS) -> CorruptionComparison:
    pairs = paired_seeds(_with_result(better), _with_result(worse))
    if not pairs:
        return CorruptionComparison(better, worse, None, None, (), None, None, False, UNTESTED,
                                    "no corruptions.json with all 75 standard sets for one of the two models")
    accuracies = np.array([[_mean_accuracy(b), _mean_accuracy(w)] for b, w in pairs], dtype=float)
    stored = tuple(float(d) for d in accuracies[:, 0] - accuracies[:, 1])
    scores = [image_scores(r, labels) for pair in pairs for r in pair]
    aligned = _aligned(scores) if all(s is not None for s in scores) else None
    if aligned is None:
        means = accuracies.mean(axis=0)
        if len(pairs) == 1:
            return CorruptionComparison(better, worse, float(means[0]), float(means[1]), stored, None, None, False,
                                        UNTESTED, "the result files keep no per-example correctness (rerun corrupt), "
                                        "and one seed gives no spread to test against")
        low, high = t_interval(stored)
        return CorruptionComparison(better, worse, float(means[0]), float(means[1]), stored, (low, high), None,
                                    False, verdict_from_interval(low, high),
                                    f"Student t over {len(pairs)} per-seed differences (not paired by image: the "
                                    "result files keep no per-example correctness)")
    stacked, n_examples = aligned
    a, b = stacked[0::2], stacked[1::2]
    differences = tuple(float(d) for d in 100 * (a.mean(axis=1) - b.mean(axis=1)))
    low, high = (100 * v for v in paired_bootstrap_difference(a, b))
    over = f"{len(pairs)} seeds × {n_examples} test images" if len(pairs) > 1 else f"{n_examples} test images"
    evidence = (f"paired bootstrap over {over}, each image scored by the fraction of its {len(labels)} corrupted "
                "versions classified correctly")
    return CorruptionComparison(better, worse, 100 * float(a.mean()), 100 * float(b.mean()), differences,
                                (low, high), n_examples, True, verdict_from_interval(low, high), evidence)


def _aligned(scores: list[tuple[int, np.ndarray]]) -> tuple[np.ndarray, int] | None:
    """Per-image scores cut to the test images every result covers, stacked; None if they share none."""
    start = max(s for s, _ in scores)
    stop = min(s + m.size for s, m in scores)
    if stop <= start:
        return None
    return np.stack([m[start - s:stop - s] for s, m in scores]), stop - start


def is_mixup(model: Any) -> bool:
    return model.runs[0].model.get("method") in MIXUP_METHODS


def compare_corruption_group(models: Sequence[Any]) -> list[CorruptionComparison]:
    """Every mixup model against every baseline model of a group (nothing when either is absent)."""
    baselines = [m for m in models if m.key == "baseline"]
    return [compare_under_corruption(m, base) for m in models if is_mixup(m) for base in baselines
            if any(r.result(EVALUATION) for r in m.runs + base.runs)]


def ordering_csv_row(comparison: CorruptionComparison, setting: str = "mean over the 15 x 5 standard sets") \
        -> dict[str, Any]:
    """The comparison in orderings.csv's columns (report/orderings.py's ORDERINGS_CSV_COLUMNS, less the group)."""
    c = comparison

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 6)

    return {
        "protocol": "", "evaluation": EVALUATION, "source": SOURCE, "setting": setting,
        "better": c.better.key, "worse": c.worse.key,
        "better_runs": ";".join(r.name for r in c.better.runs), "worse_runs": ";".join(r.name for r in c.worse.runs),
        "paper_better": None, "paper_worse": None,
        "ours_better": rounded(c.ours_better), "ours_worse": rounded(c.ours_worse), "difference": rounded(c.difference),
        "ci_low": rounded(c.interval[0]) if c.interval else None,
        "ci_high": rounded(c.interval[1]) if c.interval else None,
        "n_pairs": len(c.differences), "n_examples": c.n_examples, "paired": c.paired, "p_value": None,
        "per_seed_difference": ";".join(f"{d:.4g}" for d in c.differences), "verdict": c.verdict,
        "evidence": c.evidence,
    }
