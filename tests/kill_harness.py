"""Runs the mm-robust CLI and SIGKILLs itself at a chosen point, like a crash or `kill -9` would.

    python kill_harness.py step N  -- mm-robust args   # die when the N-th training batch is drawn
    python kill_harness.py write NAME:N -- mm-robust args   # die half-way through the N-th write of file NAME
"""

import os
import signal
import sys

from robustbench_mm.cli import main
from robustbench_mm.common import storage
from robustbench_mm.data import images as data
from robustbench_mm.runs import checkpoints


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_step(n):
    original = data.DeviceBatches.__iter__
    seen = {"n": 0}

    def iterate(self):
        for batch in original(self):
            seen["n"] += 1
            if seen["n"] == n:
                die()
            yield batch

    data.DeviceBatches.__iter__ = iterate


def kill_in_write(spec):
    name, n = spec.split(":")
    original = storage.atomic_write
    seen = {"n": 0}

    def write_then_die(path, write):
        def half_write(tmp):
            write(tmp)
            seen["n"] += os.path.basename(path) == name
            if seen["n"] == int(n):
                with open(tmp, "r+b") as handle:
                    handle.truncate(os.path.getsize(tmp) // 2)
                die()

        original(path, half_write)

    storage.atomic_write = write_then_die
    checkpoints.atomic_write = write_then_die


if __name__ == "__main__":
    mode, count, separator, *cli_args = sys.argv[1:]
    assert separator == "--"
    kill_at_step(int(count)) if mode == "step" else kill_in_write(count)
    sys.exit(main(cli_args))
