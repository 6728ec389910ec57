"""PreActResNet18/34/152 as in the Manifold Mixup authors' code, taking [0, 1] pixels.

Normalization is the model's first operation, so attacks and deformations work on the pixel
scale. The forward pass can mix the batch with a permutation of itself at one chosen point:
0 = the input, k = the output of stage k (see `robustbench_mm.train.mixup`). The number of input
channels is the length of `mean`/`std` (3 for images; `models.thermometer` feeds a 3 * levels
channel code). `robustbench_mm.models.factory.model_from_config` builds the model a run describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_mm.data.images import NORMALIZATION


@dataclass(frozen=True)
class MixSpec:
    """Mix the batch at `layer` as lam * h + (1 - lam) * h[perm]."""

    layer: int
    lam: float
    perm: torch.Tensor


def _gather_batch(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[index] along the batch dimension, keeping a channels-last tensor channels-last."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)
    return x.index_select(0, index)


class _PermuteBatch(torch.autograd.Function):
    """x[perm] for a permutation `perm`, whose gradient is a gather by the inverse permutation.

    Plain indexing backpropagates through a scatter-add (`index_put_` with accumulate), which
    is serial on the CPU and needs atomics or a sort on the GPU; for a permutation no two rows
    collide, so gathering the gradient back is exact and as cheap as the forward pass. On two
    CPU threads this takes the stage-1 mix from 10 ms to 4 ms per step (forward + backward).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(perm)
        return _gather_batch(x, perm)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (perm,) = ctx.saved_tensors
        return _gather_batch(grad, torch.argsort(perm)), None


def mix_states(hidden: torch.Tensor, lam: float | torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """lam * hidden + (1 - lam) * hidden[perm]; `perm` must be a permutation of the batch."""
    return lam * hidden + (1.0 - lam) * _PermuteBatch.apply(hidden, perm)


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection shortcut sees the activated input, the identity one the raw input.
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes * self.expansion:
            self.shortcut = nn.Conv2d(in_planes, planes * self.expansion, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(
        self,
        block: type[nn.Module],
        num_blocks: Sequence[int],
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        width: int = 64,
        final_bn: bool = False,
    ):
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ValueError(f"mean and std need one value per input channel, got {len(mean)} and {len(std)}")
        # One normalization value per input channel: 3 for images, 3 * levels for a thermometer code.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.conv1 = nn.Conv2d(len(mean), width, 3, 1, 1, bias=False)
        in_planes = width
        stages = []
        for i, (blocks, stride) in enumerate(zip(num_blocks, (1, 2, 2, 2))):
            planes = width * 2**i
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(block(in_planes, planes, s))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.final_bn = nn.BatchNorm2d(in_planes) if final_bn else None
        self.linear = nn.Linear(in_planes, num_classes)

    @property
    def num_mix_points(self) -> int:
        """Mixing points: 0 = input, 1..4 = output of each stage."""
        return len(self.stages) + 1

    def forward(self, x: torch.Tensor, mix: MixSpec | None = None) -> torch.Tensor:
        if mix is not None and mix.layer == 0:
            x = mix_states(x, mix.lam, mix.perm)
        out = self.conv1((x - self.mean) / self.std)
        for index, stage in enumerate(self.stages, start=1):
            out = stage(out)
            if mix is not None and mix.layer == index:
                out = mix_states(out, mix.lam, mix.perm)
        if self.final_bn is not None:
            out = F.relu(self.final_bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


ARCHITECTURES: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "preactresnet18": (PreActBlock, (2, 2, 2, 2)),
    "preactresnet34": (PreActBlock, (3, 4, 6, 3)),
    "preactresnet152": (PreActBottleneck, (3, 8, 36, 3)),
}


def build_model(arch: str, dataset: str, num_classes: int, width: int = 64, final_bn: bool = False) -> PreActResNet:
    block, num_blocks = ARCHITECTURES[arch]
    mean, std = NORMALIZATION[dataset]
    return PreActResNet(block, num_blocks, num_classes, mean, std, width=width, final_bn=final_bn)


Forward = Callable[[torch.Tensor], torch.Tensor]
