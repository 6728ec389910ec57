"""Thermometer encoding, Athalye et al.'s surrogate and BPDA against hand-computed codes and gradients."""

import pytest
import torch
from torch import nn

from robustbench_mm.attacks import PROTOCOLS, check_input_gradients, fgsm, gradient_size, input_gradient, pgd
from robustbench_mm.models.preact import MixSpec
from robustbench_mm.models.thermometer import (
    BpdaLayer, ThermometerEncoding, bpda, bpda_function, bpda_layers, thermometer_encode, thermometer_preactresnet,
    thermometer_centered_surrogate, thermometer_surrogate,
)

STANDARD = PROTOCOLS["standard"]
SLOPE = 255 * 4 / 256  # the surrogate's slope on a ramp at 4 levels: 3.984375


def pixels(values):
    """One channel, one row: (1, 1, 1, len(values))."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def codes(x, fn, levels=4):
    """(pixels, levels): the code of each pixel of a one-channel, one-row image."""
    return fn(x, levels)[0, :, 0].T


# Level i is floor(0.99999 * clip(x) * 4) >= i: level 0 always; exactly i/4 is below level i;
# 0.250001 is still below level 1 (the 0.99999 band), 0.2500025 is above it.
ENCODE_CASES = [
    (0.0, [1, 0, 0, 0]), (0.1, [1, 0, 0, 0]), (0.25, [1, 0, 0, 0]), (0.250001, [1, 0, 0, 0]),
    (0.2500025, [1, 1, 0, 0]), (0.26, [1, 1, 0, 0]), (0.5, [1, 1, 0, 0]), (0.51, [1, 1, 1, 0]),
    (0.75, [1, 1, 1, 0]), (0.76, [1, 1, 1, 1]), (1.0, [1, 1, 1, 1]), (-0.5, [1, 0, 0, 0]), (1.5, [1, 1, 1, 1]),
]


def test_encoding_matches_hand_computed_codes_at_and_around_the_boundaries():
    x = pixels([value for value, _ in ENCODE_CASES])
    expected = torch.tensor([code for _, code in ENCODE_CASES], dtype=torch.float32)
    assert torch.equal(codes(x, thermometer_encode), expected)


def test_encoding_at_sixteen_levels_counts_the_buckets_below_the_pixel():
    # floor(0.99999 * x * 16) + 1 ones: 0.5 -> 8 (exactly 8/16 stays below level 8), 0.5 + 1e-3 -> 9, 1 -> 16.
    got = codes(pixels([0.5, 0.501, 1.0, 0.0, 3 / 16 + 1e-3]), thermometer_encode, levels=16).sum(1)
    assert got.tolist() == [8, 9, 16, 1, 4]


def test_encoding_layout_is_channel_major_then_level():
    x = torch.tensor([0.1, 0.3, 0.8]).view(1, 3, 1, 1)  # buckets 0, 1, 3 at 4 levels
    code = thermometer_encode(x, 4).flatten().tolist()
    assert code == [1, 0, 0, 0] + [1, 1, 0, 0] + [1, 1, 1, 1]
    assert thermometer_encode(torch.rand(2, 3, 5, 7), 16).shape == (2, 48, 5, 7)


# Level i of the surrogate is clip(255 * 4 * x / 256 - i + 1, 0, 1) = clip(3.984375 x - i + 1, 0, 1).
SURROGATE_CASES = [
    (0.0, [1, 0, 0, 0]), (0.1, [1, 0.3984375, 0, 0]), (0.25, [1, 0.99609375, 0, 0]), (0.3, [1, 1, 0.1953125, 0]),
    (0.5, [1, 1, 0.9921875, 0]), (0.75, [1, 1, 1, 0.98828125]), (0.9, [1, 1, 1, 1]), (1.0, [1, 1, 1, 1]),
]


def test_surrogate_matches_hand_computed_soft_codes():
    x = pixels([value for value, _ in SURROGATE_CASES])
    expected = torch.tensor([code for _, code in SURROGATE_CASES], dtype=torch.float32)
    torch.testing.assert_close(codes(x, thermometer_surrogate), expected, rtol=0, atol=1e-6)


# The layer's surrogate centres level i's ramp on its switch point i / 4: clip(4 x - i + 1/2, 0, 1) for i >= 1
# (times 0.99999, the encoding's shrink, below the 1e-4 tolerance), level 0 always 1.
CENTERED_CASES = [
    (0.0, [1, 0, 0, 0]), (0.1, [1, 0, 0, 0]), (0.2, [1, 0.3, 0, 0]), (0.25, [1, 0.5, 0, 0]), (0.3, [1, 0.7, 0, 0]),
    (0.5, [1, 1, 0.5, 0]), (0.8, [1, 1, 1, 0.7]), (1.0, [1, 1, 1, 1]),
]


def test_centered_surrogate_matches_hand_computed_soft_codes():
    x = pixels([value for value, _ in CENTERED_CASES])
    expected = torch.tensor([code for _, code in CENTERED_CASES], dtype=torch.float32)
    torch.testing.assert_close(codes(x, thermometer_centered_surrogate), expected, rtol=0, atol=1e-4)


def test_bpda_gradient_falls_on_the_level_a_small_step_can_switch():
    """At eps = 0.1 < 1 / (2 * 4) a pixel can reach one switch point at most: 0.26 can only switch level 1 off
    (down to 0.24), 0.45 only level 2 on (up to 0.55), 0.1 none. The layer's gradient must name exactly that level;
    Athalye et al.'s ramp (the bucket below each switch point) gives 0.26 level 2's slope instead, out of reach."""
    x = pixels([0.26, 0.45, 0.1]).requires_grad_(True)
    eps, w = 0.1, torch.tensor([10.0, 2.0, 3.0, 5.0]).view(1, 4, 1, 1)
    switched = [(thermometer_encode(x.detach() + s * eps, 4) != thermometer_encode(x.detach(), 4))[0, :, 0].T
                for s in (-1, 1)]
    assert [row.nonzero().flatten().tolist() for row in switched[0] | switched[1]] == [[1], [2], []]
    (grad,) = torch.autograd.grad((ThermometerEncoding(4, use_bpda=True)(x) * w).sum(), x)
    torch.testing.assert_close(grad.flatten(), torch.tensor([2.0, 3.0, 0.0]) * 4 * 0.99999, rtol=0, atol=1e-6)


def test_plain_gradient_through_the_encoding_is_exactly_zero():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    weights = torch.randn(2, 48, 4, 4)
    (grad,) = torch.autograd.grad((ThermometerEncoding(16)(x) * weights).sum(), x)  # the graph reaches x
    assert torch.equal(grad, torch.zeros_like(x))


def test_bpda_gradient_equals_the_hand_computed_surrogate_gradient():
    # Loss sum_k w_k code_k at 4 levels. Athalye et al.'s ramps: x = 0.1 is on level 1's, 0.3 on level 2's, 0.9
    # past every ramp. The layer's centred ramps: 0.1 on none (level 1's is [0.125, 0.375]), 0.3 on level 1's,
    # 0.9 past level 3's (its ramp ends at 0.875).
    x = pixels([0.1, 0.3, 0.9]).requires_grad_(True)
    w = torch.tensor([10.0, 2.0, 3.0, 5.0]).view(1, 4, 1, 1)
    out = bpda_function(x, lambda z: thermometer_encode(z, 4), lambda z: thermometer_surrogate(z, 4))
    assert torch.equal(out, thermometer_encode(x.detach(), 4))  # forward: the real code, exactly
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    torch.testing.assert_close(grad.flatten(), torch.tensor([2.0 * SLOPE, 3.0 * SLOPE, 0.0]), rtol=0, atol=0)
    layer = ThermometerEncoding(4, use_bpda=True)
    out = layer(x)
    assert torch.equal(out, thermometer_encode(x.detach(), 4))
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    torch.testing.assert_close(grad.flatten(), torch.tensor([0.0, 2.0 * 4 * 0.99999, 0.0]), rtol=0, atol=1e-6)


def test_bpda_gradient_equals_autograd_of_the_surrogate_on_random_inputs():
    torch.manual_seed(1)
    x = torch.rand(2, 3, 5, 5)
    weights = torch.randn(2, 3 * 16, 5, 5)
    leaf = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((thermometer_surrogate(leaf, 16) * weights).sum(), leaf)
    leaf = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad((bpda_function(leaf, thermometer_encode, thermometer_surrogate) * weights).sum(), leaf)
    assert torch.equal(got, expected) and got.abs().max() > 0


class TinyThermometerModel(nn.Module):
    """z = (sum of the three level-1 channels) - 0.5, averaged over pixels; logits (z, -z).

    At 4 levels a pixel below 0.25 has level 1 off, so z = -0.5 and the model says class 1.
    """

    def __init__(self):
        super().__init__()
        self.encoding = ThermometerEncoding(4)
        self.head = nn.Conv2d(12, 1, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[0, [1, 5, 9]] = 1.0
            self.head.bias.fill_(-0.5)

    def forward(self, x):
        z = self.head(self.encoding(x)).mean((1, 2, 3))
        return torch.stack([z, -z], dim=1)


def test_fgsm_with_plain_gradients_changes_nothing_and_under_bpda_flips_the_prediction():
    model = TinyThermometerModel().eval()
    x = torch.full((2, 3, 4, 4), 0.24)
    x[1] = 0.2
    labels = torch.tensor([1, 1])
    eps = 8 / 255
    assert model(x).argmax(1).tolist() == [1, 1]

    plain = fgsm(model, x, labels, eps, STANDARD)
    assert torch.equal(plain, x) and model(plain).argmax(1).tolist() == [1, 1]
    grad, _ = input_gradient(model, x, labels, STANDARD.loss)
    assert not check_input_gradients({"standard": gradient_size(grad)}, max_share=0.0).passed

    with bpda(model) as switched:
        assert switched == ["encoding"]
        adversarial = fgsm(model, x, labels, eps, STANDARD)
        grad, _ = input_gradient(model, x, labels, STANDARD.loss)
        assert check_input_gradients({"standard": gradient_size(grad)}, max_share=0.0).passed
    assert not model.encoding.use_bpda
    # 0.24 + 8/255 is past 0.25 (level 1 switches on, the prediction flips); 0.2 + 8/255 is not.
    torch.testing.assert_close(adversarial, (x + eps).clamp(0, 1), rtol=0, atol=0)
    assert model(adversarial).argmax(1).tolist() == [0, 1]
    # At eps 16/255, PGD under BPDA takes 0.2 past 0.25 too; without BPDA it never moves.
    with bpda(model):
        assert not pgd(model, x, labels, STANDARD, steps=10, step_size=2 / 255, eps=16 / 255).correct[-1].any()
    run = pgd(model, x, labels, STANDARD, steps=10, step_size=2 / 255, eps=16 / 255)
    assert torch.equal(run.adversarial, x) and run.correct.all()


class Rounding(nn.Module):
    """A user's own non-differentiable layer (8-bit quantisation) with the identity as surrogate."""

    def __init__(self):
        super().__init__()
        self.use_bpda = False

    def bpda_surrogate(self, x):
        return x

    def real(self, x):
        return torch.round(x * 255) / 255

    def forward(self, x):
        return bpda_function(x, self.real, self.bpda_surrogate) if self.use_bpda else self.real(x)


