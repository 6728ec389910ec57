"""End to end: wall time and peak memory of `mm-robust reproduce --preset smoke` in a fresh folder.

The command runs under a small wrapper process whose only child it is, so the peak resident
memory read from the wrapper's RUSAGE_CHILDREN belongs to the reproduction alone (and any
processes it waits for), not to whatever this benchmark process started earlier.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from report import figure, section

TITLE = "End to end: smoke reproduce"
COMMAND = ["reproduce", "--preset", "smoke", "--quiet"]

WRAPPER = """
import json, resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(json.dumps({"returncode": code, "max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def smoke_reproduce(profile, device: torch.device, data_dir: str) -> dict:
    command = [sys.executable, "-m", "robustbench_mm", *COMMAND, "--device", device.type]
    with tempfile.TemporaryDirectory(prefix="mm-bench-e2e-") as workdir:
        start = time.perf_counter()
        finished = subprocess.run([sys.executable, "-c", WRAPPER, *command], cwd=workdir, capture_output=True,
                                  text=True)
        wall = time.perf_counter() - start
        outputs = sorted(str(p.relative_to(workdir)) for p in Path(workdir).iterdir())
    if finished.returncode != 0:
        raise RuntimeError(f"the benchmark wrapper failed: {finished.stderr.strip()[-2000:]}")
    usage = json.loads(finished.stdout.strip().splitlines()[-1])
    if usage["returncode"] != 0:
        raise RuntimeError(f"`mm-robust {' '.join(COMMAND)}` exited {usage['returncode']}: "
                           f"{finished.stderr.strip()[-2000:]}")
    figures = [figure("e2e.wall_s", "wall time", wall, "s"),
               figure("e2e.peak_rss_mib", "peak resident memory", usage["max_rss_kib"] / 1024, "MiB")]
    settings = {"command": "mm-robust " + " ".join(COMMAND) + f" --device {device.type}",
                "folder": "fresh temporary folder (trains, attacks, deforms, reports)", "outputs": outputs}
    return section(TITLE, settings, figures)
