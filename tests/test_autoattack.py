"""AutoAttack: the reference settings pinned, worst-case flags per stage, sharding and resuming, the black-box check."""

import json

import pytest
import torch

from test_attacks import RoundsInput, small  # noqa: F401  (the fixture: a small trained MLP and 60 test images)

from robustbench_mm.attacks import PROTOCOLS, bounded_pgd_step_size, pgd_worst_case
from robustbench_mm.attacks import apgd
from robustbench_mm.attacks import autoattack as aa
from robustbench_mm.attacks import fab
from robustbench_mm.attacks.apgd import ApgdSettings
from robustbench_mm.attacks.fab import FabSettings
from robustbench_mm.attacks.square import SquareSettings
from robustbench_mm.attacks.checks import check_black_box_not_stronger

torchattacks = pytest.importorskip("torchattacks")

# Few steps and queries: these tests check how the stages are chained, not how strong each one is.
QUICK = aa.AutoAttackSettings(apgd_ce_steps=20, apgd_t_steps=10, apgd_t_targets=2, fab_t_steps=5, fab_t_targets=1,
                              square_queries=100)


def pixels(x):
    images = (x * 255).round().to(torch.uint8)
    assert torch.equal(images.float() / 255, x)
    return images


def test_every_reference_setting_is_pinned(small):
    """SPEC §10 / Croce & Hein's "standard" version, value by value, and what the components are given."""
    assert aa.STAGES == ("apgd-ce", "apgd-t", "fab-t", "square")
    assert aa.REFERENCE.to_dict() == {
        "norm": "Linf", "apgd_ce_steps": 100, "apgd_ce_restarts": 1, "apgd_rho": 0.75, "apgd_t_steps": 100,
        "apgd_t_restarts": 1, "apgd_t_targets": 9, "fab_t_steps": 100, "fab_t_restarts": 1, "fab_t_targets": 9,
        "square_queries": 5000, "square_p_init": 0.8, "square_restarts": 1}
    model = small[0]
    for num_classes in (10, 100):
        stages = aa.build_stages(model, 8 / 255, num_classes, seed=0)
        assert list(stages) == list(aa.STAGES)
        apgd_ce, apgd_t, fab_t, square = stages.values()
        assert apgd_ce == ApgdSettings(loss="ce", eps=8 / 255, steps=100, restarts=1, rho=0.75, seed=0, targets=0)
        assert apgd_t == ApgdSettings(loss="dlr-targeted", eps=8 / 255, steps=100, restarts=1, rho=0.75, seed=0,
                                      targets=9)
        assert fab_t == FabSettings(eps=8 / 255, steps=100, restarts=1, targets=9, seed=0, alpha_max=0.1, eta=1.05,
                                    beta=0.9)
        assert square == SquareSettings(eps=8 / 255, queries=5000, p_init=0.8, restarts=1, seed=0)
    assert aa.build_stages(model, 0.03, 3, seed=0)["apgd-t"].targets == 2  # never more than there are
    assert aa.build_stages(model, 0.03, 3, seed=0)["fab-t"].targets == 2
    assert (apgd.MOMENTUM, apgd.INITIAL_STEP_FACTOR) == (0.75, 2.0)
    assert (fab.ALPHA_MAX, fab.ETA, fab.BETA, fab.RANDOM_START_SCALE) == (0.1, 1.05, 0.9, 0.5)


def test_apgd_checkpoints_are_the_reference_schedule():
    """Croce & Hein: checkpoints at 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 of the iterations."""
    assert apgd.checkpoint_windows(100) == [(21, 22), (40, 19), (56, 16), (69, 13), (79, 10), (86, 7), (92, 6),
                                            (98, 6)]
    assert apgd.checkpoint_windows(10) == [(1, 2), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1), (7, 1), (8, 1), (9, 1)]