def test_bpda_context_finds_any_models_layers_and_restores_their_flags_even_on_error():
    model = nn.Sequential(Rounding(), nn.Flatten(), nn.Sequential(Rounding()), nn.Linear(4, 2))
    model[2][0].use_bpda = True  # already on: must stay on afterwards
    assert isinstance(model[0], BpdaLayer) and not isinstance(model[3], BpdaLayer)
    assert [name for name, _ in bpda_layers(model)] == ["0", "2.0"]
    x = torch.rand(3, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(model[0](x).sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))  # round's gradient is zero
    with pytest.raises(RuntimeError, match="inside"), bpda(model) as switched:
        assert switched == ["0", "2.0"] and model[0].use_bpda
        (grad,) = torch.autograd.grad(model[0](x).sum(), x)
        assert torch.equal(grad, torch.ones_like(x))  # the identity's gradient
        raise RuntimeError("inside")
    assert model[0].use_bpda is False and model[2][0].use_bpda is True
    with bpda(model, enabled=False):
        assert not model[2][0].use_bpda
    with bpda(nn.Linear(2, 2)) as switched:  # no BPDA layer: nothing to do
        assert switched == []


def test_thermometer_preactresnet_takes_the_code_and_mixes_pixels_at_point_zero():
    torch.manual_seed(2)
    model = thermometer_preactresnet("preactresnet18", 10, levels=4, width=4).eval()
    assert model.network.conv1.in_channels == 12 and model.levels == 4 and model.num_mix_points == 5
    x = torch.rand(3, 3, 8, 8)
    logits = model(x)
    assert logits.shape == (3, 10)
    torch.testing.assert_close(logits, model.network(thermometer_encode(x, 4)))
    perm = torch.tensor([2, 0, 1])
    mixed = model(x, MixSpec(0, 0.3, perm))
    torch.testing.assert_close(mixed, model(0.3 * x + 0.7 * x[perm]))
    twin = thermometer_preactresnet("preactresnet18", 10, levels=4, width=4).eval()
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin(x), logits)

    labels = torch.tensor([0, 1, 2])
    grad, _ = input_gradient(model, x, labels, STANDARD.summed_loss)
    assert torch.equal(grad, torch.zeros_like(x))
    with bpda(model):
        bpda_grad, bpda_logits = input_gradient(model, x, labels, STANDARD.summed_loss)
    assert torch.equal(bpda_logits, logits) and bpda_grad.abs().max() > 0
    with pytest.raises(TypeError, match="std"):  # no pixel-scale normalization: the paper protocol does not apply
        PROTOCOLS["paper"].pixel_step(model, 0.03)
