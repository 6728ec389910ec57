"""What one task does, wherever it runs: the same stage functions, settings and seeds as `reproduce`.

Every stage already resumes (training from its last saved epoch, evaluations from their finished
result files and shards), so a task that is run again after its worker died finishes only what is
left. Nothing here imports Ray: the same function runs in a Ray worker and in a test.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from robustbench_mm.common.storage import atomic_write_text
from robustbench_mm.errors import MMRobustError
from robustbench_mm.evaluation.attack import run_attacks
from robustbench_mm.evaluation.calibrate import run_calibration
from robustbench_mm.evaluation.corrupt import run_corrupt
from robustbench_mm.evaluation.deform import run_deform
from robustbench_mm.pipeline import Folders, Plan, finished_training, reproduce_hint
from robustbench_mm.report.build import write_report
from robustbench_mm.scheduling.autoattack_shards import autoattack_merge, autoattack_shard
from robustbench_mm.scheduling.corrupt_shards import corrupt_merge, corrupt_shard
from robustbench_mm.scheduling.graph import (
    ATTACK, AUTOATTACK_MERGE, AUTOATTACK_SHARD, CALIBRATE, CORRUPT, CORRUPT_MERGE, CORRUPT_SHARD, DEFORM, DEFORM_MERGE,
    DEFORM_SHARD, REPORT, TRAIN, Task)
from robustbench_mm.scheduling.shards import deform_merge, deform_shard
from robustbench_mm.train.trainer import train

MARKER_PREFIX = ".mm-robust-shared-storage-"
STORAGE_HELP = ("every task must read and write the same checkpoints/attacks/reports folders: put them on a "
                "filesystem that every node mounts at the same path (see README, 'Many GPUs and clusters: Ray')")


class SharedStorageError(MMRobustError):
    """A worker cannot see the folders the driver works in."""

    exit_code = 2


@dataclass(frozen=True)
class TaskContext:
    """What every task of one run shares, sent from the driver with each task."""

    plan: Plan
    folders: Folders  # as the user gave them: relative paths resolve from `cwd` on every node
    cwd: str  # the driver's working directory
    token: str  # written by the driver into each folder's marker; a worker that reads it back sees the same files
    threads: int  # torch CPU threads per task (CPU results depend on it; the sequential run must use as many)
    deform_ranges: tuple[tuple[int, int], ...] = ()
    autoattack_ranges: tuple[tuple[int, int], ...] = ()
    corrupt_ranges: tuple[tuple[int, int], ...] = ()

    def marker(self, folder: Path) -> Path:
        return Path(folder) / f"{MARKER_PREFIX}{self.token}"


def write_markers(context: TaskContext) -> list[Path]:
    """Driver side: a marker in each folder, holding the run's token."""
    markers = []
    for folder in context.folders.__dict__.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
        marker = context.marker(folder)
        atomic_write_text(marker, context.token)
        markers.append(marker)
    return markers


def enter_shared_folders(context: TaskContext) -> None:
    """Worker side: work from the driver's directory and prove the driver's folders are the ones seen here."""
    node = socket.gethostname()
    try:
        os.chdir(context.cwd)
    except OSError:
        raise SharedStorageError(f"worker on {node} cannot enter the driver's working directory {context.cwd!r}; "
                                 f"{STORAGE_HELP}") from None
    for folder in context.folders.__dict__.values():
        marker = context.marker(folder)
        try:
            seen = marker.read_text()
        except OSError:
            seen = None
        if seen != context.token:
            raise SharedStorageError(f"worker on {node} does not see the driver's folder "
                                     f"{str(Path(context.cwd) / folder)!r} (its marker {marker.name} is missing); "
                                     f"{STORAGE_HELP}")


def execute(task: Task, context: TaskContext) -> None:
    """Run one task of the graph."""
    enter_shared_folders(context)
    torch.set_num_threads(context.threads)
    plan, folders = context.plan, context.folders
    if task.kind == TRAIN:
        config = next(c for c in plan.train if c.run_name == task.run)
        if not finished_training(config):
            train(config, resume=True, progress=False)  # continues from the last saved epoch after a retry
    elif task.kind == ATTACK:
        run_attacks(plan.attack, folders.checkpoints, folders.attacks, runs=[task.run], progress=False,
                    hint=reproduce_hint("attack"))
    elif task.kind == AUTOATTACK_SHARD:
        autoattack_shard(plan.attack, folders.checkpoints, folders.attacks, task.run, task.example_range)
    elif task.kind == AUTOATTACK_MERGE:
        autoattack_merge(plan.attack, folders.checkpoints, folders.attacks, task.run, list(context.autoattack_ranges))
    elif task.kind == DEFORM:
        run_deform(plan.deform, folders.checkpoints, folders.attacks, runs=[task.run], progress=False,
                   hint=reproduce_hint("deform"))
    elif task.kind == DEFORM_SHARD:
        deform_shard(plan.deform, folders.checkpoints, folders.attacks, task.run, task.example_range)
    elif task.kind == DEFORM_MERGE:
        deform_merge(plan.deform, folders.checkpoints, folders.attacks, task.run, list(context.deform_ranges))
    elif task.kind == CORRUPT:
        run_corrupt(plan.corrupt, folders.checkpoints, folders.attacks, runs=[task.run], progress=False,
                    hint=reproduce_hint("corrupt"))
    elif task.kind == CORRUPT_SHARD:
        corrupt_shard(plan.corrupt, folders.checkpoints, folders.attacks, task.run, task.example_range)
    elif task.kind == CORRUPT_MERGE:
        corrupt_merge(plan.corrupt, folders.checkpoints, folders.attacks, task.run, list(context.corrupt_ranges))
    elif task.kind == CALIBRATE:
        run_calibration(plan.calibration, folders.checkpoints, folders.attacks, runs=[task.run], progress=False,
                        hint=reproduce_hint("calibrate"))
    elif task.kind == REPORT:
        write_report(folders.checkpoints, folders.attacks, folders.reports, weights=plan.weights)
    else:
        raise ValueError(f"unknown task kind {task.kind!r}")
