"""`make bench`: speed measured as ratios from one interleaved run, written to
`benchmarks/results/<machine>.json` and `.md`.

    python benchmarks/run.py                        # every section but end-to-end: minutes on 2 CPU cores
    python benchmarks/run.py --only training,attacks
    python benchmarks/run.py --e2e                  # adds `mm-robust reproduce --preset smoke` (~10 min)
    python benchmarks/run.py --only gpu             # the GPU epoch-time grid alone (needs CUDA)
    python benchmarks/run.py --only ray             # smoke reproduce on local Ray vs one process (~20 min)
    python benchmarks/run.py --only ray --keep runs # ... keeping both runs' checkpoints/, attacks/, reports/
    python benchmarks/run.py --only corruptions --label shared   # -> results/cpu-2core-shared.*: a loaded machine

Sections measured now replace their earlier figures in the result files; the others stay, each
with the date and commit it was measured at.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package from this checkout, installed or not

import torch  # noqa: E402

import report  # noqa: E402
from e2e_bench import TITLE as E2E_TITLE  # noqa: E402
from profiles import PROFILES  # noqa: E402
from robustbench_mm.common.runtime import resolve_device  # noqa: E402
from robustbench_mm.common.storage import ensure_writable_dir  # noqa: E402
from robustbench_mm.errors import UsageError, check_positive  # noqa: E402


# Section name -> (module, function(profile, device, data_dir) -> one result section), in run order.
SECTION_FUNCTIONS = {
    "training": ("training_bench", "step_ratios"),
    "pipeline": ("training_bench", "input_pipeline"),
    "attacks": ("attack_bench", "attack_costs"),
    "deformations": ("deform_bench", "deformation_costs"),
    "corruptions": ("corruption_bench", "corruption_costs"),
    "gpu": ("gpu_bench", "epoch_grid"),
    "e2e": ("e2e_bench", "smoke_reproduce"),
    "ray": ("ray_bench", "fanout_overhead"),
}
SECTIONS = tuple(SECTION_FUNCTIONS)
KEEPING = ("e2e", "ray")  # the sections that run whole reproductions, whose folders --keep keeps
OPT_IN = "e2e"  # the smoke reproduction alone takes longer than all the other sections together
RAY = "ray"  # opt-in too: two smoke reproductions, one of them on Ray (which must be installed)


def section_function(name: str):
    module_name, function_name = SECTION_FUNCTIONS[name]
    return getattr(importlib.import_module(module_name), function_name)


def parse_sections(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise UsageError(f"--only {text!r}: unknown section(s) {unknown}; valid: {', '.join(SECTIONS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", metavar="A,B", help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}")
    parser.add_argument("--e2e", action="store_true",
                        help="also time the smoke `mm-robust reproduce` (opt-in: ~10 min)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: checks the runner works; numbers mean nothing")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (default: torch's choice); on a CPU shared with other work, 1 "
                             "avoids threads waiting on each other, and the result files get a -Nthread tag")
    parser.add_argument("--label", metavar="WORD",
                        help="appended to the machine tag of the result files, e.g. 'shared' when other jobs were "
                             "using the machine, so such figures never replace an idle machine's")
    parser.add_argument("--data-dir", default="data", help="where CIFAR-10 may be (GPU runs use it when present)")
    parser.add_argument("--out", default=str(HERE / "results"), help="folder for <machine>.json and <machine>.md")
    parser.add_argument("--keep", metavar="DIR",
                        help=f"keep the folders the {', '.join(KEEPING)} sections' reproductions make (checkpoints, "
                             "attacks, reports) under DIR, one per run, instead of deleting them; DIR must be "
                             "new or empty")
    return parser


def check_empty_folder(option: str, folder: Path) -> None:
    """The runs kept in `folder` must hold only what they made themselves."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{option} {str(folder)!r} is not an empty folder; give a new or empty one")


def write(out: Path, machine: dict, profile, measured: dict) -> tuple[Path, Path]:
    results = report.merge_results(out / f"{machine['tag']}.json", machine, profile.to_dict(), measured)
    if OPT_IN not in results["sections"]:
        results["sections"][OPT_IN] = report.skipped(
            E2E_TITLE, "opt-in; run `python benchmarks/run.py --only e2e` (about 10 minutes on 2 CPU cores).")
    results["sections"] = {name: results["sections"][name] for name in SECTIONS if name in results["sections"]}
    return report.write_results(out, results)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        device = resolve_device(args.device)
        chosen = parse_sections(args.only) if args.only else [s for s in SECTIONS if s not in (OPT_IN, RAY)]
        if args.e2e and "e2e" not in chosen:
            chosen.append("e2e")
        if args.threads is not None:
            check_positive("--threads", args.threads)
        if args.keep:
            check_empty_folder("--keep", Path(args.keep))
        out = ensure_writable_dir(Path(args.out))
        keep = ensure_writable_dir(Path(args.keep), "--keep") if args.keep else None
    except UsageError as exc:
        print(f"benchmarks/run.py: error: {exc}", file=sys.stderr)
        return 2
    profile = PROFILES["quick" if args.quick else "gpu" if device.type == "cuda" else "cpu"]
    torch.manual_seed(0)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    machine = report.machine(device)
    if args.threads is not None:
        machine["tag"] += f"-{args.threads}thread"
    if args.label:
        machine["tag"] += "-" + re.sub(r"[^a-z0-9]+", "-", args.label.lower()).strip("-")
    if args.quick:  # never overwrite real figures with the meaningless quick ones
        machine["tag"] += "-quick"
    started = time.perf_counter()
    for name in [s for s in SECTIONS if s in chosen]:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        section_start = time.perf_counter()
        extra = {"keep": keep} if name in KEEPING and keep is not None else {}
        measured = section_function(name)(profile, device, args.data_dir, **extra)
        measured.update(profile=profile.name, wall_seconds=time.perf_counter() - section_start)
        # Written after every section, so an interrupted run keeps what it finished.
        json_path, md_path = write(out, machine, profile, {name: measured})
        print(f"[bench] {name} done in {measured['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    print(f"[bench] {time.perf_counter() - started:.0f} s; wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
