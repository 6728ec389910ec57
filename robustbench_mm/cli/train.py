"""`mm-robust train`."""

from __future__ import annotations

import argparse

from robustbench_mm.cli.common import add_device, add_quiet, int_list, require
from robustbench_mm.config import (
    ARCHS, CONTROL_METHODS, DATASETS, METHODS, TABLE_MODELS, TrainConfig, train_config_for_preset)
from robustbench_mm.errors import UsageError, check_choice
from robustbench_mm.presets import PRESETS, TRAINING
from robustbench_mm.runs.seeds import for_seeds
from robustbench_mm.train.trainer import train


def _shown(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(name: str) -> str:
    """'default: <the fast preset's value>', plus the presets that set another value."""
    values = {p: TRAINING[p].get(name, getattr(TrainConfig, name)) for p in PRESETS}
    others = [f"{p}: {_shown(v)}" for p, v in values.items() if p != "fast" and v != values["fast"]]
    return f"default: {_shown(values['fast'])}" + (f"; {', '.join(others)}" if others else "")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train baseline / input mixup / manifold mixup models (and Table 5's "
                                     "adversarial-training and thermometer controls) into checkpoints/",
                       description="Train PreActResNets with or without (manifold) mixup, with PGD adversarial "
                                   "training (Madry et al.) or on a thermometer code (Buckman et al.). Presets set "
                                   "the schedule; "
                                   "every option below overrides its preset. Defaults are the fast preset's, "
                                   "with the paper and smoke presets' values where they differ.")
    p.add_argument("--preset", default="fast", help=f"one of {', '.join(PRESETS)} (default: fast)")
    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} ({_default('dataset')})")
    p.add_argument("--method", default="all",
                   help=f"one of {', '.join(METHODS)}, or 'all' for the four mixup-study models: baseline, input "
                        "alpha 1 and 2, manifold alpha 2 (default: all; adversarial and thermometer are trained only "
                        "when named)")
    p.add_argument("--alpha", type=float, help="Beta(alpha, alpha) for lambda (default: input 1.0, manifold 2.0; "
                                               "not accepted with --method baseline, adversarial, thermometer)")
    p.add_argument("--adv-eps", type=float,
                   help=f"--method adversarial: L-inf radius of the inner PGD on the [0, 1] pixel scale "
                        f"(default: 8/255 = {8 / 255:.4f})")
    p.add_argument("--adv-step-size", type=float,
                   help=f"--method adversarial: inner PGD step on the pixel scale (default: 2/255 = {2 / 255:.4f})")
    p.add_argument("--adv-steps", type=int, help=f"--method adversarial: inner PGD steps after the random start "
                                                 f"({_default('adv_steps')})")
    p.add_argument("--thermometer-levels", type=int,
                   help=f"--method thermometer: levels of the thermometer code, at least 2 "
                        f"({_default('thermometer_levels')}, Buckman et al.'s CIFAR setting)")
    p.add_argument("--arch", help=f"one of {', '.join(ARCHS)} ({_default('arch')})")
    p.add_argument("--width", type=int, help=f"channels of the first stage ({_default('width')})")
    p.add_argument("--final-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BN-ReLU before pooling as in He et al. (default: off, as in the authors' code)")
    p.add_argument("--mix-layers", help="manifold mixing points: paper = {input, stage 1, stage 2}, all = adds stage 3 "
                                        f"({_default('mix_layers')})")
    p.add_argument("--loss", help=f"bce (the paper's BCE on softmax) or ce (soft-target cross-entropy) ({_default('loss')})")
    p.add_argument("--epochs", type=int, help=f"training epochs ({_default('epochs')})")
    p.add_argument("--lr", type=float, help=f"initial learning rate of SGD ({_default('lr')})")
    p.add_argument("--milestones", type=int_list,
                   help=f"epochs where the lr is multiplied by --lr-gamma, e.g. 400,800 ({_default('milestones')})")
    p.add_argument("--batch-size", type=int, help=f"training images per step ({_default('batch_size')})")
    p.add_argument("--weight-decay", type=float, help=f"SGD weight decay ({_default('weight_decay')})")
    p.add_argument("--momentum", type=float, help=f"SGD momentum ({_default('momentum')})")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help=f"Nesterov momentum ({_default('nesterov')})")
    p.add_argument("--lr-gamma", type=float, help=f"lr multiplier at each milestone ({_default('lr_gamma')})")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help=f"random horizontal flips ({_default('flip')})")
    p.add_argument("--eval-batch-size", type=int, help=f"images per evaluation pass ({_default('eval_batch_size')})")
    p.add_argument("--crop-padding", type=int,
                   help=f"zero padding of the random crop, the authors' current code ({_default('crop_padding')})")
    p.add_argument("--eval-every", type=int, help=f"evaluate test accuracy/NLL every N epochs ({_default('eval_every')})")
    p.add_argument("--fgsm-eval-examples", type=int,
                   help="FGSM (eps 0.03, both protocols) at every test evaluation on the first N test images, for "
                        "the accuracy-vs-epoch curve of Table 5 (default: all on CUDA, 200 on a CPU; 0 = off)")
    p.add_argument("--n-train", type=int, help="train on the first N images only (default: all)")
    p.add_argument("--n-test", type=int, help="evaluate on the first N test images only (default: all)")
    p.add_argument("--seed", type=int, help=f"0 to 2**32 - 1; seeds weights, batches and mixing ({_default('seed')})")
    p.add_argument("--seeds", type=int_list,
                   help="train each model once per seed, e.g. 0,1,2, into folders <run name>-s<seed> (default: one "
                        "run, seed --seed, no suffix)")
    p.add_argument("--precision", help=f"bf16 (autocast on CUDA) or fp32; the CPU always uses fp32 ({_default('precision')})")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help=f"channels-last memory format on CUDA ({_default('channels_last')})")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help=f"torch.compile the model ({_default('compile')})")
    p.add_argument("--data-dir", help=f"where CIFAR lives or is downloaded to ({_default('data_dir')})")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=None,
                   help=f"download CIFAR when missing ({_default('download')})")
    p.add_argument("--out", help=f"checkpoint root folder ({_default('out')})")
    p.add_argument("--run-name", help="folder name under --out, a plain name without / or .. (default: "
                                      "<dataset>-<arch>-<method>-a<alpha>, no -a<alpha> without mixing); only with a single --method")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run exactly where it stopped")
    p.add_argument("--force", action="store_true",
                   help="start an existing run of the same name over; the old run is kept until the new one "
                        "has saved its first epoch, and restored if it fails before")
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


