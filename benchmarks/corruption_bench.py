"""Corruptions: images/s of our batched `corrupt` against make_cifar_c.py run image by image (the numpy,
scipy, skimage, OpenCV and PIL transcription in tests/corruption_reference.py, each image with its own
numpy Generator, created inside the timing), per corruption at severity 3, and the overall ratio (total
per-image time over total batched time, all 19 corruptions); then, as `mm-robust corrupt` makes and
evaluates a set, the generation of a set against one evaluation of it, and one corrupted-set evaluation
against one clean evaluation.

    python benchmarks/run.py --only corruptions           # the `make bench` section, on the digits test set
    python benchmarks/corruption_bench.py                 # standalone table, 512 stand-in images, 3 rounds
    python benchmarks/corruption_bench.py --images 2048 --rounds 5 --device cuda

The reference needs scikit-image and opencv-python-headless<4.11 (`pip install .[corruption-reference]`);
without them the section says so and measures nothing. Timings are interleaved rounds with the median
of per-round ratios (benchmarks/timing.py).
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

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from robustbench_mm.data import corruptions as C  # noqa: E402
from timing import interleaved, median, ratio  # noqa: E402

TITLE = "Corruptions"
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
    import corruption_reference as R

    rngs = [np.random.default_rng([SEED, C.CORRUPTION_IDS[name], SEVERITY, i]) for i in range(len(images))]
    return R.reference(images, name, SEVERITY, rngs)


def speed_rounds(uint8_images: np.ndarray, names, device: torch.device, rounds: int) -> dict[str, dict]:
    """Per corruption: {"batched": [s per round], "per-image": [...]} from interleaved rounds."""
    tensor_images = torch.from_numpy(uint8_images).permute(0, 3, 1, 2).float() / 255
    return {name: interleaved({"batched": partial(ours, tensor_images, name, device),
                               "per-image": partial(reference, uint8_images, name)}, device, rounds)
            for name in names}


def overall_ratio(times: dict[str, dict]) -> dict[str, float]:
    """Total per-image time over total batched time, round by round (median and range)."""
    per_round = {variant: [sum(round_times) for round_times in zip(*(t[variant] for t in times.values()))]
                 for variant in ("batched", "per-image")}
    return ratio(per_round["per-image"], per_round["batched"])


def reference_missing() -> str | None:
    """What the per-image reference lacks here, or None."""
    import importlib.util

    missing = [name for name in ("skimage", "cv2") if importlib.util.find_spec(name) is None]
    if missing:
        return (f"the per-image reference needs {' and '.join(missing)}: pip install scikit-image "
                "'opencv-python-headless<4.11' (or .[corruption-reference])")
    return None


def corruption_costs(profile, device: torch.device, data_dir: str) -> dict:
    """The `make bench` section (benchmarks/run.py): speed per corruption against the reference on the
    test images the stage corrupts, then generation and evaluation as the stage does them."""
    from bench_data import benchmark_dataset, benchmark_model
    from report import figure, ratio_figure, section, skipped

    from robustbench_mm.common.runtime import evaluation_batch
    from robustbench_mm.config import CorruptConfig
    from robustbench_mm.evaluation.corrupt import CorruptTestData, outcomes_on

    missing = reference_missing()
    if missing:
        return skipped(TITLE, missing)
    test = benchmark_dataset(device, data_dir, train=False, n=profile.corruption_images)
    n = len(test)
    uint8_images = test.images.permute(0, 2, 3, 1).contiguous().numpy()
    times = speed_rounds(uint8_images, C.ALL_CORRUPTIONS, device, profile.corruption_rounds)
    figures = []
    for name, t in times.items():
        figures += [
            figure(f"corrupt.{name}.batched_images_per_s", f"{name}: ours (batched)", n / median(t["batched"]),
                   "images/s"),
            figure(f"corrupt.{name}.per_image_images_per_s", f"{name}: reference (image by image)",
                   n / median(t["per-image"]), "images/s"),
            ratio_figure(f"corrupt.{name}.speedup", f"{name}: reference time / our time",
                         ratio(t["per-image"], t["batched"])),
        ]
    figures.append(ratio_figure("corrupt.speedup_overall", "all 19: total reference time / total our time",
                                overall_ratio(times), (">=", 20)))

    # As the stage does it: each set made batch by batch into uint8, then evaluated by the model.
    config = CorruptConfig()
    data = CorruptTestData(test.to(device), "generated", config.seed)
    model = benchmark_model(profile.width, device)
    labels = test.labels.to(device)
    sets = {name: data.corrupted(name, SEVERITY, device, config.batch_size) for name in C.CORRUPTIONS}

    def generate_all():
        for name in C.CORRUPTIONS:
            data.corrupted(name, SEVERITY, device, config.batch_size)

    def evaluate_all():
        for images in sets.values():
            outcomes_on(model, images, labels, config.batch_size)

    stage = interleaved({"generate": generate_all, "evaluate": evaluate_all}, device, profile.corruption_rounds)
    one_set = sets["gaussian_noise"]
    evaluation = interleaved({"clean": partial(outcomes_on, model, data.images.images, labels, config.batch_size),
                              "corrupted": partial(outcomes_on, model, one_set, labels, config.batch_size)},
                             device, profile.corruption_rounds)
    figures += [
        ratio_figure("corrupt.generation_over_evaluation",
                     f"making the {len(C.CORRUPTIONS)} sets / evaluating one model on them (severity {SEVERITY})",
                     ratio(stage["generate"], stage["evaluate"]), ("<=", 1)),
        figure("corrupt.generation_s_per_set", "making one set", median(stage["generate"]) / len(C.CORRUPTIONS), "s"),
        figure("corrupt.evaluation_s_per_set", "evaluating one set", median(stage["evaluate"]) / len(C.CORRUPTIONS),
               "s"),
        ratio_figure("corrupt.corrupted_over_clean_evaluation", "one corrupted-set evaluation / one clean evaluation",
                     ratio(evaluation["corrupted"], evaluation["clean"]), ("<=", 1.2)),
    ]
    settings = {"images": n, "data": test.name, "severity": SEVERITY, "torch_threads": torch.get_num_threads(),
                "numba_threads": numba.get_num_threads(),
                "model": f"PreActResNet18 width {profile.width} (eval mode)", "eval_batch": evaluation_batch(config.batch_size, device)}
    notes = ["The reference is make_cifar_c.py transcribed image by image (tests/corruption_reference.py), each "
             "image with its own numpy Generator; ours is `corrupt` on the whole batch (counter-based draws): "
             "compiled kernels (numba, an image per thread) for the four noises, brightness, saturate, glass, "
             "Gaussian and motion blur, snow, elastic and spatter, torch at one thread for the rest.",
             "Each call is timed alone, right after the other variant's: a kernel's first call after the "
             "reference's single-threaded second or more can wait for the idle core to wake (seen: 27 ms for "
             "glass blur against 10 ms warm), and that is counted.",
             "The corrupted-set evaluation is timed on the Gaussian-noise set; the clean one on the same images."]
    seconds = {f"{name}.{variant}": t[variant] for name, t in times.items() for variant in t}
    seconds.update({f"stage.{k}": v for k, v in stage.items()})
    seconds.update({f"evaluation.{k}": v for k, v in evaluation.items()})
    return section(TITLE, settings, figures, notes, seconds)


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
    print(f"{args.images} images 32x32, severity {SEVERITY}, {args.rounds} rounds, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'corruption':18s} {'batched img/s':>14s} {'per-image img/s':>16s} {'ratio':>8s}  (spread)")
    times = speed_rounds(images_for(args.images), names, device, args.rounds)
    for name, t in times.items():
        r = ratio(t["per-image"], t["batched"])
        print(f"{name:18s} {args.images / median(t['batched']):14.0f} {args.images / median(t['per-image']):16.0f} "
              f"{r['value']:7.1f}x  {r['min']:.1f}-{r['max']:.1f}")
    total = {variant: statistics.median(sum(r) for r in zip(*(t[variant] for t in times.values())))
             for variant in ("batched", "per-image")}
    print(f"{'all':18s} {len(names) * args.images / total['batched']:14.0f} "
          f"{len(names) * args.images / total['per-image']:16.0f} {overall_ratio(times)['value']:7.1f}x  "
          "(total per-image time / total batched time)")


if __name__ == "__main__":
    main()
