"""Issue 23 part B: the controls' evaluation, the new failure indicators as masking checks, BPDA results, verdicts."""

from __future__ import annotations

import torch
from torch import nn

from robustbench_mm.attacks import PROTOCOLS, bounded_pgd_step_size, pgd
from robustbench_mm.attacks.checks import check_incomplete_optimisation, check_silent_success
from robustbench_mm.attacks.indicators import reevaluate
from robustbench_mm.figures.masking import PANELS


def linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(16, 3, 2, 2, generator=generator), torch.randint(0, 3, (16,), generator=generator)


def traced(model, x, labels, eps, steps, step):
    run = pgd(model, x, labels, PROTOCOLS["standard"], steps, step, eps, record_losses=True)
    return run, run.worst_case()[-1]


def test_incomplete_optimisation_check_passes_a_finished_attack_and_trips_on_a_planted_tiny_step():
    model, (x, labels) = linear_model(), batch()
    eps, steps = 0.05, 20  # on a linear model signed PGD reaches the ball's corner in a few steps, then stays
    run, failed = traced(model, x, labels, eps, steps, bounded_pgd_step_size(eps, steps))
    assert failed.any()
    finished = check_incomplete_optimisation(run.losses, failed, "PGD")
    assert finished.passed and finished.value <= 0.05
    # Planted fault: a step 1000x too small, so the loss is still climbing when the attack stops.
    run, failed = traced(model, x, labels, eps, steps, bounded_pgd_step_size(eps, steps) / 1000)
    stalled = check_incomplete_optimisation(run.losses, failed, "PGD")
    assert not stalled.passed and stalled.value > 0.4  # a linear climb: ~9 of its 20 steps in the window
    assert stalled.figure["kind"] == "loss-trace" and stalled.figure["kind"] in PANELS
    assert stalled.figure["n_failed"] == int(failed.sum())


def test_incomplete_optimisation_ignores_fooled_examples_and_trips_on_a_non_finite_loss():
    losses = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])  # example 0 fooled: its loss may climb
    assert check_incomplete_optimisation(losses, torch.tensor([False, True]), "PGD", window=2).passed
    assert not check_incomplete_optimisation(losses, torch.tensor([True, True]), "PGD", window=2).passed
    losses[2, 1] = float("nan")  # planted fault: a NaN loss in a failed example's trace
    check = check_incomplete_optimisation(losses, torch.tensor([False, True]), "PGD", window=2)
    assert not check.passed and check.value is None
    assert check_incomplete_optimisation(losses, torch.tensor([False, False]), "PGD").passed  # nothing failed


def test_silent_success_check_agrees_on_a_sound_attack_and_trips_on_a_planted_stale_image():
    model, (x, labels) = linear_model(), batch()
    eps, steps = 0.3, 10
    run = pgd(model, x, labels, PROTOCOLS["standard"], steps, bounded_pgd_step_size(eps, steps), eps)
    claimed = run.correct[-1].logical_not()
    sound = check_silent_success(claimed, reevaluate(model, run.adversarial, labels), "PGD")
    assert sound.passed and sound.value == 0.0 and sound.figure["kind"] in PANELS
    # Planted fault: the attack hands back its starting point (the clean images) instead of its last iterate,
    # so the successes it reports are not there when the images are evaluated again.
    correct_on_returned = reevaluate(model, x, labels)
    assert (claimed & correct_on_returned).any()
    check = check_silent_success(claimed, correct_on_returned, "PGD")
    assert not check.passed and check.value > 0
    assert check.figure["overclaimed"] == int((claimed & correct_on_returned).sum())


def test_silent_success_counts_both_directions_against_its_threshold():
    claimed = torch.tensor([True, False, False, True])
    correct = torch.tensor([False, False, True, True])  # example 1: silent success; example 3: overclaimed
    check = check_silent_success(claimed, correct, "attack")
    assert not check.passed and check.value == 50.0
    assert (check.figure["silent"], check.figure["overclaimed"]) == (1, 1)
    assert check_silent_success(claimed, correct, "attack", max_share=50.0).passed


