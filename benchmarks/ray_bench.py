"""Ray fan-out overhead: `reproduce --preset smoke` on a local Ray cluster against the same run in one process.

Both variants run as fresh CLI processes in fresh folders, alternating which goes first each round, so
a slow spell on a shared machine hits both; the ratio is taken within each round. On 2 CPU cores there is
no parallelism to gain (the one-process run already uses both cores for torch's threads; the Ray run
gives each of two side-by-side tasks one core), so the ratio measures what Ray adds: starting the local
cluster and its workers, shipping tasks, and each task loading its data and model again.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from report import figure, section
from smoke_runs import timed_cli_run
from timing import ratio, rotated

TITLE = "Ray fan-out: smoke reproduce on local Ray vs one process"
SEQUENTIAL = ["reproduce", "--preset", "smoke", "--quiet"]
ON_RAY = [*SEQUENTIAL, "--cluster", "ray", "--num-cpus", str(os.cpu_count() or 1)]
ROUNDS = 1


def fanout_overhead(profile, device: torch.device, data_dir: str, keep: Path | None = None) -> dict:
    variants = {"sequential": SEQUENTIAL, "ray": ON_RAY}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    peak_rss: dict[str, list[float]] = {name: [] for name in variants}
    load_before = os.getloadavg()[0]
    for round_index in range(ROUNDS):
        for name in rotated(list(variants), round_index):
            run = timed_cli_run(variants[name], device, keep, f"ray-bench-{name}-{round_index}")
            seconds[name].append(run["wall_s"])
            peak_rss[name].append(run["peak_rss_mib"])
    load_after = os.getloadavg()[0]
    stats = ratio(seconds["ray"], seconds["sequential"])
    figures = [figure("ray.ratio", "Ray run time / one-process run time", stats["value"], "ratio", ("<=", 1.15), stats),
               figure("ray.sequential_s", "one process (what `make demo` runs)", min(seconds["sequential"]), "s"),
               figure("ray.ray_s", "local Ray", min(seconds["ray"]), "s"),
               figure("ray.sequential_peak_rss_mib", "one process, peak resident memory",
                      max(peak_rss["sequential"]), "MiB"),
               figure("ray.load_before", "load average (1 min) before, on this machine's cores", load_before, ""),
               figure("ray.load_after", "load average (1 min) after", load_after, "")]
    settings = {"sequential": "mm-robust " + " ".join(SEQUENTIAL), "ray": "mm-robust " + " ".join(ON_RAY),
                "cpus": os.cpu_count(), "rounds": ROUNDS,
                "order": "alternating which variant goes first each round; fresh folder per run"}
    notes = ["On N GPUs the four trainings (and then their evaluations) run side by side, one per GPU: the "
             "expected speed-up of the training phase is about min(N, number of models), minus this overhead, "
             "since each run is independent and holds its whole dataset on its own GPU; the report stays serial.",
             "The Ray run's peak memory is not comparable: its tasks run in Ray's worker processes, which the "
             "wrapper does not wait for."]
    return section(TITLE, settings, figures, notes, seconds)
