"""One word per model: is it robust, is its robustness gradient masking, or is it not robust at all?

The rule (`RULE`, printed under the robustness table). A model *holds up* at ε = 8/255 when AutoAttack
leaves it more than `ROBUST_THRESHOLD` (10 %) robust accuracy **and** at least `ROBUST_SHARE` (half) of its
clean accuracy: the attack must fail on most of the images the model gets right, not merely leave a tenth of
them. The absolute floor alone called a standard-trained model robust on an easy dataset (the smoke demo's
digits baseline keeps 13 % of 98 %: AutoAttack flips six in seven of its correct answers).

- **masked**: at least one gradient-masking check failed (in any seed). Where the model was also
  attacked through BPDA (``autoattack-8_255-bpda.json``), the verdict says whether that broke it:
  "masked — broken by BPDA" when BPDA AutoAttack does not leave the model holding up, else
  "masked — BPDA did not break it".
- **robust**: every check passed and AutoAttack at ε = 8/255 leaves the model holding up (means over seeds).
- **not robust**: every check passed and AutoAttack at 8/255 does not.
- "–" where the checks or AutoAttack at 8/255 were not run: no verdict without the evidence.

A smaller AutoAttack budget only bounds robust accuracy from above, so "robust" from one is provisional,
while "not robust" and "broken" from one are final. `verdict` is a plain function of those numbers, so the
rule is tested on hand-made cases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from robustbench_mm.attacks.autoattack import eps_name
from robustbench_mm.attacks.checks import ATTACK_FAILURE_INDICATORS
from robustbench_mm.report.records import NO_BPDA_LAYER, ModelRuns
from robustbench_mm.runs.evaluations import Evaluation, Family

VERDICT_EPS = 8 / 255  # RobustBench's CIFAR L-inf eps
ROBUST_THRESHOLD = 10.0  # % AutoAttack robust accuracy at VERDICT_EPS that a model must keep to count as robust
ROBUST_SHARE = 0.5  # ... and the share of its clean accuracy: the attack must fail on most of its correct answers
ROBUST, MASKED, NOT_ROBUST, UNKNOWN = "robust", "masked", "not robust", "–"
BROKEN_BY_BPDA = "masked — broken by BPDA"
NOT_BROKEN_BY_BPDA = "masked — BPDA did not break it"
AUTOATTACK = Evaluation(Family.AUTOATTACK, eps_name(VERDICT_EPS)).name
BPDA_AUTOATTACK = Evaluation(Family.AUTOATTACK, eps_name(VERDICT_EPS), bpda=True).name

RULE = (f"**Verdict** (report/verdicts.py): a model *holds up* when AutoAttack at ε = 8/255 leaves it more than "
        f"{ROBUST_THRESHOLD:g} % robust accuracy and at least {ROBUST_SHARE * 100:g} % of its clean accuracy (the "
        "attack fails on most of the images it gets right; means over seeds). **masked** when any gradient-masking check failed "
        "(in any seed) — \"masked — broken by BPDA\" when AutoAttack through the model's BPDA surrogates leaves it "
        "not holding up; **robust** when every check passed and it holds up under AutoAttack; **not robust** when "
        "every check passed and it does not; \"–\" where the checks or AutoAttack at 8/255 were not run. A "
        "smoke-budget AutoAttack is an upper bound, so a \"robust\" from it is provisional (a \"not robust\" is "
        "final). The attack-failure indicators (optimisation-complete, success-flags-agree-with-model) judge an "
        "attack's own numbers, not the model, and do not decide the verdict; they are in each masking figure. "
        f"\"{NO_BPDA_LAYER}\" in a BPDA column: the model has no non-differentiable layer, so BPDA would repeat "
        "the plain attack.")


def holds_up(robust: float, clean: float | None, threshold: float = ROBUST_THRESHOLD,
             share: float = ROBUST_SHARE) -> bool:
    """Robust accuracy (%) above `threshold` and at least `share` of `clean` (%; None: the floor alone decides)."""
    return robust > threshold and (clean is None or robust >= share * clean)


def _measured(robust: float, clean: float | None, threshold: float, share: float) -> str:
    """'13.45 % of 98.04 % clean (≤ 10 % or < 50 % of clean)': the numbers the rule was applied to."""
    ok = holds_up(robust, clean, threshold, share)
    of_clean = f" of {clean:.2f} % clean" if clean is not None else ""
    percent = f"{share * 100:g} %"
    rule = f"> {threshold:g} % and ≥ {percent} of clean" if ok else f"≤ {threshold:g} % or < {percent} of clean"
    return f"{robust:.2f} %{of_clean} ({rule})"


@dataclass(frozen=True)
class Verdict:
    word: str  # robust, masked, not robust or –
    text: str  # the word with its qualifier, e.g. "masked — broken by BPDA"
    reason: str
    failed_checks: tuple[str, ...] = ()
    autoattack: float | None = None
    bpda_autoattack: float | None = None
    threshold: float = ROBUST_THRESHOLD
    clean: float | None = None  # clean accuracy (%) of the AutoAttack result, the share's base
    share: float = ROBUST_SHARE

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed_checks": list(self.failed_checks)}


def verdict(failed_checks: list[str] | None, autoattack: float | None, bpda_autoattack: float | None = None,
            threshold: float = ROBUST_THRESHOLD, clean: float | None = None, share: float = ROBUST_SHARE) -> Verdict:
    """The rule of the module docstring. `failed_checks` None: no gradient-masking result; accuracies in %."""
    numbers = dict(autoattack=autoattack, bpda_autoattack=bpda_autoattack, threshold=threshold, clean=clean,
                   share=share)
    if failed_checks is None:
        return Verdict(UNKNOWN, UNKNOWN, "no gradient-masking checks", **numbers)
    failed = tuple(failed_checks)
    if failed:
        reason = f"failed: {', '.join(failed)}"
        if bpda_autoattack is None:
            return Verdict(MASKED, MASKED, reason, failed, **numbers)
        broken = not holds_up(bpda_autoattack, clean, threshold, share)
        return Verdict(MASKED, BROKEN_BY_BPDA if broken else NOT_BROKEN_BY_BPDA,
                       f"{reason}; BPDA AutoAttack {_measured(bpda_autoattack, clean, threshold, share)}",
                       failed, **numbers)
    if autoattack is None:
        return Verdict(UNKNOWN, UNKNOWN, "every check passed, but no AutoAttack at ε = 8/255", **numbers)
    word = ROBUST if holds_up(autoattack, clean, threshold, share) else NOT_ROBUST
    return Verdict(word, word, f"every check passed; AutoAttack {_measured(autoattack, clean, threshold, share)}",
                   **numbers)


def _clean_accuracy(result: dict[str, Any]) -> float | None:
    return (result.get("clean") or {}).get("accuracy")


def model_verdict(model: ModelRuns, threshold: float = ROBUST_THRESHOLD) -> Verdict:
    """`verdict` of one model over its seeds: the checks any seed failed, AutoAttack's mean over seeds."""
    masking = [r.result("gradient-masking") for r in model.runs if r.result("gradient-masking")]
    failed = None if not masking else sorted({c["name"] for m in masking for c in m["checks"]
                                              if not c.get("passed") and c["name"] not in ATTACK_FAILURE_INDICATORS})
    autoattack, _ = model.cell(AUTOATTACK, lambda r: r["robust_accuracy"], "")
    bpda_autoattack, _ = model.cell(BPDA_AUTOATTACK, lambda r: r["robust_accuracy"], "")
    clean = model.cell(AUTOATTACK, _clean_accuracy, "")[0] or model.cell(BPDA_AUTOATTACK, _clean_accuracy, "")[0]
    found = verdict(failed, autoattack.mean if autoattack else None,
                    bpda_autoattack.mean if bpda_autoattack else None, threshold, clean.mean if clean else None)
    budgets = {r.result(AUTOATTACK).get("budget", "standard") for r in model.runs if r.result(AUTOATTACK)}
    if found.word == "robust" and budgets - {"standard"}:  # a smaller budget only bounds robust accuracy from above
        return replace(found, text=f"robust — provisional ({'/'.join(sorted(budgets - {'standard'}))}-budget "
                                   "AutoAttack)")
    return found
