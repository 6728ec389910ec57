"""Our FAB-T and Square against hand-computed pieces and against torchattacks 3.5.1, example by example."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_attacks import RoundsInput, small  # noqa: F401  (the fixture: a small trained MLP and 60 test images)

from robustbench_mm.attacks import autoattack as aa
from robustbench_mm.attacks import fab as fab_module
from robustbench_mm.attacks import square as square_module
from robustbench_mm.attacks.apgd import apgd
from robustbench_mm.attacks.fab import FabSettings, fab, linf_projection
from robustbench_mm.attacks.square import SquareSettings, p_selection, square, square_side
from robustbench_mm.data.images import load_dataset

torchattacks = pytest.importorskip("torchattacks")


class TinyConv(nn.Module):
    """Two stride-2 convolutions of width 4 and a linear layer: 32x32 digits in, 10 logits out."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.out = nn.Linear(width * 8 * 8, 10)

    def forward(self, x):
        return self.out(self.features(x).flatten(1))


@pytest.fixture(scope="module")
def conv():
    """TinyConv after 60 full-batch Adam steps on 600 digits (under a second), and 40 test images."""
    torch.manual_seed(0)
    train = load_dataset("digits", train=True).subset(600)
    model = TinyConv()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(model(train.as_float()), train.labels).backward()
        optimizer.step()
    test = load_dataset("digits", train=False).subset(40)
    return model.eval(), test.as_float(), test.labels


# (fixture, two radii): at each some examples are fooled and some are not.
CASES = [("small", 0.02), ("small", 0.05), ("conv", 0.02), ("conv", 0.05)]


def fooled_by(model, x, labels, adversarial, eps):
    """What AutoAttack reads from a component's images: misclassified inside the eps-ball (up to float rounding)."""
    return ~aa.still_robust(model, x, adversarial, labels, eps)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are too small to gain from a second thread, and on the shared 2-core machine two threads
    that wait on each other made FAB 10x slower. Ours and torchattacks run under the same setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the L-inf projection onto a hyperplane inside the box ---

def test_linf_projection_by_hand():
    """Smallest L-inf move d with w . (t + d) = b and t + d in [0, 1], one case per row (rows are independent)."""
    points = torch.tensor([[0.5, 0.5, 0.5], [0.1, 0.5, 0.5], [0.1, 0.1, 0.1], [0.5, 0.5, 0.5], [0.5, 0.2, 0.5]])
    w = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [1.0, 1.0, 1.0]])
    b = torch.tensor([0.5, 0.2, -1.0, 0.5, 0.6])
    d = linf_projection(points, w, b)
    expected = torch.tensor([
        [-0.25, -0.25, 0.0],  # w . t = 1 must fall by 0.5: both coordinates by 0.25, the w = 0 one stays
        [-0.1, -0.3, 0.0],  # the first can fall only 0.1 (to 0); the second makes up the rest, 0.3
        [-0.1, -0.1, -0.1],  # b = -1 is out of the box's reach: every coordinate goes to 0
        [0.25, -0.25, 0.0],  # w . t = 0 < b = 0.5: w . z must rise, so the first coordinate rises, the second falls
        [-0.2, -0.2, -0.2],  # must fall by 0.6: 0.2 each, exactly the middle one's room (0.2 to 0)
    ])
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-6)
    reached = ((points + d) * w).sum(1)
    torch.testing.assert_close(reached[[0, 1, 3, 4]], b[[0, 1, 3, 4]], rtol=0, atol=1e-6)


def test_linf_projection_is_torchattacks_to_the_bit():
    """Random rows, many in each branch (inside the smallest room, bisection, out of reach, w = 0 entries)."""
    from torchattacks.attacks.fab import projection_linf as reference_projection

    generator = torch.Generator().manual_seed(0)
    points = torch.rand(200, 50, generator=generator)
    w = torch.randn(200, 50, generator=generator) * (torch.rand(200, 50, generator=generator) > 0.2)
    b = (w * points).sum(1) + 3 * torch.randn(200, generator=generator)
    assert torch.equal(linf_projection(points, w, b), reference_projection(points, w, b))


# --- the Square schedule ---