# ---- the controls end to end, on tiny models ------------------------------------------------------------

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from robustbench_mm.config import AttackConfig  # noqa: E402
from robustbench_mm.evaluation.attack_plan import BPDA_VERSION  # noqa: E402
from robustbench_mm.evaluation.attack import run_attacks  # noqa: E402
from robustbench_mm.report.build import build_report  # noqa: E402
from robustbench_mm.report.records import NO_BPDA_LAYER, load_records  # noqa: E402
from robustbench_mm.report.verdicts import (  # noqa: E402
    BROKEN_BY_BPDA, MASKED, NOT_BROKEN_BY_BPDA, NOT_ROBUST, ROBUST, UNKNOWN, verdict)
from robustbench_mm.runs.evaluations import Evaluation, Family  # noqa: E402
from robustbench_mm.train.trainer import train  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

TINY_CONTROL = dict(width=4, epochs=2, milestones=(1,), n_train=160, n_test=32)
TINY_ATTACK = AttackConfig(n_examples=32, batch_size=32, sweep=(0.0, 0.03), pgd_steps=10, pgd_step_size=0.05,
                           bounded_pgd_steps=5, save_examples=0, autoattack=True, aa_paper_eps=False,
                           aa_budget="smoke", device="cpu")


@pytest.fixture(scope="module")
def controls(tmp_path_factory):
    """Tiny adversarially trained and thermometer models, attacked: (checkpoints, attacks, {method: run name})."""
    root = tmp_path_factory.mktemp("controls")
    runs = {m: train(tiny_config(root / "checkpoints", method=m, **TINY_CONTROL), progress=False).name
            for m in ("adversarial", "thermometer")}
    run_attacks(TINY_ATTACK, root / "checkpoints", root / "attacks", progress=False)
    return root / "checkpoints", root / "attacks", runs


def result(attacks: Path, run: str, evaluation: str) -> dict:
    return json.loads((attacks / run / f"{evaluation}.json").read_text())


def test_thermometer_is_flagged_by_zero_gradients_and_bpda_autoattack_breaks_it(controls):
    _, attacks, runs = controls
    run = runs["thermometer"]
    masking = result(attacks, run, "gradient-masking")
    assert masking["flagged"] and "input-gradients-nonzero-and-finite" in masking["failed"]
    zero = next(c for c in masking["checks"] if c["name"] == "input-gradients-nonzero-and-finite")
    assert zero["value"] == 100.0  # every input's plain gradient is exactly zero
    # The paper protocol is left out (no pixel-scale std) and says why, instead of crashing.
    assert not (attacks / run / "fgsm-paper.json").exists()
    assert "paper" in result(attacks, run, "fgsm-standard")["protocols_not_applicable"]
    plain, bpda_run = (result(attacks, run, Evaluation(Family.AUTOATTACK, "8_255", bpda=b).name) for b in (False, True))
    assert bpda_run["settings"]["bpda"] and bpda_run["bpda"]["layers"] == ["encoding"]
    assert bpda_run["robust_accuracy"] < plain["robust_accuracy"]  # the surrogate's gradient gets through
    for evaluation in ("fgsm-standard-bpda", "pgd-unbounded-standard-bpda", "pgd-bounded-bpda"):
        assert result(attacks, run, evaluation)["settings"]["bpda"] == BPDA_VERSION


def test_masking_figure_shows_the_zero_gradient_count_when_no_gradient_has_a_logarithm(controls):
    """The thermometer model's histogram of log10 |gradient| is empty (all 0): the panel draws the counts instead."""
    from robustbench_mm.figures.masking import gradient_masking_figure

    _, attacks, runs = controls
    checks = result(attacks, runs["thermometer"], "gradient-masking")["checks"]
    figure = gradient_masking_figure(checks, "thermometer")
    panel = next(ax for ax in figure.axes if ax.get_title().endswith("input-gradients-nonzero-and-finite"))
    n = result(attacks, runs["thermometer"], "gradient-masking")["n_examples"]
    assert [bar.get_height() for bar in panel.patches] == [n, 0, 0]
    assert [tick.get_text() for tick in panel.get_xticklabels()] == ["zero", "non-finite", "nonzero and finite"]


