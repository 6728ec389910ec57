"""Never lose a result, never label one wrongly (issue 11): results tied to the exact weights they
measured, --force that cannot lose a run, divergence caught with either loss, and faults (full
disk, out of memory, broken files) that end in one line without losing earlier work."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file, save_file

from robustbench_mm.cli import build_parser, main
from robustbench_mm.common.storage import TEMP_PREFIX, folder_lock
from robustbench_mm.models import preact as models_module
from robustbench_mm.pipeline import finished_training, plan_for_preset
from robustbench_mm.report.publish import REPORT_MANIFEST
from robustbench_mm.report.records import load_records
from robustbench_mm.runs.checkpoints import stored_metadata
from robustbench_mm.runs.files import EXAMPLES_FILE
from robustbench_mm.runs.meta import read_meta

HERE = Path(__file__).parent
RUN = "digits-preactresnet18-baseline"
TRAIN = ["train", "--preset", "smoke", "--method", "baseline", "--epochs", "2", "--milestones", "1", "--width", "4",
         "--n-train", "64", "--n-test", "40", "--batch-size", "32", "--device", "cpu", "--quiet"]
ATTACK = ["attack", "--checkpoint", RUN, "--quiet", "--eps", "0.03", "--sweep", "0", "--pgd-steps", "2",
          "--bounded-pgd-steps", "2", "--n-examples", "8", "--batch-size", "8", "--save-examples", "0",
          "--device", "cpu"]


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def call(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def project(tmp_path, tiny_runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_runs["baseline"], tmp_path / "checkpoints" / RUN)
    return tmp_path


def perturb_weights(run_dir: Path, which: str = "last") -> None:
    """Other weights under the same run name, as a retrained or copied-over model would be."""
    path = run_dir / f"{which}.safetensors"
    tensors = load_file(str(path))
    tensors = {k: v + 0.01 if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(path))


# ---- 11.3 results tied to the exact weights ---------------------------------------------------


def test_results_record_the_weights_they_measured_and_other_weights_make_them_stale(project, capsys):
    weights = project / "checkpoints" / RUN / "last.safetensors"
    assert main(ATTACK) == 0
    results = sorted((project / "attacks" / RUN).glob("*.json"))
    assert results and all(json.loads(p.read_text())["model"]["weights_sha256"] == sha256(weights) for p in results)

    perturb_weights(project / "checkpoints" / RUN)
    records, problems = load_records(project / "checkpoints", project / "attacks")
    record = next(r for r in records if r.name == RUN)
    assert record.results == {}  # never shown as this model's numbers
    assert record.missing["fgsm-standard"] == "results are for other weights, rerun attack"
    assert any("results are for other weights" in p for p in problems)
    assert main(["report", "--quiet"]) == 0
    table5 = (project / "reports" / "table5.md").read_text()
    assert "missing (results are for other weights, rerun attack)" in table5

    assert main(ATTACK) == 0  # stale results are redone, not refused and not skipped
    assert all(json.loads(p.read_text())["model"]["weights_sha256"] == sha256(weights) for p in results)


def test_results_without_a_digest_are_stale_with_a_reason(project):
    assert main(ATTACK) == 0
    path = project / "attacks" / RUN / "fgsm-standard.json"
    result = json.loads(path.read_text())
    del result["model"]["weights_sha256"]
    path.write_text(json.dumps(result))
    record = next(r for r in load_records(project / "checkpoints", project / "attacks")[0] if r.name == RUN)
    assert "fgsm-standard" not in record.results and "fgsm-paper" in record.results
    assert "predate weight digests" in record.missing["fgsm-standard"]


def test_report_draws_no_figure_of_other_weights(project, capsys):
    """The masking figure and the adversarial examples were drawn from the old weights: with the tables'
    numbers, they leave the report once the weights change (retrained, copied over)."""
    assert main(with_option(ATTACK, "--save-examples", "2")) == 0
    assert main(["report", "--quiet"]) == 0
    reports = project / "reports"
    assert (reports / f"gradient-masking-{RUN}.png").is_file() and (reports / "adversarial-examples-digits.png").is_file()
    perturb_weights(project / "checkpoints" / RUN)
    assert main(["report", "--quiet"]) == 0
    assert not (reports / f"gradient-masking-{RUN}.png").exists()
    assert not (reports / "adversarial-examples-digits.png").exists()
    index = (reports / "index.md").read_text()
    assert "adversarial-examples.safetensors not used: results are for other weights" in index
    assert f"gradient-masking-{RUN}.png" not in index


def test_results_are_checked_against_the_weights_even_when_meta_json_is_broken(project):
    assert main(ATTACK) == 0
    run_dir = project / "checkpoints" / RUN
    meta = json.loads((run_dir / "meta.json").read_text())
    del meta["checkpoints"]
    (run_dir / "meta.json").write_text(json.dumps(meta))
    records, problems = load_records(project / "checkpoints", project / "attacks")
    assert next(r for r in records if r.name == RUN).results  # same weights: still shown
    perturb_weights(run_dir)
    records, problems = load_records(project / "checkpoints", project / "attacks")
    assert all(r.name != RUN or not r.results for r in records)
    assert any("missing key 'checkpoints'" in p for p in problems)
    assert any("results are for other weights" in p for p in problems)


@pytest.mark.parametrize("field, value", [("checkpoint", ["last"]), ("epochs_trained", {"a": 1}), ("alpha", "x"),
                                          ("weights_sha256", 7)])
def test_a_result_with_a_malformed_model_summary_is_a_problem_not_a_traceback(project, capsys, field, value):
    assert main(ATTACK) == 0
    path = project / "attacks" / RUN / "fgsm-standard.json"
    result = json.loads(path.read_text())
    result["model"][field] = value
    path.write_text(json.dumps(result))
    code, err = call(["report"], capsys)
    assert code == 0, err
    index = (project / "reports" / "index.md").read_text()
    assert "unreadable result" in index and "fgsm-standard.json has malformed model" in index


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["checkpoints"].update(last=None), "checkpoints.last must be an object with an integer 'epoch'"),
    (lambda m: m["checkpoints"]["last"].update(test_accuracy="high"), "checkpoints.last.test_accuracy must be a number"),
    (lambda m: m.update(history=[1, "x", None]), "history[0] must be an object with an integer 'epoch'"),
    (lambda m: m["history"][0].update(test_nll=[1]), "history[0].test_nll must be a number"),
])
def test_meta_json_with_malformed_entries_is_one_line_everywhere(project, capsys, edit, message):
    assert main(ATTACK) == 0
    run_dir = project / "checkpoints" / RUN
    meta = json.loads((run_dir / "meta.json").read_text())
    edit(meta)
    (run_dir / "meta.json").write_text(json.dumps(meta))
    before = tree(run_dir)
    code, err = call(ATTACK, capsys)
    assert code == 2 and one_line(err) and message in err, err
    code, err = call(["report"], capsys)
    assert code == 0, err
    assert message in (project / "reports" / "index.md").read_text()
    assert tree(run_dir) == before


# ---- 11.2 results never silently replaced, and refusals name options the command has -----------

CALIBRATE = ["calibrate", "--checkpoint", RUN, "--quiet", "--n-examples", "8", "--batch-size", "8", "--device", "cpu"]
DEFORM = ["deform", "--checkpoint", RUN, "--quiet", "--sets", "rotate-20", "--n-examples", "8", "--device", "cpu"]


def with_option(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with `flag` set to `value` (replaced where it is already given)."""
    if flag not in argv:
        return argv + [flag, value]
    at = argv.index(flag)
    return argv[:at + 1] + [value] + argv[at + 2:]


