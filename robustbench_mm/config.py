"""Every setting of every stage, as typed dataclasses.

A config is validated once, on construction, and is saved verbatim (``asdict``) into every
checkpoint and result file, so a number can always be traced back to the settings that made it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, fields
from typing import Any

from robustbench_mm.data.corruptions import CORRUPTION_SOURCES, SEVERITIES, resolve_corruption_names
from robustbench_mm.data.deformations import CONVENTIONS, DEFORM_SETS, FILLS, INTERPOLATIONS, resolve_set_names
from robustbench_mm.errors import (
    UsageError, check_choice, check_fields_finite, check_folder_name, check_positive, check_seed, check_whole)
from robustbench_mm.paper import TABLE5_EPS
from robustbench_mm.presets import PRESETS, TRAINING

DATASETS = ("cifar10", "cifar100", "digits")
MIXUP_METHODS = ("input", "manifold")  # the methods that draw a mixing coefficient from Beta(alpha, alpha)
# Table 5's two controls: PGD adversarial training (Madry et al.) and thermometer encoding (Buckman et al.).
CONTROL_METHODS = ("adversarial", "thermometer")
METHODS = ("baseline", *MIXUP_METHODS, *CONTROL_METHODS)
ARCHS = ("preactresnet18", "preactresnet34", "preactresnet152")
LOSSES = ("bce", "ce")
MIX_LAYER_SETS = ("paper", "all")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("bf16", "fp32")
CHECKPOINT_KINDS = ("last", "best")
AA_BUDGETS = ("standard", "smoke")  # robustbench_mm.attacks.autoattack.BUDGETS

# The paper's alpha per method; `--method all` trains exactly the models Tables 3, 5 and 7 need.
DEFAULT_ALPHA = {"baseline": 0.0, "input": 1.0, "manifold": 2.0, "adversarial": 0.0, "thermometer": 0.0}
TABLE_MODELS = (("baseline", 0.0), ("input", 1.0), ("input", 2.0), ("manifold", 2.0))
# What `reproduce` (and `make demo`) trains and evaluates: the four table models, then Table 5's two controls,
# a positive (PGD adversarial training) and a negative one (thermometer encoding: gradient masking, broken by BPDA).
REPRODUCE_MODELS = (*TABLE_MODELS, *((method, 0.0) for method in CONTROL_METHODS))


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = "cifar10"
    method: str = "manifold"
    alpha: float = 2.0
    arch: str = "preactresnet18"
    width: int = 64
    final_bn: bool = False  # the authors' model has no BN-ReLU before pooling; He et al.'s has
    mix_layers: str = "paper"  # paper: {input, stage 1, stage 2}; all: adds stage 3
    loss: str = "bce"
    preset: str = "fast"
    epochs: int = 200
    lr: float = 0.1
    milestones: tuple[int, ...] = (100, 150)
    lr_gamma: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    batch_size: int = 100
    crop_padding: int = 2  # the authors' current code; their 2018 code used 4
    flip: bool = True
    eval_every: int = 1
    eval_batch_size: int = 1000
    # FGSM (eps 0.03, both protocols) at every test evaluation on the first N test images:
    # None = all of them on CUDA, 200 on a CPU; 0 = off. It never changes the trained weights.
    fgsm_eval_examples: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "bf16"  # autocast dtype on CUDA; the CPU always trains in fp32
    channels_last: bool = True
    compile: bool = False
    # --method adversarial (Madry et al.): L-inf PGD with a uniform random start on the [0, 1] pixel scale on
    # every training batch (train/adversarial.py). RobustBench's PreActResNet-18 setting: 8/255, 2/255, 7 steps.
    adv_eps: float = 8 / 255
    adv_step_size: float = 2 / 255
    adv_steps: int = 7
    # --method thermometer (Buckman et al.): levels of the thermometer code, the model's first layer.
    thermometer_levels: int = 16
    n_train: int | None = None  # a fixed subset, for tests and quick looks
    n_test: int | None = None
    data_dir: str = "data"
    download: bool = True
    out: str = "checkpoints"
    run_name: str = ""

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("method", self.method, METHODS)
        check_choice("architecture", self.arch, ARCHS)
        check_choice("loss", self.loss, LOSSES)
        check_choice("mix layer set", self.mix_layers, MIX_LAYER_SETS)
        check_choice("preset", self.preset, PRESETS)
        check_choice("device", self.device, DEVICES)
        check_choice("precision", self.precision, PRECISIONS)
        check_positive("--alpha", self.alpha, allow_zero=self.method not in MIXUP_METHODS)
        if self.method in CONTROL_METHODS and self.alpha != 0:
            raise UsageError(f"--alpha is the mixup coefficient; --method {self.method} mixes nothing, so it must "
                             f"be 0, got {self.alpha:g}")
        check_positive("--adv-eps", self.adv_eps)
        if self.adv_eps > 1:
            raise UsageError(f"--adv-eps is on the [0, 1] pixel scale (e.g. 8/255 = 0.0314), got {self.adv_eps:g}")
        check_positive("--adv-step-size", self.adv_step_size)
        check_whole("--adv-steps", self.adv_steps, minimum=1)
        check_whole("--thermometer-levels", self.thermometer_levels, minimum=2)
        check_positive("--epochs", self.epochs)
        check_positive("--batch-size", self.batch_size)
        check_positive("--eval-batch-size", self.eval_batch_size)
        check_positive("--width", self.width)
        check_positive("--lr", self.lr)
        check_positive("--eval-every", self.eval_every)
        check_positive("--weight-decay", self.weight_decay, allow_zero=True)
        check_positive("--momentum", self.momentum, allow_zero=True)
        if not 0 < self.lr_gamma <= 1:
            raise UsageError(f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        check_positive("--crop-padding", self.crop_padding, allow_zero=True)
        check_seed("--seed", self.seed)
        check_fields_finite(self)
        if self.fgsm_eval_examples is not None:
            check_positive("--fgsm-eval-examples", self.fgsm_eval_examples, allow_zero=True)
        for name in ("n_train", "n_test"):
            value = getattr(self, name)
            if value is not None:
                check_positive("--" + name.replace("_", "-"), value)
        if any(m <= 0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise UsageError(f"--milestones must be increasing positive epochs, got {list(self.milestones)}")
        if not self.run_name:
            object.__setattr__(self, "run_name", default_run_name(self))
        check_folder_name("--run-name", self.run_name)

    @property
    def num_classes(self) -> int:
        return 100 if self.dataset == "cifar100" else 10

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return config_from_dict(cls, data)


# Settings that only one method reads. A run of any other method cannot depend on them, so comparing a
# run with its --resume (or `reproduce` with a finished run) skips them: runs saved before they existed
# get today's defaults, which the smoke preset's adv_steps = 3 does not match.
METHOD_SETTINGS = {"adv_eps": "adversarial", "adv_step_size": "adversarial", "adv_steps": "adversarial",
                   "thermometer_levels": "thermometer"}


def unused_settings(config: TrainConfig) -> set[str]:
    """The `METHOD_SETTINGS` that `config.method` does not read."""
    return {name for name, method in METHOD_SETTINGS.items() if method != config.method}


def default_run_name(config: TrainConfig) -> str:
    name = f"{config.dataset}-{config.arch}-{config.method}"
    if config.method in MIXUP_METHODS:
        name += f"-a{config.alpha:g}"
    return name


def train_config_for_preset(preset: str, **overrides: Any) -> TrainConfig:
    """The preset's settings with `overrides` (None values ignored) on top."""
    check_choice("preset", preset, PRESETS)
    settings = {"preset": preset, **TRAINING[preset]}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if "alpha" not in settings or settings["alpha"] is None:
        settings["alpha"] = DEFAULT_ALPHA[settings.get("method", TrainConfig.method)]
    return TrainConfig(**settings)


