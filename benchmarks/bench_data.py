"""The images and models the benchmarks time: what the device's real job uses, or a stand-in of
the same shape (speed does not depend on pixel values or trained weights)."""

from __future__ import annotations

import torch

from robustbench_mm.data.images import ImageSet, load_dataset
from robustbench_mm.models.preact import PreActResNet, build_model

CIFAR_TRAIN_SIZE = 50_000


def random_cifar_shaped(n: int, seed: int = 0) -> ImageSet:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return ImageSet("random-cifar-shaped", images, labels, 10)


def benchmark_dataset(device: torch.device, data_dir: str, train: bool = True, n: int | None = None) -> ImageSet:
    """On a CPU: the offline digits the smoke preset uses. On a GPU: CIFAR-10 when it is on disk,
    else random CIFAR-shaped images (50,000 for training). `n` keeps the first n."""
    if device.type != "cuda":
        return load_dataset("digits", train=train).subset(n)
    try:
        return load_dataset("cifar10", train=train, data_dir=data_dir, download=False).subset(n)
    except Exception:  # absent or unreadable: the random stand-in times the same work
        return random_cifar_shaped(n or CIFAR_TRAIN_SIZE)


def benchmark_model(width: int, device: torch.device) -> PreActResNet:
    """A freshly initialised PreActResNet18 in eval mode, laid out as the evaluation stages lay it out."""
    dataset = "digits" if device.type != "cuda" else "cifar10"
    model = build_model("preactresnet18", dataset, 10, width=width).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model
