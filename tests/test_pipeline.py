"""A reduced end-to-end `reproduce`: tiny models, few attack steps, few images; stop, rerun, report."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

import pytest
from conftest import TINY
from test_reporting import assert_real_png, leading_number, table_by_header

from robustbench_mm import pipeline
from robustbench_mm.cli import main
from robustbench_mm.data.deformations import evaluation_name
from robustbench_mm.paper import TABLE7
from robustbench_mm.pipeline import Folders, plan_for_preset, reproduce
from robustbench_mm.report.records import Group, deform_evaluations
from robustbench_mm.runs.results import result_path


TINY_TRAIN = {**TINY, "epochs": 2, "milestones": (1,)}
TINY_ATTACK = dict(n_examples=40, pgd_steps=5, pgd_step_size=0.1, bounded_pgd_steps=2,
                   sweep=(0.0, 0.03, 0.1), save_examples=6, device="cpu")
TINY_DEFORM = dict(n_examples=40, device="cpu")
TINY_CORRUPT = dict(corruptions=("fog", "motion_blur"), severities=(1, 5), n_examples=40, device="cpu")


def tiny_plan(folders: Folders):
    """Two of the four table models (baseline, manifold mixup), so the input-mixup cells must read 'missing'."""
    plan = plan_for_preset("smoke", device="cpu", checkpoints=folders.checkpoints)
    models = [c for c in plan.train if c.method in ("baseline", "manifold")]
    return replace(plan, train=tuple(replace(c, **TINY_TRAIN) for c in models),
                   attack=replace(plan.attack, **TINY_ATTACK), deform=replace(plan.deform, **TINY_DEFORM),
                   calibration=replace(plan.calibration, n_examples=40, device="cpu"),
                   corrupt=replace(plan.corrupt, **TINY_CORRUPT))


def test_smoke_plan_matches_the_documented_settings():
    plan = plan_for_preset("smoke")
    assert [(c.method, c.alpha, c.dataset) for c in plan.train] == [
        ("baseline", 0.0, "digits"), ("input", 1.0, "digits"), ("input", 2.0, "digits"), ("manifold", 2.0, "digits"),
        ("adversarial", 0.0, "digits"), ("thermometer", 0.0, "digits")]  # the four table models and Table 5's controls
    assert plan.attack.n_examples is None and plan.attack.pgd_steps == 200  # every test image
    assert plan.attack.autoattack and plan.attack.aa_budget == "smoke" and plan.attack.aa_eps == 8 / 255
    assert plan.deform.n_examples is None  # all 357 digits test images
    assert plan.corrupt.n_examples is None and plan.corrupt.severities == (1, 2, 3, 4, 5)  # 75 sets x 6 models
    assert len(plan.corrupt.corruptions) == 15 and plan.corrupt.source == "auto"  # generated for digits
    paper = plan_for_preset("paper", dataset="cifar100", arch="preactresnet34")
    assert {(c.dataset, c.arch, c.epochs) for c in paper.train} == {("cifar100", "preactresnet34", 1200)}
    assert paper.attack.n_examples is None and paper.deform.n_examples is None
    assert paper.attack.autoattack and paper.attack.aa_budget == "standard" and paper.attack.aa_paper_eps
    # The paper preset deforms with the authors' warp, the report's main table for that preset; the others keep ours.
    assert (plan.deform.convention, plan.deform.fill) == ("ours", "black")
    assert (paper.deform.convention, paper.deform.fill) == ("authors", "black")
    assert deform_evaluations(Group("cifar100", "preactresnet34", "paper", []))[0] == evaluation_name(
        paper.deform.convention, paper.deform.fill)


def test_reproduce_end_to_end_resumes_after_a_stop(tmp_path, monkeypatch):
    folders = Folders(tmp_path / "checkpoints", tmp_path / "attacks", tmp_path / "reports")
    plan = tiny_plan(folders)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_deform", stopped)
    with pytest.raises(KeyboardInterrupt):
        reproduce(plan, folders, progress=False)
    monkeypatch.undo()
    runs = [c.run_name for c in plan.train]
    finished = {path: path.stat().st_mtime_ns for run in runs for path in
                [folders.checkpoints / run / "last.safetensors", result_path(folders.attacks, run, "fgsm-standard"),
                 result_path(folders.attacks, run, "pgd-unbounded-paper")]}
    assert not result_path(folders.attacks, runs[0], "deform").exists()

    index = reproduce(plan, folders, progress=False)

    assert index == folders.reports / "index.md"
    assert {p: p.stat().st_mtime_ns for p in finished} == finished, "finished stages must be skipped, not redone"
    fgsm = table_by_header((folders.reports / "table5.md").read_text(), "Model")
    rows = {row[1].strip("`"): row for row in fgsm[1:]}
    for run in runs:
        stored = json.loads(result_path(folders.attacks, run, "fgsm-paper").read_text())
        assert leading_number(rows[run][fgsm[0].index("FGSM paper protocol: ours")]) == pytest.approx(
            stored["accuracy"][stored["eps"].index(0.03)], abs=0.005)
    cells = list(csv.DictReader(io.StringIO((folders.reports / "table7.csv").read_text())))
    assert len(cells) == 4 * len(TABLE7)
    untrained = [c for c in cells if c["model"] in ("input-a1", "input-a2")]
    assert all(c["ours"] == "" and c["status"].startswith("missing: no trained input-a") for c in untrained)
    measured = [c for c in cells if c not in untrained]
    assert len(measured) == 2 * len(TABLE7) and all(c["status"] == "measured" for c in measured)
    for cell in measured:
        deform = json.loads(result_path(folders.attacks, cell["run"], "deform").read_text())
        assert float(cell["ours"]) == deform["sets"][cell["setting"]]["accuracy"]
        assert cell["n_examples"] == "40"
    index_text = index.read_text()
    for stem in ("fgsm-eps-sweep", "pgd-unbounded", "table7-ours-vs-paper", "training-curves",
                 "adversarial-examples", "deform-samples", "fgsm-vs-epoch", "reliability",
                 *(f"gradient-masking-{run}" for run in runs)):
        name = f"{stem}.png" if stem.startswith("gradient-masking") else f"{stem}-digits.png"
        assert_real_png(folders.reports / name)
        assert f"({name})" in index_text
    for run in runs:
        assert json.loads(result_path(folders.attacks, run, "calibration").read_text())["n_examples"] == 40
        corruptions = json.loads(result_path(folders.attacks, run, "corruptions").read_text())
        assert corruptions["n_examples"] == 40 and list(corruptions["sets"]) == [
            "motion_blur-1", "motion_blur-5", "fog-1", "fog-5"]
    epochs = list(csv.DictReader(io.StringIO((folders.reports / "table5-epochs.csv").read_text())))
    assert {(r["run"], r["epoch"], r["protocol"]) for r in epochs} == {
        (run, str(e), p) for run in runs for e in (1, 2) for p in ("standard", "paper")}
    assert "| `digits-preactresnet18-baseline` | last (epoch 2) |" in (folders.reports / "table1.md").read_text()


def test_reproduce_cli_rejects_a_bad_preset(tmp_path, capsys):
    assert main(["reproduce", "--preset", "huge", "--checkpoints", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'huge'" in err and "smoke" in err
    assert not (tmp_path / "c").exists()
