"""Running `mm-robust reproduce` as a fresh CLI process in a fresh folder, for the end-to-end and Ray sections.

The command runs under a small wrapper process whose only child it is, so the peak resident
memory read from the wrapper's RUSAGE_CHILDREN belongs to the reproduction alone (and any
processes it waits for), not to whatever this benchmark process started earlier. The folder is
temporary unless the caller keeps it (`benchmarks/run.py --keep DIR`), to look at what it made.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

WRAPPER = """
import json, resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(json.dumps({"returncode": code, "max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


@contextlib.contextmanager
def run_folder(keep: Path | None, name: str) -> Iterator[Path]:
    """A fresh empty folder: temporary, or `keep/name` (refused if it exists, so nothing is mixed in)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix=f"mm-bench-{name}-") as workdir:
            yield Path(workdir)
        return
    folder = keep / name
    folder.mkdir(parents=True, exist_ok=False)
    yield folder


def timed_cli_run(command: list[str], device: torch.device, keep: Path | None, name: str) -> dict:
    """Wall seconds, peak resident MiB and output names of `mm-robust <command> --device <device>`."""
    cli = [sys.executable, "-m", "robustbench_mm", *command, "--device", device.type]
    with run_folder(keep, name) as workdir:
        start = time.perf_counter()
        finished = subprocess.run([sys.executable, "-c", WRAPPER, *cli], cwd=workdir, capture_output=True, text=True)
        wall = time.perf_counter() - start
        outputs = sorted(str(p.relative_to(workdir)) for p in workdir.iterdir())
    if finished.returncode != 0:
        raise RuntimeError(f"the benchmark wrapper failed: {finished.stderr.strip()[-2000:]}")
    usage = json.loads(finished.stdout.strip().splitlines()[-1])
    if usage["returncode"] != 0:
        raise RuntimeError(f"`mm-robust {' '.join(command)}` exited {usage['returncode']}: "
                           f"{finished.stderr.strip()[-2000:]}")
    return {"wall_s": wall, "peak_rss_mib": usage["max_rss_kib"] / 1024, "outputs": outputs}
