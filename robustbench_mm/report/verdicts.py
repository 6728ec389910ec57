"""One word per model: is it robust, is its robustness gradient masking, or is it not robust at all?

The rule (`RULE`, printed under the robustness table):

- **masked**: at least one gradient-masking check failed (in any seed). Where the model was also
  attacked through BPDA (``autoattack-8_255-bpda.json``), the verdict says whether that broke it:
  "masked — broken by BPDA" when BPDA AutoAttack's robust accuracy at ε = 8/255 is at most
  `ROBUST_THRESHOLD`, else "masked — BPDA did not break it".
- **robust**: every check passed and AutoAttack's robust accuracy at ε = 8/255 (mean over seeds)
  is above `ROBUST_THRESHOLD` (10 %).
- **not robust**: every check passed and AutoAttack at 8/255 is at most the threshold.
- "–" where the checks or AutoAttack at 8/255 were not run: no verdict without the evidence.

`verdict` is a plain function of those numbers, so the rule is tested on hand-made cases.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from robustbench_mm.attacks.autoattack import eps_name
from robustbench_mm.attacks.checks import ATTACK_FAILURE_INDICATORS
from robustbench_mm.report.records import ModelRuns
from robustbench_mm.runs.evaluations import Evaluation, Family

VERDICT_EPS = 8 / 255  # RobustBench's CIFAR L-inf eps
ROBUST_THRESHOLD = 10.0  # % AutoAttack robust accuracy at VERDICT_EPS that a model must keep to count as robust
ROBUST, MASKED, NOT_ROBUST, UNKNOWN = "robust", "masked", "not robust", "–"
BROKEN_BY_BPDA = "masked — broken by BPDA"
NOT_BROKEN_BY_BPDA = "masked — BPDA did not break it"
AUTOATTACK = Evaluation(Family.AUTOATTACK, eps_name(VERDICT_EPS)).name
BPDA_AUTOATTACK = Evaluation(Family.AUTOATTACK, eps_name(VERDICT_EPS), bpda=True).name

RULE = (f"**Verdict** (report/verdicts.py): **masked** when any gradient-masking check failed (in any seed) — "
        f"\"masked — broken by BPDA\" when AutoAttack through the model's BPDA surrogates (ε = 8/255) then keeps at "
        f"most {ROBUST_THRESHOLD:g} % robust accuracy; **robust** when every check passed and AutoAttack at "
        f"ε = 8/255 keeps more than {ROBUST_THRESHOLD:g} % (mean over seeds); **not robust** when every check "
        f"passed and AutoAttack keeps at most {ROBUST_THRESHOLD:g} %; \"–\" where the checks or AutoAttack at "
        "8/255 were not run. A smoke-budget AutoAttack is an upper bound, so a \"robust\" from it is provisional. "
        "The attack-failure indicators (optimisation-complete, success-flags-agree-with-model) judge an attack's own "
        "numbers, not the model, and do not decide the verdict; they are in each masking figure.")


@dataclass(frozen=True)
class Verdict:
    word: str  # robust, masked, not robust or –
    text: str  # the word with its qualifier, e.g. "masked — broken by BPDA"
    reason: str
    failed_checks: tuple[str, ...] = ()
    autoattack: float | None = None
    bpda_autoattack: float | None = None
    threshold: float = ROBUST_THRESHOLD

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed_checks": list(self.failed_checks)}


def verdict(failed_checks: list[str] | None, autoattack: float | None, bpda_autoattack: float | None = None,
            threshold: float = ROBUST_THRESHOLD) -> Verdict:
    """The rule of the module docstring. `failed_checks` None: no gradient-masking result; accuracies in %."""
    numbers = dict(autoattack=autoattack, bpda_autoattack=bpda_autoattack, threshold=threshold)
    if failed_checks is None:
        return Verdict(UNKNOWN, UNKNOWN, "no gradient-masking checks", **numbers)
    failed = tuple(failed_checks)
    if failed:
        reason = f"failed: {', '.join(failed)}"
        if bpda_autoattack is None:
            return Verdict(MASKED, MASKED, reason, failed, **numbers)
        broken = bpda_autoattack <= threshold
        return Verdict(MASKED, BROKEN_BY_BPDA if broken else NOT_BROKEN_BY_BPDA,
                       f"{reason}; BPDA AutoAttack {bpda_autoattack:.2f} % ({'≤' if broken else '>'} {threshold:g} %)",
                       failed, **numbers)
    if autoattack is None:
        return Verdict(UNKNOWN, UNKNOWN, "every check passed, but no AutoAttack at ε = 8/255", **numbers)
    above = autoattack > threshold
    return Verdict(ROBUST if above else NOT_ROBUST, ROBUST if above else NOT_ROBUST,
                   f"every check passed; AutoAttack {autoattack:.2f} % ({'>' if above else '≤'} {threshold:g} %)",
                   **numbers)


def model_verdict(model: ModelRuns, threshold: float = ROBUST_THRESHOLD) -> Verdict:
    """`verdict` of one model over its seeds: the checks any seed failed, AutoAttack's mean over seeds."""
    masking = [r.result("gradient-masking") for r in model.runs if r.result("gradient-masking")]
    failed = None if not masking else sorted({c["name"] for m in masking for c in m["checks"]
                                              if not c.get("passed") and c["name"] not in ATTACK_FAILURE_INDICATORS})
    autoattack, _ = model.cell(AUTOATTACK, lambda r: r["robust_accuracy"], "")
    bpda_autoattack, _ = model.cell(BPDA_AUTOATTACK, lambda r: r["robust_accuracy"], "")
    found = verdict(failed, autoattack.mean if autoattack else None,
                    bpda_autoattack.mean if bpda_autoattack else None, threshold)
    budgets = {r.result(AUTOATTACK).get("budget", "standard") for r in model.runs if r.result(AUTOATTACK)}
    if found.word == "robust" and budgets - {"standard"}:  # a smaller budget only bounds robust accuracy from above
        return replace(found, text=f"robust — provisional ({'/'.join(sorted(budgets - {'standard'}))}-budget "
                                   "AutoAttack)")
    return found
