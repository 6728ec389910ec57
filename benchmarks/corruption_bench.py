"""Corruptions: images/s of our batched `corrupt` against make_cifar_c.py run image by image (the numpy,
scipy, skimage, OpenCV and PIL transcription in tests/corruption_reference.py, handed the same
per-image Generators), per corruption at severity 3, and the overall ratio (total reference time over
total batched time, all 19 corruptions).

    python benchmarks/corruption_bench.py                 # 512 images, 3 rounds: ~1 min on 2 cores
    python benchmarks/corruption_bench.py --images 2048 --rounds 5 --device cuda

Standalone (not a run.py section). The reference needs scikit-image and opencv-python-headless<4.11
(`pip install .[corruption-reference]`). Timings are interleaved rounds with the median of per-round
ratios (benchmarks/timing.py); the per-image Generators are created inside both timed calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package from this checkout, installed or not
sys.path.insert(0, str(HERE.parent / "tests"))  # the per-image reference

import corruption_reference as R
import numpy as np
import torch
from timing import interleaved, median, ratio

from robustbench_mm.data import corruptions as C

SEVERITY = 3
SEED = 0


def images_for(n: int) -> np.ndarray:
    """Smooth colour waves plus noise: stand-ins for CIFAR test images, (n, 32, 32, 3) uint8."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 32
    phases = rng.uniform(0, 6, size=(n, 3, 1, 1))
    frequencies = rng.uniform(2, 9, size=(n, 3, 1, 1))
    waves = np.sin(frequencies * xx + phases) * np.cos(frequencies * yy - phases)
    images = (0.45 * waves + 0.5 + rng.normal(0, 0.06, waves.shape)).clip(0, 1)
    return np.uint8(images.transpose(0, 2, 3, 1) * 255)


def ours(images: torch.Tensor, name: str, device: torch.device) -> torch.Tensor:
    return C.corrupt(images.to(device), name, SEVERITY, seed=SEED)


def reference(images: np.ndarray, name: str) -> np.ndarray:
    """Image by image as make_cifar_c.py runs, each image with its own numpy Generator (created inside the timing)."""
    rngs = [np.random.default_rng([SEED, C.CORRUPTION_IDS[name], SEVERITY, i]) for i in range(len(images))]
    return R.reference(images, name, SEVERITY, rngs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="", help="comma-separated corruptions (default: all 19)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (default: torch's); on a shared 2-core machine 1 ran 4-20x faster than 2")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [name.strip() for name in args.only.split(",") if name.strip()] or list(C.ALL_CORRUPTIONS)
    uint8_images = images_for(args.images)
    tensor_images = torch.from_numpy(uint8_images).permute(0, 3, 1, 2).float() / 255
    print(f"{args.images} images 32x32, severity {SEVERITY}, {args.rounds} rounds, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'corruption':18s} {'batched img/s':>14s} {'per-image img/s':>16s} {'ratio':>8s}  (spread)")
    total_ours, total_reference = [], []
    for name in names:
        times = interleaved({"batched": partial(ours, tensor_images, name, device),
                             "per-image": partial(reference, uint8_images, name)}, device, args.rounds)
        r = ratio(times["per-image"], times["batched"])
        spread = f"{r['min']:.1f}-{r['max']:.1f}"
        print(f"{name:18s} {args.images / median(times['batched']):14.0f} "
              f"{args.images / median(times['per-image']):16.0f} {r['value']:7.1f}x  {spread}")
        total_ours.append(times["batched"])
        total_reference.append(times["per-image"])
    per_round_ours = [sum(round_times) for round_times in zip(*total_ours)]
    per_round_reference = [sum(round_times) for round_times in zip(*total_reference)]
    overall = statistics.median(r / o for r, o in zip(per_round_reference, per_round_ours))
    print(f"{'all':18s} {len(names) * args.images / statistics.median(per_round_ours):14.0f} "
          f"{len(names) * args.images / statistics.median(per_round_reference):16.0f} {overall:7.1f}x  "
          "(total per-image time / total batched time)")


if __name__ == "__main__":
    main()