def test_square_p_schedule_by_hand():
    """p halves after rescaled iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 (it / n_queries * 10000)."""
    at_10000 = {0: 0.8, 10: 0.8, 11: 0.4, 50: 0.4, 51: 0.2, 200: 0.2, 201: 0.1, 501: 0.05, 1001: 0.025,
                2001: 0.0125, 4001: 0.00625, 6001: 0.003125, 8000: 0.003125, 8001: 0.0015625, 9999: 0.0015625}
    for iteration, p in at_10000.items():
        assert p_selection(iteration, 10000, 0.8) == pytest.approx(p, rel=1e-12), iteration
    # 5000 queries (AutoAttack's): iteration 5 is rescaled to 10, 6 to 12, 25 to 50, 26 to 52, 4999 to 9998
    assert [p_selection(i, 5000, 0.8) for i in (5, 6, 25, 26, 4999)] == pytest.approx([0.8, 0.4, 0.4, 0.2, 0.8 / 512])
    assert p_selection(1, 100, 0.8) == pytest.approx(0.2)  # 100 queries: iteration 1 is rescaled to 100
    # side: sqrt(p * h * w) rounded, at least 1
    assert square_side(0.8, 3, 32, 32) == 29  # sqrt(819.2) = 28.6
    assert square_side(0.8, 1, 8, 8) == 7  # sqrt(51.2) = 7.16
    assert square_side(0.8 / 512, 3, 32, 32) == 1  # sqrt(1.6) = 1.26
    assert square_side(0.8 / 512, 3, 8, 8) == 1  # sqrt(0.1) rounds to 0: at least one pixel
    assert square_module.P_SCHEDULE_BOUNDS == (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


# --- FAB-T and Square against torchattacks ---

@pytest.mark.parametrize("fixture, eps", CASES)
def test_fab_t_gives_torchattacks_flags(request, fixture, eps):
    """FAB-T as AutoAttack configures torchattacks' FAB (multi-targeted), once with restarts (random starts)."""
    model, x, labels = request.getfixturevalue(fixture)
    for steps, restarts, targets in ((12, 1, 3), (6, 2, 2)):
        reference = torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=restarts, seed=1,
                                     multi_targeted=True, n_classes=10)
        reference.n_target_classes = targets
        expected = fooled_by(model, x, labels, reference.perturb(x, labels), eps)
        settings = FabSettings(eps=eps, steps=steps, restarts=restarts, targets=targets, seed=1)
        active, full = fab(model, x, labels, settings), fab(model, x, labels, settings, active_set=False)
        assert torch.equal(active.fooled, expected), f"{steps} steps, {restarts} restarts: not torchattacks' flags"
        assert torch.equal(full.fooled, expected)
        assert torch.equal(fooled_by(model, x, labels, active.adversarial, eps), active.fooled)
        assert 0 <= active.adversarial.min() and active.adversarial.max() <= 1
        with torch.no_grad():
            clean_errors = int((model(x).argmax(1) != labels).sum())
        assert clean_errors < int(active.fooled.sum()) < len(labels), "needs examples FAB fools and ones it does not"
        correct = len(labels) - clean_errors
        # without the active set every run spends a pass per step on each example no earlier run fooled
        assert steps * correct <= full.example_steps <= steps * targets * restarts * correct
        assert active.example_steps < full.example_steps


@pytest.mark.parametrize("fixture", ["small", "conv"])
def test_fab_t_run_from_a_random_start_gives_torchattacks_flags(request, fixture):
    """A restart's run alone (random start in half the ball, then the steps), target ranked 2nd, over a sweep
    of radii: the restarts in the test above mostly meet examples no run can fool, so the start is checked here."""
    model, x, labels = request.getfixturevalue(fixture)
    with torch.no_grad():
        correct = model(x).argmax(1) == labels
        x, labels = x[correct], labels[correct]
        target = model(x).sort(dim=-1)[1][:, -2]
    counts = []
    for eps in (0.01, 0.02, 0.04, 0.08):
        reference = torchattacks.FAB(model, norm="Linf", eps=eps, steps=10, seed=0, multi_targeted=True)
        reference.target_class = 2
        torch.manual_seed(5)
        expected = fooled_by(model, x, labels, reference.attack_single_run_targeted(x, labels, True), eps)
        torch.manual_seed(5)
        settings = FabSettings(eps=eps, steps=10, restarts=2, targets=1, seed=0)
        run = fab_module.single_run(model, x, labels, target, settings, use_random_start=True)
        assert torch.equal(run.fooled, expected), f"eps {eps}"
        counts.append(int(run.fooled.sum()))
    assert any(0 < count < len(labels) for count in counts), counts


