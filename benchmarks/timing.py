"""Timing that survives a noisy, shared machine: interleaved rounds, medians of per-round ratios.

Compared variants run one after another inside each round, in an order that rotates every
round, so a slow spell hits all of them alike; a ratio is taken within each round and the
median over rounds is reported with its spread. The device is synchronised only around a
timed region, never inside the code being timed.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call, with queued device work drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def repeated(fn: Callable[[], object], times: int) -> Callable[[], None]:
    """`fn` called `times` times in a row: one timing of a short call is at the mercy of the scheduler."""
    def run() -> None:
        for _ in range(times):
            fn()
    return run


def rotated(names: list[str], round_index: int) -> list[str]:
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def interleaved(variants: dict[str, Callable[[], object]], device: torch.device, rounds: int,
                warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of every variant in every round, after `warmup` untimed rounds."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in rotated(names, round_index):
            times[name].append(time_call(variants[name], device))
    return times


def ratio(numerator: list[float], denominator: list[float], scale: float = 1.0) -> dict[str, float]:
    """Median and range of the per-round ratios scale * numerator / denominator."""
    per_round = [scale * a / b for a, b in zip(numerator, denominator, strict=True)]
    return {"value": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
            "rounds": len(per_round)}


def median(values: list[float]) -> float:
    return statistics.median(values)
