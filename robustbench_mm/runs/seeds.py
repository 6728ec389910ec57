"""Several training seeds of one model: run folders ``<base>-s<seed>``, one per seed.

A folder without the suffix is a single-seed run (its seed is in meta.json); the report groups it
with the seeded folders of the same base name.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

from robustbench_mm.config import TrainConfig
from robustbench_mm.errors import UsageError

SEED_SUFFIX = re.compile(r"^(?P<base>.+)-s(?P<seed>\d+)$")


def split_seed_suffix(run: str) -> tuple[str, int | None]:
    """'digits-preactresnet18-baseline-s3' -> ('digits-preactresnet18-baseline', 3); no suffix -> (run, None)."""
    match = SEED_SUFFIX.match(run)
    return (match["base"], int(match["seed"])) if match else (run, None)


def seeded_run_name(base: str, seed: int) -> str:
    return f"{base}-s{seed}"


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    if not seeds:
        raise UsageError("--seeds needs at least one seed, e.g. --seeds 0,1,2")
    duplicates = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if duplicates:
        raise UsageError(f"--seeds lists seed {duplicates[0]} twice")
    negative = [s for s in seeds if s < 0]
    if negative:
        raise UsageError(f"--seeds must be whole numbers >= 0, got {negative[0]}")
    return tuple(seeds)


def for_seeds(configs: Sequence[TrainConfig], seeds: Sequence[int] | None) -> list[TrainConfig]:
    """Each config once per seed, in folder ``<run name>-s<seed>``; `seeds` None keeps the configs as they are."""
    if seeds is None:
        return list(configs)
    return [replace(config, seed=seed, run_name=seeded_run_name(config.run_name, seed))
            for config in configs for seed in check_seeds(seeds)]
