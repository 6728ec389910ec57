"""Attacks on models that take [0, 1] pixels, and the automatic gradient-masking checks.

- `core`: the two protocols (standard / paper), one input gradient, one signed step.
- `fgsm`: FGSM at one eps or over a sweep from one gradient.
- `pgd`: bounded and unbounded PGD (optionally from Madry et al.'s random start), worst case over iterates,
  the active set.
- `apgd`: APGD-CE and APGD-T at the reference arithmetic, with the active set.
- `fab`: FAB-T (targeted FAB, L-inf) at the reference arithmetic, with the active set.
- `square`: the Square attack (L-inf, margin loss) at the reference arithmetic, with the active set.
- `autoattack`: AutoAttack "standard" L-inf at the reference settings (our APGD-CE, APGD-T, FAB-T and Square).
- `checks`: the gradient-masking checks.

The attacks work on the model's device and never wait for it except where the active set must
know which examples left; the checks are plain functions of their per-example results.
"""

from robustbench_mm.attacks.autoattack import (
    BUDGETS, REFERENCE, STAGE_LABELS, STAGES, AutoAttackFlags, AutoAttackSettings, eps_name, eps_text,
    run_autoattack)
from robustbench_mm.attacks.checks import (
    DETERMINISM_TOLERANCE, GRADIENT_HISTOGRAM_EDGES, Check, check_black_box_not_stronger, check_deterministic,
    check_eps_zero_is_clean, check_input_gradients, check_iterative_beats_single_step, check_sweep_does_not_rise,
    check_unbounded_pgd, gradient_histogram, largest_rise)
from robustbench_mm.attacks.core import (
    PROTOCOLS, LossFn, Protocol, StepCallback, bce_on_softmax_one_hot, cross_entropy, gradient_size, input_gradient,
    percent, signed_step)
from robustbench_mm.attacks.fgsm import FgsmSweep, fgsm, fgsm_sweep
from robustbench_mm.attacks.pgd import (
    BOUNDED_PGD_STEP_FACTOR, WORST_CASE_DEFINITION, PgdRun, WorstCase, bounded_pgd_step_size, pgd, pgd_step,
    pgd_worst_case, random_start)

__all__ = [
    "BUDGETS", "REFERENCE", "STAGE_LABELS", "STAGES", "AutoAttackFlags", "AutoAttackSettings", "eps_name", "eps_text",
    "run_autoattack",
    "BOUNDED_PGD_STEP_FACTOR", "DETERMINISM_TOLERANCE", "GRADIENT_HISTOGRAM_EDGES", "PROTOCOLS",
    "WORST_CASE_DEFINITION", "Check", "FgsmSweep", "LossFn", "PgdRun", "Protocol", "StepCallback", "WorstCase",
    "bce_on_softmax_one_hot", "bounded_pgd_step_size", "check_black_box_not_stronger", "check_deterministic",
    "check_eps_zero_is_clean", "check_input_gradients", "check_iterative_beats_single_step",
    "check_sweep_does_not_rise", "check_unbounded_pgd", "cross_entropy", "fgsm", "fgsm_sweep", "gradient_histogram",
    "gradient_size", "input_gradient", "largest_rise", "percent", "pgd", "pgd_step", "pgd_worst_case",
    "random_start", "signed_step",
]