def command_options(command: str) -> set[str]:
    """Every option string `mm-robust <command>` accepts, read from its argparse parser."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices[command]._option_string_actions)


def assert_names_only_real_options(err: str, command: str) -> None:
    """Options inside a quoted `mm-robust <other> ...` belong to <other>; every other option to `command`."""
    for other, rest in re.findall(r"`mm-robust (\w+)([^`]*)`", err):
        assert set(re.findall(r"--[a-z][a-z-]*", rest)) <= command_options(other), err
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", re.sub(r"`[^`]*`", "", err)))
    assert named and named <= command_options(command), (named - command_options(command), err)


def test_examples_are_refused_for_the_same_weights_and_replaced_for_other_weights(project, capsys):
    path = project / "attacks" / RUN / EXAMPLES_FILE
    assert main(with_option(ATTACK, "--save-examples", "2")) == 0
    capsys.readouterr()
    before = tree(project)
    code, err = call(with_option(ATTACK, "--save-examples", "4"), capsys)  # no JSON result differs, only this file
    assert code == 2 and one_line(err), err
    assert f"{EXAMPLES_FILE}' holds a finished result for these weights" in err and "(count 2 -> 4)" in err
    assert_names_only_real_options(err, "attack")
    assert tree(project) == before
    assert main(with_option(ATTACK, "--save-examples", "4") + ["--force"]) == 0
    assert load_file(str(path))["labels"].shape == (4,)

    perturb_weights(project / "checkpoints" / RUN)  # other weights: the file is stale and replaced
    assert main(with_option(ATTACK, "--save-examples", "3")) == 0
    assert load_file(str(path))["labels"].shape == (3,)
    weights = project / "checkpoints" / RUN / "last.safetensors"
    assert json.loads(stored_metadata(path)["model"])["weights_sha256"] == sha256(weights)


@pytest.mark.parametrize("first, second", [
    (ATTACK, with_option(ATTACK, "--pgd-steps", "3")),
    (DEFORM, with_option(DEFORM, "--seed", "1")),
    (CALIBRATE, with_option(CALIBRATE, "--bins", "5")),  # calibrate once replaced such a result silently
], ids=["attack", "deform", "calibrate"])
def test_a_result_with_other_settings_is_refused_naming_options_the_command_has(project, capsys, first, second):
    assert main(first) == 0
    capsys.readouterr()
    before = tree(project)
    code, err = call(second, capsys)
    assert code == 2 and one_line(err) and "made with other settings" in err and "--force" in err, err
    assert_names_only_real_options(err, second[0])
    assert tree(project) == before


def one_model_plan():
    """reproduce's plan for the project's trained baseline run, with a small evaluation."""
    plan = plan_for_preset("smoke", device="cpu")
    return dataclasses.replace(
        plan, train=(tiny_config("checkpoints", method="baseline"),),
        attack=dataclasses.replace(plan.attack, n_examples=8, batch_size=8, sweep=(0.0,), pgd_steps=2,
                                   bounded_pgd_steps=2, save_examples=0, autoattack=False),
        deform=dataclasses.replace(plan.deform, sets=("rotate-20",), n_examples=8),
        calibration=dataclasses.replace(plan.calibration, n_examples=8, batch_size=8))


@pytest.mark.parametrize("stage, made_before, cluster", [
    ("attack", with_option(ATTACK, "--pgd-steps", "3"), []),
    ("calibrate", with_option(CALIBRATE, "--bins", "5"), []),  # the last stage: refused before the attack and deform stages write anything
    ("attack", with_option(ATTACK, "--pgd-steps", "3"), ["--cluster", "ray"]),  # refused before a Ray cluster starts
], ids=["attack", "calibrate", "attack-on-ray"])
def test_reproduce_refuses_a_result_with_other_settings_up_front_naming_its_own_options(
        project, monkeypatch, capsys, stage, made_before, cluster):
    if cluster:
        pytest.importorskip("ray")
    plan = one_model_plan()
    assert finished_training(plan.train[0])  # trained: its results are checked before any stage runs
    monkeypatch.setattr("robustbench_mm.cli.reproduce.plan_for_preset", lambda *args, **kwargs: plan)
    assert main(made_before) == 0
    capsys.readouterr()
    before = tree(project)
    code, err = call(["reproduce", "--quiet", *cluster], capsys)
    assert code == 2 and one_line(err) and "made with other settings" in err, err
    assert f"`mm-robust {stage} --force" in err and "--attacks" in err, err
    assert_names_only_real_options(err, "reproduce")
    assert tree(project) == before


# ---- 11.2 a report writes only its own files --------------------------------------------------


def test_report_replaces_and_removes_only_its_own_files(project, capsys):
    assert main(ATTACK) == 0
    reports = project / "reports"
    reports.mkdir()
    (reports / "notes.md").write_text("mine")
    (reports / ".draft.tmp").write_text("mine too")  # the lock's clean-up once deleted every .*.tmp
    assert main(["report"]) == 0
    manifest = json.loads((reports / REPORT_MANIFEST).read_text())["files"]
    assert {"index.md", "table5.md", "summary.json"} <= set(manifest)
    assert (reports / "notes.md").read_text() == "mine" and (reports / ".draft.tmp").read_text() == "mine too"
    # A file an earlier report wrote but this one does not is removed; a user's edit of one is kept.
    (reports / "old-plot.png").write_bytes(b"ours")
    (reports / "edited.png").write_bytes(b"ours")
    manifest.update({"old-plot.png": hashlib.sha256(b"ours").hexdigest(),
                     "edited.png": hashlib.sha256(b"ours").hexdigest()})
    (reports / REPORT_MANIFEST).write_text(json.dumps({"files": manifest}))
    (reports / "edited.png").write_bytes(b"the user's now")
    assert main(["report"]) == 0
    assert not (reports / "old-plot.png").exists() and (reports / "edited.png").read_bytes() == b"the user's now"
    assert not list(reports.glob(f"{TEMP_PREFIX}*.tmp"))
    # A user's file under a name the report writes is refused, before anything changes.
    (reports / "index.md").write_text("the user's index")
    before = tree(project)
    code, err = call(["report"], capsys)
    assert code == 2 and one_line(err) and "did not write (index.md)" in err and "--reports" in err
    assert tree(project) == before


def test_lock_cleans_only_its_own_temporary_files(tmp_path):
    (tmp_path / f"{TEMP_PREFIX}result.json.abc.tmp").write_text("half a write")
    (tmp_path / ".users-own.tmp").write_text("keep")
    with folder_lock(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".users-own.tmp"]


# ---- 11.1 train --force cannot lose a run -----------------------------------------------------


@pytest.fixture
def trained(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(TRAIN) == 0
    capsys.readouterr()
    return tmp_path / "checkpoints" / RUN


def poison_logits(monkeypatch, at_call: int) -> None:
    """NaN logits from the `at_call`-th training forward pass on."""
    real = models_module.PreActResNet.forward
    seen = {"n": 0}

    def forward(self, x, mix=None):
        logits = real(self, x, mix)
        if self.training:
            seen["n"] += 1
            if seen["n"] >= at_call:
                return logits * float("nan")
        return logits

    monkeypatch.setattr(models_module.PreActResNet, "forward", forward)


def test_force_keeps_the_old_run_until_the_new_one_has_a_checkpoint(trained, monkeypatch, capsys):
    before = tree(trained)
    real_forward = models_module.PreActResNet.forward
    poison_logits(monkeypatch, at_call=1)  # the new run fails in its first epoch
    code, err = call(TRAIN + ["--force", "--seed", "1"], capsys)
    assert code == 1 and one_line(err) and "non-finite" in err
    assert tree(trained) == before  # restored exactly
    monkeypatch.setattr(models_module.PreActResNet, "forward", real_forward)
    assert main(TRAIN + ["--force", "--seed", "1"]) == 0
    assert read_meta(trained)["config"]["seed"] == 1 and not (trained / ".replaced-by-force").exists()


def test_force_killed_before_its_first_checkpoint_gives_the_old_run_back(trained, capsys):
    before = tree(trained)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    killed = subprocess.run([sys.executable, str(HERE / "kill_harness.py"), "step", "1", "--", *TRAIN, "--force",
                             "--seed", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (trained / "meta.json").exists()  # set aside, not deleted
    code, err = call(TRAIN, capsys)  # the next train command on the run puts the old one back first
    assert code == 2 and "already exists" in err
    assert tree(trained) == before


def test_resume_and_force_together_are_refused(trained, capsys):
    before = tree(trained)
    code, err = call(TRAIN + ["--resume", "--force"], capsys)
    assert code == 2 and one_line(err) and "not both" in err
    assert tree(trained) == before


# ---- 11.4 divergence with the default BCE loss ------------------------------------------------


def test_nan_logits_with_bce_stop_cleanly_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    poison_logits(monkeypatch, at_call=4)  # epoch 2, step 2
    code, err = call(TRAIN + ["--epochs", "3"], capsys)
    assert code == 1 and one_line(err), err
    assert "loss became non-finite at epoch 2, step 2" in err and "epoch 1" in err
    run_dir = tmp_path / "checkpoints" / RUN
    assert read_meta(run_dir)["epoch"] == 1
    weights = load_file(str(run_dir / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_weights_that_turn_non_finite_are_never_saved(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real_step = torch.optim.SGD.step
    seen = {"n": 0}

    def step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        seen["n"] += 1
        if seen["n"] == 4:  # the last update of epoch 2: every loss of the epoch was finite
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    code, err = call(TRAIN + ["--epochs", "3"], capsys)
    assert code == 1 and one_line(err) and "weights became non-finite in epoch 2" in err, err
    run_dir = tmp_path / "checkpoints" / RUN
    assert read_meta(run_dir)["epoch"] == 1
    weights = load_file(str(run_dir / "last.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


# ---- 11.5 faults: full disk, out of memory, broken files --------------------------------------


def test_full_disk_is_one_line_naming_the_folder_and_keeps_earlier_files(project, monkeypatch, capsys):
    assert main(ATTACK) == 0 and main(["report"]) == 0
    before = tree(project)

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", no_space)
    code, err = call(["report"], capsys)
    assert code == 1 and one_line(err) and "no space left on the device holding 'reports'" in err, err
    code, err = call(ATTACK + ["--force"], capsys)
    assert code == 1 and one_line(err) and f"no space left on the device holding 'attacks/{RUN}'" in err, err
    assert tree(project) == before


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError(
    "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")])
def test_out_of_memory_on_the_cpu_is_one_line(project, monkeypatch, capsys, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("robustbench_mm.cli.attack.run_attacks", fail)
    before = tree(project)
    code, err = call(ATTACK, capsys)
    assert code == 1 and one_line(err) and "ran out of memory" in err, err
    assert tree(project) == before


def test_report_lists_unreadable_files_under_problems_and_renders_the_rest(project, capsys):
    assert main(ATTACK) == 0
    folder = project / "attacks" / RUN
    (folder / "fgsm-standard.json").write_text("[" * 100_000)  # nested far beyond Python's recursion limit
    pgd = json.loads((folder / "pgd-unbounded-standard.json").read_text())
    (folder / "pgd-unbounded-standard.json").write_text(json.dumps({**pgd, "final_accuracy": None, "steps": "2"}))
    masking = json.loads((folder / "gradient-masking.json").read_text())
    (folder / "gradient-masking.json").write_text(json.dumps({**masking, "checks": None}))
    code, err = call(["report"], capsys)
    assert code == 0, err
    index = (project / "reports" / "index.md").read_text()
    problems = index.split("## Problems found while reading")[1]
    for name, why in (("fgsm-standard.json", "not valid JSON"), ("pgd-unbounded-standard.json", "malformed steps"),
                      ("gradient-masking.json", "malformed checks")):
        assert name in problems and why in problems
    table5 = (project / "reports" / "table5.md").read_text()
    fgsm_paper = json.loads((folder / "fgsm-paper.json").read_text())
    assert f"{fgsm_paper['accuracy'][0]:.2f}" in table5  # the readable result is still shown


def test_progress_in_a_log_is_one_line_per_stage(project, capsys):
    assert main([a for a in ATTACK if a != "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    stages = [line.split(":")[1] for line in err.splitlines() if line.startswith(f"{RUN}: ") and " steps in " in line]
    assert len(stages) >= 2 and len(stages) == len(set(stages)), err  # one line per stage, none repeated


# ---- issue 22: the last lost, wrong and crashing cases ----------------------------------------


@pytest.mark.parametrize("checkpoints", ["gone", "empty"])
def test_report_with_a_missing_or_empty_checkpoints_folder_is_refused_and_rewrites_nothing(project, capsys,
                                                                                         checkpoints):
    """22.6: without the weights no result can be checked; an existing report is not replaced by stale numbers."""
    assert main(ATTACK) == 0 and main(["report", "--quiet"]) == 0
    (project / "empty").mkdir()
    before = tree(project)
    code, err = call(["report", "--quiet", "--checkpoints", checkpoints], capsys)
    assert code == 2 and one_line(err), err
    assert f"--checkpoints '{checkpoints}'" in err and ("does not exist" in err or "holds no trained runs" in err)
    assert tree(project) == before


def _mask(n: int) -> dict:
    from robustbench_mm.runs.results import encode_mask

    return encode_mask([True] * n)


@pytest.mark.parametrize("name, edit, field", [
    ("fgsm-standard.json", lambda r: r["accuracy"].__setitem__(0, 153.0), "accuracy[0] = 153.0 (not a percentage"),
    ("fgsm-standard.json", lambda r: r["clean"].__setitem__("accuracy", -5), "clean.accuracy = -5 (not a percentage"),
    ("pgd-bounded.json", lambda r: r.__setitem__("accuracy", 100.5), "accuracy = 100.5 (not a percentage"),
    ("pgd-unbounded-standard.json", lambda r: r.__setitem__("n_examples", -3), "n_examples = -3 (a count"),
    ("fgsm-standard.json", lambda r: r.__setitem__("accuracy", ["x"]), "fgsm-standard.json has malformed accuracy"),
    ("pgd-bounded.json", lambda r: r["per_example"]["correct"].__setitem__("final", _mask(5)),
     "per_example.correct.final holds 5 flags for the 8 examples"),
])
def test_impossible_values_are_problems_naming_file_and_field_never_rendered(project, capsys, name, edit, field):
    """22.5: every number read from a result is range-checked; the Problems line names the file and the field."""
    assert main(ATTACK) == 0
    path = project / "attacks" / RUN / name
    result = json.loads(path.read_text())
    edit(result)
    path.write_text(json.dumps(result))
    before = tree(project / "attacks") | tree(project / "checkpoints")
    code, err = call(["report", "--quiet"], capsys)
    assert code == 0, err
    problems = (project / "reports" / "index.md").read_text().split("## Problems found while reading")[1]
    line = next(p for p in problems.splitlines() if name in p)
    assert field in line, line
    reports = "".join(p.read_text() for p in (project / "reports").glob("*.md"))
    assert "153.00" not in reports and "100.50" not in reports and "-5.00" not in reports
    assert tree(project / "attacks") | tree(project / "checkpoints") == before


def copy_run(project: Path, name: str, **meta_changes) -> Path:
    """checkpoints/<RUN> copied to checkpoints/<name> (the same weights), its meta.json edited."""
    run_dir = project / "checkpoints" / name
    shutil.copytree(project / "checkpoints" / RUN, run_dir)
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["run"] = name
    for key, value in meta_changes.items():
        if key == "seed":
            meta["config"]["seed"] = value
        else:
            meta[key] = value
    (run_dir / "meta.json").write_text(json.dumps(meta))
    return run_dir


def test_the_same_seed_in_two_folders_is_one_sample(project, capsys):
    """22.3: `<run>` (seed 0) and `<run>-s0` hold one sample: the -s0 folder is shown, the other named under Problems."""
    copy_run(project, f"{RUN}-s0")
    assert main(ATTACK) == 0 and main(with_option(ATTACK, "--checkpoint", f"{RUN}-s0")) == 0
    before = tree(project / "attacks") | tree(project / "checkpoints")
    code, err = call(["report", "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads((project / "reports" / "summary.json").read_text())
    assert [m["run"] for g in summary["groups"] for m in g["models"]] == [f"{RUN}-s0"]
    assert any(p.startswith(f"{RUN}: seed 0 of this model is already shown from {RUN}-s0") for p in summary["problems"])
    table5 = (project / "reports" / "table5.md").read_text()
    assert "2 seeds" not in table5 and "0:" not in table5.split("## Problems")[0]
    assert tree(project / "attacks") | tree(project / "checkpoints") == before


def test_a_result_is_checked_against_the_model_it_is_shown_for(project, capsys):
    """22.4: a meta.json whose method was edited, and a results folder copied from another run (the same weights,
    so the digest agrees): what the result files say they measured decides, and a disagreement is a Problem."""
    assert main(ATTACK) == 0
    run_dir = project / "checkpoints" / RUN
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["config"] = {**meta["config"], "method": "manifold", "alpha": 2.0}
    (run_dir / "meta.json").write_text(json.dumps(meta))
    copy_run(project, "copied")
    shutil.copytree(project / "attacks" / RUN, project / "attacks" / "copied")
    before = tree(project)
    records, problems = load_records(project / "checkpoints", project / "attacks")
    assert all(not r.results for r in records)
    assert any(p.startswith(f"{RUN}: fgsm-standard.json not used: it measured a model with method 'baseline', but "
                            f"checkpoints/{RUN}/meta.json says 'manifold'") for p in problems), problems
    assert any(p.startswith(f"copied: fgsm-standard.json not used: it measured run '{RUN}', not 'copied'")
               for p in problems), problems
    assert tree(project) == before


def test_seeds_trained_for_different_epochs_and_results_on_different_examples_are_not_passed_off_as_alike(
        project, capsys):
    """22.7: two seeds of other lengths of training are two models, each labelled with its epochs, not "(2 seeds)";
    a row mixing numbers of test examples says how many each number measured, and the caption no longer says
    "on the same test examples"."""
    epochs = json.loads((project / "checkpoints" / RUN / "meta.json").read_text())["epoch"]
    shutil.move(project / "checkpoints" / RUN, project / "checkpoints" / f"{RUN}-s0")
    meta = json.loads((project / "checkpoints" / f"{RUN}-s0" / "meta.json").read_text())
    (project / "checkpoints" / f"{RUN}-s0" / "meta.json").write_text(json.dumps({**meta, "run": f"{RUN}-s0"}))
    shutil.copytree(project / "checkpoints" / f"{RUN}-s0", project / "checkpoints" / RUN)
    copy_run(project, f"{RUN}-s1", seed=1, epoch=epochs + 1)
    shutil.rmtree(project / "checkpoints" / RUN)
    for seed in (0, 1):
        assert main(with_option(ATTACK, "--checkpoint", f"{RUN}-s{seed}")) == 0
    path = project / "attacks" / f"{RUN}-s0" / "pgd-bounded.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "n_examples": 6}))  # as if measured separately
    before = tree(project / "attacks") | tree(project / "checkpoints")
    code, err = call(["report", "--quiet"], capsys)
    assert code == 0, err
    robustness = (project / "reports" / "robustness.md").read_text().split("## Problems")[0]
    assert "2 seeds" not in robustness
    assert f"No mixup (baseline) ({epochs} epochs)" in robustness
    assert f"No mixup (baseline) ({epochs + 1} epochs)" in robustness
    assert "on the same test examples" not in robustness and "(n = 6)" in robustness and "(n = 8)" in robustness
    assert tree(project / "attacks") | tree(project / "checkpoints") == before


@pytest.mark.parametrize("damage, says", [
    ("truncate", "is corrupted (it is"), ("device", "is not a regular file (a device); results cannot be checked"),
    ("fifo", "is not a regular file (a FIFO); results cannot be checked")])
def test_report_says_what_is_wrong_with_the_weights_never_rerun_attack_for_a_broken_file(project, capsys, damage, says):
    """22.10 and 22.11: truncated weights are "corrupted" (rerunning attack would fail on them), and a link to
    /dev/zero or a FIFO is named for what it is, at once, as a Problem."""
    assert main(ATTACK) == 0
    weights = project / "checkpoints" / RUN / "last.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "device":
        weights.symlink_to("/dev/zero")
    else:
        os.mkfifo(weights)
    before = tree(project / "attacks") | {"weights": weights.is_file() and sha256(weights)}
    code, err = call(["report", "--quiet"], capsys)
    assert code == 0, err
    problems = (project / "reports" / "index.md").read_text().split("## Problems found while reading")[1]
    line = next(p for p in problems.splitlines() if "fgsm-standard.json not used" in p)
    assert says in line and "rerun attack" not in line, line
    assert tree(project / "attacks") | {"weights": weights.is_file() and sha256(weights)} == before


# ---- issue 22, the rest: partial reruns, unwritable run folders, refusals that name the matching command ----

CORRUPT = ["corrupt", "--checkpoint", RUN, "--quiet", "--corruptions", "fog", "--severities", "1,2",
           "--n-examples", "8", "--batch-size", "8", "--device", "cpu"]


def changed_files(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}


@pytest.mark.parametrize("first, option, partial, file, kept", [
    (with_option(DEFORM, "--sets", "rotate-20,rotate-40"), "--sets", "rotate-20", "deform.json", "rotate-40"),
    (CORRUPT, "--severities", "1", "corruptions.json", "fog-2"),
], ids=["deform", "corrupt"])
def test_a_partial_forced_rerun_keeps_what_it_does_not_redo_and_names_what_it_must_drop(
        project, capsys, first, option, partial, file, kept):
    """22.1: `--force` on some sets replaces those and keeps the others measured on the same weights and settings;
    with other settings the file is replaced, and a line names every set that goes with it."""
    assert main(first) == 0
    path = project / "attacks" / RUN / file
    stored = json.loads(path.read_text())
    capsys.readouterr()
    before = tree(project)
    code, err = call(with_option(first, option, partial) + ["--force"], capsys)
    assert code == 0, err
    result = json.loads(path.read_text())
    assert result["sets"][kept] == stored["sets"][kept]
    assert result["per_example"]["correct"][kept] == stored["per_example"]["correct"][kept]
    # The sample grid shows the severities asked for: corrupt redraws it for the new ones.
    redrawn = {f"attacks/{RUN}/{file}", f"attacks/{RUN}/model-contract.json", "attacks/corrupt-samples-digits.png"}
    assert changed_files(before, tree(project)) <= redrawn
    assert "dropping" not in err, err

    code, err = call(with_option(with_option(first, option, partial), "--n-examples", "6") + ["--force"], capsys)
    assert code == 0, err
    assert kept not in json.loads(path.read_text())["sets"]
    line = next(line for line in err.splitlines() if "dropping" in line)
    assert f"{file}' was made with other settings (n_examples 8 -> 6)" in line and line.endswith(f": {kept}"), line


@contextlib.contextmanager
def unwritable(folder: Path):
    """`folder` made unwritable for real: chmod for a user; root, whom chmod does not stop, gets chattr +i."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    locked = shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
    if not locked or locked.returncode:
        pytest.skip("running as root without chattr +i: a read-only folder cannot be simulated")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("argv", [ATTACK, DEFORM, CALIBRATE, CORRUPT], ids=lambda argv: argv[0])
