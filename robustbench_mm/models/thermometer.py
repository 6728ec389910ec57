"""Thermometer encoding (Buckman et al., 2018) and BPDA (Athalye et al., 2018), on [0, 1] images.

The encoding
------------
`thermometer_encode(x, levels)` is the discrete code of the reference implementation that
Athalye et al. attacked (anishathalye/obfuscated-gradients, ``thermometer/discretization_utils.py``,
``discretize_uniform(x, levels, thermometer=True)``)::

    int_x = tf.to_int32((.99999 * tf.clip_by_value(x, 0., 1.)) * levels)   # bucket b in 0..levels-1
    one_hot = tf.one_hot(int_x, depth=levels, ...)
    thermometer = tf.cumsum(one_hot, axis=-1, reverse=True)                # level i is 1 iff i <= b

So channel c, level i is 1 iff ``floor(0.99999 * clip(x_c, 0, 1) * levels) >= i``: cumulative,
level 0 is 1 everywhere (even at x = 0), and for i >= 1 level i is 1 iff x_c >= i / (0.99999 * levels),
i.e. x_c > i / levels except in a band of width about 1e-5 * i / levels just above i / levels
(exactly i / levels gives 0). At x = 1 every level is 1. Output channel ``c * levels + i``, shape
(N, 3 * levels, H, W): the reference's NHWC ``[..., channels, levels]`` flattened, in NCHW.

The forward pass is that discrete code, computed through ``floor`` so that autograd reaches the
input with a gradient of exactly zero (the true derivative almost everywhere) instead of a
broken graph: the suite's gradient checks then see all-zero gradients, and FGSM/PGD do not move.

The surrogates (for BPDA)
-------------------------
`thermometer_surrogate(x, levels)` transcribes the soft code of Athalye et al.'s attack
(``thermometer/robustml_attack.py`` and ``thermometer.ipynb``, on the 0..255 scale)::

    compare = tf.constant((256.0/LEVELS)*np.arange(-1,LEVELS-1).reshape((1,1,1,1,LEVELS)), ...)
    inner = tf.reshape(self.xs,(-1, 32, 32, 3, 1)) - compare
    inner = tf.maximum(tf.minimum(inner/(256.0/LEVELS), 1.0), 0.0)

i.e. on [0, 1] pixels, level i is ``clip(255 * levels * x / 256 - i + 1, 0, 1)``: level 0 is 1 for
x >= 0 and level i >= 1 ramps linearly from 0 at x = 256 (i - 1) / (255 levels) to 1 at
x = 256 i / (255 levels), just above where the discrete level switches on. Its derivative is
``255 * levels / 256`` on a ramp and 0 elsewhere (at the ramp's ends both TF's min/max and torch's
clamp pass the gradient, so the ends count as on the ramp).

That ramp fills the bucket *below* each switch point, so at any x its only gradient is that of the next
level up. Within eps = 8/255 at 16 levels (eps is just over half a bucket, 1/32) a pixel can reach one
switch point at most (both only within 1.2e-4 of its bucket's middle), the nearest: for a pixel in the lower
half of its bucket that is the level below, which switches off, and Athalye et al.'s gradient says nothing about it while pointing at a level out of reach. The
layer's surrogate is therefore `thermometer_centered_surrogate`: level i >= 1 is
``clip(0.99999 * levels * x - i + 1/2, 0, 1)``, a ramp one bucket wide centred on the level's real switch
point (``0.99999 * levels * x = i``, where it is 1/2), and level 0 is 1 as in the real code. Its gradient
is that of the level the nearest switch point changes, in either direction. Measured on the six-model
demo's thermometer model (first 120 test images, 8/255, signed-gradient PGD-20 with steps of 2/255, CE):
78 % robust accuracy through Athalye et al.'s ramp, 37 % through the centred one (whole test set, the
report's smoke-budget BPDA AutoAttack: 66 % and 46.5 %); a relaxation that lets the network itself see
soft codes between each pixel's code and its one reachable neighbour (stronger than any real attack) still
keeps 35 %, so the centred surrogate leaves little on the table.

BPDA: a documented protocol any model can follow
------------------------------------------------
A layer whose forward pass is not usefully differentiable declares a differentiable surrogate
by implementing `BpdaLayer`:

- ``use_bpda: bool`` -- a plain attribute, False by default;
- ``bpda_surrogate(x) -> Tensor`` -- a differentiable function of the layer's input that
  approximates the layer (same output shape);
- while ``use_bpda`` is True the layer's forward must return exactly what it returns otherwise,
  with the gradient of ``bpda_surrogate`` at its input in the backward pass. `bpda_function`
  does exactly this for any (real, surrogate) pair, so a layer's forward can simply be
  ``bpda_function(x, self.real, self.bpda_surrogate) if self.use_bpda else self.real(x)``.

`bpda(model)` is a context manager that switches on every such submodule of `model` (found
with `bpda_layers`) for the duration of an attack and restores the previous flags afterwards,
even on an exception; it yields the names of the layers it switched (empty for a model without
any, where it changes nothing). A model trained elsewhere takes part by giving its
non-differentiable layer these two members; the attacks need no change::

    with bpda(model) as switched:
        adversarial = fgsm(model, x, labels, eps, protocol)

The model
---------
`thermometer_preactresnet` builds a `ThermometerPreActResNet`: `ThermometerEncoding` followed
by the suite's PreActResNet whose first convolution takes ``3 * levels`` channels and whose
normalization maps the code's {0, 1} to {-1, 1} (mean = std = 0.5 per code channel). Manifold
Mixup's mixing point 0 mixes the *pixels* before encoding (the network only ever sees true codes);
points 1.. are the network's stages. The model has no pixel-scale ``std``, so the suite's
``paper`` protocol (eps on the normalized input) does not apply to it and raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from robustbench_mm.models.preact import ARCHITECTURES, MixSpec, PreActResNet, mix_states

DEFAULT_LEVELS = 16  # Buckman et al. and Athalye et al. (robustml_model.py: LEVELS = 16)
BUCKET_SHRINK = 0.99999  # discretize_uniform: int(.99999 * x * levels), so x = 1 falls in the top bucket
SURROGATE_SCALE = 255.0  # robustml_attack.py works on 0..255 pixels ...
SURROGATE_WIDTH = 256.0  # ... with ramps (256 / levels) wide
CODE_MEAN = CODE_STD = 0.5  # thermometer_preactresnet: the code's {0, 1} normalized to {-1, 1}

Tensor = torch.Tensor


def _levels_view(levels: int, like: Tensor) -> Tensor:
    """0..levels-1 shaped (1, 1, levels, 1, 1) to broadcast against x.unsqueeze(2)."""
    return torch.arange(levels, device=like.device, dtype=like.dtype).view(1, 1, levels, 1, 1)


def thermometer_encode(x: Tensor, levels: int = DEFAULT_LEVELS) -> Tensor:
    """The discrete thermometer code of (N, C, H, W) [0, 1] images: (N, C * levels, H, W), channel c*levels + i.

    Level i is ``floor(0.99999 * clip(x, 0, 1) * levels) >= i`` (see the module docstring). The
    comparison is written as ``clamp(bucket - i + 1, 0, 1)`` of the integer-valued bucket, which is
    exactly 0 or 1 and keeps the graph connected through ``floor``: the input gradient is exactly 0.
    """
    if x.dim() != 4:
        raise ValueError(f"thermometer_encode takes (N, C, H, W) images, got shape {tuple(x.shape)}")
    bucket = torch.floor((BUCKET_SHRINK * x.clamp(0, 1)) * levels)
    code = torch.clamp(bucket.unsqueeze(2) - _levels_view(levels, x) + 1, 0, 1)
    return code.flatten(1, 2)


def thermometer_surrogate(x: Tensor, levels: int = DEFAULT_LEVELS) -> Tensor:
    """Athalye et al.'s soft thermometer code, (N, C * levels, H, W): level i is clip(255 L x / 256 - i + 1, 0, 1)."""
    if x.dim() != 4:
        raise ValueError(f"thermometer_surrogate takes (N, C, H, W) images, got shape {tuple(x.shape)}")
    width = SURROGATE_WIDTH / levels
    compare = width * (_levels_view(levels, x) - 1)  # (256 / L) * arange(-1, L - 1)
    inner = SURROGATE_SCALE * x.unsqueeze(2) - compare
    inner = torch.clamp(torch.clamp(inner / width, max=1.0), min=0.0)  # tf.maximum(tf.minimum(., 1), 0)
    return inner.flatten(1, 2)


