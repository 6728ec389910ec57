"""`mm-robust report`."""

from __future__ import annotations

from robustbench_mm.cli.common import add_checkpoints_root, add_quiet
from robustbench_mm.config import CHECKPOINT_KINDS
from robustbench_mm.report.build import write_report


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="Tables 3, 5, 7 and plots from checkpoints/ and attacks/, next to the paper",
                       description="Read trained models (checkpoints/) and evaluation results (attacks/) and write "
                                   "table3/table5/table7 (.md and .csv), summary.json, PNG plots and index.md. "
                                   "Every number is copied from a result file; missing evaluations are marked.")
    add_checkpoints_root(p)
    p.add_argument("--attacks", default="attacks", help="evaluation results (default: attacks)")
    p.add_argument("--reports", default="reports", help="where to write the report (default: reports)")
    p.add_argument("--weights", default="last",
                   help=f"whose results the tables show: {' or '.join(CHECKPOINT_KINDS)} weights of each run "
                        "(best: those in --attacks/<run>/best/, written by the stages' --weights best) "
                        "(default: last)")
    add_quiet(p)  # the report draws no progress bars; accepted so every command takes the same flags
    p.set_defaults(run=run)


def run(args) -> int:
    index = write_report(args.checkpoints, args.attacks, args.reports, weights=args.weights)
    print(f"report: {index}")
    return 0
