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