def test_an_unwritable_run_folder_is_refused_before_any_work_naming_it(project, capsys, argv):
    """22.2: attacks/<run> read-only (chmod, chattr +i): one line naming that folder, not a PermissionError."""
    assert main(argv) == 0
    capsys.readouterr()
    before = tree(project)
    with unwritable(project / "attacks" / RUN):
        code, err = call(argv + ["--force"], capsys)
    assert code == 2 and one_line(err), err
    assert f"output folder 'attacks/{RUN}' is not writable" in err and "--out" in err, err
    assert tree(project) == before


def test_train_force_on_an_unwritable_run_folder_is_refused_naming_it(trained, capsys):
    before = tree(trained)
    with unwritable(trained):
        code, err = call(TRAIN + ["--force"], capsys)
    assert code == 2 and one_line(err), err
    assert f"output folder 'checkpoints/{RUN}' is not writable" in err, err
    assert tree(trained) == before


@pytest.mark.parametrize("made_with, rest", [
    (ATTACK + ["--autoattack", "--aa-budget", "smoke"],  # no examples were saved: no setting says how many
     ["--checkpoint", RUN, "--quiet", "--device", "cpu", "--save-examples", "0"]),
    (with_option(DEFORM, "--seed", "1") + ["--interpolation", "bilinear"],
     ["--checkpoint", RUN, "--quiet", "--sets", "rotate-20", "--device", "cpu"]),
    (with_option(CALIBRATE, "--bins", "5"), ["--checkpoint", RUN, "--quiet", "--device", "cpu"]),
    (with_option(CORRUPT, "--seed", "2"),
     ["--checkpoint", RUN, "--quiet", "--corruptions", "fog", "--severities", "1,2", "--device", "cpu"]),
], ids=["attack", "deform", "calibrate", "corrupt"])
def test_a_refusal_names_the_command_that_matches_the_stored_result_and_that_force_discards_it(
        project, capsys, made_with, rest):
    """22.4: after the demo a plain `attack` was refused with a list of settings; the refusal now names the options
    that reproduce the stored ones (checked: that command is accepted and redoes nothing) and says --force discards."""
    command = made_with[0]
    assert main(made_with) == 0
    capsys.readouterr()
    before = tree(project)
    code, err = call([command, "--checkpoint", RUN, "--quiet", "--device", "cpu"], capsys)
    assert code == 2 and one_line(err) and "made with other settings" in err, err
    assert "pass --force to replace it (the stored result is discarded)" in err, err
    matching = re.search(rf"(`mm-robust {command}[^`]*`) matches the stored settings", err)
    assert matching, err
    assert_names_only_real_options(err, command)
    assert tree(project) == before
    code, err = call(matching.group(1).strip("`").split()[1:] + rest, capsys)
    assert code == 0, err
    assert tree(project) == before  # the named options reproduce every stored setting: nothing is redone


