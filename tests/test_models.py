import pytest
import torch

from robustbench_mm.data.images import NORMALIZATION
from robustbench_mm.models.preact import MixSpec, _gather_batch, build_model, mix_states


def small(arch="preactresnet18", **kw):
    torch.manual_seed(0)
    return build_model(arch, "cifar10", 10, width=4, **kw).eval()


def test_shapes_and_stage_widths():
    model = small()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    assert [s[0].conv1.out_channels for s in model.stages] == [4, 8, 16, 32]
    assert [len(s) for s in model.stages] == [2, 2, 2, 2]
    assert [len(s) for s in small("preactresnet34").stages] == [3, 4, 6, 3]


def test_stem_is_a_single_conv_without_bn_and_no_final_bn_by_default():
    model = small()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.final_bn is None
    assert small(final_bn=True).final_bn is not None


def test_normalization_is_inside_the_model():
    model = small()
    mean, std = NORMALIZATION["cifar10"]
    assert torch.allclose(model.mean.flatten(), torch.tensor(mean))
    assert torch.allclose(model.std.flatten(), torch.tensor(std))
    x = torch.rand(2, 3, 32, 32)
    expected = model.conv1((x - model.mean) / model.std)
    captured = {}
    model.stages[0].register_forward_pre_hook(lambda m, inp: captured.setdefault("h", inp[0]))
    model(x)
    assert torch.allclose(captured["h"], expected)


def test_projection_shortcut_sees_activated_input():
    block = small().stages[1][0]
    assert block.shortcut is not None
    x = torch.randn(2, 4, 8, 8)
    activated = torch.relu(block.bn1(x))
    out = block(x)
    residual = block.conv2(torch.relu(block.bn2(block.conv1(activated))))
    assert torch.allclose(out, residual + block.shortcut(activated), atol=1e-6)


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
def test_mixing_at_stage_equals_convex_combination(layer):
    model = small()
    x = torch.rand(4, 3, 32, 32)
    perm = torch.tensor([2, 0, 3, 1])
    lam = 0.3
    hidden = {}
    target = None if layer == 0 else model.stages[layer - 1]

    # The state after the mixing point must be lam*h_i + (1-lam)*h_perm(i).
    if target is None:
        clean_h = x
    else:
        handle = target.register_forward_hook(lambda m, i, o: hidden.setdefault("clean", o))
        model(x)
        handle.remove()
        clean_h = hidden["clean"]
    seen = {}
    next_module = model.conv1 if layer == 0 else (model.stages[layer] if layer < 4 else model.linear)
    handle = next_module.register_forward_pre_hook(lambda m, inp: seen.setdefault("h", inp[0]))
    model(x, MixSpec(layer, lam, perm))
    handle.remove()
    expected = lam * clean_h + (1 - lam) * clean_h[perm]
    if layer == 0:
        expected = (expected - model.mean) / model.std
    assert torch.allclose(seen["h"], expected, atol=1e-6)


def test_lambda_one_is_a_clean_pass():
    model = small()
    x = torch.rand(4, 3, 32, 32)
    for layer in range(4):
        assert torch.equal(model(x, MixSpec(layer, 1.0, torch.tensor([1, 2, 3, 0]))), model(x))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mix_states_matches_plain_indexing_forward_and_backward(memory_format, dtype):
    torch.manual_seed(0)
    base = torch.randn(6, 5, 4, 3).to(dtype=dtype, memory_format=memory_format)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    upstream = torch.randn(6, 5, 4, 3).to(dtype)
    ours, plain = base.clone().requires_grad_(), base.clone().requires_grad_()
    mixed = mix_states(ours, 0.3, perm)
    reference = 0.3 * plain + 0.7 * plain[perm]
    (mixed * upstream).sum().backward()
    (reference * upstream).sum().backward()
    assert torch.equal(mixed, reference)
    assert torch.equal(ours.grad, plain.grad)
    assert mixed.is_contiguous(memory_format=memory_format)
    # The permuted copy itself keeps the layout: a mixed-layout sum would cost a strided pass.
    assert _gather_batch(base, perm).is_contiguous(memory_format=memory_format)
