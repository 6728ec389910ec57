"""Training: mixup, adversarial-training and thermometer step time over baseline step time, and our device-resident batched input
pipeline against a torchvision DataLoader with per-image transforms, both over the real
`Trainer` step (`Trainer.train_epoch` / `Trainer.train_step`)."""

from __future__ import annotations

import statistics
from functools import partial

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench_data import benchmark_dataset
from report import figure, ratio_figure, section
from robustbench_mm.config import train_config_for_preset
from robustbench_mm.data.images import DeviceBatches, ImageSet
from robustbench_mm.models.preact import mix_states
from robustbench_mm.train.mixup import eligible_mix_points
from robustbench_mm.train.trainer import Trainer
from timing import interleaved, median, ratio, repeated


def make_trainer(method: str, width: int, batch: int, device: torch.device, **overrides) -> Trainer:
    """A built Trainer with the smoke preset's recipe (paper's alpha per method) at the given size."""
    dataset = "digits" if device.type != "cuda" else "cifar10"
    config = train_config_for_preset("smoke", dataset=dataset, method=method, width=width, batch_size=batch,
                                     device=device.type, **overrides)
    trainer = Trainer(config, progress=False)
    trainer.build()
    return trainer


def device_batches(trainer: Trainer, data: ImageSet) -> DeviceBatches:
    c = trainer.config
    return DeviceBatches(data, c.batch_size, trainer.generator, c.crop_padding, c.flip,
                         channels_last=trainer.use_cuda and c.channels_last)


# Inner PGD steps of adversarial training as measured: on CUDA the paper/fast presets' 7 (Madry et al.),
# on a CPU the smoke preset's 3, which is what `make demo` trains there.
ADV_STEPS = {"cuda": 7}


def step_ratios(profile, device: torch.device, data_dir: str) -> dict:
    """Per-step time of the real training loop for baseline, input mixup, manifold mixup, PGD adversarial
    training and thermometer encoding, interleaved in one run."""
    data = benchmark_dataset(device, data_dir)
    subset = data.subset(profile.train_steps * profile.batch).to(device)
    loops = {}
    adv_steps = ADV_STEPS.get(device.type)
    # A second, differently seeded baseline measures the noise floor: its ratio to the first
    # shows how far from 1 a ratio strays on this machine when the work is the same.
    for name, method, seed in (("baseline", "baseline", 0), ("input", "input", 0), ("manifold", "manifold", 0),
                               ("adversarial", "adversarial", 0), ("thermometer", "thermometer", 0),
                               ("baseline-2", "baseline", 1)):
        extra = {"adv_steps": adv_steps} if method == "adversarial" and adv_steps else {}
        trainer = make_trainer(method, profile.width, profile.batch, device, seed=seed, **extra)
        if method == "adversarial":
            adv_config = trainer.config
        loops[name] = partial(trainer.train_epoch, device_batches(trainer, subset))
    seconds = interleaved(loops, device, profile.train_rounds)
    per_step = {name: [s / profile.train_steps for s in times] for name, times in seconds.items()}
    # Both baselines do the same work: their mean is a steadier denominator than either alone.
    baseline = [(a + b) / 2 for a, b in zip(per_step["baseline"], per_step["baseline-2"], strict=True)]
    noise_floor = ratio(per_step["baseline-2"], per_step["baseline"])
    figures = [
        ratio_figure("training.baseline2_over_baseline", "second baseline step / first baseline step (noise floor)",
                     noise_floor),
        ratio_figure("training.input_over_baseline", "input mixup step / baseline step",
                     ratio(per_step["input"], baseline), ("<=", 1.03)),
        ratio_figure("training.manifold_over_baseline", "manifold mixup step / baseline step",
                     ratio(per_step["manifold"], baseline), ("<=", 1.03)),
        # Adversarial training does adv_steps forward+backward passes to the input, then the training step:
        # about (adv_steps + 1) baseline steps (the input gradient skips the weight gradients, so a bit less).
        ratio_figure("training.adversarial_over_baseline",
                     f"PGD-{adv_config.adv_steps} adversarial training step / baseline step",
                     ratio(per_step["adversarial"], baseline), ("<=", adv_config.adv_steps + 1.5)),
        ratio_figure("training.thermometer_over_baseline",
                     f"thermometer ({adv_config.thermometer_levels} levels) step / baseline step",
                     ratio(per_step["thermometer"], baseline)),
    ]
    figures += [figure(f"training.{name}_step_ms", f"{name} step time", 1000 * median(times), "ms")
                for name, times in per_step.items()]
    mix_figures, mix_share = mix_op_figures(profile, device, trainer.use_cuda and trainer.config.channels_last,
                                            median(baseline))
    figures += mix_figures
    settings = {"model": f"PreActResNet18 width {profile.width}", "batch": profile.batch,
                "steps_per_round": profile.train_steps, "data": data.name,
                "adversarial": f"L-inf PGD, random start, eps {adv_config.adv_eps:.4f}, step "
                               f"{adv_config.adv_step_size:.4f}, {adv_config.adv_steps} steps, model in train mode",
                "thermometer_levels": adv_config.thermometer_levels}
    notes = ["A step is one iteration of `Trainer.train_epoch`: device-side crop/flip augmentation, mixup draw, "
             "forward, loss, backward, SGD update and on-device bookkeeping; the epoch's one host sync is included.",
             "The mix is `lam * h + (1 - lam) * h[perm]` at mixing point 0 (input), 1 (stage-1 output, (batch, width, "
             "32, 32)) or 2 (stage-2 output); `mix_states` backpropagates it by gathering with the inverse "
             "permutation, plain indexing by a scatter-add. The mean mix cost is what manifold mixup adds to a step.",
             f"Two identical baselines give per-round ratios from {noise_floor['min']:.3f} to "
             f"{noise_floor['max']:.3f} here (median {noise_floor['value']:.3f}), so a step ratio a few per cent "
             f"from 1 is within this machine's noise; the mix cost measured alone ({mix_share:.2f} % of a step) "
             "is the precise figure for manifold mixup's extra work.",
             "An adversarial-training step first runs the evaluation's PGD (`attacks.pgd.pgd`, standard protocol) "
             "from a random start on the batch, all on the device, then the usual step on the adversarial batch; "
             "(steps + 1) is the expected ratio. A thermometer step encodes the batch into 3 x levels channels, "
             "so only the first convolution grows."]
    return section("Training step: mixup, adversarial training and thermometer over baseline", settings, figures, notes, per_step)