@pytest.mark.parametrize("fixture, eps", CASES)
def test_square_gives_torchattacks_flags_and_images(request, fixture, eps):
    model, x, labels = request.getfixturevalue(fixture)
    for queries, restarts in ((150, 1), (60, 2)):
        reference = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=queries, n_restarts=restarts,
                                        p_init=0.8, loss="margin", seed=2)
        theirs = reference.perturb(x, labels)
        ours = square(model, x, labels, SquareSettings(eps=eps, queries=queries, p_init=0.8, restarts=restarts,
                                                       seed=2))
        assert torch.equal(ours.fooled, fooled_by(model, x, labels, theirs, eps)), f"{queries} queries: flags differ"
        assert torch.equal(ours.adversarial[ours.fooled], theirs[ours.fooled]), "not the same first fooling point"
        assert torch.equal(fooled_by(model, x, labels, ours.adversarial, eps), ours.fooled)
        with torch.no_grad():
            correct = int((model(x).argmax(1) == labels).sum())
        # one start query per correct example, then at most one per standing example and iteration
        assert correct <= ours.example_queries <= correct * (queries + 1) * restarts
        if queries == 150:
            assert len(labels) - correct < int(ours.fooled.sum()) < len(labels), "needs fooled and robust examples"


# --- the runner ---

@pytest.mark.parametrize("masked", [False, True])
def test_runner_gives_the_flags_of_the_torchattacks_components(small, masked):
    """run_autoattack with our FAB-T and Square: the same flags after every stage as chaining torchattacks'
    FAB and Square (after our APGD stages, checked against torchattacks elsewhere) by hand, as the runner did
    before. APGD gets one step, so that FAB-T has examples to fool on the plain model; on the model that rounds
    its input (no gradient) Square is the stage that fools."""
    model, x, labels = small
    if masked:
        model = RoundsInput(model)
    eps, n, seed = 0.05, 48, 4
    images = (x[:n] * 255).round().to(torch.uint8)
    x, labels = images.float() / 255, labels[:n]
    settings = aa.AutoAttackSettings(apgd_ce_steps=1, apgd_t_steps=1, apgd_t_targets=1, fab_t_steps=15,
                                     fab_t_targets=3, square_queries=200)
    flags = aa.run_autoattack(model, images, labels, eps, 10, 0, n, n, seed=seed, settings=settings)

    stages = aa.build_stages(model, eps, 10, seed, settings)
    fab_t = torchattacks.FAB(model, norm="Linf", eps=eps, steps=15, n_restarts=1, seed=seed, multi_targeted=True,
                             n_classes=10)
    fab_t.n_target_classes = 3
    square_reference = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=200, n_restarts=1, p_init=0.8,
                                           loss="margin", seed=seed)
    with torch.no_grad():
        robust = model(x).argmax(1) == labels
    expected = {}
    for name in aa.STAGES:
        index = robust.nonzero().flatten()
        x_stage, labels_stage = x[index], labels[index]
        if name in ("apgd-ce", "apgd-t"):
            adversarial = apgd(model, x_stage, labels_stage, stages[name]).adversarial
        elif name == "fab-t":
            adversarial = fab_t.perturb(x_stage, labels_stage)
        else:
            adversarial = square_reference.perturb(x_stage, labels_stage)
        robust[index] = aa.still_robust(model, x_stage, adversarial, labels_stage, eps)
        expected[name] = robust.clone()
    for name in aa.STAGES:
        assert torch.equal(flags.after[name], expected[name]), name
    before, stage = ("apgd-t", "fab-t") if not masked else ("fab-t", "square")
    assert int(flags.after[before].sum()) > int(flags.after[stage].sum()), f"{stage} must fool some examples"
    assert set(flags.example_steps) == set(aa.STAGES)
    standing = int(flags.after["apgd-t"].sum())
    assert 0 < flags.example_steps["fab-t"] <= 15 * 3 * standing
    assert int(flags.after["fab-t"].sum()) <= flags.example_steps["square"] <= 201 * int(flags.after["fab-t"].sum())