def test_oscillation_counts_rises_over_the_window():
    losses = torch.tensor([[1.0, 1.0], [2.0, 0.5], [3.0, 0.4], [2.5, 0.3]])  # rows: steps; columns: examples
    # window 3 ending at step 3: example 0 rose twice (1->2->3), example 1 never
    assert apgd.oscillating(losses, 3, 3, 0.75).tolist() == [True, True]  # 2 <= 2.25, 0 <= 2.25
    assert apgd.oscillating(losses, 3, 3, 0.5).tolist() == [False, True]  # 2 > 1.5
    # an unchanged loss is no rise: a plateau counts as oscillating (the step size is halved)
    assert apgd.oscillating(torch.ones(4, 1), 3, 3, 0.5).tolist() == [True]
    # at the first checkpoint the window reaches back to the last row, still zero in a real run
    assert apgd.oscillating(torch.tensor([[1.0], [2.0], [0.0]]), 1, 2, 0.5).tolist() == [False]


def test_targeted_dlr_by_hand():
    logits = torch.tensor([[4.0, 1.0, 3.0, 0.0, 2.0]])  # sorted: 0, 1, 2, 3, 4
    # label 0 (logit 4), target 2 (logit 3): -(4 - 3) / (4 - (2 + 1) / 2) = -1 / 2.5
    assert apgd.targeted_dlr(logits, torch.tensor([0]), torch.tensor([2])).item() == pytest.approx(-0.4)


@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
def test_apgd_run_reaches_torchattacks_losses(small, loss):
    """One run from the same seeded start: every example still standing ends at the best loss torchattacks'
    run reaches, to the bit, so the step rule, momentum, checkpoints and restarts from the best point agree."""
    model, x, labels = small
    eps, steps, rank = 0.03, 40, 2
    if loss == "ce":
        reference = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, seed=0, loss="ce", rho=0.75)
        target, loss_of = labels, apgd.cross_entropy_per_example
    else:
        reference = torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, seed=0, rho=0.75, n_classes=10)
        reference.target_class = rank
        with torch.no_grad():
            target = model(x).sort(dim=1)[1][:, -rank]
        loss_of = apgd.targeted_dlr
    torch.manual_seed(0)
    _, reference_robust, reference_loss, _ = reference.attack_single_run(x, labels)
    for active_set in (True, False):
        torch.manual_seed(0)
        ours = apgd.single_run(model, x, labels, target, eps, steps, 0.75, loss_of, active_set)
        assert torch.equal(ours.fooled, ~reference_robust)
        standing = ~ours.best_loss.isnan()
        assert int(standing.sum()) >= (10 if active_set else len(labels))
        assert torch.equal(ours.best_loss[standing], reference_loss[standing])


@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
def test_active_set_apgd_gives_torchattacks_flags_for_fewer_passes(small, loss):
    """Per example, our APGD fools exactly the examples torchattacks' APGD/APGDT fools (same seed), with or
    without the active set, and the active set spends fewer forward+backward passes."""
    model, x, labels = small
    steps, targets = 30, 3
    for eps in (0.02, 0.05):
        settings = ApgdSettings(loss=loss, eps=eps, steps=steps, restarts=1, rho=0.75, seed=1, targets=targets)
        if loss == "ce":
            reference = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=1, loss="ce",
                                          rho=0.75)
        else:
            reference = torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=1, rho=0.75,
                                           n_classes=10)
            reference.n_target_classes = targets
        reference_robust, _ = reference.perturb(x, labels, cheap=True)
        active = apgd.apgd(model, x, labels, settings)
        full = apgd.apgd(model, x, labels, settings, active_set=False)
        assert torch.equal(active.fooled, ~reference_robust), f"eps {eps}: not torchattacks' flags"
        assert torch.equal(active.fooled, full.fooled)
        assert 0 < int(active.fooled.sum()) < len(labels), "the test needs some fooled and some robust examples"
        with torch.no_grad():  # each fooled example's image really fools the model, inside the ball and [0, 1]
            assert torch.equal(model(active.adversarial).argmax(1) != labels, active.fooled)
        assert (active.adversarial - x).abs().max() <= eps + 1e-6
        assert 0 <= active.adversarial.min() and active.adversarial.max() <= 1
        runs = 1 if loss == "ce" else targets
        assert full.example_steps <= runs * (steps + 1) * len(labels)
        assert active.example_steps < full.example_steps


def test_eps_names():
    assert aa.eps_name(8 / 255) == "8_255" and aa.eps_text(8 / 255) == "8/255"
    assert aa.eps_name(0.03) == "0.03"


