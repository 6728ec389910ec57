"""`mm-robust deform`."""

from __future__ import annotations

from robustbench_mm.cli.common import (
    add_deformation_set, add_device, add_external_model, add_model_inputs, add_quiet, add_test_subset,
    external_source_from_args)
from robustbench_mm.config import DeformConfig
from robustbench_mm.data.deformations import DEFORM_SETS, FILLS
from robustbench_mm.evaluation.deform import format_summary, load_results, run_deform


DEFAULTS = DeformConfig()


def add_parser(sub) -> None:
    p = sub.add_parser("deform", help="accuracy under the 17 deformation test sets of Table 7 into attacks/",
                       description="Evaluate trained models on clean test data and on rotated, sheared and zoomed "
                                   "test sets never seen in training (the paper's Table 7; Table 3 is a subset). "
                                   "Each image gets its own seeded parameter, so every set is fixed and reproducible. "
                                   "Writes attacks/<run>/deform.json per model (deform-authors.json, deform-mean.json, "
                                   "deform-authors-mean.json for the other conventions and fills, so all can "
                                   "coexist) and attacks/deform-samples-<dataset>[-authors][-mean].png.")
    p.add_argument("--sets", action="append",
                   help=f"'all' (default), 'table3', or set names, comma-separated or repeated: "
                        f"{', '.join(DEFORM_SETS)}")
    p.add_argument("--fill", default=DEFAULTS.fill,
                   help=f"one of {', '.join(FILLS)}: what fills the space the warp leaves empty; mean is the "
                        "dataset's mean pixel, zero after normalization (default: black)")
    add_deformation_set(p, DEFAULTS)
    add_test_subset(p, DEFAULTS.batch_size)
    add_model_inputs(p, DEFAULTS.checkpoint, "redo sets already stored with the same settings")
    add_external_model(p, with_dataset=True)
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


def run(args) -> int:
    source = external_source_from_args(args)
    checkpoint = DEFAULTS.checkpoint if source else args.weights or DEFAULTS.checkpoint
    config = DeformConfig(sets=tuple(args.sets or ()), interpolation=args.interpolation, convention=args.convention,
                          fill=args.fill, seed=args.seed,
                          n_examples=args.n_examples, batch_size=args.batch_size, checkpoint=checkpoint,
                          device=args.device, data_dir=args.data_dir)
    paths = run_deform(config, args.checkpoints, args.out, runs=args.checkpoint, force=args.force,
                       progress=not args.quiet, sources=None if source is None else [source])
    print(format_summary(load_results(paths)))
    return 0
