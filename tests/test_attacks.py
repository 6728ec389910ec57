"""The attack maths against hand-computed cases, torchattacks, and models built to mask gradients."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import tiny_config

from robustbench_mm.attacks import (
    PROTOCOLS, WorstCase, check_eps_zero_is_clean, check_iterative_beats_single_step, check_sweep_does_not_rise,
    fgsm, fgsm_sweep, largest_rise, pgd, pgd_worst_case)
from robustbench_mm.config import AttackConfig
from robustbench_mm.data.images import load_dataset
from robustbench_mm.evaluation.attack import ModelAttacks
from robustbench_mm.data.images import NORMALIZATION
from robustbench_mm.runs.checkpoints import LoadedModel, load_model
from robustbench_mm.sources.loading import from_run

STANDARD, PAPER = PROTOCOLS["standard"], PROTOCOLS["paper"]


class TwoClassLinear(nn.Module):
    """logits = (z, -z) with z = sum(w * (x - mean) / std): every input gradient is known by hand."""

    def __init__(self, w: torch.Tensor, std=(0.1, 0.2, 0.4)):
        super().__init__()
        self.register_buffer("mean", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.w = nn.Parameter(w)

    def forward(self, x):
        z = (self.w * (x - self.mean) / self.std).flatten(1).sum(1)
        return torch.stack([z, -z], dim=1)


W = torch.tensor([[[1.0, -2.0], [0.0, 0.5]], [[-1.0, 0.0], [3.0, -0.5]], [[0.25, 0.0], [-4.0, 1.0]]])
X = torch.tensor([[[[0.99, 0.01], [0.5, 0.2]], [[0.3, 0.6], [0.98, 0.02]], [[0.0, 1.0], [0.7, 0.4]]],
                  [[[0.5, 0.5], [0.5, 0.5]], [[0.1, 0.9], [0.2, 0.8]], [[1.0, 0.0], [0.03, 0.97]]]])
LABELS = torch.tensor([0, 1])


def loss_direction(labels):
    """For logits (z, -z), raising the loss of class 0 lowers z (move against w), of class 1 raises it."""
    return torch.where(labels == 0, -1.0, 1.0).view(-1, 1, 1, 1) * W.sign()


def test_standard_fgsm_on_linear_model_equals_closed_form():
    eps = 0.03
    adversarial = fgsm(TwoClassLinear(W), X, LABELS, eps, STANDARD)
    expected = (X + eps * loss_direction(LABELS)).clamp(0, 1)
    torch.testing.assert_close(adversarial, expected, rtol=0, atol=1e-7)
    # Hand-checked corners: 0.99 pushed up is clipped to 1; w = 0 leaves the pixel alone.
    assert adversarial[1, 0, 0, 0] == pytest.approx(0.53) and adversarial[1, 2, 0, 0] == 1.0
    assert adversarial[0, 0, 1, 0] == X[0, 0, 1, 0]


def test_paper_protocol_moves_each_pixel_by_eps_times_std_and_does_not_clip():
    eps = 0.05
    model = TwoClassLinear(W)
    adversarial = fgsm(model, X, LABELS, eps, PAPER)
    expected = X + eps * model.std * loss_direction(LABELS)
    torch.testing.assert_close(adversarial, expected, rtol=0, atol=1e-7)
    moved = (adversarial - X).abs()
    for channel, std in enumerate((0.1, 0.2, 0.4)):
        nonzero = W[channel] != 0
        torch.testing.assert_close(moved[:, channel][:, nonzero], torch.full_like(moved[:, channel][:, nonzero],
                                                                                  eps * std), rtol=0, atol=1e-7)
    assert adversarial.max() > 1  # 1.0 + 0.05 * 0.4: the authors never clipped


class SmallMLP(nn.Module):
    """A one-hidden-layer net with the digits normalization inside, like the real models."""

    def __init__(self, hidden: int = 32):
        super().__init__()
        mean, std = NORMALIZATION["digits"]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.hidden = nn.Linear(3 * 32 * 32, hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.out(F.relu(self.hidden(((x - self.mean) / self.std).flatten(1))))


@pytest.fixture(scope="module")
def small():
    """A small model trained to ~95 % test accuracy in seconds, and the first 60 test images."""
    torch.manual_seed(0)
    train = load_dataset("digits", train=True).subset(600)
    x, y = train.as_float(), train.labels
    model = SmallMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    test = load_dataset("digits", train=False).subset(60)
    with torch.no_grad():
        assert (model(test.as_float()).argmax(1) == test.labels).float().mean() > 0.9
    return model, test.as_float(), test.labels


@pytest.fixture(scope="module")
def preactresnet(tiny_runs):
    loaded = load_model(tiny_runs["baseline"], "last", "cpu")
    test = load_dataset("digits", train=False).subset(60)
    return loaded.model, test.as_float(), test.labels


def test_standard_fgsm_equals_torchattacks_fgsm(preactresnet):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, labels = preactresnet
    for eps in (0.0, 0.03, 0.1):
        ours = fgsm(model, x, labels, eps, STANDARD)
        theirs = torchattacks.FGSM(model, eps=eps)(x, labels)
        assert torch.equal(ours, theirs), f"eps {eps}: max difference {(ours - theirs).abs().max():.3g}"


def test_standard_adversarials_stay_within_eps_and_the_unit_range(preactresnet):
    model, x, labels = preactresnet
    eps = 0.03
    for adversarial in (fgsm(model, x, labels, eps, STANDARD),
                        pgd(model, x, labels, STANDARD, steps=5, step_size=0.01, eps=eps).adversarial):
        assert (adversarial - x).abs().max() <= eps + 1e-6
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        assert (adversarial != x).float().mean() > 0.5  # it did move


def test_fgsm_sweep_matches_single_fgsm_at_each_eps(small):
    model, x, labels = small
    grid = [0.0, 0.02, 0.1]
    sweep = fgsm_sweep(model, x, labels, grid, STANDARD)
    for row, eps in enumerate(grid):
        adversarial = fgsm(model, x, labels, eps, STANDARD)
        with torch.no_grad():
            single = model(adversarial).argmax(1) == labels
        assert torch.equal(sweep.correct[row], single)
    with torch.no_grad():
        assert torch.equal(sweep.correct[0], model(x).argmax(1) == labels)
    assert sweep.correct[2].float().mean() < sweep.correct[0].float().mean()


def test_unbounded_pgd_drives_a_trained_model_to_zero(small):
    model, x, labels = small
    run = pgd(model, x, labels, STANDARD, steps=200, step_size=0.01, eps=None)
    accuracy = 100 * run.correct.float().mean(dim=1)
    with torch.no_grad():
        assert torch.equal(run.correct[0], model(x).argmax(1) == labels)
    assert run.correct.shape == (201, len(labels))
    assert accuracy[0] > 90 and accuracy[-1] <= 1.0
    assert (run.adversarial - x).abs().max() > 0.1  # beyond any eps ball Table 5 uses: nothing held it back


def first_fooled(correct: torch.Tensor) -> torch.Tensor:
    """From (steps + 1, N) per-iterate correctness: the first iterate that is wrong, steps + 1 if none."""
    steps = correct.shape[0] - 1
    wrong = ~correct
    return torch.where(wrong.any(0), wrong.int().argmax(0), torch.tensor(steps + 1))


def test_worst_case_accuracy_by_hand():
    # example 0 fooled at iterate 2 only (then right again), 1 never, 2 at the clean image, 3 at iterate 3
    correct = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool).T
    run = WorstCase(first_fooled(correct), steps=3, example_steps=0)
    assert run.fooled_at.tolist() == [2, 4, 0, 3]
    assert run.accuracy_per_step() == [75.0, 75.0, 50.0, 25.0]
    assert run.final.tolist() == [False, True, False, False]
    last_iterate = 100 * correct[-1].double().mean().item()
    assert last_iterate == 75.0 and run.accuracy_per_step()[-1] == 25.0  # the last iterate alone misses two


@pytest.mark.parametrize("protocol, eps", [(STANDARD, None), (PAPER, None), (STANDARD, 0.03)])
def test_worst_case_is_at_most_last_iterate_per_example(small, protocol, eps):
    model, x, labels = small
    run = pgd(model, x, labels, protocol, steps=30, step_size=0.01, eps=eps)
    worst = run.worst_case()
    assert not (worst & ~run.correct).any()  # never robust where an iterate was wrong
    assert all(a >= b for a, b in zip(worst.sum(1).tolist(), worst.sum(1)[1:].tolist()))  # never rises
    assert not (worst[-1] & ~run.correct[-1]).any()


@pytest.mark.parametrize("protocol, eps, batch_size", [(STANDARD, None, 7), (PAPER, None, 16), (STANDARD, 0.03, 5)])
def test_active_set_equals_full_batch_worst_case_per_example(small, protocol, eps, batch_size):
    """Fooled examples leave and others fill their slots: every example still gets its own iterates."""
    model, x, labels = small
    steps = 25
    full = pgd(model, x, labels, protocol, steps=steps, step_size=0.01, eps=eps)
    images = (x * 255).round().to(torch.uint8)  # the runner takes test-set pixels; these equal x exactly
    assert torch.equal(images.float() / 255, x)
    active = pgd_worst_case(model, images, labels, protocol, steps, 0.01, eps, batch_size)
    expected = first_fooled(full.correct)
    assert torch.equal(active.fooled_at, expected)
    assert 0 < (expected <= steps).sum() < len(labels) or eps is None  # some fall, some (bounded) survive
    assert active.accuracy_per_step() == (100 * full.worst_case().double().mean(1)).tolist()
    # the cost: at most one pass per example per iterate it is still standing at (fewer where an iterate stopped
    # moving, a fixed point that leaves early), never a full batch for the rest
    bound = int(torch.clamp(expected, max=steps).add(1).sum())
    assert active.example_steps <= bound and active.example_steps < (steps + 1) * len(labels)
    if eps is None:  # unbounded, nothing pins an iterate: no example stalls on this model
        assert active.example_steps == bound


def test_a_stalled_iterate_leaves_with_the_outcome_of_the_full_run(small):
    """A zero input gradient leaves the image where it is: the example leaves after its next pass, still correct,
    with the worst case a full run of every step would give (thermometer-style gradient masking costs 2 passes)."""
    model, x, labels = small
    images = (x * 255).round().to(torch.uint8)
    flat = lambda logits, y: logits.sum() * 0.0  # noqa: E731  a loss whose input gradient is exactly zero
    masked = dataclasses.replace(STANDARD, summed_loss=flat)
    steps = 30
    full = pgd(model, x, labels, masked, steps=steps, step_size=0.01, eps=None)
    active = pgd_worst_case(model, images, labels, masked, steps, 0.01, None, 16)
    assert torch.equal(active.fooled_at, first_fooled(full.correct))
    correct_at_start = int(full.correct[0].sum())
    assert active.example_steps == len(labels) + correct_at_start  # one pass each, a second for those standing


def test_attacks_never_wait_for_the_device(small, monkeypatch):
    """No .item(), .tolist(), .cpu(), .numpy() or truth test of a tensor inside an attack loop."""
    model, x, labels = small

    def forbidden(name):
        def fail(*args, **kwargs):
            raise AssertionError(f"host synchronisation: Tensor.{name} called inside an attack")
        return fail

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))
    for protocol in (STANDARD, PAPER):
        fgsm_sweep(model, x, labels, [0.0, 0.03], protocol)
        pgd(model, x, labels, protocol, steps=3, step_size=0.01, eps=None)
        pgd(model, x, labels, protocol, steps=3, step_size=0.01, eps=0.03)


def test_unbounded_pgd_check_takes_its_verdict_from_the_paper_protocol():
    from robustbench_mm.attacks import check_unbounded_pgd
    curves = {"standard": [90.0, 10.0, 0.0], "paper": [90.0, 40.0, 5.0]}
    check = check_unbounded_pgd(curves, 1.0, "paper")
    assert not check.passed and check.value == 5.0 and "standard protocol: 0.00 %" in check.detail
    assert check_unbounded_pgd(curves, 1.0, "standard").passed


# ---- the checks -----------------------------------------------------------------------------------


def test_largest_rise_by_hand():
    assert largest_rise([90, 80, 80, 70]) == 0
    assert largest_rise([90, 50, 60, 55, 52]) == 10  # measured from the lowest value before it
    assert largest_rise([90, 50, 51, 49, 53]) == 4  # 53 climbs above the later low of 49


def test_sweep_and_eps_zero_checks_by_hand():
    eps = [0.0, 0.01, 0.02]
    falling = {"standard": (eps, [90.0, 60.0, 40.0])}
    rising = {"standard": (eps, [90.0, 40.0, 45.0]), "paper": (eps, [90.0, 80.0, 79.0])}
    assert check_sweep_does_not_rise(falling, 1.0).passed
    failed = check_sweep_does_not_rise(rising, 1.0)
    assert not failed.passed and failed.value == 5.0
    assert check_eps_zero_is_clean(falling, 90.0).passed
    moved = check_eps_zero_is_clean(falling, 91.0)
    assert not moved.passed and moved.value == 1.0


def test_iterative_check_counts_examples_fooled_by_fgsm_only():
    fgsm_correct = torch.tensor([True, False, False, True, True, False, True, True, True, True])
    pgd_correct = torch.tensor([False, False, True, False, False, False, False, True, True, True])
    check = check_iterative_beats_single_step(fgsm_correct, pgd_correct, 0.03, 20, max_fgsm_only_share=5.0)
    assert check.value == 10.0 and not check.passed  # PGD is stronger overall, but one example is FGSM-only
    assert check.figure["fooled_by_fgsm_only"] == 1 and check.figure["fooled_by_pgd_only"] == 4
    assert check_iterative_beats_single_step(fgsm_correct, pgd_correct, 0.03, 20, max_fgsm_only_share=10.0).passed


class RoundsInput(nn.Module):
    """Quantises its input to 8 bits: the gradient through round() is zero everywhere."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.std = inner, inner.std

    def forward(self, x):
        return self.inner(torch.round(x * 255) / 255)


