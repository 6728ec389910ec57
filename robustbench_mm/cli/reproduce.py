"""`mm-robust reproduce`."""

from __future__ import annotations

from pathlib import Path

from robustbench_mm.cli.common import add_checkpoints_root, add_device, add_quiet, int_list
from robustbench_mm.common.storage import check_writable_dir
from robustbench_mm.config import ARCHS, DATASETS
from robustbench_mm.errors import UsageError
from robustbench_mm.pipeline import Folders, plan_for_preset, reproduce
from robustbench_mm.presets import PRESETS
from robustbench_mm.scheduling.options import ClusterOptions


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="train -> attack -> deform -> corrupt -> report in one go (default: offline smoke preset)",
                       description="Train the four table models (no mixup, input mixup α=1 and α=2, manifold mixup "
                                   "α=2), attack them, evaluate the deformation and common-corruption test sets, "
                                   "measure calibration and write the report. "
                                   "Finished stages are skipped, so rerunning after a stop picks up where it stopped.")
    p.add_argument("--preset", default="smoke",
                   help=f"one of {', '.join(PRESETS)} (default: smoke, offline digits on the CPU in minutes)")
    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)} (default: cifar10; smoke: digits)")
    p.add_argument("--arch", help=f"one of {', '.join(ARCHS)} (default: preactresnet18; the paper's Table 7 "
                                  "used preactresnet34 on cifar100)")
    p.add_argument("--weights", default="last",
                   help="checkpoint to evaluate: last, or best (highest test accuracy during training, as the paper "
                        "reported) (default: last)")
    p.add_argument("--seeds", type=int_list,
                   help="train and evaluate each model once per seed, e.g. 0,1,2,3,4, in folders <run name>-s<seed>; "
                        "the report shows mean ± std over seeds (default: one run with seed 0, no suffix)")
    p.add_argument("--data-dir", help="where CIFAR lives or is downloaded to (default: data)")
    add_checkpoints_root(p)
    p.add_argument("--attacks", default="attacks", help="evaluation results (default: attacks)")
    p.add_argument("--reports", default="reports", help="the report (default: reports)")
    add_device(p)
    add_quiet(p)
    cluster = p.add_argument_group("many GPUs or machines (Ray; needs pip install 'mm-robust[ray]')")
    cluster.add_argument("--cluster", choices=("ray",),
                         help="run every training and evaluation as its own task on Ray, side by side "
                              "(default: everything in this process, one after another)")
    cluster.add_argument("--address", help="join this running Ray cluster, e.g. auto or HEAD_IP:6379 "
                                           "(default: start a local one on this machine)")
    cluster.add_argument("--num-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    cluster.add_argument("--cpus-per-task", type=float, default=1.0,
                         help="CPUs (and torch threads) each task gets (default: 1)")
    cluster.add_argument("--gpus-per-task", type=float,
                         help="GPUs each training/evaluation task gets (default: 1 when the cluster has GPUs, "
                              "else 0; 0.5 runs two tasks per GPU)")
    cluster.add_argument("--max-retries", type=int, default=3,
                         help="times a task whose worker died is run again; it resumes from what it saved (default: 3)")
    cluster.add_argument("--shards", type=int, default=1,
                         help="split each model's deformation and corruption evaluations and AutoAttack over this "
                              "many tasks on disjoint test-image ranges; the merged files are the ones a single run "
                              "writes (default: 1)")
    p.set_defaults(run=run)


CLUSTER_ONLY = ("address", "num_cpus", "gpus_per_task")


def cluster_options(args) -> ClusterOptions | None:
    """The Ray settings, or None for a run in this process; cluster-only options without --cluster are refused."""
    if args.cluster is None:
        given = [f"--{name.replace('_', '-')}" for name in CLUSTER_ONLY if getattr(args, name) is not None]
        given += [flag for flag, value, default in (("--cpus-per-task", args.cpus_per_task, 1.0),
                                                     ("--max-retries", args.max_retries, 3), ("--shards", args.shards, 1))
                  if value != default]
        if given:
            raise UsageError(f"{', '.join(given)} only apply with --cluster ray")
        return None
    return ClusterOptions(address=args.address, num_cpus=args.num_cpus, cpus_per_task=args.cpus_per_task,
                          gpus_per_task=args.gpus_per_task, max_retries=args.max_retries, shards=args.shards)


def run(args) -> int:
    options = cluster_options(args)
    for option, folder in (("--checkpoints", args.checkpoints), ("--attacks", args.attacks), ("--reports", args.reports)):
        check_writable_dir(Path(folder), option)  # every output folder, before any training
    plan = plan_for_preset(args.preset, dataset=args.dataset, arch=args.arch, device=args.device,
                           checkpoints=args.checkpoints, data_dir=args.data_dir,
                           weights=args.weights, seeds=args.seeds)
    folders = Folders(Path(args.checkpoints), Path(args.attacks), Path(args.reports))
    if options is None:
        index = reproduce(plan, folders, progress=not args.quiet)
    else:
        from robustbench_mm.scheduling.ray_runner import import_ray, run_on_ray

        import_ray()  # a missing Ray is reported before anything else happens
        index = run_on_ray(plan, folders, options, progress=not args.quiet)
    print(f"report: {index}")
    return 0