def thermometer_centered_surrogate(x: Tensor, levels: int = DEFAULT_LEVELS) -> Tensor:
    """The layer's soft code, (N, C * levels, H, W): level i >= 1 is clip(0.99999 L x - i + 1/2, 0, 1), level 0 is 1.

    Each ramp is centred on its level's real switch point (module docstring: why not Athalye et al.'s ramp).
    """
    if x.dim() != 4:
        raise ValueError(f"thermometer_centered_surrogate takes (N, C, H, W) images, got shape {tuple(x.shape)}")
    switch = _levels_view(levels, x).clone()
    switch[:, :, 0] = -levels  # level 0: so far below any pixel that the clamp holds it at 1 with no gradient
    inner = BUCKET_SHRINK * levels * x.unsqueeze(2) - switch + 0.5
    return inner.clamp(0, 1).flatten(1, 2)


class BpdaFunction(torch.autograd.Function):
    """Forward: ``real(x)``, exactly. Backward: the vector-Jacobian product of ``surrogate`` at x."""

    @staticmethod
    def forward(ctx, x: Tensor, real: Callable[[Tensor], Tensor],  # type: ignore[override]
                surrogate: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return real(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(ctx.surrogate(leaf), leaf, grad_output)
        return grad, None, None


def bpda_function(x: Tensor, real: Callable[[Tensor], Tensor], surrogate: Callable[[Tensor], Tensor]) -> Tensor:
    """``real(x)`` in the forward pass, with the gradient of ``surrogate`` at x in the backward pass."""
    return BpdaFunction.apply(x, real, surrogate)


@runtime_checkable
class BpdaLayer(Protocol):
    """A layer with a non-differentiable forward pass and a differentiable surrogate (module docstring)."""

    use_bpda: bool

    def bpda_surrogate(self, x: Tensor) -> Tensor: ...


def bpda_layers(model: nn.Module) -> list[tuple[str, BpdaLayer]]:
    """(name, module) for every submodule of `model` (itself included) that implements `BpdaLayer`."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, BpdaLayer)]


@contextmanager
def bpda(model: nn.Module, enabled: bool = True) -> Iterator[list[str]]:
    """Set ``use_bpda = enabled`` on every `BpdaLayer` of `model` for the block; restore the old flags after.

    Yields the names of the layers found ("" is `model` itself); a model without any is left as it is.
    """
    layers = bpda_layers(model)
    previous = [layer.use_bpda for _, layer in layers]
    try:
        for _, layer in layers:
            layer.use_bpda = enabled
        yield [name for name, _ in layers]
    finally:
        for (_, layer), flag in zip(layers, previous, strict=True):
            layer.use_bpda = flag


class ThermometerEncoding(nn.Module):
    """(N, 3, H, W) [0, 1] pixels -> their thermometer code (N, 3 * levels, H, W); a `BpdaLayer`.

    Without BPDA the input gradient is exactly zero; with ``use_bpda`` (or inside `bpda(model)`)
    it is the gradient of `thermometer_centered_surrogate`, and the forward values are the same.
    """

    def __init__(self, levels: int = DEFAULT_LEVELS, use_bpda: bool = False):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be at least 1, got {levels}")
        self.levels = levels
        self.use_bpda = use_bpda

    def encode(self, x: Tensor) -> Tensor:
        return thermometer_encode(x, self.levels)

    def bpda_surrogate(self, x: Tensor) -> Tensor:
        return thermometer_centered_surrogate(x, self.levels)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_bpda:
            return bpda_function(x, self.encode, self.bpda_surrogate)
        return self.encode(x)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, use_bpda={self.use_bpda}"


class ThermometerPreActResNet(nn.Module):
    """`ThermometerEncoding` then a PreActResNet taking 3 * levels channels; mixing point 0 mixes pixels."""

    def __init__(self, network: PreActResNet, levels: int):
        super().__init__()
        self.encoding = ThermometerEncoding(levels)
        self.network = network

    @property
    def levels(self) -> int:
        return self.encoding.levels

    @property
    def num_mix_points(self) -> int:
        return self.network.num_mix_points

    def forward(self, x: Tensor, mix: MixSpec | None = None) -> Tensor:
        if mix is not None and mix.layer == 0:
            x, mix = mix_states(x, mix.lam, mix.perm), None
        return self.network(self.encoding(x), mix)


def thermometer_preactresnet(arch: str, num_classes: int, levels: int = DEFAULT_LEVELS, width: int = 64,
                             final_bn: bool = False, in_channels: int = 3) -> ThermometerPreActResNet:
    """A PreActResNet (`robustbench_mm.models.ARCHITECTURES`) on the thermometer code of its input.

    The network's first conv takes ``in_channels * levels`` channels and its normalization buffers
    are CODE_MEAN / CODE_STD for every code channel (there is no dataset normalization: the code
    does not depend on it).
    """
    if levels < 2:
        raise ValueError(f"a thermometer code needs at least 2 levels (level 0 is always on), got {levels}")
    block, num_blocks = ARCHITECTURES[arch]
    channels = in_channels * levels
    network = PreActResNet(block, num_blocks, num_classes, (CODE_MEAN,) * channels, (CODE_STD,) * channels,
                           width=width, final_bn=final_bn)
    return ThermometerPreActResNet(network, levels)


__all__ = [
    "BUCKET_SHRINK", "CODE_MEAN", "CODE_STD", "DEFAULT_LEVELS", "SURROGATE_SCALE", "SURROGATE_WIDTH", "BpdaFunction",
    "BpdaLayer", "ThermometerEncoding", "ThermometerPreActResNet", "bpda", "bpda_function", "bpda_layers",
    "thermometer_centered_surrogate", "thermometer_encode", "thermometer_preactresnet",
    "thermometer_surrogate",
]
