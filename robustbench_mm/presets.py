"""The presets, in one place: what `train`, `reproduce` and the report each take from `--preset`.

Anything given on the command line wins over these. `smoke` is the offline digits demo (minutes on
two CPU cores); `fast` and `paper` train on CIFAR for 200 and 1200 epochs.
"""

from __future__ import annotations

from typing import Any

PRESETS = ("paper", "fast", "smoke")

# Training settings per preset.
TRAINING: dict[str, dict[str, Any]] = {
    "paper": dict(epochs=1200, lr=0.1, milestones=(400, 800), batch_size=100),
    "fast": dict(epochs=200, lr=0.1, milestones=(100, 150), batch_size=100),
    # Offline digits at a quarter of the width: all four table models train on 2 CPU cores in minutes.
    "smoke": dict(
        dataset="digits", epochs=12, lr=0.05, milestones=(8,), batch_size=64, width=16,
        eval_batch_size=500, device="auto",
        # The demo's time budget: adversarial training costs (steps + 1) clean steps, so smoke uses 3 inner steps
        # (stated wherever the model is shown); paper and fast keep Madry et al.'s 7.
        adv_steps=3,
    ),
}

# Test images each evaluation stage of `reproduce` uses (None: every one; the smoke preset's 357 digits too:
# with the active set, 200-step unbounded PGD costs a few passes per example, not 200). The corruptions are
# 75 full evaluation passes per model; on an idle 2-core machine the six demo models' 450 sets of all 357
# images took 66 s, making the sets about 1 s of it (CPU forward passes in batches of 128, runtime.py).
EVALUATION_EXAMPLES = {
    "smoke": {"attack": None, "deform": None, "corrupt": None},
    "fast": {"attack": None, "deform": None, "corrupt": None},
    "paper": {"attack": None, "deform": None, "corrupt": None},
}

# AutoAttack per preset. The reference settings (APGD-T and FAB-T with 9 targets x 100 steps, Square
# with 5000 queries on whatever survives) take tens of minutes per model on two CPU cores, so the
# smoke demo runs the same four stages with the small "smoke" budget, at 8/255 only; the tables say so.
AUTOATTACK = {
    "smoke": {"autoattack": True, "aa_budget": "smoke", "aa_paper_eps": False},
    "fast": {"autoattack": True, "aa_budget": "standard", "aa_paper_eps": True},
    "paper": {"autoattack": True, "aa_budget": "standard", "aa_paper_eps": True},
}

# The paper preset deforms with the authors' warp, so Tables 3 and 7 compare like with like, and the
# report shows that result as the main table; the others keep ours. Fill: black for every preset.
DEFORM_CONVENTION = {"smoke": "ours", "fast": "ours", "paper": "authors"}


def deform_convention(preset: str) -> str:
    """The warp `reproduce --preset` deforms with, and the report shows first (ours for a preset of none)."""
    return DEFORM_CONVENTION.get(preset, "ours")
