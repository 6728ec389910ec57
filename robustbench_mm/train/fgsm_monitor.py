"""FGSM accuracy measured during training (the right half of the paper's Table 5).

At every scheduled test evaluation the trainer calls `fgsm_during_training`: FGSM at ε = 0.03 in
both protocols of SPEC §6, on the first N test images: the same fixed images `mm-robust attack
--n-examples N` attacks (the digits split is a seeded shuffle and CIFAR's test order is already
mixed), so a separate attack on the saved weights gives the same numbers. It reuses the attack
code (`fgsm_sweep`, `percent`) and must leave training untouched: it draws no random numbers,
computes only the input gradient (never a weight's), runs in eval mode so BatchNorm's running
statistics stay as they are, and puts the model back in the mode it found it in.

A model without a pixel-scale normalization buffer ``std`` (the thermometer model: its first
layer is a code, not a normalization) has no ``paper`` protocol (eps on the normalized input):
that protocol is left out of its record, and ``skipped`` says why.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from robustbench_mm.attacks import PROTOCOLS, fgsm_sweep, percent
from robustbench_mm.attacks.core import NO_PIXEL_STD, protocol_applies  # noqa: F401 (re-exported)
from robustbench_mm.data.images import ImageSet, to_unit_float
from robustbench_mm.paper import TABLE5_EPS

CPU_DEFAULT_EXAMPLES = 200  # a CPU epoch is short; 200 images keep the cost to a fraction of it


def resolve_fgsm_examples(requested: int | None, device: torch.device, n_test: int) -> int:
    """How many test images the in-training FGSM attacks: `requested`, else all on CUDA and 200 on a CPU."""
    if requested is None:
        requested = n_test if device.type == "cuda" else CPU_DEFAULT_EXAMPLES
    return min(requested, n_test)


def fgsm_during_training(model: torch.nn.Module, data: ImageSet, n_examples: int, batch_size: int,
                         channels_last: bool = False) -> dict[str, Any]:
    """FGSM accuracy (%) at ε = 0.03 in both protocols on the first `n_examples` of `data`, and its time.

    `channels_last` gives the images the memory format the model was trained in, as `mm-robust
    attack` does on CUDA.
    """
    was_training = model.training
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    start = time.perf_counter()
    protocols = {name: p for name, p in PROTOCOLS.items() if protocol_applies(p, model)}
    correct: dict[str, list[torch.Tensor]] = {name: [] for name in protocols}
    for first in range(0, n_examples, batch_size):
        stop = min(first + batch_size, n_examples)
        x = to_unit_float(data.images[first:stop]).contiguous(memory_format=memory_format)
        labels = data.labels[first:stop]
        for name, protocol in protocols.items():
            correct[name].append(fgsm_sweep(model, x, labels, [TABLE5_EPS], protocol).correct[0])
    accuracy = {name: percent(torch.cat(masks)) for name, masks in correct.items()}  # syncs with the device
    seconds = time.perf_counter() - start
    model.train(was_training)
    record = {"eps": TABLE5_EPS, "n_examples": n_examples, "accuracy": accuracy, "seconds": round(seconds, 4)}
    skipped = sorted(set(PROTOCOLS) - set(protocols))
    if skipped:
        record["skipped"] = {name: NO_PIXEL_STD for name in skipped}
    return record

