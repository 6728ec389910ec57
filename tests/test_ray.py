"""`reproduce --cluster ray` on a local Ray cluster of 2 CPUs with tiny models: the same files as one
process, a worker killed mid-task, sharded evaluation, locks, shared-storage checks, no Ray installed."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import TINY
from robustbench_mm.cli import main
from robustbench_mm.common.storage import folder_lock
from robustbench_mm.errors import UsageError
from robustbench_mm.pipeline import Folders, plan_for_preset
from robustbench_mm.report.publish import REPORT_MANIFEST
from robustbench_mm.scheduling.graph import shard_ranges, task_graph
from robustbench_mm.scheduling.options import ClusterOptions
from robustbench_mm.scheduling.tasks import SharedStorageError, TaskContext, enter_shared_folders, write_markers

ray = pytest.importorskip("ray", reason="the Ray path needs pip install 'mm-robust[ray]' (make test installs it)")
from robustbench_mm.scheduling.ray_runner import run_on_ray  # noqa: E402

# Fields that legitimately differ between two runs of the same work: when a file was written and how long
# things took. Everything else in every file must be identical.
TIMING_FIELDS = {"finished", "updated", "generated", "seconds", "generate_seconds", "images_per_second",
                 "median_share_of_epoch"}
# index.md's date line, and its FGSM-during-training note that prints what measuring cost in time.
TIMING_LINES = ("Built by `mm-robust report` on", "measuring it cost")
# The report's manifest of file hashes: the hashes of the files that carry the timings above differ too.
REPORT_MANIFEST, FILES_WITH_TIMINGS = ".mm-robust-report-files.json", ("index.md", "summary.json", "table5-epochs.csv")
TIMING_COLUMNS = {"fgsm_seconds", "epoch_seconds", "fgsm_share_of_epoch"}  # table5-epochs.csv
THREADS = 1  # torch CPU threads of each task (cpus_per_task) and of the sequential run: CPU results depend on it


def tiny_plan(methods=("manifold",)):
    """Folders relative to the working directory, as `reproduce` uses by default: files record them.

    One model by default: every kind of task, shards side by side and two workers killed need no second
    (a second model's tasks run the same code; the graph test shows they wait only for their own model).
    """
    folders = Folders()
    plan = plan_for_preset("smoke", device="cpu", checkpoints=folders.checkpoints)
    train = tuple(replace(c, **{**TINY, "epochs": 2, "milestones": (1,), "n_train": 160, "n_test": 40})
                  for c in plan.train if c.method in methods)
    # AutoAttack (the smoke budget) in chunks of 10: two shards [0, 20) and [20, 40) of two chunks each.
    attack = replace(plan.attack, n_examples=40, batch_size=10, pgd_steps=3, pgd_step_size=0.1, bounded_pgd_steps=2,
                     sweep=(0.0, 0.03), save_examples=4, device="cpu")
    # 40 images in batches of 15: two shards [0, 15) and [15, 40), the second ending in a partial batch.
    deform = replace(plan.deform, n_examples=40, batch_size=15, sets=("rotate-20", "zoom-out-140"), device="cpu")
    corrupt = replace(plan.corrupt, n_examples=40, batch_size=15, corruptions=("fog",), severities=(1, 5), device="cpu")
    return replace(plan, train=train, attack=attack, deform=deform, corrupt=corrupt), folders


def normalised(value):
    """JSON with the timing fields removed, at any depth."""
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def metadata_values(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    parsed = {}
    for key, text in metadata.items():
        try:
            parsed[key] = normalised(json.loads(text))
        except json.JSONDecodeError:
            parsed[key] = text
    return parsed


def assert_same_files(ours: Path, reference: Path, only: tuple[str, ...] = ()) -> int:
    """Every file under `reference` (or under its `only` subfolders) exists under `ours` with the same content."""
    def files(root):
        return {p.relative_to(root).as_posix() for p in root.rglob("*")
                if p.is_file() and p.name not in (".lock", REPORT_MANIFEST)  # digests of files with timestamps
                and (not only or p.relative_to(root).parts[0] in only)}

    names = files(reference)
    assert files(ours) == names
    for name in sorted(names):
        a, b = ours / name, reference / name
        if name.endswith(REPORT_MANIFEST):
            def hashes(path):
                return {k: v for k, v in json.loads(path.read_text())["files"].items() if k not in FILES_WITH_TIMINGS}
            assert hashes(a) == hashes(b), name
        elif name.endswith(".json"):
            assert normalised(json.loads(a.read_text())) == normalised(json.loads(b.read_text())), name
        elif name.endswith(".safetensors"):
            tensors_a, tensors_b = load_file(str(a)), load_file(str(b))
            assert tensors_a.keys() == tensors_b.keys(), name
            assert all(torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a), name
            assert metadata_values(a) == metadata_values(b), name
        elif name.endswith(".csv"):
            def rows(path):
                return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS}
                        for row in csv.DictReader(io.StringIO(path.read_text()))]
            assert rows(a) == rows(b), name
        elif name.endswith(".md"):
            def lines(path):
                return [line for line in path.read_text().splitlines() if not any(t in line for t in TIMING_LINES)]
            assert lines(a) == lines(b), name
        else:
            assert a.read_bytes() == b.read_bytes(), name
    return len(names)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


# The reference: the plan in one process, as `reproduce` without --cluster runs it.
SEQUENTIAL = """
import sys
import torch
sys.path[:0] = sys.argv[1:3]
from test_ray import THREADS, tiny_plan
from robustbench_mm.pipeline import reproduce
torch.set_num_threads(THREADS)
reproduce(*tiny_plan(), progress=False)
"""


@pytest.fixture(scope="module")
def sequential_started(tmp_path_factory):
    """The reference run, started in a subprocess so it computes while the Ray run does (which leaves a core
    idle much of the time on 2 CPUs): (its folder, the process)."""
    root = tmp_path_factory.mktemp("sequential")
    tests = Path(__file__).resolve().parent
    process = subprocess.Popen([sys.executable, "-c", SEQUENTIAL, str(tests), str(tests.parent)], cwd=root,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield root, process
    if process.poll() is None:
        process.kill()
    process.communicate()


@pytest.fixture(scope="module")
def sequential(sequential_started):
    """The reference run's folder, once it has finished."""
    root, process = sequential_started
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    return root


def kill_twice(root: Path, training: str, shard: str):
    """A `task_setup` that SIGKILLs the worker of two tasks on their first attempt, mid-task, and on the retry
    records where each resumed (in files under `root`: the workers run elsewhere and chdir).

    `training`: killed at step 8 of 10, in its second epoch (the first is saved by then).
    `shard`: an AutoAttack shard task, killed right after it saved its first chunk's flags.
    """
    def setup(task):
        from robustbench_mm.evaluation import attack as attack_eval
        from robustbench_mm.data import images as data
        from robustbench_mm.train import trainer as train
        from robustbench_mm.scheduling import autoattack_shards

        killed, resumed = root / f"killed-{task.kind}", root / f"resumed-{task.kind}"

        def record_once(value):  # the retry runs first; the worker may run other tasks through this code later
            if not resumed.exists():
                resumed.write_text(str(value()))

        if task.id not in (training, shard):
            return
        if killed.exists():  # the retry, in a fresh worker: record where it resumed
            if task.id == training:
                restore = train.Trainer._restore_state

                def recording(self):
                    restore(self)
                    record_once(lambda: self.state.epoch)

                train.Trainer._restore_state = recording
            else:
                attack = autoattack_shards.run_autoattack

                def recording(*args):
                    record_once(lambda: int(args[10].done.sum()))  # `flags`: the examples done before the kill
                    return attack(*args)

                autoattack_shards.run_autoattack = recording
            return
        killed.write_text("")
        if task.id == training:
            iterate, seen = data.DeviceBatches.__iter__, [0]

            def dying(self):
                for batch in iterate(self):
                    seen[0] += 1
                    if seen[0] == 8:
                        os.kill(os.getpid(), signal.SIGKILL)
                    yield batch

            data.DeviceBatches.__iter__ = dying
        else:
            save = attack_eval.ModelAttacks.save_flags

            def save_then_die(self, *args):
                save(self, *args)
                os.kill(os.getpid(), signal.SIGKILL)

            attack_eval.ModelAttacks.save_flags = save_then_die

    return setup


@pytest.fixture(scope="module")
def ray_run(sequential_started, cluster, tmp_path_factory):  # the reference first: it runs meanwhile
    """The plan on the local Ray cluster, deformation sets, corruption sets and AutoAttack in two shards each, with the workers
    of two tasks SIGKILLed mid-task (the training, an AutoAttack shard): (folder, driver's stderr).

    One run for every Ray test below: starting the plan on Ray is what costs time here.
    """
    root = tmp_path_factory.mktemp("ray")
    plan, folders = tiny_plan()
    run = plan.train[0].run_name
    setup = kill_twice(root / "faults", f"train:{run}", f"autoattack[20:40]:{run}")
    (root / "faults").mkdir()
    err, cwd = io.StringIO(), os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stderr(err):
            run_on_ray(plan, folders, ClusterOptions(cpus_per_task=THREADS, shards=2, max_retries=1),
                       task_setup=setup)
    finally:
        os.chdir(cwd)
    return root, err.getvalue()


def test_ray_run_writes_the_same_files_as_one_process(ray_run, sequential):
    """Even with two workers killed mid-task: the retries resume and the final files are the uninterrupted ones."""
    root, _ = ray_run
    assert assert_same_files(root, sequential, only=("checkpoints", "attacks", "reports")) > 30
    assert not list(root.rglob(".shards")), "shard files are removed once merged"
    assert not list(root.rglob(".mm-robust-shared-storage-*")), "the driver's markers are removed at the end"


def test_the_driver_prints_each_state_change_and_a_summary(ray_run):
    _, err = ray_run
    run = tiny_plan()[0].train[0].run_name
    for line in (f"train:{run}: queued (1 CPU, 0 GPU)", f"train:{run}: running (on ", f"deform[15:40]:{run}: done",
                 f"autoattack[0:20]:{run}: done", f"autoattack-merge:{run}: done", f"corrupt[15:40]:{run}: done",
                 f"corrupt-merge:{run}: done", "report: done", "13/13 tasks done", "13 tasks in", "2 retried"):
        assert line in err


def test_killed_workers_are_retried_and_resume_from_what_they_saved(ray_run):
    root, err = ray_run
    run = tiny_plan()[0].train[0].run_name
    assert (root / "faults" / "resumed-train").read_text() == "1", "training continues from its saved epoch"
    assert (root / "faults" / "resumed-autoattack-shard").read_text() == "10", \
        "the AutoAttack shard continues after its finished chunk (examples 20..29)"
    assert f"train:{run}: retried (attempt 2 after its worker died" in err
    assert f"autoattack[20:40]:{run}: retried (attempt 2 after its worker died" in err


def test_shard_ranges_start_on_batch_boundaries_and_cover_every_example():
    assert shard_ranges(40, 2, 15) == [(0, 15), (15, 40)]  # 3 batches: 1 + 2
    assert shard_ranges(357, 3, 100) == [(0, 100), (100, 200), (200, 357)]
    assert shard_ranges(1000, 3, 100) == [(0, 300), (300, 600), (600, 1000)]  # 10 batches: 3 + 3 + 4
    assert shard_ranges(40, 8, 15) == [(0, 15), (15, 30), (30, 40)]  # never more shards than batches
    assert shard_ranges(10, 1, 3) == [(0, 10)]


def test_evaluations_wait_only_for_their_own_model_and_the_report_for_all():
    tasks = {t.id: t for t in task_graph(["a", "b"], [(0, 15), (15, 40)])}
    assert tasks["train:a"].deps == () and tasks["attack:a"].deps == ("train:a",)
    assert tasks["deform[15:40]:a"].deps == ("train:a",) and tasks["deform[15:40]:a"].example_range == (15, 40)
    # the merge writes into the folder the attack task locks, so it comes after it
    assert tasks["deform-merge:a"].deps == ("deform[0:15]:a", "deform[15:40]:a", "attack:a")
    assert tasks["corrupt:a"].deps == ("deform-merge:a",) and tasks["calibrate:a"].deps == ("corrupt:a",)
    assert tasks["report"].deps == ("calibrate:a", "calibrate:b")
    aa = {t.id: t for t in task_graph(["a"], [(0, 15), (15, 40)], [(0, 20), (20, 40)])}
    assert aa["autoattack[20:40]:a"].deps == ("train:a",) and aa["autoattack[20:40]:a"].example_range == (20, 40)
    assert aa["autoattack-merge:a"].deps == ("autoattack[0:20]:a", "autoattack[20:40]:a")
    # the gradient-masking check reads the merged AutoAttack flags, and the merge writes into the attack's folder
    assert aa["attack:a"].deps == ("autoattack-merge:a",)
    assert aa["deform[0:15]:a"].deps == ("train:a",) and aa["calibrate:a"].deps == ("corrupt:a",)
    unsharded = {t.id: t for t in task_graph(["a"])}
    assert unsharded["deform:a"].deps == ("attack:a",) and unsharded["corrupt:a"].deps == ("deform:a",)
    assert unsharded["calibrate:a"].deps == ("corrupt:a",)
    # corruption shards run beside anything; their merge writes into the folder after the deformation merge
    sharded = {t.id: t for t in task_graph(["a"], [(0, 15), (15, 40)], None, [(0, 15), (15, 40)])}
    assert sharded["corrupt[15:40]:a"].deps == ("train:a",) and sharded["corrupt[15:40]:a"].kind == "corrupt-shard"
    assert sharded["corrupt-merge:a"].deps == ("corrupt[0:15]:a", "corrupt[15:40]:a", "deform-merge:a")
    assert sharded["calibrate:a"].deps == ("corrupt-merge:a",)
    assert unsharded["report"].deps == ("calibrate:a",)


def test_locks_still_refuse_a_second_writer(cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan, folders = tiny_plan()
    with folder_lock(folders.checkpoints / plan.train[0].run_name):
        with pytest.raises(UsageError, match="is in use by another mm-robust process"):
            run_on_ray(plan, folders, ClusterOptions(cpus_per_task=THREADS), progress=False)


def test_a_worker_that_does_not_see_the_folders_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan, folders = tiny_plan()
    context = TaskContext(plan, folders, str(tmp_path), "token123", 1)
    with pytest.raises(SharedStorageError, match="does not see the driver's folder .*checkpoints.* filesystem that "
                                                 "every node mounts"):
        enter_shared_folders(context)  # as on a node without the shared filesystem: no marker there
    write_markers(context)
    enter_shared_folders(context)
    with pytest.raises(SharedStorageError, match="cannot enter the driver's working directory"):
        enter_shared_folders(replace(context, cwd=str(tmp_path / "not-on-this-node")))


def test_cluster_ray_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    code = main(["reproduce", "--cluster", "ray", "--checkpoints", str(tmp_path / "c"), "--attacks",
                 str(tmp_path / "a"), "--reports", str(tmp_path / "r")])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mm-robust: error: --cluster ray needs Ray, which is not installed: pip install 'mm-robust[ray]'"]
    assert not list(tmp_path.iterdir())


def test_cluster_options_without_cluster_are_refused(tmp_path, capsys):
    assert main(["reproduce", "--shards", "4", "--checkpoints", str(tmp_path / "c")]) == 2
    assert "--shards only apply with --cluster ray" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
