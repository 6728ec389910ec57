"""Deformations: our batched warp (`deformations.deform`, one `affine_grid`/`grid_sample` call with
a matrix per image) against torchvision's `affine` applied image by image, and one deformed-set
evaluation against one clean evaluation (`deform_eval.evaluate_on`)."""

from __future__ import annotations

from functools import partial

import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from bench_data import benchmark_dataset, benchmark_model
from report import figure, ratio_figure, section
from robustbench_mm.config import DeformConfig
from robustbench_mm.data import to_unit_float
from robustbench_mm.deform_eval import evaluate_on
from robustbench_mm.deformations import deform, set_matrices
from timing import interleaved, median, ratio

TITLE = "Deformations"
SET_NAME = "rotate-40"  # every image has its own angle, so nothing can be shared between images
INTERPOLATION = "nearest"


def per_image_affine(images: torch.Tensor, degrees: list[float]) -> torch.Tensor:
    """A plain loop of torchvision's `affine`, one image and one angle at a time (its angle turns clockwise)."""
    return torch.stack([TF.affine(image, angle=-angle, translate=[0, 0], scale=1.0, shear=[0.0, 0.0],
                                  interpolation=InterpolationMode.NEAREST) for image, angle in zip(images, degrees)])


def deformation_costs(profile, device: torch.device, data_dir: str) -> dict:
    test = benchmark_dataset(device, data_dir, train=False, n=profile.deform_images).to(device)
    parameters, theta = set_matrices(SET_NAME, len(test), seed=0)
    theta = theta.to(device)
    images = to_unit_float(test.images)
    degrees = parameters.tolist()
    warp = interleaved({"batched": partial(deform, images, theta, INTERPOLATION),
                        "per-image": partial(per_image_affine, images, degrees)}, device, profile.rounds)

    model = benchmark_model(profile.width, device)
    batch = DeformConfig().batch_size
    evaluation = interleaved({"clean": partial(evaluate_on, model, test, None, INTERPOLATION, batch),
                              "deformed": partial(evaluate_on, model, test, theta, INTERPOLATION, batch)},
                             device, profile.rounds)
    n = len(test)
    figures = [
        ratio_figure("deform.warp_speedup_over_per_image", "per-image torchvision affine time / our batched warp time",
                     ratio(warp["per-image"], warp["batched"])),
        figure("deform.batched_images_per_s", "batched warp", n / median(warp["batched"]), "images/s"),
        figure("deform.per_image_images_per_s", "per-image torchvision affine", n / median(warp["per-image"]),
               "images/s"),
        ratio_figure("deform.deformed_over_clean_evaluation", "one deformed-set evaluation / one clean evaluation",
                     ratio(evaluation["deformed"], evaluation["clean"])),
        figure("deform.clean_evaluation_s", "clean evaluation", median(evaluation["clean"]), "s"),
        figure("deform.deformed_evaluation_s", "deformed-set evaluation", median(evaluation["deformed"]), "s"),
    ]
    settings = {"set": SET_NAME, "interpolation": INTERPOLATION, "images": n, "data": test.name,
                "model": f"PreActResNet18 width {profile.width} (eval mode)", "eval_batch": batch}
    return section(TITLE, settings, figures, [], {**{f"warp.{k}": v for k, v in warp.items()},
                                                  **{f"evaluation.{k}": v for k, v in evaluation.items()}})
