"""Indicators of attack failure: values by hand, planted faults that must trip them, healthy runs that must not."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_mm.attacks import PROTOCOLS, pgd
from robustbench_mm.attacks.indicators import (
    INCOMPLETE_THRESHOLD, INCOMPLETE_WINDOW, check_silent_success, incomplete_optimisation, loss_movement, reevaluate,
    silent_success,
)
from robustbench_mm.attacks.pgd import per_example_losses

STANDARD = PROTOCOLS["standard"]


class Linear(nn.Module):
    """logits (z, -z), z = sum(w * x): the CE loss of either class is monotone in every pixel."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        z = (self.w * x).flatten(1).sum(1)
        return torch.stack([z, -z], dim=1)


def linear_case():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)
    x = torch.rand(6, 3, 4, 4) * 0.5 + 0.25  # away from the clip, so every pixel reaches the ball's corner
    model = Linear(w).eval()
    with torch.no_grad():
        labels = model(x).argmax(1)
    return model, x, labels


# ---- incomplete optimisation --------------------------------------------------------------------------


def test_loss_movement_is_the_rescaled_best_loss_moved_over_the_window_by_hand():
    trace = [0.0, 4.0, 6.0, 7.0, 7.5, 7.75, 8.0]  # range 8; last 3 iterates move 7.5 -> 8, last 2 7.75 -> 8
    assert loss_movement(trace, window=3).tolist() == [0.0625]
    assert loss_movement(trace, window=2).tolist() == [0.03125]
    assert loss_movement(trace, window=100).tolist() == [1.0]  # the whole trace when shorter than the window
    assert incomplete_optimisation(trace, window=3).tripped
    healthy = incomplete_optimisation(trace, window=2)
    assert not healthy.tripped and healthy.value == 0.03125 and healthy.threshold == INCOMPLETE_THRESHOLD


def test_loss_movement_keeps_the_best_so_far_and_handles_direction_constant_and_nan():
    # Oscillating after its best (a fixed-step signed attack does): the best is flat, nothing moves.
    assert loss_movement([0.0, 8.0, 4.0, 8.0, 5.0, 8.0], window=4).tolist() == [0.0]
    assert loss_movement([0.0, 8.0, 4.0, 8.0, 5.0, 8.0], window=5).tolist() == [0.0]
    # A minimising attack: 8 -> 0.5 over the trace (range 7.5), the last 2 iterates 1 -> 0.5.
    assert loss_movement([8.0, 4.0, 2.0, 1.0, 0.5], window=2, maximize=False)[0] == pytest.approx(0.5 / 7.5)
    assert loss_movement([3.0, 3.0, 3.0]).tolist() == [0.0]  # constant: no division by zero
    both = loss_movement(np.array([[0.0, 1.0], [1.0, math.nan], [1.0, 2.0]]), window=2)
    assert both[0] == 0.0 and math.isnan(both[1])
    indicator = incomplete_optimisation(np.array([[0.0, 1.0], [1.0, math.nan], [1.0, 2.0]]), window=2)
    assert indicator.tripped and math.isnan(indicator.value) and "non-finite" in indicator.explanation
    with pytest.raises(ValueError):
        loss_movement([])


def test_pgd_records_losses_without_changing_its_iterates():
    model, x, labels = linear_case()
    plain = pgd(model, x, labels, STANDARD, steps=6, step_size=0.02, eps=0.05)
    recorded = pgd(model, x, labels, STANDARD, steps=6, step_size=0.02, eps=0.05, record_losses=True)
    assert plain.losses is None
    assert torch.equal(plain.adversarial, recorded.adversarial) and torch.equal(plain.correct, recorded.correct)
    assert recorded.losses.shape == (7, 6)
    torch.testing.assert_close(recorded.losses[0], nn.functional.cross_entropy(model(x), labels, reduction="none"))
    torch.testing.assert_close(recorded.losses[-1], per_example_losses(STANDARD, model(recorded.adversarial), labels))


def test_incomplete_optimisation_trips_on_an_attack_stopped_early_and_not_on_a_converged_one():
    model, x, labels = linear_case()
    eps, step = 0.04, 0.01  # signed steps reach the corner of the ball after 4 steps, then the loss is flat
    stopped = pgd(model, x, labels, STANDARD, steps=2, step_size=step, eps=eps, record_losses=True)
    assert (stopped.losses[-1] > stopped.losses[-2]).all()  # the planted fault: still climbing when stopped
    indicator = incomplete_optimisation(stopped.losses)
    assert indicator.tripped and indicator.value == 1.0 and "6 of 6 traces" in indicator.explanation
    assert incomplete_optimisation(stopped.losses.mean(1)).tripped  # the batch mean trips as well

    converged = pgd(model, x, labels, STANDARD, steps=20, step_size=step, eps=eps, record_losses=True)
    assert (converged.losses[-INCOMPLETE_WINDOW:] == converged.losses[-1]).all()  # flat from step 4 on
    indicator = incomplete_optimisation(converged.losses)
    assert not indicator.tripped and indicator.value == 0.0 and "0 of 6 traces" in indicator.explanation
    assert not incomplete_optimisation(converged.losses.mean(1)).tripped


# ---- silent success -----------------------------------------------------------------------------------


def test_silent_success_counts_disagreements_in_both_directions_by_hand():
    claimed = torch.tensor([True, True, False, False, True, False, False, False])
    correct = torch.tensor([False, True, False, True, False, True, True, True])
    # example 1: claimed, classified correctly (overclaimed); example 2: not claimed, misclassified (silent)
    indicator = silent_success(claimed, correct)
    assert indicator.tripped and indicator.value == 25.0 and indicator.threshold == 0.0
    assert "1 of 8 examples the model misclassifies" in indicator.explanation
    assert "1 reported as fooled" in indicator.explanation
    assert not silent_success(claimed, correct, max_share=25.0).tripped
    assert not silent_success(claimed, ~claimed).tripped
    with pytest.raises(ValueError):
        silent_success(claimed, correct[:3])


def test_silent_success_trips_on_flipped_flags_and_not_on_an_honest_attack():
    model, x, labels = linear_case()
    run = pgd(model, x, labels, STANDARD, steps=10, step_size=0.005, eps=0.02)  # fools examples 1 and 2 only
    claimed = ~run.correct[-1]  # the attack's own verdict on its last iterate
    assert claimed.tolist() == [False, True, True, False, False, False]
    honest = check_silent_success(model, run.adversarial, labels, claimed, batch_size=4)
    assert not honest.tripped and honest.value == 0.0

    flipped = claimed.clone()
    flipped[[0, 1]] = ~flipped[[0, 1]]  # the planted fault
    indicator = check_silent_success(model, run.adversarial, labels, flipped, batch_size=4)
    assert indicator.tripped and indicator.value == pytest.approx(100 * 2 / 6)
    assert "1 of 6 examples the model misclassifies" in indicator.explanation  # example 1, now unclaimed
    assert "1 reported as fooled" in indicator.explanation  # example 0, now claimed


def test_reevaluate_reads_uint8_images_and_batches():
    model, x, labels = linear_case()
    as_bytes = (x * 255).round().to(torch.uint8)
    expected = model(as_bytes.float() / 255).argmax(1) == labels
    assert torch.equal(reevaluate(model, as_bytes, labels, batch_size=4), expected)
    assert reevaluate(model, x[:0], labels[:0]).shape == (0,)
