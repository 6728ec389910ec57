"""`mm-robust reproduce --cluster ray`: the task graph on Ray, one machine or a cluster.

The driver submits each task as soon as the tasks it depends on are done, asking Ray for
`gpus_per_task` GPUs and `cpus_per_task` CPUs, so on N GPUs N trainings (then their evaluations)
run side by side. Ray retries a task whose worker died (`max_retries`); the task resumes from what
is saved. Workers report when they start (node, GPUs) to a small actor the driver polls, so the
driver prints one line per state change: queued, running, retried, done, failed.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from robustbench_mm.data.images import load_dataset
from robustbench_mm.errors import MMRobustError, UsageError
from robustbench_mm.pipeline import Folders, Plan, check_evaluation_targets, finished_training
from robustbench_mm.scheduling.graph import ACCELERATED, Task, shard_ranges, task_graph
from robustbench_mm.scheduling.options import ClusterOptions, check_reachable
from robustbench_mm.scheduling.progress import TaskRecord, state_line, summary, where
from robustbench_mm.scheduling.tasks import TaskContext, execute, write_markers

INSTALL_HINT = "--cluster ray needs Ray, which is not installed: pip install 'mm-robust[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return ray


def _ranges(plan: Plan, n_examples: int | None, data_dir: str | None, shards: int,
            batch_size: int) -> tuple[tuple[int, int], ...]:
    """Shards of the first `n_examples` test images (all when None) on batch boundaries (empty: not sharded)."""
    if shards == 1:
        return ()
    first = plan.train[0]
    n = len(load_dataset(first.dataset, False, data_dir or first.data_dir, first.download).subset(n_examples))
    ranges = shard_ranges(n, shards, batch_size)
    return tuple(ranges) if len(ranges) > 1 else ()


def deform_ranges(plan: Plan, shards: int) -> tuple[tuple[int, int], ...]:
    """The test-index ranges of each model's deformation shards (empty: not sharded)."""
    return _ranges(plan, plan.deform.n_examples, plan.deform.data_dir, shards, plan.deform.batch_size)


def corrupt_ranges(plan: Plan, shards: int) -> tuple[tuple[int, int], ...]:
    """The test-index ranges of each model's common-corruption shards (empty: not sharded)."""
    return _ranges(plan, plan.corrupt.n_examples, plan.corrupt.data_dir, shards, plan.corrupt.batch_size)


def autoattack_ranges(plan: Plan, shards: int) -> tuple[tuple[int, int], ...]:
    """The test-index ranges of each model's AutoAttack shards (empty: not sharded, or no AutoAttack).

    On multiples of the attack batch size, AutoAttack's chunk size, so each shard attacks exactly
    the chunks a single run attacks: the merged flags are bit-identical.
    """
    if not plan.attack.autoattack:
        return ()
    return _ranges(plan, plan.attack.n_examples, plan.attack.data_dir, shards, plan.attack.batch_size)


def _in_worker(task: Task, context: TaskContext, board, task_setup: Callable[[Task], None] | None) -> float:
    """The body of every Ray task: report where it runs, run it, return its wall time."""
    import ray

    ray.get(board.started.remote(task.id, socket.gethostname(), [str(g) for g in ray.get_gpu_ids()]))
    if task_setup is not None:
        task_setup(task)
    start = time.perf_counter()
    execute(task, context)
    return time.perf_counter() - start


class _Board:
    """Start events from the workers, collected until the driver drains them."""

    def __init__(self):
        self.events = []

    def started(self, task_id: str, node: str, gpus: list[str]) -> None:
        self.events.append((task_id, node, gpus))

    def drain(self) -> list:
        events, self.events = self.events, []
        return events


def init_options(options: ClusterOptions, progress: bool) -> dict[str, Any]:
    """`ray.init`'s arguments. Quiet (no progress) means no line of Ray's own either: workers' output is not
    forwarded, and Ray's driver-side logger (the token-authentication notice, the local-instance banner) shows
    errors only."""
    return dict(address=options.address, num_cpus=options.num_cpus, include_dashboard=False,
                log_to_driver=progress, logging_level="WARNING" if progress else "ERROR", configure_logging=True)


def run_on_ray(plan: Plan, folders: Folders = Folders(), options: ClusterOptions = ClusterOptions(),
               progress: bool = True, task_setup: Callable[[Task], None] | None = None) -> Path:
    """Run every stage of `plan` as Ray tasks; return the report's index.md.

    Joins `options.address` or, with none, the cluster this process already started, or starts a
    local one (shut down again at the end). `task_setup` runs in the worker before each task (tests use
    it to kill a worker mid-task).
    """
    ray = import_ray()
    if options.address is not None and not ray.is_initialized():
        check_reachable(options.address)
    # As in one process: a finished result the plan would replace is refused before a cluster starts.
    check_evaluation_targets(plan, folders, [config for config in plan.train if finished_training(config)])
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(**init_options(options, progress))
    try:
        return _drive(ray, plan, folders, options, progress, task_setup)
    finally:
        if started_here:
            ray.shutdown()