def test_a_bpda_result_from_the_earlier_surrogate_is_not_shown(controls, tmp_path):
    checkpoints, attacks, runs = controls
    copy = tmp_path / "attacks"
    shutil.copytree(attacks, copy)
    path = copy / runs["thermometer"] / "pgd-bounded-bpda.json"
    old = json.loads(path.read_text())
    old["settings"]["bpda"] = True  # what results made before the centred surrogate store
    path.write_text(json.dumps(old))
    records, problems = load_records(checkpoints, copy)
    record = next(r for r in records if r.name == runs["thermometer"])
    assert "pgd-bounded-bpda" not in record.results
    assert any("another BPDA surrogate (version True" in p and "pgd-bounded-bpda.json" in p for p in problems)


def test_adversarially_trained_model_has_nonzero_gradients_and_no_bpda_results(controls):
    """A tiny adversarially trained model is too weak to be called robust (its AutoAttack accuracy is near 0 after
    two epochs on 160 digits), so this checks only what must hold whatever its accuracy: its gradients are
    informative and it gets no BPDA files; the 'robust' verdict is tested on hand-made numbers below."""
    _, attacks, runs = controls
    masking = result(attacks, runs["adversarial"], "gradient-masking")
    assert "input-gradients-nonzero-and-finite" not in masking["failed"]
    assert "logits-deterministic" not in masking["failed"]
    assert not list((attacks / runs["adversarial"]).glob("*-bpda.json"))
    assert (attacks / runs["adversarial"] / "fgsm-paper.json").exists()


def test_report_fills_both_table5_control_rows_with_the_paper_numbers_and_labels_them(controls):
    checkpoints, attacks, runs = controls
    report = build_report(*load_records(checkpoints, attacks))
    table5 = report.tables["table5"][0]
    fgsm = table5.blocks[0].rows
    rows = {row[0]: row for row in fgsm}
    assert "Adv. training (Madry et al.)" in rows and "Thermometer (Buckman et al.)" in rows
    assert rows["Adv. training (Madry et al.)"][4] == "60.30" and rows["Adv. training (Madry et al.)"][7] == "60.30"
    thermometer = rows["Thermometer (Buckman et al.)"]
    assert thermometer[4] == "80.97" and thermometer[6] == "not applicable (input encoding)"
    assert "Thermometer (Buckman et al.) — BPDA" in rows
    assert not any("paper only" in row[0] or "not run here" in row for row in fgsm)
    facts = dict(table5.facts)
    assert "3 steps" in facts["Adversarial training"] and "Madry et al. use 7" in facts["Adversarial training"]
    robustness = report.tables["robustness"][0]
    header = robustness.blocks[0].columns
    assert header[-1] == "Verdict" and any(c.endswith("— BPDA") for c in header)
    verdicts = {row[0]: row[-1] for row in robustness.blocks[0].rows}
    assert verdicts["Thermometer (Buckman et al.)"].startswith(f"**{MASKED}")
    assert any(n.startswith("**Verdict**") for n in robustness.notes)
    assert any(r["evaluation"] == "verdict" for r in robustness.rows)
    adversarial = next(row for row in robustness.blocks[0].rows if row[0] == "Adv. training (Madry et al.)")
    bpda_columns = [i for i, c in enumerate(header) if c.endswith("— BPDA")]
    assert all(adversarial[i] == NO_BPDA_LAYER for i in bpda_columns)  # shown as it is, not as a missing file


