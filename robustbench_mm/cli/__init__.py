"""`mm-robust`: a thin argparse layer over the Python API.

Each subcommand lives in its own module with `add_parser(subparsers)` and `run(args)`.
User mistakes become one line on stderr and exit code 2; nothing prints a traceback for them.
"""

from __future__ import annotations

import argparse
import sys

from robustbench_mm.cli import attack as attack_cmd
from robustbench_mm.cli import calibrate as calibrate_cmd
from robustbench_mm.cli import corrupt as corrupt_cmd
from robustbench_mm.cli import deform as deform_cmd
from robustbench_mm.cli import import_run as import_cmd
from robustbench_mm.cli import report as report_cmd
from robustbench_mm.cli import reproduce as reproduce_cmd
from robustbench_mm.cli import train as train_cmd
from robustbench_mm.errors import MMRobustError

COMMANDS = [train_cmd, import_cmd, attack_cmd, deform_cmd, corrupt_cmd, calibrate_cmd, report_cmd, reproduce_cmd]


class _Parser(argparse.ArgumentParser):
    """argparse already exits 2 on bad syntax; keep its message to one line."""

    def error(self, message: str):  # noqa: D401 - argparse's API
        self.exit(2, f"mm-robust: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from robustbench_mm import __version__

    parser = _Parser(prog="mm-robust", description="Adversarial and deformation robustness of Manifold Mixup models.")
    parser.add_argument("--version", action="version", version=f"mm-robust {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the top-level parser would point to its own help, which does not list the subcommand's options
        parser.exit(2, f"mm-robust: error: unrecognized arguments: {' '.join(unknown)} "
                       f"(see mm-robust {args.command} --help)\n")
    try:
        return args.run(args) or 0
    except MMRobustError as exc:
        print(f"mm-robust: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mm-robust: interrupted; finished epochs and results are saved: rerun the same command "
              "(train: add --resume) to continue", file=sys.stderr)
        return 130
    except torch_oom_error() as exc:  # type: ignore[misc]
        print(f"mm-robust: error: the GPU ran out of memory ({first_line(exc)}); "
              "try a smaller --batch-size", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "can't allocate memory" not in str(exc):
            raise
        print(f"mm-robust: error: the machine ran out of memory ({first_line(exc) or 'MemoryError'}); "
              "try a smaller --batch-size or --n-examples", file=sys.stderr)
        return 1


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def torch_oom_error() -> type[BaseException]:
    import torch

    return torch.OutOfMemoryError


if __name__ == "__main__":
    sys.exit(main())
