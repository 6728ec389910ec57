"""GPU epoch time of the paper's model: PreActResNet18 (width 64) on CIFAR-sized data, manifold
mixup, over fp32 / bf16 autocast x channels-last off / on x torch.compile off / on.

Every configuration trains through the real `Trainer.train_epoch`; the device is synchronised
only before and after each timed epoch. Throughput is also given as a share of the GPU's dense
peak for the precision used (fp32 convolutions run on TF32 tensor cores when cuDNN allows it).
"""

from __future__ import annotations

import itertools
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bench_data import benchmark_dataset
from report import figure, section, skipped
from robustbench_mm.data.images import ImageSet
from timing import median, time_call
from training_bench import device_batches, make_trainer

TITLE = "GPU: PreActResNet18 CIFAR epoch time"
EPOCH_GOAL_S = 2.0  # on one H100
LARGE_BATCH = 512
WARMUP_STEPS = 30  # enough for torch.compile to see every mixing point
PAPER_WIDTH = 64

# Dense tensor-core (bf16, tf32) and CUDA-core (fp32) peaks in TFLOP/s, from NVIDIA's data sheets.
# Matched in order against the device name: the first fragment found wins.
PEAK_TFLOPS = (
    ("H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    ("H100 NVL", {"bf16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    ("H100", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H200", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)


def peak_tflops(device_name: str) -> dict[str, float] | None:
    return next((peaks for fragment, peaks in PEAK_TFLOPS if fragment in device_name), None)


def peak_kind(precision: str) -> str:
    if precision == "bf16":
        return "bf16"
    return "tf32" if torch.backends.cudnn.allow_tf32 else "fp32"


def train_flops_per_image(trainer, batch: int = 8) -> float:
    """Forward + backward FLOPs of one training image, counted by PyTorch's FLOP counter."""
    model = trainer.model
    x = torch.rand(batch, 3, 32, 32, device=trainer.device)
    y = torch.randint(0, trainer.config.num_classes, (batch,), device=trainer.device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def one_configuration(profile, device: torch.device, data: ImageSet, precision: str, channels_last: bool,
                      compiled: bool, batch: int, width: int = PAPER_WIDTH) -> dict:
    torch._dynamo.reset()
    trainer = make_trainer("manifold", width, batch, device, precision=precision, channels_last=channels_last,
                           compile=compiled)
    trainer.train_epoch(device_batches(trainer, data.subset(WARMUP_STEPS * batch)))
    batches = device_batches(trainer, data)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    epochs = [time_call(partial(trainer.train_epoch, batches), device) for _ in range(profile.gpu_epochs)]
    result = {"precision": precision, "channels_last": channels_last, "compile": compiled, "batch": batch,
              "epoch_seconds": epochs, "images": len(batches) * batch,
              "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
              "flops_per_image": train_flops_per_image(trainer)}
    del trainer, batches
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def epoch_grid(profile, device: torch.device, data_dir: str) -> dict:
    if device.type != "cuda":
        return skipped(TITLE, "no CUDA GPU was available on this machine. On a GPU machine `make bench` measures it "
                              "(or `python benchmarks/run.py --only gpu`).")
    data = benchmark_dataset(device, data_dir).to(device)
    grid = [(*options, profile.gpu_batch)
            for options in itertools.product(("fp32", "bf16"), (False, True), (False, True))]
    # At the paper's batch of 100 the GPU waits on kernel launches; a large batch shows the headroom.
    grid.append(("bf16", True, True, LARGE_BATCH))
    runs, failures = [], []
    for options in grid:
        try:
            runs.append(one_configuration(profile, device, data, *options))
        except Exception as exc:  # e.g. torch.compile or memory on an unfamiliar GPU: keep the other figures
            failures.append(f"{options} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            torch.cuda.empty_cache()
    return grid_section(torch.cuda.get_device_name(device), data.name, profile, runs, failures)


def grid_section(gpu_name: str, data_name: str, profile, runs: list[dict], failures: list[str]) -> dict:
    """Epoch time, images/s and share of the GPU's peak for every configuration that ran."""
    if not runs:
        return skipped(TITLE, "every configuration failed: " + "; ".join(failures))
    peaks = peak_tflops(gpu_name)
    figures = []
    for run in runs:
        label = (f"{run['precision']}, channels-last {'on' if run['channels_last'] else 'off'}, "
                 f"compile {'on' if run['compile'] else 'off'}, batch {run['batch']}")
        key = run_key(run)
        seconds = median(run["epoch_seconds"])
        images_per_s = run["images"] / seconds
        figures.append(figure(f"{key}.epoch_s", f"epoch time, {label}", seconds, "s", ("<=", EPOCH_GOAL_S)))
        figures.append(figure(f"{key}.images_per_s", f"throughput, {label}", images_per_s, "images/s"))
        if peaks is not None:
            kind = peak_kind(run["precision"])
            share = run["flops_per_image"] * images_per_s / (peaks[kind] * 1e12)
            figures.append(figure(f"{key}.share_of_peak", f"share of dense {kind} peak, {label}", 100 * share, "%"))
    settings = {"gpu": gpu_name, "model": f"PreActResNet18 width {PAPER_WIDTH}", "method": "manifold mixup (alpha 2)",
                "batch": f"{profile.gpu_batch} (one run at {LARGE_BATCH})", "images_per_epoch": runs[0]["images"],
                "data": data_name,
                "timed_epochs": profile.gpu_epochs, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "train_gflops_per_image": round(runs[0]["flops_per_image"] / 1e9, 3)}
    notes = ["Peak memory per configuration (GiB): " + ", ".join(
        f"{run_key(r)}: {r['peak_memory_gib']:.2f}" for r in runs if r["peak_memory_gib"] is not None)] + failures
    if peaks is None:
        notes.append(f"No peak figure is known for {gpu_name!r}; the share of peak is left out.")
    return section(TITLE, settings, figures, notes, {run_key(r): r["epoch_seconds"] for r in runs})


def run_key(run: dict) -> str:
    return (f"gpu.{run['precision']}.cl{int(run['channels_last'])}.compile{int(run['compile'])}"
            f".batch{run['batch']}")