def _drive(ray, plan: Plan, folders: Folders, options: ClusterOptions, progress: bool,
           task_setup: Callable[[Task], None] | None) -> Path:
    resources = ray.cluster_resources()
    if options.cpus_per_task > resources.get("CPU", 0):
        raise UsageError(f"--cpus-per-task {options.cpus_per_task:g} is more than the cluster's "
                         f"{resources.get('CPU', 0):g} CPUs; no task could ever start")
    gpus = options.gpus_per_task if options.gpus_per_task is not None else (1 if resources.get("GPU", 0) else 0)
    if gpus > resources.get("GPU", 0):
        raise UsageError(f"--gpus-per-task {gpus:g} but the cluster has {resources.get('GPU', 0):g} GPUs")
    ranges, aa_ranges = deform_ranges(plan, options.shards), autoattack_ranges(plan, options.shards)
    c_ranges = corrupt_ranges(plan, options.shards)
    context = TaskContext(plan, folders, os.getcwd(), uuid.uuid4().hex, max(1, int(options.cpus_per_task)), ranges,
                          aa_ranges, c_ranges)
    tasks = task_graph([c.run_name for c in plan.train], list(ranges) or None, list(aa_ranges) or None,
                       list(c_ranges) or None)
    markers = write_markers(context)
    remote = ray.remote(_in_worker)
    board = ray.remote(num_cpus=0)(_Board).remote()
    context_ref = ray.put(context)
    records = {t.id: TaskRecord(t.id) for t in tasks}
    pending: dict = {}
    start = time.perf_counter()
    # The bar only on a terminal: in a log file the state lines, which count the finished tasks, say it all.
    bar = tqdm(total=len(tasks), desc="tasks", unit="task", file=sys.stderr, disable=not (progress and sys.stderr.isatty()))

    def log(task_id: str, state: str, detail: str = "") -> None:
        records[task_id].state = state
        if progress:
            tqdm.write(state_line(time.perf_counter() - start, task_id, state, detail), file=sys.stderr)

    try:
        while any(r.state != "done" for r in records.values()):
            for task in tasks:
                if records[task.id].state == "waiting" and all(records[d].state == "done" for d in task.deps):
                    task_gpus = gpus if task.kind in ACCELERATED else 0
                    ref = remote.options(num_cpus=options.cpus_per_task, num_gpus=task_gpus,
                                         max_retries=options.max_retries, retry_exceptions=False,
                                         name=task.id).remote(task, context_ref, board, task_setup)
                    pending[ref] = task
                    log(task.id, "queued", f"{options.cpus_per_task:g} CPU, {task_gpus:g} GPU")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for task_id, node, task_gpu_ids in ray.get(board.drain.remote()):
                record = records[task_id]
                record.attempts += 1
                record.where = where(node, task_gpu_ids)
                if record.attempts == 1:
                    log(task_id, "running", f"on {record.where}")
                else:
                    log(task_id, "retried", f"attempt {record.attempts} after its worker died, on {record.where}")
            for ref in ready:
                task = pending.pop(ref)
                records[task.id].seconds = _result(ray, ref, task, records[task.id], options)
                finished = sum(r.state == "done" for r in records.values()) + 1
                log(task.id, "done", f"{records[task.id].seconds:.1f} s; {finished}/{len(tasks)} tasks done")
                bar.update()
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        for marker in markers:
            marker.unlink(missing_ok=True)
    if progress:
        print(summary(list(records.values()), time.perf_counter() - start), file=sys.stderr, flush=True)
    return Path(folders.reports) / "index.md"


def _result(ray, ref, task: Task, record: TaskRecord, options: ClusterOptions) -> float:
    """The task's wall time, or its failure as an mm-robust error (a user error keeps its exit code)."""
    from ray.exceptions import RayTaskError, WorkerCrashedError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, MMRobustError):
            raise cause from None
        raise MMRobustError(f"task {task.id} failed: {type(cause).__name__}: {cause}") from None
    except WorkerCrashedError:
        raise MMRobustError(f"task {task.id}: its worker died {record.attempts} time(s), more than --max-retries "
                            f"{options.max_retries}; rerun to resume from what was saved") from None

