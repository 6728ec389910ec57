"""The reproduction as a graph of tasks: what runs, what it waits for, which examples it covers.

Pure description, no Ray: each model's training is one task; that model's evaluations wait only
for it (not for the other models); the report waits for everything. One model's result files share
one folder, which a writer locks, so its evaluations that write there run one after another; a
sharded evaluation (deformation sets, AutoAttack) becomes one task per test-index range, which
write only their own shard files and so run beside anything, plus a merge that writes the single
result file, in turn with the model's other writers.
"""

from __future__ import annotations

from dataclasses import dataclass

(TRAIN, ATTACK, AUTOATTACK_SHARD, AUTOATTACK_MERGE, DEFORM, DEFORM_SHARD, DEFORM_MERGE, CORRUPT, CORRUPT_SHARD,
 CORRUPT_MERGE, CALIBRATE, REPORT) = (
    "train", "attack", "autoattack-shard", "autoattack-merge", "deform", "deform-shard", "deform-merge", "corrupt",
    "corrupt-shard", "corrupt-merge", "calibrate", "report")
# Kinds that compute on a model and so ask for the per-task accelerator; the others only read and write files.
ACCELERATED = (TRAIN, ATTACK, AUTOATTACK_SHARD, DEFORM, DEFORM_SHARD, CORRUPT, CORRUPT_SHARD, CALIBRATE)


@dataclass(frozen=True)
class Task:
    id: str  # unique, readable: "train:<run>", "deform[0:120]:<run>", "autoattack[0:100]:<run>", "report"
    kind: str
    run: str | None = None
    deps: tuple[str, ...] = ()
    example_range: tuple[int, int] | None = None  # half-open test-index range of one shard


def shard_ranges(n_examples: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """Split examples 0..n-1 into at most `shards` contiguous ranges that start on batch boundaries.

    On batch boundaries so every batch a shard evaluates is exactly a batch of the single-process
    run: the per-example outcomes are then bit-identical, not just equal up to rounding. The batches
    are spread as evenly as possible (sizes differ by at most one batch); never more shards than batches.
    """
    if n_examples < 1 or shards < 1 or batch_size < 1:
        raise ValueError(f"need n_examples, shards and batch_size >= 1, got {n_examples}, {shards}, {batch_size}")
    batches = -(-n_examples // batch_size)
    shards = min(shards, batches)
    bounds = [min(n_examples, (batches * i // shards) * batch_size) for i in range(shards + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def task_graph(runs: list[str], deform_ranges: list[tuple[int, int]] | None = None,
               autoattack_ranges: list[tuple[int, int]] | None = None,
               corrupt_ranges: list[tuple[int, int]] | None = None) -> list[Task]:
    """Tasks for `runs` in an order where every task comes after the tasks it depends on.

    `deform_ranges`, `autoattack_ranges`, `corrupt_ranges`: shard each model's deformation evaluation, its
    AutoAttack, its common-corruption evaluation over these test-index ranges (None or one range: done in
    one task, the attack task for AutoAttack). Per model the folder's writers run attack, deform (merge),
    corrupt (merge), calibrate, one after another.
    The AutoAttack merge comes before the attack task, whose gradient-masking check reads its flags.
    """
    tasks: list[Task] = []
    finals = []
    for run in runs:
        train = Task(f"{TRAIN}:{run}", TRAIN, run)
        tasks.append(train)
        attack_deps: tuple[str, ...] = (train.id,)
        if autoattack_ranges and len(autoattack_ranges) > 1:
            shards = [Task(f"autoattack[{a}:{b}]:{run}", AUTOATTACK_SHARD, run, (train.id,), (a, b))
                      for a, b in autoattack_ranges]
            merge = Task(f"{AUTOATTACK_MERGE}:{run}", AUTOATTACK_MERGE, run, tuple(s.id for s in shards))
            tasks += [*shards, merge]
            attack_deps = (merge.id,)
        attack = Task(f"{ATTACK}:{run}", ATTACK, run, attack_deps)
        tasks.append(attack)
        if deform_ranges and len(deform_ranges) > 1:
            shards = [Task(f"{DEFORM}[{a}:{b}]:{run}", DEFORM_SHARD, run, (train.id,), (a, b)) for a, b in deform_ranges]
            merge = Task(f"{DEFORM_MERGE}:{run}", DEFORM_MERGE, run, (*(s.id for s in shards), attack.id))
            tasks += [*shards, merge]
        else:
            tasks.append(Task(f"{DEFORM}:{run}", DEFORM, run, (attack.id,)))
        deform = tasks[-1]
        if corrupt_ranges and len(corrupt_ranges) > 1:
            shards = [Task(f"{CORRUPT}[{a}:{b}]:{run}", CORRUPT_SHARD, run, (train.id,), (a, b))
                      for a, b in corrupt_ranges]
            merge = Task(f"{CORRUPT_MERGE}:{run}", CORRUPT_MERGE, run, (*(s.id for s in shards), deform.id))
            tasks += [*shards, merge]
        else:
            tasks.append(Task(f"{CORRUPT}:{run}", CORRUPT, run, (deform.id,)))
        tasks.append(Task(f"{CALIBRATE}:{run}", CALIBRATE, run, (tasks[-1].id,)))  # writes into the same folder
        finals.append(tasks[-1].id)
    tasks.append(Task(REPORT, REPORT, None, tuple(finals)))
    return tasks
