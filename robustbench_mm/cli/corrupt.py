"""`mm-robust corrupt`."""

from __future__ import annotations

from robustbench_mm.cli.common import (
    add_device, add_external_model, add_model_inputs, add_quiet, add_test_subset, external_source_from_args,
    int_list)
from robustbench_mm.config import CorruptConfig
from robustbench_mm.data.corruptions import CORRUPTIONS, CORRUPTION_SOURCES, EXTRA_CORRUPTIONS, SEVERITIES
from robustbench_mm.evaluation.corrupt import OFFICIAL_FOLDERS, run_corrupt
from robustbench_mm.evaluation.corrupt_results import format_summary, load_results

DEFAULTS = CorruptConfig()


def add_parser(sub) -> None:
    p = sub.add_parser("corrupt", help="accuracy under CIFAR-10-C style common corruptions into attacks/",
                       description="Evaluate trained models on clean test data and on the common corruptions of "
                                   "CIFAR-10-C (Hendrycks & Dietterich, 2019): 15 corruptions at severities 1-5, "
                                   "75 test sets, and their mean, RobustBench's corruptions_acc. The sets are read "
                                   "from the official CIFAR-10-C / CIFAR-100-C files when they are under the data "
                                   f"dir ({'/'.join(OFFICIAL_FOLDERS.values())}/<corruption>.npy and labels.npy, "
                                   "RobustBench's layout), else generated with the reference's CIFAR parameters, "
                                   "each image seeded by its index so every subset is the same. Writes "
                                   "attacks/<run>/corruptions.json per model and "
                                   "attacks/corrupt-samples-<dataset>.png.")
    p.add_argument("--corruptions", action="append",
                   help=f"'all' (default: the 15 of the benchmark) or names, comma-separated or repeated: "
                        f"{', '.join(CORRUPTIONS)}; with --extra also {', '.join(EXTRA_CORRUPTIONS)}")
    p.add_argument("--extra", action="store_true",
                   help=f"add the 4 held-out corruptions ({', '.join(EXTRA_CORRUPTIONS)}); they never count in "
                        "corruptions_acc")
    p.add_argument("--severities", type=int_list,
                   help=f"comma-separated severities from {', '.join(map(str, SEVERITIES))} (default: all five)")
    p.add_argument("--source", default=DEFAULTS.source,
                   help=f"one of {', '.join(CORRUPTION_SOURCES)}: official reads the CIFAR-10-C / CIFAR-100-C files, "
                        "generated makes the sets, auto takes the files when they are there (default: auto)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help="base seed of generated sets; each image's draws derive from it, the corruption, the severity "
                        f"and the image's index in the test set (default: {DEFAULTS.seed})")
    add_test_subset(p, DEFAULTS.batch_size)
    add_model_inputs(p, DEFAULTS.checkpoint, "redo sets already stored with the same settings")
    add_external_model(p, with_dataset=True)
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


def run(args) -> int:
    source = external_source_from_args(args)
    checkpoint = DEFAULTS.checkpoint if source else args.weights or DEFAULTS.checkpoint
    config = CorruptConfig(corruptions=tuple(args.corruptions or ()), extra=args.extra,
                           severities=DEFAULTS.severities if args.severities is None else args.severities,
                           source=args.source, seed=args.seed, n_examples=args.n_examples, batch_size=args.batch_size,
                           checkpoint=checkpoint, device=args.device, data_dir=args.data_dir)
    paths = run_corrupt(config, args.checkpoints, args.out, runs=args.checkpoint, force=args.force,
                        progress=not args.quiet, sources=None if source is None else [source])
    print(format_summary(load_results(paths)))
    return 0
