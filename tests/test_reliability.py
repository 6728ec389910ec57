"""Promises that hold under crashes, concurrent runs, hostile files and numerical faults."""

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from robustbench_mm.cli import main
from robustbench_mm.common.storage import folder_lock
from robustbench_mm.errors import UsageError
from robustbench_mm.runs.checkpoints import load_model, resolve_runs
from robustbench_mm.runs.meta import read_meta
from robustbench_mm.train import trainer as train_module

HERE = Path(__file__).parent
RUN = "digits-preactresnet18-input-a1"
TRAIN_ARGS = ["train", "--preset", "smoke", "--method", "input", "--alpha", "1", "--epochs", "3",
              "--milestones", "2", "--width", "4", "--n-train", "64", "--n-test", "40", "--batch-size", "32",
              "--device", "cpu", "--quiet"]


def run_cli(out, *extra, kill=None):
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    harness = [str(HERE / "kill_harness.py"), *kill, "--"] if kill else ["-m", "robustbench_mm"]
    return subprocess.run([sys.executable, *harness, *TRAIN_ARGS, "--out", str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=300)


def assert_every_file_valid(run_dir):
    for path in run_dir.iterdir():
        if path.name.endswith(".tmp") or path.name == ".lock":
            continue
        if path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            raise AssertionError(f"unexpected file {path}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    result = run_cli(out)
    assert result.returncode == 0, result.stderr
    return load_file(str(out / RUN / "last.safetensors"))


# 2 batches per epoch, 3 epochs; each epoch writes best (when improved), state, last, then meta.
KILL_POINTS = [("step", "2"), ("step", "3"), ("write", "best.safetensors:1"), ("write", "state.safetensors:1"),
               ("write", "last.safetensors:2"), ("write", "meta.json:1"), ("write", "state.safetensors:3"),
               ("write", "last.safetensors:3")]


@pytest.mark.parametrize("mode, count", KILL_POINTS)
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, reference, mode, count):
    killed = run_cli(tmp_path, kill=(mode, count))
    assert killed.returncode == -signal.SIGKILL
    run_dir = tmp_path / RUN
    assert_every_file_valid(run_dir)
    resumed = run_cli(tmp_path, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))
    assert_every_file_valid(run_dir)
    final = load_file(str(run_dir / "last.safetensors"))
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)
    assert read_meta(run_dir)["complete"] is True


def test_second_writer_is_refused_while_a_run_holds_the_folder(tmp_path, capsys):
    with folder_lock(tmp_path / RUN):
        code = main([*TRAIN_ARGS, "--out", str(tmp_path)])
    assert code == 2
    assert "is in use by another mm-robust process" in capsys.readouterr().err
    assert not (tmp_path / RUN / "meta.json").exists()


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def plant_pickle(path, marker):
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": Payload(marker)}, handle)


def test_pickle_checkpoint_is_refused_and_its_payload_never_runs(tmp_path, tiny_runs, capsys):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "model.pt"
    plant_pickle(evil, marker)
    with pytest.raises(UsageError, match="refusing to load .*pickle-based checkpoints can run code"):
        resolve_runs(tiny_runs["baseline"].parent, [str(evil)])
    # The same bytes disguised as safetensors weights inside a real run folder.
    run = tmp_path / "disguised"
    run.mkdir()
    (run / "meta.json").write_text((tiny_runs["baseline"] / "meta.json").read_text())
    plant_pickle(run / "last.safetensors", marker)
    with pytest.raises(UsageError, match="corrupted checkpoint .*truncated or tampered"):
        load_model(run)
    assert not marker.exists()


