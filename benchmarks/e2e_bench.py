"""End to end: wall time and peak memory of `mm-robust reproduce --preset smoke` in a fresh folder."""

from __future__ import annotations

from pathlib import Path

import torch

from report import figure, section
from smoke_runs import timed_cli_run

TITLE = "End to end: smoke reproduce"
COMMAND = ["reproduce", "--preset", "smoke", "--quiet"]


def smoke_reproduce(profile, device: torch.device, data_dir: str, keep: Path | None = None) -> dict:
    run = timed_cli_run(COMMAND, device, keep, "e2e")
    figures = [figure("e2e.wall_s", "wall time", run["wall_s"], "s"),
               figure("e2e.peak_rss_mib", "peak resident memory", run["peak_rss_mib"], "MiB")]
    settings = {"command": "mm-robust " + " ".join(COMMAND) + f" --device {device.type}",
                "folder": "fresh folder (trains, attacks, deforms, reports)", "outputs": run["outputs"]}
    return section(TITLE, settings, figures)