class SaturatesLogits(nn.Module):
    """Scales logits by 1e4: softmax is exactly one-hot, so correct inputs get exactly zero gradient."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.std = inner, inner.std

    def forward(self, x):
        return 1e4 * self.inner(x)


class NoisyLogits(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.std = inner, inner.std

    def forward(self, x):
        logits = self.inner(x)
        return logits + 0.1 * torch.randn_like(logits)


CHECK_CONFIG = AttackConfig(eps=(0.03,), sweep=(0.0, 0.03, 0.1), pgd_steps=50, bounded_pgd_steps=10, n_examples=60,
                            batch_size=30, save_examples=0, device="cpu")


def run_checks(model, tmp_path, **overrides):
    """The runner's checks on `model`, as `mm-robust attack` would run them on a checkpoint."""
    config = tiny_config(tmp_path, method="baseline")
    loaded = LoadedModel(model, config, {"epoch": 1, "checkpoints": {"last": {"epoch": 1}}}, tmp_path / "run", "last",
                         weights_sha256="untrained test model, no weights file")
    data = load_dataset("digits", train=False).subset(60)
    attacks = ModelAttacks(from_run(loaded), data, dataclasses.replace(CHECK_CONFIG, **overrides), tmp_path / "attacks",
                           torch.device("cpu"), force=True, progress=False)
    return {check.name: check for check in attacks.checks()}


def test_checks_pass_an_honest_model(small, tmp_path):
    checks = run_checks(small[0], tmp_path)
    failed = [f"{c.name}: {c.detail}" for c in checks.values() if not c.passed]
    assert not failed


@pytest.mark.parametrize("wrapper", [RoundsInput, SaturatesLogits])
def test_checks_flag_models_that_mask_gradients(small, tmp_path, wrapper):
    checks = run_checks(wrapper(small[0]), tmp_path, pgd_steps=20)
    assert not checks["input-gradients-nonzero-and-finite"].passed
    assert checks["input-gradients-nonzero-and-finite"].value > 50
    assert not checks["unbounded-pgd-reaches-zero"].passed
    assert checks["logits-deterministic"].passed and checks["eps-zero-equals-clean"].passed


def test_checks_flag_a_randomised_model(small, tmp_path):
    checks = run_checks(NoisyLogits(small[0]), tmp_path, pgd_steps=5)
    assert not checks["logits-deterministic"].passed