@pytest.mark.parametrize("failed, autoattack, bpda_autoattack, clean, word, text", [
    ([], 79.55, None, 96.08, ROBUST, ROBUST),  # the demo's positive control: keeps 83 % of its clean accuracy
    ([], 45.0, None, 80.0, ROBUST, ROBUST),  # 45 >= 40: AutoAttack fails on most of its correct answers
    ([], 48.0, None, 96.0, ROBUST, ROBUST),  # exactly half of clean
    ([], 45.0, None, 95.0, NOT_ROBUST, NOT_ROBUST),  # above the floor but 45 < 47.5: most correct answers flipped
    ([], 13.45, None, 98.04, NOT_ROBUST, NOT_ROBUST),  # the demo's standard-trained baseline (robust by the old rule)
    ([], 10.0, None, 15.0, NOT_ROBUST, NOT_ROBUST),  # two thirds of clean, but at the 10 % floor: not above it
    ([], 10.0, None, None, NOT_ROBUST, NOT_ROBUST),  # no clean accuracy: the floor alone decides
    ([], 0.0, None, 96.64, NOT_ROBUST, NOT_ROBUST),  # the mixup models
    (["input-gradients-nonzero-and-finite"], 94.12, 46.50, 96.92, MASKED, BROKEN_BY_BPDA),  # the demo thermometer
    (["input-gradients-nonzero-and-finite"], 60.0, 0.0, 90.0, MASKED, BROKEN_BY_BPDA),  # the negative control
    (["input-gradients-nonzero-and-finite"], 60.0, 10.0, None, MASKED, BROKEN_BY_BPDA),
    (["unbounded-pgd-reaches-zero"], 60.0, 50.0, 90.0, MASKED, NOT_BROKEN_BY_BPDA),  # 50 >= 45 through BPDA
    (["unbounded-pgd-reaches-zero"], 3.0, None, 90.0, MASKED, MASKED),  # flagged without BPDA: masked all the same
    (None, 45.0, None, 50.0, UNKNOWN, UNKNOWN),  # no checks, no verdict
    ([], None, None, None, UNKNOWN, UNKNOWN),  # no AutoAttack at 8/255, no verdict
])
def test_verdict_rule_on_hand_made_cases(failed, autoattack, bpda_autoattack, clean, word, text):
    judged = verdict(failed, autoattack, bpda_autoattack, clean=clean)
    assert (judged.word, judged.text) == (word, text)
    assert judged.to_dict()["threshold"] == 10.0 and judged.to_dict()["share"] == 0.5


def test_verdict_reason_gives_the_numbers_the_rule_was_applied_to():
    assert verdict([], 13.45, clean=98.04).reason == (
        "every check passed; AutoAttack 13.45 % of 98.04 % clean (≤ 10 % or < 50 % of clean)")
    assert verdict(["x"], 94.12, 46.5, clean=96.92).reason == (
        "failed: x; BPDA AutoAttack 46.50 % of 96.92 % clean (≤ 10 % or < 50 % of clean)")


def test_table5_names_a_tripped_attack_failure_indicator_apart_from_the_masking_checks():
    """optimisation-complete questions the attack, not the model: it must not read as a flagged model."""
    from robustbench_mm.report.tables.table5 import masking_cell

    def masking(*failed):
        names = ("unbounded-pgd-reaches-zero", "logits-deterministic", "optimisation-complete")
        return {"checks": [{"name": n, "passed": n not in failed} for n in names]}

    assert masking_cell([("r", masking())], several_seeds=False) == "all 2 passed"
    only_indicator = masking_cell([("r", masking("optimisation-complete"))], several_seeds=False)
    assert "flagged" not in only_indicator and only_indicator.startswith("all 2 passed; attack-failure indicator")
    both = masking_cell([("s0", masking("logits-deterministic", "optimisation-complete")), ("s1", masking())],
                        several_seeds=True)
    assert both.startswith("**flagged**: logits-deterministic (1 of 2 seeds); attack-failure indicator tripped: "
                           "optimisation-complete")
