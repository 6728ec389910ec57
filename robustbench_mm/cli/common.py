"""Argument helpers shared by the subcommands."""

from __future__ import annotations

import argparse

from robustbench_mm.common.runtime import CPU_EVALUATION_BATCH
from robustbench_mm.config import CHECKPOINT_KINDS
from robustbench_mm.data.deformations import CONVENTIONS, INTERPOLATIONS
from robustbench_mm.errors import UsageError


def float_list(text: str) -> tuple[float, ...]:
    """'0.03' or '0,0.005,0.01' -> a tuple of floats."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma-separated list of numbers, got {text!r}") from None


def fraction(text: str) -> float:
    """'0.03' or '8/255' -> a float; the range is checked by the config that takes it."""
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a number or a fraction like 8/255, got {text!r}") from None
    return value


def int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (default: cuda when available)")


def add_checkpoints_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoints", default="checkpoints",
                        help="root folder of the run folders (trained models) (default: checkpoints)")


def add_normalization(parser: argparse.ArgumentParser, what: str, default: str) -> None:
    """--normalization MEAN,STD: how the weights expect [0, 1] pixels to be normalized (external models, import)."""
    parser.add_argument("--normalization", metavar="MEAN,STD",
                        help=f"{what}: (x - mean) / std of [0, 1] pixels; 6 numbers (3 means, 3 stds), 2 (one of "
                             f"each), or a dataset name for the authors' constants (default: {default})")


def add_test_subset(parser: argparse.ArgumentParser, batch_default: int, cpu_capped: bool = True) -> None:
    """Which test images an evaluation stage measures, and how many per batch: shared by attack, deform, calibrate,
    corrupt. `cpu_capped`: the stage's outcomes do not depend on the batch, so the CPU caps it (runtime.py)."""
    parser.add_argument("--n-examples", type=int, help="evaluate the first N test images only (default: all)")
    cap = f"; on the CPU at most {CPU_EVALUATION_BATCH}, which is faster there" if cpu_capped else ""
    parser.add_argument("--batch-size", type=int, default=batch_default,
                        help=f"images per batch (default: {batch_default}{cap})")


def add_deformation_set(parser: argparse.ArgumentParser, defaults) -> None:
    """How a deformation test set is drawn: shared by deform and calibrate, so both measure the same images."""
    parser.add_argument("--interpolation", default=defaults.interpolation,
                        help=f"one of {', '.join(INTERPOLATIONS)}; the authors used nearest "
                             f"(default: {defaults.interpolation})")
    parser.add_argument("--convention", default=defaults.convention,
                        help=f"one of {', '.join(CONVENTIONS)}: ours warps about the exact image centre out to the "
                             "pixel edges; authors reproduces the authors' scipy warp (centre one pixel off, a "
                             f"half-pixel rim blanked, rotation sign flipped) (default: {defaults.convention})")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="base seed; each set's own seed derives from it and the set's name "
                             f"(default: {defaults.seed})")


def add_model_inputs(parser: argparse.ArgumentParser, weights_default: str, force_help: str) -> None:
    """Which trained models an evaluation stage reads, and where its results go: shared by attack, deform and
    calibrate."""
    parser.add_argument("--checkpoint", action="append", metavar="RUN",
                        help="a run folder or a run name under --checkpoints; repeatable (default: every run)")
    parser.add_argument("--weights",
                        help=f"which weights of each run: {' or '.join(CHECKPOINT_KINDS)} (default: {weights_default}); "
                             "results of best go to --out/<run>/best/, beside those of last; "
                             "with --model: the weights file (.safetensors, or .pt/.pth read with weights_only=True)")
    add_checkpoints_root(parser)
    parser.add_argument("--data-dir", help="where the test set lives (default: the data dir each model was trained with)")
    parser.add_argument("--out", default="attacks", help="root folder of results (default: attacks)")
    parser.add_argument("--force", action="store_true", help=force_help)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def add_external_model(parser: argparse.ArgumentParser, with_dataset: bool) -> None:
    """A model trained elsewhere: built by an importable factory, weights from --weights."""
    parser.add_argument("--model", metavar="PACKAGE.MODULE:FACTORY",
                        help="evaluate a model trained elsewhere: a callable returning an nn.Module (imported from the "
                             "current folder or the Python path), loaded with --weights FILE; needs --dataset")
    add_normalization(parser, "with --model: what the model expects", "none, the model takes [0, 1] pixels")
    parser.add_argument("--name", help="with --model: its folder under --out (default: the factory's name)")
    if with_dataset:
        parser.add_argument("--dataset", help="with --model: the test set to evaluate on (cifar10, cifar100, digits)")


def external_source_from_args(args):
    """The ModelSource that --model describes, or None when the run folders in --checkpoints are evaluated."""
    from robustbench_mm.sources.external import source_from_factory

    if args.model is None:
        for flag in ("normalization", "name"):
            require(getattr(args, flag) is None, f"--{flag} is only for --model (a model trained elsewhere)")
        return None
    require(not args.checkpoint, "--checkpoint and --model exclude each other: evaluate run folders or one model "
                                 "trained elsewhere per command")
    return source_from_factory(args.model, args.weights, args.dataset, args.name, args.normalization, args.data_dir,
                               args.out, args.checkpoints, args.force)
