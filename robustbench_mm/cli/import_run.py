"""`mm-robust import`."""

from __future__ import annotations

from robustbench_mm.cli.common import add_checkpoints_root, add_normalization
from robustbench_mm.config import DATASETS, METHODS
from robustbench_mm.presets import PRESETS
from robustbench_mm.sources.authors import import_authors_run


LAYOUTS = ("authors",)


def add_parser(sub) -> None:
    p = sub.add_parser("import", help="turn weights trained elsewhere into a run folder under checkpoints/",
                       description="Read a state dict in the Manifold Mixup authors' PreActResNet layout (their "
                                   "layer1..layer4 key names; .safetensors, or .pt/.pth read with weights_only=True, "
                                   "never unpickling code) into our PreActResNet and write a normal run folder "
                                   "(meta.json + last.safetensors) that attack, deform and report treat like ours.")
    p.add_argument("--from", dest="layout", required=True, choices=LAYOUTS, help="the weights' layout")
    p.add_argument("--weights", required=True, help="the weights file")
    p.add_argument("--dataset", required=True, help=f"what they were trained on: {', '.join(DATASETS)}")
    p.add_argument("--name", required=True, help="the run folder's name under --checkpoints")
    p.add_argument("--method", required=True, help=f"how they were trained: {', '.join(METHODS)}")
    p.add_argument("--alpha", type=float, help="mixup alpha they were trained with (default: input 1, manifold 2)")
    add_normalization(p, "what their data loader applied", "the authors' constants for --dataset")
    p.add_argument("--preset", default="paper", help=f"the schedule they followed: {', '.join(PRESETS)} (default: paper)")
    p.add_argument("--epochs", type=int, help="epochs they trained (default: the preset's)")
    add_checkpoints_root(p)
    p.add_argument("--force", action="store_true", help="replace an existing run of the same name")
    p.set_defaults(run=run)


def run(args) -> int:
    run_dir = import_authors_run(args.weights, args.dataset, args.name, args.method, args.alpha, args.checkpoints,
                                 args.normalization, args.preset, args.epochs, args.force)
    print(f"import: {run_dir}")
    return 0