def test_truncated_or_tampered_weights_are_a_clear_error(tmp_path, tiny_runs):
    run = tmp_path / "run"
    run.mkdir()
    source = tiny_runs["baseline"]
    (run / "meta.json").write_text((source / "meta.json").read_text())
    data = (source / "last.safetensors").read_bytes()
    (run / "last.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="corrupted checkpoint"):
        load_model(run)
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    key = "linear.weight"
    header[key]["shape"] = [header[key]["shape"][1], header[key]["shape"][0] + 1]
    new_header = json.dumps(header).encode().ljust(header_len)
    if len(new_header) == header_len:
        (run / "last.safetensors").write_bytes(data[:8] + new_header + data[8 + header_len:])
        with pytest.raises(UsageError, match="corrupted checkpoint|does not match"):
            load_model(run)
    tensors = load_file(str(source / "last.safetensors"))
    tensors["linear.weight"] = torch.zeros(3, 3)
    from safetensors.torch import save_file

    save_file(tensors, str(run / "last.safetensors"))
    with pytest.raises(UsageError, match="does not match its meta.json architecture: wrong shape"):
        load_model(run)


@pytest.mark.parametrize("mutate, message", [
    (lambda m: m.pop("config"), "missing key 'config'"),
    (lambda m: m.update(epoch="three"), "'epoch' must be int, got str"),
    (lambda m: m["config"].update(width="wide"), "TrainConfig.width must be int, got str"),
    (lambda m: m["config"].update(dataset="imagenet"), "unknown dataset 'imagenet'"),
    (lambda m: m["config"].update(colour="red"), "unknown TrainConfig keys"),
    (lambda m: m.clear(), "missing key 'format'"),
])
def test_bad_meta_json_is_a_clear_error(tmp_path, tiny_runs, mutate, message):
    run = tmp_path / "run"
    run.mkdir()
    meta = json.loads((tiny_runs["baseline"] / "meta.json").read_text())
    mutate(meta)
    (run / "meta.json").write_text(json.dumps(meta))
    (run / "last.safetensors").write_bytes((tiny_runs["baseline"] / "last.safetensors").read_bytes())
    with pytest.raises(UsageError, match=message):
        load_model(run)


def test_meta_json_that_is_not_json(tmp_path):
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(UsageError, match="corrupted JSON"):
        load_model(tmp_path)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real_loss = train_module.LOSSES["bce"]

    def poisoned(logits, targets):
        calls["n"] += 1
        loss = real_loss(logits, targets)
        return loss * float("nan") if calls["n"] == 4 else loss  # epoch 2, step 2

    monkeypatch.setitem(train_module.LOSSES, "bce", poisoned)
    code = main([*TRAIN_ARGS, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "loss became non-finite at epoch 2, step 2" in err and "epoch 1" in err
    assert err.count("\n") == 1
    meta = read_meta(tmp_path / RUN)
    assert meta["epoch"] == 1
    weights = load_file(str(tmp_path / RUN / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_out_of_memory_suggests_a_smaller_batch(tmp_path, monkeypatch, capsys):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module.Trainer, "run", oom)
    code = main([*TRAIN_ARGS, "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "try a smaller --batch-size" in err and "Traceback" not in err


def run_harness(kill, *cli_args):
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    harness = [str(HERE / "kill_harness.py"), *kill, "--"] if kill else ["-m", "robustbench_mm"]
    return subprocess.run([sys.executable, *harness, *cli_args], env=env, capture_output=True, text=True,
                          timeout=300)


def json_files(root):
    return {p.relative_to(root): json.loads(p.read_text()) for p in root.rglob("*.json")}


@pytest.mark.parametrize("command, args, kill_in, expected", [
    ("attack", ["--n-examples", "16", "--pgd-steps", "5", "--bounded-pgd-steps", "3", "--sweep", "0,0.03",
                "--save-examples", "0"], "pgd-unbounded-standard.json:1", {"fgsm-standard.json", "fgsm-paper.json"}),
    ("deform", ["--n-examples", "16", "--sets", "table3"], "deform.json:2", {"deform.json"}),
])
def test_killed_evaluation_keeps_finished_results_and_completes_on_rerun(tmp_path, tiny_runs, command, args,
                                                                         kill_in, expected):
    checkpoints = tiny_runs["baseline"].parent
    cli = [command, "--checkpoints", str(checkpoints), "--out", str(tmp_path), "--device", "cpu", "--quiet", *args]
    killed = run_harness(("write", kill_in), *cli)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    survived = json_files(tmp_path)
    assert {p.name for p in survived} >= expected  # finished before the kill, and valid JSON
    finished = run_harness(None, *cli)
    assert finished.returncode == 0, finished.stderr
    assert not list(tmp_path.rglob("*.tmp"))
    after = json_files(tmp_path)
    for path, content in survived.items():  # kept, not recomputed
        assert after[path]["finished"] == content["finished"]
    runs = {p.parts[0] for p in after if len(p.parts) == 2}
    assert runs == {tiny_runs["baseline"].name, tiny_runs["manifold"].name}
