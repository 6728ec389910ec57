"""Deformations: our batched warp (a source-pixel plan computed once on the host, `plan_warp`, then
one gather per batch on the device, `Warp.apply`) against the warp it replaced (one
`affine_grid`/`grid_sample` call with a float32 matrix per image, whose half-pixel ties could fall
differently on different devices) and against torchvision's `affine` applied image by image; and one
deformed-set evaluation against one clean evaluation (`deform_eval.evaluate_on`)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from bench_data import benchmark_dataset, benchmark_model
from report import figure, ratio_figure, section
from robustbench_mm.config import DeformConfig
from robustbench_mm.data.deformations import plan_warp, set_matrices
from robustbench_mm.data.images import to_unit_float
from robustbench_mm.evaluation.deform import evaluate_on
from timing import interleaved, median, ratio

TITLE = "Deformations"
SET_NAME = "rotate-40"  # every image has its own angle, so nothing can be shared between images
INTERPOLATION = "nearest"


def per_image_affine(images: torch.Tensor, degrees: list[float]) -> torch.Tensor:
    """A plain loop of torchvision's `affine`, one image and one angle at a time (its angle turns clockwise)."""
    return torch.stack([TF.affine(image, angle=-angle, translate=[0, 0], scale=1.0, shear=[0.0, 0.0],
                                  interpolation=InterpolationMode.NEAREST) for image, angle in zip(images, degrees)])


def grid_sample_warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The warp before the host-planned gather: float32 `affine_grid` + `grid_sample` on the device."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=INTERPOLATION, padding_mode="zeros", align_corners=False)


def grid_sample_theta(maps: torch.Tensor) -> torch.Tensor:
    """Our (row, column) maps as affine_grid's (x, y) matrices with no translation."""
    theta = torch.zeros(len(maps), 2, 3, dtype=torch.float32)
    theta[:, :, :2] = maps.flip(1).flip(2).float()
    return theta


def deformation_costs(profile, device: torch.device, data_dir: str) -> dict:
    test = benchmark_dataset(device, data_dir, train=False, n=profile.deform_images).to(device)
    parameters, maps = set_matrices(SET_NAME, len(test), seed=0)
    images = to_unit_float(test.images)
    degrees = parameters.tolist()
    plan = partial(plan_warp, maps, images.shape[-1], "ours", INTERPOLATION)
    warp = plan().to(device)
    theta = grid_sample_theta(maps).to(device)
    same = (warp.apply(images) == grid_sample_warp(images, theta)).all(1).float().mean().item()
    warps = interleaved({"batched": partial(warp.apply, images),
                         "planned+batched": lambda: plan().to(device).apply(images),
                         "grid_sample": partial(grid_sample_warp, images, theta),
                         "per-image": partial(per_image_affine, images, degrees)}, device, profile.rounds)

    model = benchmark_model(profile.width, device)
    batch = DeformConfig().batch_size
    evaluation = interleaved({"clean": partial(evaluate_on, model, test, None, batch),
                              "deformed": partial(evaluate_on, model, test, warp, batch)},
                             device, profile.rounds)
    n = len(test)
    figures = [
        ratio_figure("deform.warp_speedup_over_per_image", "per-image torchvision affine time / our batched warp time",
                     ratio(warps["per-image"], warps["batched"])),
        ratio_figure("deform.warp_speedup_over_grid_sample",
                     "old float32 affine_grid/grid_sample warp time / our batched gather",
                     ratio(warps["grid_sample"], warps["batched"])),
        ratio_figure("deform.planning_share", "host planning + gather / gather alone (planning is once per set)",
                     ratio(warps["planned+batched"], warps["batched"])),
        figure("deform.batched_images_per_s", "batched warp", n / median(warps["batched"]), "images/s"),
        figure("deform.per_image_images_per_s", "per-image torchvision affine", n / median(warps["per-image"]),
               "images/s"),
        figure("deform.same_pixels_as_grid_sample", "images warped identically by the old warp", 100 * same, "%"),
        ratio_figure("deform.deformed_over_clean_evaluation", "one deformed-set evaluation / one clean evaluation",
                     ratio(evaluation["deformed"], evaluation["clean"])),
        figure("deform.clean_evaluation_s", "clean evaluation", median(evaluation["clean"]), "s"),
        figure("deform.deformed_evaluation_s", "deformed-set evaluation", median(evaluation["deformed"]), "s"),
    ]
    settings = {"set": SET_NAME, "interpolation": INTERPOLATION, "images": n, "data": test.name,
                "model": f"PreActResNet18 width {profile.width} (eval mode)", "eval_batch": batch}
    return section(TITLE, settings, figures, [], {**{f"warp.{k}": v for k, v in warps.items()},
                                                  **{f"evaluation.{k}": v for k, v in evaluation.items()}})