@dataclass(frozen=True)
class AttackConfig:
    """`mm-robust attack`: FGSM in both protocols, unbounded PGD and gradient-masking checks."""

    eps: tuple[float, ...] = (TABLE5_EPS,)  # the values reported in the tables (the first one everywhere)
    protocols: tuple[str, ...] = ("standard", "paper")
    # The accuracy-vs-eps curve; 0 and every --eps value are always added to it.
    sweep: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1)
    pgd_steps: int = 200
    pgd_step_size: float = 0.01
    pgd_pass_threshold: float = 1.0  # percent: unbounded PGD must reach at most this accuracy
    bounded_pgd_steps: int = 20  # the iterative attack that must beat FGSM at the same eps
    max_fgsm_only_share: float = 2.0  # percent of examples FGSM may fool that bounded PGD does not
    max_sweep_rise: float = 1.0  # percentage points accuracy may rise above its value at a smaller eps
    max_zero_gradient_share: float = 1.0  # percent of inputs whose input gradient may be all zero or non-finite
    n_examples: int | None = None  # the first N test images; None = the whole test set
    batch_size: int = 500
    checkpoint: str = "last"
    seed: int = 0
    device: str = "auto"
    save_examples: int = 16
    dataset: str | None = None  # None = each model's own; otherwise every model must have been trained on it
    data_dir: str | None = None  # None = the data_dir each model was trained with
    autoattack: bool = False  # AutoAttack (standard L-inf) at aa_eps and, with aa_paper_eps, at the check eps
    aa_eps: float = 8 / 255  # RobustBench's CIFAR eps, on the [0, 1] pixel scale
    aa_paper_eps: bool = True  # also at the paper's eps (the first positive --eps) on the pixel scale
    aa_budget: str = "standard"  # "standard": the reference settings; "smoke": a small budget for the CPU demo
    max_black_box_share: float = 0.2  # percent of examples Square may fool that every white-box stage missed
    # Pintor et al.'s indicators (attacks/indicators.py) on bounded PGD with its loss trace, first batch of examples:
    incomplete_window: int = 10  # the last iterates whose best loss may still move ...
    max_loss_movement: float = 0.05  # ... by at most this share of the trace's range (incomplete optimisation)
    max_unsettled_share: float = 20.0  # % of the failed examples whose loss may still be moving at the end
    max_silent_success_share: float = 0.0  # percent of examples whose success flag may disagree with the model

    def __post_init__(self) -> None:
        if not 0 < self.aa_eps <= 1:  # also refuses NaN
            raise UsageError(f"--aa-eps must be in (0, 1] on the pixel scale, e.g. 8/255, got {self.aa_eps:g}")
        check_choice("AutoAttack budget", self.aa_budget, AA_BUDGETS)
        if not self.protocols:
            raise UsageError("--protocol needs at least one of standard, paper")
        for protocol in self.protocols:
            check_choice("protocol", protocol, ("standard", "paper"))
        if not self.eps:
            raise UsageError("--eps needs at least one value, e.g. --eps 0.03")
        for flag, values in (("--eps", self.eps), ("--sweep", self.sweep)):
            for eps in values:
                if not 0 <= eps < float("inf"):  # also refuses NaN
                    raise UsageError(f"{flag} values must be finite and >= 0, got {eps}")
                if "standard" in self.protocols and eps > 1:
                    raise UsageError(f"{flag} {eps} is outside the [0, 1] pixel range of the standard protocol")
        check_positive("--pgd-steps", self.pgd_steps)
        check_positive("--pgd-step-size", self.pgd_step_size)
        check_positive("--bounded-pgd-steps", self.bounded_pgd_steps)
        check_positive("incomplete_window", self.incomplete_window)
        if not 0 <= self.max_loss_movement <= 1:
            raise UsageError(f"max_loss_movement must be a share in [0, 1], got {self.max_loss_movement}")
        if not 0 <= self.max_unsettled_share <= 100:
            raise UsageError(f"max_unsettled_share must be a percentage in [0, 100], got {self.max_unsettled_share}")
        check_positive("--batch-size", self.batch_size)
        check_seed("--seed", self.seed)
        check_positive("--save-examples", self.save_examples, allow_zero=True)
        for flag, value in (("--pgd-threshold", self.pgd_pass_threshold),
                            ("--max-fgsm-only-share", self.max_fgsm_only_share),
                            ("--max-sweep-rise", self.max_sweep_rise),
                            ("--max-zero-gradient-share", self.max_zero_gradient_share),
                            ("--max-black-box-share", self.max_black_box_share),
                            ("max_silent_success_share", self.max_silent_success_share)):
            if not 0 <= value <= 100:
                raise UsageError(f"{flag} must be a percentage in [0, 100], got {value}")
        if self.n_examples is not None:
            check_positive("--n-examples", self.n_examples)
        check_choice("checkpoint", self.checkpoint, CHECKPOINT_KINDS)
        check_choice("device", self.device, DEVICES)
        if self.dataset is not None:
            check_choice("dataset", self.dataset, DATASETS)
        check_fields_finite(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeformConfig:
    """`mm-robust deform`: the 17 deformation test sets of Table 7."""

    sets: tuple[str, ...] = ()  # set names, 'all' or 'table3'; empty = all 17; stored as names in Table 7 order
    interpolation: str = "nearest"  # the authors' choice; "bilinear" also possible
    convention: str = "ours"  # "ours": exact centre, pixel-edge border; "authors": their scipy warp (data/deformations.py)
    fill: str = "black"  # empty space: "black", or "mean", the dataset's mean pixel (zero after normalization)
    seed: int = 0  # each set's generator seed is derived from this and the set's name
    n_examples: int | None = None  # the first N test images; None = the whole test set
    batch_size: int = 500
    checkpoint: str = "last"
    device: str = "auto"
    data_dir: str | None = None  # None = the data_dir each model was trained with

    def __post_init__(self) -> None:
        object.__setattr__(self, "sets", resolve_set_names(self.sets))
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        check_choice("convention", self.convention, CONVENTIONS)
        check_choice("fill", self.fill, FILLS)
        check_seed("--seed", self.seed)
        check_positive("--batch-size", self.batch_size)
        if self.n_examples is not None:
            check_positive("--n-examples", self.n_examples)
        check_choice("--weights", self.checkpoint, CHECKPOINT_KINDS)
        check_choice("device", self.device, DEVICES)
        check_fields_finite(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CorruptConfig:
    """`mm-robust corrupt`: CIFAR-10-C style common corruptions (data/corruptions.py) at severities 1-5."""

    corruptions: tuple[str, ...] = ()  # names or 'all'; empty = the 15 standard ones; stored as names in order
    extra: bool = False  # add the 4 held-out ones (speckle_noise, gaussian_blur, spatter, saturate)
    severities: tuple[int, ...] = SEVERITIES  # stored sorted, without repeats
    # "official": CIFAR-10-C / CIFAR-100-C files under <data dir>/CIFAR-10-C (RobustBench's layout);
    # "generated": made by data/corruptions.py; "auto": official when those files are there, else generated
    source: str = "auto"
    seed: int = 0  # generated sets: every image's draws come from (seed, corruption, severity, image index)
    n_examples: int | None = None  # the first N test images; None = the whole test set
    batch_size: int = 500
    checkpoint: str = "last"
    device: str = "auto"
    data_dir: str | None = None  # None = the data_dir each model was trained with

    def __post_init__(self) -> None:
        object.__setattr__(self, "corruptions", resolve_corruption_names(self.corruptions, self.extra))
        severities = self.severities if isinstance(self.severities, (tuple, list)) else (self.severities,)
        if not severities:
            raise UsageError(f"--severities needs at least one of {', '.join(map(str, SEVERITIES))}")
        for severity in severities:
            if isinstance(severity, bool) or severity not in SEVERITIES:
                raise UsageError(f"unknown severity {severity!r}; valid: {', '.join(map(str, SEVERITIES))}")
        object.__setattr__(self, "severities", tuple(sorted({int(s) for s in severities})))
        check_choice("--source", self.source, CORRUPTION_SOURCES)
        check_seed("--seed", self.seed)
        check_positive("--batch-size", self.batch_size)
        if self.n_examples is not None:
            check_positive("--n-examples", self.n_examples)
        check_choice("--weights", self.checkpoint, CHECKPOINT_KINDS)
        check_choice("device", self.device, DEVICES)
        check_fields_finite(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_CALIBRATION_BINS = 1000  # beyond this a bin holds almost no test images, and memory grows with the count


@dataclass(frozen=True)
class CalibrationConfig:
    """`mm-robust calibrate`: ECE and reliability diagrams on clean, deformed and FGSM test images."""

    bins: int = 15  # equal-width confidence bins
    deform_set: str = "rotate-60"  # one Table 3 set; the same seeded images `mm-robust deform` uses
    seed: int = 0  # the deformation set's base seed, as in `mm-robust deform` (FGSM draws nothing)
    interpolation: str = "nearest"
    convention: str = "ours"  # the warp convention of `mm-robust deform` (data/deformations.py); black fill
    eps: float = TABLE5_EPS
    protocol: str = "standard"
    n_examples: int | None = None  # the first N test images; None = the whole test set
    batch_size: int = 500
    checkpoint: str = "last"
    device: str = "auto"
    data_dir: str | None = None  # None = the data_dir each model was trained with

    def __post_init__(self) -> None:
        check_positive("--bins", self.bins)
        if self.bins > MAX_CALIBRATION_BINS:
            raise UsageError(f"--bins must be at most {MAX_CALIBRATION_BINS} (ECE is usually taken over 10 to 20 "
                             f"bins), got {self.bins}")
        check_choice("deformation set", self.deform_set, tuple(DEFORM_SETS))
        check_seed("--seed", self.seed)
        check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        check_choice("convention", self.convention, CONVENTIONS)
        check_choice("protocol", self.protocol, ("standard", "paper"))
        if not 0 <= self.eps < float("inf") or (self.protocol == "standard" and self.eps > 1):
            raise UsageError(f"--eps must be finite, >= 0 and (standard protocol) at most 1, got {self.eps}")
        if self.n_examples is not None:
            check_positive("--n-examples", self.n_examples)
        check_positive("--batch-size", self.batch_size)
        check_choice("--weights", self.checkpoint, CHECKPOINT_KINDS)
        check_choice("device", self.device, DEVICES)
        check_fields_finite(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_from_dict(cls, data: dict[str, Any]):
    """Rebuild a config saved with `to_dict`, rejecting unknown keys and wrong types clearly."""
    if not isinstance(data, dict):
        raise UsageError(f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UsageError(f"unknown {cls.__name__} keys {unknown}; valid: {', '.join(known)}")
    values = {}
    for name, value in data.items():
        default = known[name].default
        if isinstance(value, list):
            value = tuple(value)
        if default is not None and default is not dataclasses.MISSING and value is not None:
            expected = type(default)
            ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
            if expected is not bool and isinstance(value, bool):
                ok = False
            if not ok:
                raise UsageError(
                    f"{cls.__name__}.{name} must be {expected.__name__}, got {type(value).__name__} {value!r}"
                )
        values[name] = value
    return cls(**values)


__all__ = [
    "AttackConfig", "CalibrationConfig", "CorruptConfig", "DeformConfig", "TrainConfig", "train_config_for_preset",
    "config_from_dict", "METHOD_SETTINGS", "unused_settings", "DATASETS", "METHODS", "MIXUP_METHODS", "CONTROL_METHODS",
    "ARCHS", "TABLE_MODELS", "REPRODUCE_MODELS", "DEFAULT_ALPHA",
]