def configs_from_args(args):
    """One TrainConfig per model to train (`--method all` gives the four table models)."""
    check_choice("preset", args.preset, PRESETS)
    require(args.seeds is None or args.seed is None, "give --seed or --seeds, not both")
    if args.resume and args.force:
        raise UsageError("--resume continues a run and --force starts it over; pass one of them, not both")
    if args.method in ("baseline", *CONTROL_METHODS) and args.alpha is not None:
        raise UsageError(f"--alpha has no effect with --method {args.method} (no mixing); drop --alpha")
    if args.method == "all" and args.run_name:
        raise UsageError("--run-name names one run but --method all trains four; pass a single --method "
                         f"({', '.join(METHODS)}) with --run-name")
    if args.method == "all":
        models = [(m, a) for m, a in TABLE_MODELS] if args.alpha is None else [
            ("baseline", 0.0), ("input", args.alpha), ("manifold", args.alpha)]
    else:
        check_choice("method", args.method, (*METHODS, "all"))
        models = [(args.method, args.alpha)]
    overrides = dict(
        dataset=args.dataset, arch=args.arch, width=args.width, final_bn=args.final_bn, mix_layers=args.mix_layers,
        loss=args.loss, epochs=args.epochs, lr=args.lr, milestones=args.milestones, batch_size=args.batch_size,
        weight_decay=args.weight_decay, momentum=args.momentum, nesterov=args.nesterov, lr_gamma=args.lr_gamma,
        flip=args.flip, eval_batch_size=args.eval_batch_size, crop_padding=args.crop_padding, eval_every=args.eval_every,
        fgsm_eval_examples=args.fgsm_eval_examples, n_train=args.n_train, n_test=args.n_test, seed=args.seed, precision=args.precision,
        channels_last=args.channels_last, compile=args.compile, data_dir=args.data_dir, download=args.download,
        out=args.out, device=args.device, adv_eps=args.adv_eps, adv_step_size=args.adv_step_size,
        adv_steps=args.adv_steps, thermometer_levels=args.thermometer_levels,
    )
    configs = []
    for method, alpha in models:
        run_name = args.run_name or None
        configs.append(train_config_for_preset(args.preset, method=method, alpha=alpha, run_name=run_name, **overrides))
    return for_seeds(configs, args.seeds)


def run(args) -> int:
    configs = configs_from_args(args)  # validates every model's settings before any training starts
    for config in configs:
        train(config, resume=args.resume, force=args.force, progress=not args.quiet)
    return 0