def plain_index_mix(hidden: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Manifold mixing as usually written; its backward is a scatter-add (`index_put_` with accumulate)."""
    return lam * hidden + (1.0 - lam) * hidden[perm]


def mix_point_shape(point: int, batch: int, width: int) -> tuple[int, int, int, int]:
    """The tensor mixed at a mixing point of PreActResNet18 on 32x32 images (0 = the input)."""
    if point == 0:
        return (batch, 3, 32, 32)
    return (batch, width * 2 ** (point - 1), 32 // 2 ** (point - 1), 32 // 2 ** (point - 1))


def mix_op_figures(profile, device: torch.device, channels_last: bool,
                   baseline_step_s: float) -> tuple[list[dict], float]:
    """The mix alone, forward + backward, at each manifold mixing point: `mix_states` against plain
    indexing, and what it adds to a baseline step on average (the mixing point is drawn uniformly),
    returned also on its own as a percentage.

    The whole-step ratio above moves by a few per cent from round to round on a shared CPU; this
    one measures the only work manifold mixup adds, in isolation, to well under a per cent.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    lam = torch.tensor(0.3, device=device)
    perm = torch.randperm(profile.batch, device=device)
    variants = {}
    for point in eligible_mix_points("manifold"):
        shape = mix_point_shape(point, profile.batch, profile.width)
        # The input needs no gradient; hidden states do.
        hidden = torch.randn(shape, device=device).to(memory_format=memory_format).requires_grad_(point > 0)
        upstream = torch.randn(shape, device=device).to(memory_format=memory_format)
        for name, mix in (("ours", mix_states), ("plain", plain_index_mix)):
            variants[f"{name}-{point}"] = partial(mix_forward_backward, mix, hidden, lam, perm, upstream)
    calls = 10
    seconds = interleaved({name: repeated(fn, calls) for name, fn in variants.items()}, device, profile.rounds)
    per_call = {name: [s / calls for s in times] for name, times in seconds.items()}
    points = eligible_mix_points("manifold")
    mean_cost = {name: statistics.mean(median(per_call[f"{name}-{p}"]) for p in points) for name in ("ours", "plain")}
    figures = [ratio_figure(f"training.mix{p}_plain_over_ours",
                            f"mix at point {p} forward+backward: plain indexing / ours",
                            ratio(per_call[f"plain-{p}"], per_call[f"ours-{p}"])) for p in points if p > 0]
    figures += [figure(f"training.mix{p}_{name}_ms", f"mix at point {p} forward+backward, {label}",
                       1000 * median(per_call[f"{name}-{p}"]), "ms")
                for p in points for name, label in (("ours", "ours"), ("plain", "plain indexing"))]
    share = {name: 100 * cost / baseline_step_s for name, cost in mean_cost.items()}
    figures += [figure(f"training.manifold_mix_cost_{name}", f"mean mix cost, share of a baseline step, {label}",
                       share[name], "%")
                for name, label in (("ours", "ours"), ("plain", "plain indexing"))]
    return figures, share["ours"]


def mix_forward_backward(mix, hidden: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor,
                         upstream: torch.Tensor) -> None:
    hidden.grad = None
    mixed = mix(hidden, lam, perm)
    if hidden.requires_grad:
        mixed.backward(upstream)


class PerImageDataset(Dataset):
    """What torchvision's `datasets.CIFAR10` does per item: one PIL image through per-image transforms."""

    def __init__(self, data: ImageSet, transform):
        self.images = data.images.permute(0, 2, 3, 1).contiguous().numpy()  # HWC uint8, as CIFAR10 stores it
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def per_image_loader(data: ImageSet, batch: int, workers: int, padding: int, pin_memory: bool) -> DataLoader:
    transform = transforms.Compose([transforms.RandomCrop(32, padding=padding), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor()])
    return DataLoader(PerImageDataset(data, transform), batch_size=batch, shuffle=True, drop_last=True,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=pin_memory)


def consume(batches, step=None, device: torch.device | None = None) -> None:
    for x, y in batches:
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if step is not None:
            step(x, y, None)


DEVICE_PIPELINE_REPEATS = 10


def input_pipeline(profile, device: torch.device, data_dir: str) -> dict:
    """Images/s of DeviceBatches vs a per-image DataLoader, with the baseline step and alone."""
    data = benchmark_dataset(device, data_dir)
    images = profile.pipeline_steps * profile.batch
    subset = data.subset(images)
    on_device = subset.to(device)
    trainer = make_trainer("baseline", profile.width, profile.batch, device)
    padding = trainer.config.crop_padding
    ours = device_batches(trainer, on_device)
    loaders = {workers: per_image_loader(subset, profile.batch, workers, padding, device.type == "cuda")
               for workers in profile.loader_workers}
    with_step = {"device-batches": partial(consume, ours, trainer.train_step)}
    # Alone, our pipeline takes a few milliseconds per round, short enough for one scheduler hiccup
    # on a shared CPU to swamp it: it runs several epochs per timing and is divided back.
    alone = {"device-batches": repeated(partial(consume, ours), DEVICE_PIPELINE_REPEATS)}
    for workers, loader in loaders.items():
        with_step[f"dataloader-{workers}w"] = partial(consume, loader, trainer.train_step, device)
        alone[f"dataloader-{workers}w"] = partial(consume, loader, None, device)
    trainer.model.train()
    seconds_step = interleaved(with_step, device, profile.rounds)
    seconds_alone = interleaved(alone, device, profile.rounds)
    seconds_alone["device-batches"] = [t / DEVICE_PIPELINE_REPEATS for t in seconds_alone["device-batches"]]
    del loaders  # shuts the persistent workers down

    figures = []
    for kind, label, seconds in (("step", "with the baseline step", seconds_step),
                                 ("alone", "pipeline alone", seconds_alone)):
        for name, times in seconds.items():
            figures.append(figure(f"pipeline.{kind}.{name}_images_per_s", f"{name}, {label}",
                                  images / median(times), "images/s"))
        for workers in profile.loader_workers:
            name = f"dataloader-{workers}w"
            figures.append(ratio_figure(f"pipeline.{kind}.speedup_over_{name}",
                                        f"device-batches / {name} images/s, {label}",
                                        ratio(seconds[name], seconds["device-batches"])))
    settings = {"model": f"PreActResNet18 width {profile.width}", "batch": profile.batch,
                "images_per_round": images, "data": data.name, "transforms": f"RandomCrop(32, padding={padding}), "
                "RandomHorizontalFlip, ToTensor (per image, PIL) vs one batched crop/flip on the device"}
    notes = ["`dataloader-Nw` is a torch DataLoader with N worker processes (persistent, pinned memory on CUDA) "
             "over a CIFAR10-style dataset that decodes one PIL image per item."]
    seconds = {**{f"step.{k}": v for k, v in seconds_step.items()},
               **{f"alone.{k}": v for k, v in seconds_alone.items()}}
    return section("Training input pipeline", settings, figures, notes, seconds)
