import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustbench_mm.models.preact import MixSpec, build_model
from robustbench_mm.models.losses import bce_on_softmax, soft_cross_entropy
from robustbench_mm.train.mixup import eligible_mix_points, sample_mix, soft_targets


def test_eligible_points():
    assert eligible_mix_points("baseline") == ()
    assert eligible_mix_points("input") == (0,)
    assert eligible_mix_points("manifold", "paper") == (0, 1, 2)
    assert eligible_mix_points("manifold", "all") == (0, 1, 2, 3)


def test_mixing_point_drawn_from_eligible_set_only_and_all_of_it():
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    layers = [sample_mix(rng, 2.0, (0, 1, 2), 8, torch.device("cpu"), gen).layer for _ in range(300)]
    assert set(layers) == {0, 1, 2}
    assert sample_mix(rng, 2.0, (), 8, torch.device("cpu"), gen) is None


def test_lambda_follows_beta():
    rng = np.random.default_rng(1)
    gen = torch.Generator().manual_seed(0)
    lams = np.array([sample_mix(rng, 2.0, (0,), 4, torch.device("cpu"), gen).lam for _ in range(4000)])
    assert 0 < lams.min() and lams.max() < 1
    assert abs(lams.mean() - 0.5) < 0.02
    assert abs(lams.var() - 1 / 20) < 0.005  # Beta(2,2) variance = 1/20


def test_soft_targets_by_hand():
    labels = torch.tensor([0, 2, 1])
    perm = torch.tensor([1, 2, 0])
    t = soft_targets(labels, 3, MixSpec(0, 0.25, perm))
    expected = torch.tensor([[0.25, 0, 0.75], [0, 0.75, 0.25], [0.75, 0.25, 0]])
    assert torch.allclose(t, expected)
    assert torch.allclose(t.sum(1), torch.ones(3))
    assert torch.equal(soft_targets(labels, 3, None), F.one_hot(labels, 3).float())


def test_bce_matches_torch_bceloss_and_ce_matches_lambda_combination():
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    perm = torch.tensor([4, 3, 2, 1, 0])
    lam = 0.7
    t = soft_targets(labels, 4, MixSpec(0, lam, perm))
    assert torch.allclose(bce_on_softmax(logits, t), torch.nn.BCELoss()(torch.softmax(logits, 1), t))
    by_hand = lam * F.cross_entropy(logits, labels) + (1 - lam) * F.cross_entropy(logits, labels[perm])
    assert torch.allclose(soft_cross_entropy(logits, t), by_hand, atol=1e-6)


@pytest.mark.parametrize("layer", [1, 2])
def test_gradients_reach_layers_before_the_mixing_point(layer):
    torch.manual_seed(0)
    model = build_model("preactresnet18", "cifar10", 10, width=4).train()
    x = torch.rand(4, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3])
    mix = MixSpec(layer, 0.4, torch.tensor([1, 0, 3, 2]))
    loss = bce_on_softmax(model(x, mix), soft_targets(labels, 10, mix))
    loss.backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert model.stages[0][0].conv1.weight.grad.abs().sum() > 0
