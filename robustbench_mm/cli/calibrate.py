"""`mm-robust calibrate`."""

from __future__ import annotations

from robustbench_mm.cli.common import add_deformation_set, add_device, add_model_inputs, add_quiet, add_test_subset
from robustbench_mm.config import CalibrationConfig
from robustbench_mm.data.deformations import DEFORM_SETS
from robustbench_mm.evaluation.calibrate import run_calibration


DEFAULTS = CalibrationConfig()


def add_parser(sub) -> None:
    p = sub.add_parser("calibrate", help="expected calibration error and reliability bins into attacks/ (beyond the paper)",
                       description="Measure how well each model's confidence matches its accuracy: ECE over equal-width "
                                   "confidence bins and the reliability-diagram bins, on the clean test set, on one "
                                   "deformation test set and under FGSM. Writes attacks/<run>/calibration.json; a "
                                   "file made with the same settings is skipped unless --force.")
    p.add_argument("--bins", type=int, default=DEFAULTS.bins, help=f"confidence bins (default {DEFAULTS.bins})")
    p.add_argument("--deform-set", default=DEFAULTS.deform_set,
                   help=f"the deformation test set: one of {', '.join(DEFORM_SETS)} (default {DEFAULTS.deform_set})")
    add_deformation_set(p, DEFAULTS)  # the same options as mm-robust deform: the same seeded images
    p.add_argument("--eps", type=float, default=DEFAULTS.eps, help=f"FGSM eps (default {DEFAULTS.eps})")
    p.add_argument("--protocol", default=DEFAULTS.protocol, help="FGSM protocol: standard (default) or paper")
    add_test_subset(p, DEFAULTS.batch_size)
    add_model_inputs(p, DEFAULTS.checkpoint, "redo models already measured with the same settings")
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


def run(args) -> int:
    config = CalibrationConfig(bins=args.bins, deform_set=args.deform_set, seed=args.seed,
                               interpolation=args.interpolation, convention=args.convention, eps=args.eps, protocol=args.protocol,
                               n_examples=args.n_examples, batch_size=args.batch_size,
                               checkpoint=args.weights or DEFAULTS.checkpoint,
                               device=args.device, data_dir=args.data_dir)
    paths = run_calibration(config, args.checkpoints, args.out, runs=args.checkpoint, force=args.force,
                            progress=not args.quiet)
    print(f"calibration: {len(paths)} result file(s) under {args.out}")
    return 0