def test_chunks_are_aligned_to_absolute_multiples():
    assert aa.chunks(0, 10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert aa.chunks(5, 13, 4) == [(5, 8), (8, 12), (12, 13)]
    assert aa.chunks(8, 12, 4) == [(8, 12)]


def test_autoattack_is_at_most_pgd20_per_example(small):
    model, x, labels = small
    eps = 0.02
    images = pixels(x)
    pgd20 = pgd_worst_case(model, images, labels, PROTOCOLS["standard"], 20, bounded_pgd_step_size(eps, 20), eps, 64)
    flags = aa.run_autoattack(model, images, labels, eps, 10, 0, len(labels), 32, seed=0, settings=QUICK)
    assert flags.complete()
    assert not (flags.final & ~pgd20.final).any(), "AutoAttack left an example robust that PGD-20 fooled"
    assert not (flags.final & ~flags.clean).any()  # clean errors are never robust
    assert set(flags.example_steps) == set(aa.STAGES)  # every stage counts its passes (Square its queries):
    assert 0 < flags.example_steps["apgd-ce"] < (QUICK.apgd_ce_steps + 1) * int(flags.clean.sum())
    previous = flags.clean
    for stage in aa.STAGES:  # each stage only removes examples
        assert not (flags.after[stage] & ~previous).any()
        previous = flags.after[stage]


def test_shards_and_a_resumed_run_give_the_flags_of_one_run(small):
    model, x, labels = small
    images, eps, chunk = pixels(x[:40]), 0.05, 8
    whole = aa.run_autoattack(model, images, labels[:40], eps, 10, 0, 40, chunk, seed=3, settings=QUICK)
    first = aa.run_autoattack(model, images, labels[:40], eps, 10, 0, 16, chunk, seed=3, settings=QUICK)
    second = aa.run_autoattack(model, images, labels[:40], eps, 10, 16, 40, chunk, seed=3, settings=QUICK)
    for stage in aa.STAGES:
        assert torch.equal(torch.cat([first.after[stage], second.after[stage]]), whole.after[stage])
    assert {s: first.example_steps[s] + second.example_steps[s] for s in whole.example_steps} == whole.example_steps

    class Killed(Exception):
        pass

    saved = {}

    def kill_after_two_chunks(flags):
        if int(flags.done.sum()) >= 2 * chunk:
            saved["flags"] = aa.AutoAttackFlags(flags.start, flags.stop, flags.clean.clone(),
                                                {k: v.clone() for k, v in flags.after.items()}, flags.done.clone(),
                                                dict(flags.seconds), dict(flags.example_steps))
            raise Killed

    with pytest.raises(Killed):
        aa.run_autoattack(model, images, labels[:40], eps, 10, 0, 40, chunk, seed=3, settings=QUICK,
                          after_chunk=kill_after_two_chunks)
    assert int(saved["flags"].done.sum()) == 2 * chunk
    resumed = aa.run_autoattack(model, images, labels[:40], eps, 10, 0, 40, chunk, seed=3, settings=QUICK,
                                flags=saved["flags"])
    for stage in aa.STAGES:
        assert torch.equal(resumed.after[stage], whole.after[stage])
    assert resumed.example_steps == whole.example_steps
    assert 0 < int(whole.final.sum()) < int(whole.clean.sum()), "the test needs some fooled and some robust examples"


def test_black_box_check_flags_a_model_that_rounds_its_input(small):
    model, x, labels = small
    images, eps = pixels(x[:32]), 0.05
    honest = aa.run_autoattack(model, images, labels[:32], eps, 10, 0, 32, 32, seed=0, settings=QUICK)
    assert check_black_box_not_stronger(honest.after["fab-t"], honest.after["square"], eps, 0.2).passed
    masked = aa.run_autoattack(RoundsInput(model), images, labels[:32], eps, 10, 0, 32, 32, seed=0, settings=QUICK)
    check = check_black_box_not_stronger(masked.after["fab-t"], masked.after["square"], eps, 0.2)
    assert not check.passed and check.value > 5, check.detail
    assert json.dumps(check.to_dict())  # goes into gradient-masking.json as it is
