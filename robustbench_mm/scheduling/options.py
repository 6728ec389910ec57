"""Settings of a run on Ray, checked before anything starts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from robustbench_mm.errors import UsageError


@dataclass(frozen=True)
class ClusterOptions:
    address: str | None = None  # a running cluster ("auto", "ray://host:10001", "host:6379"); None = start one here
    num_cpus: int | None = None  # CPUs of the local cluster started here (None: all of this machine's)
    cpus_per_task: float = 1.0  # also each task's torch CPU threads (rounded down, at least 1)
    gpus_per_task: float | None = None  # None: 1 when the cluster has GPUs, else 0; 0.5 packs two tasks per GPU
    max_retries: int = 3  # times a task is run again after its worker died
    shards: int = 1  # deformation and corruption evaluations and AutoAttack of each model split over this many ranges

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.address is not None:
            raise UsageError("--num-cpus sizes a local Ray cluster; a running cluster (--address) has its own CPUs")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise UsageError(f"--num-cpus must be >= 1, got {self.num_cpus}")
        if not 0 < self.cpus_per_task < math.inf:
            raise UsageError(f"--cpus-per-task must be a finite number > 0, got {self.cpus_per_task}")
        if self.gpus_per_task is not None and not 0 <= self.gpus_per_task < math.inf:  # NaN fails both
            raise UsageError(f"--gpus-per-task must be a finite number >= 0, got {self.gpus_per_task}")
        if self.max_retries < 0:
            raise UsageError(f"--max-retries must be >= 0, got {self.max_retries}")
        if self.shards < 1:
            raise UsageError(f"--shards must be >= 1, got {self.shards}")