def test_evaluating_a_run_still_training_warns_and_records_the_epoch_its_weights_are_of(project, capsys):
    """22.6: attack while train holds the run's lock (epoch 3 of 5 saved): one warning naming the epoch, and the
    results record the epoch of the weights they measured."""
    run_dir = project / "checkpoints" / RUN
    meta = json.loads((run_dir / "meta.json").read_text())
    epoch = meta["epoch"]
    meta["config"]["epochs"] = epoch + 2  # planned further than saved: as mid-training
    (run_dir / "meta.json").write_text(json.dumps(meta))
    with folder_lock(run_dir):
        code, err = call(ATTACK, capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "still training" in line]
    assert len(warnings) == 1 and f"epoch {epoch} of {epoch + 2} saved" in warnings[0], err
    assert f"weights of epoch {epoch}" in warnings[0], err
    model = json.loads((project / "attacks" / RUN / "fgsm-standard.json").read_text())["model"]
    assert model["epochs_trained"] == epoch and model["checkpoint_epoch"] == epoch
    code, err = call(ATTACK, capsys)  # no lock held: no warning
    assert code == 0 and "still training" not in err, err


def test_weights_newer_than_meta_json_are_never_labelled_with_its_older_epoch(project, capsys, monkeypatch):
    """22.6: training replaces the weights, then meta.json; a reader in between once recorded the new weights with
    the old epoch. The weights now carry their epoch and are read again until meta.json agrees."""
    monkeypatch.setattr("robustbench_mm.runs.checkpoints.time.sleep", lambda seconds: None)
    run_dir = project / "checkpoints" / RUN
    weights = run_dir / "last.safetensors"
    epoch = json.loads((run_dir / "meta.json").read_text())["epoch"]
    save_file(load_file(str(weights)), str(weights), metadata={"epoch": str(epoch + 1)})
    before = tree(project)
    code, err = call(ATTACK, capsys)
    assert code == 2 and one_line(err), err
    assert f"holds the weights of epoch {epoch + 1} but meta.json says epoch {epoch}" in err, err
    assert tree(project) == before


class Probabilities(torch.nn.Module):
    """A model trained elsewhere whose outputs are softmax probabilities, not logits."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.linear(x.flatten(1)).softmax(1)


def probabilities_model():
    return Probabilities()


def test_the_report_header_says_what_is_known_of_a_flagged_external_model_and_no_none(project, capsys):
    """22.5: a model flagged at attack time as outputting probabilities showed "width None, epoch None" in the run
    header; now it shows what is known, the flag included, and omits what is not."""
    torch.manual_seed(0)
    save_file(Probabilities().state_dict(), str(project / "soft.safetensors"))
    external = [a for a in ATTACK if a not in ("--checkpoint", RUN)] + [
        "--model", "test_safety:probabilities_model", "--weights", "soft.safetensors", "--dataset", "digits",
        "--name", "soft"]
    assert main(ATTACK) == 0 and main(external) == 0
    model = json.loads((project / "attacks" / "soft" / "fgsm-standard.json").read_text())["model"]
    assert model["contract_flags"] == ["outputs-probabilities"]
    before = tree(project / "attacks") | tree(project / "checkpoints")
    code, err = call(["report", "--quiet"], capsys)
    assert code == 0, err
    header = (project / "reports" / "table5.md").read_text().split("\n\n|")[1].split("\n\n")[0]
    assert "None" not in header, header
    assert "soft: external model Probabilities, outputs probabilities, not logits" in header, header
    assert "its own weights (soft.safetensors)" in header and "external: evaluation 0" in header, header
    assert tree(project / "attacks") | tree(project / "checkpoints") == before


def test_ray_prints_none_of_its_own_lines_under_quiet():
    """22.3: `reproduce --cluster ray --quiet` showed Ray's token-authentication notice and log lines. Ray is started
    here exactly as run_on_ray starts it, in a fresh process, and a task run; quiet, nothing reaches stderr."""
    pytest.importorskip("ray")
    script = ("import sys, ray\n"
              "from robustbench_mm.scheduling.options import ClusterOptions\n"
              "from robustbench_mm.scheduling.ray_runner import init_options\n"
              "ray.init(**init_options(ClusterOptions(num_cpus=1), progress=False))\n"
              "@ray.remote\n"
              "def task():\n"
              "    print('a line from the worker', file=sys.stderr)\n"
              "    return 1\n"
              "assert ray.get(task.remote()) == 1\n"
              "ray.shutdown()\n")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_report_file_that_cannot_be_replaced_is_refused_before_any_is_replaced(project, capsys):
    """A report file made immutable (chattr +i, which stops even root's rename): one line naming it, the old
    report left whole, no staging folder left behind; not a PermissionError halfway through publishing."""
    (project / "attacks").mkdir()  # a report of the trained model alone
    assert main(["report"]) == 0
    capsys.readouterr()
    target = project / "reports" / "table5.md"
    locked = os.geteuid() == 0 and shutil.which("chattr") and \
        subprocess.run(["chattr", "+i", str(target)], capture_output=True, check=False)
    if not locked or locked.returncode:
        pytest.skip("needs root and chattr +i: only an immutable file stops a rename over it")
    before = tree(project)
    try:
        code, err = call(["report"], capsys)
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert code == 2 and one_line(err), err
    assert "cannot be replaced (table5.md" in err and "--reports" in err, err
    assert tree(project) == before


def test_report_refuses_a_missing_attacks_folder_and_a_reports_folder_inside_what_it_reads(project, capsys):
    """Probe: `--attacks <typo>` replaced a full report with an empty one; `--reports attacks/<run>` wrote the
    report among the results. Both are one line now, with nothing changed."""
    assert main(ATTACK) == 0 and main(["report"]) == 0
    capsys.readouterr()
    before = tree(project)
    for argv, says in ((["--attacks", "atacks"], "--attacks 'atacks' does not exist"),
                       (["--reports", f"attacks/{RUN}"], "lies inside --attacks 'attacks'"),
                       (["--reports", "checkpoints"], "lies inside --checkpoints 'checkpoints'")):
        code, err = call(["report", *argv], capsys)
        assert code == 2 and one_line(err) and says in err, err
        assert tree(project) == before


def test_report_reads_only_regular_result_files(project, capsys):
    """Probe: a FIFO as deform.json blocked `report` forever and /dev/zero as calibration.json never ended."""
    assert main(ATTACK) == 0
    capsys.readouterr()
    os.mkfifo(project / "attacks" / RUN / "deform.json")
    (project / "attacks" / RUN / "calibration.json").symlink_to("/dev/zero")
    code, err = call(["report"], capsys)
    assert code == 0, err
    index = (project / "reports" / "index.md").read_text()
    assert "deform.json is not a regular file" in index and "calibration.json is not a regular file" in index


def test_last_weights_results_in_the_best_folder_are_never_shown_as_best(project, capsys):
    """Probe: results of the last weights copied into attacks/<run>/best/ were shown under 'best weights'."""
    from robustbench_mm.report.run_results import read_run_results

    assert main(ATTACK) == 0
    capsys.readouterr()
    best = project / "attacks" / RUN / "best"
    best.mkdir()
    for path in (project / "attacks" / RUN).glob("*.json"):
        shutil.copy(path, best / path.name)
    found = read_run_results(project / "attacks", RUN, "best")
    assert "fgsm-standard" not in found.results
    assert found.missing["fgsm-standard"].startswith("measured on the last weights only")
    assert any("measured the last weights but lies in the best weights' folder" in p for p in found.problems)
