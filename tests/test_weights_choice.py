"""Results of the last and of the best weights live side by side (issue 22, item 1).

`--weights last` results stay in ``attacks/<run>/``, `--weights best` ones go to ``attacks/<run>/best/``
under the same names: evaluating one never replaces the other, and `mm-robust report --weights` picks
which the tables show, saying so, with the other weights' results named as missing, never mixed in.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_config
from test_safety import CALIBRATE, DEFORM, RUN, call, one_line, perturb_weights, tree

from robustbench_mm.cli import main
from robustbench_mm.pipeline import Folders, plan_for_preset, reproduce
from robustbench_mm.scheduling.autoattack_shards import autoattack_merge, autoattack_shard
from robustbench_mm.scheduling.corrupt_shards import corrupt_merge, corrupt_shard
from robustbench_mm.scheduling.shards import deform_merge, deform_shard

ATTACK = ["attack", "--checkpoint", RUN, "--quiet", "--eps", "0.03", "--sweep", "0", "--pgd-steps", "2",
          "--bounded-pgd-steps", "2", "--n-examples", "8", "--batch-size", "8", "--save-examples", "2",
          "--device", "cpu"]
AUTOATTACK = ATTACK + ["--autoattack", "--aa-budget", "smoke", "--no-aa-paper-eps"]
CORRUPT = ["corrupt", "--checkpoint", RUN, "--quiet", "--corruptions", "fog", "--severities", "1", "--n-examples", "8",
           "--device", "cpu"]
STAGES = {"attack": AUTOATTACK, "deform": DEFORM, "calibrate": CALIBRATE, "corrupt": CORRUPT}


@pytest.fixture
def project(tmp_path, tiny_runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "checkpoints" / RUN
    shutil.copytree(tiny_runs["baseline"], run_dir)
    assert (run_dir / "best.safetensors").is_file()
    perturb_weights(run_dir, "best")  # best and last differ, as after almost every training
    return tmp_path


def checkpoint_of(path: Path) -> str:
    return json.loads(path.read_text())["model"]["checkpoint"]


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.mark.parametrize("stage", STAGES)
def test_best_results_go_beside_the_last_ones_which_stay_byte_identical(project, capsys, stage):
    results = project / "attacks" / RUN
    assert main(STAGES[stage] + ["--weights", "last"]) == 0
    last = tree(results)
    assert main(STAGES[stage] + ["--weights", "best"]) == 0
    both = tree(results)
    assert {name: digest for name, digest in both.items() if name in last} == last, "the last results were replaced"
    beside = {name.removeprefix("best/") for name in both if name.startswith("best/")}
    assert beside == set(last), "best/ holds the same files as the last weights' folder"
    assert all(checkpoint_of(results / name) == "last" for name in last if name.endswith(".json"))
    assert all(checkpoint_of(results / "best" / name) == "best" for name in beside if name.endswith(".json"))
    assert main(STAGES[stage] + ["--weights", "last"]) == 0  # both finished: nothing is redone or replaced
    assert tree(results) == both


def test_report_shows_the_weights_asked_for_and_says_which(project, capsys):
    for weights in ("last", "best"):
        assert main(ATTACK + ["--weights", weights]) == 0
        assert main(CALIBRATE + ["--weights", weights]) == 0
    for weights, argv in (("last", []), ("best", ["--weights", "best"])):
        assert main(["report", "--quiet", *argv]) == 0
        reports = project / "reports"
        summary = json.loads((reports / "summary.json").read_text())
        assert summary["weights"] == weights
        folder = project / "attacks" / RUN / ("best" if weights == "best" else "")
        fgsm = json.loads((folder / "fgsm-standard.json").read_text())
        cells = [c for c in read_csv(reports / "table5.csv") if c["status"] == "measured"]
        assert cells and all(c["checkpoint"] == weights for c in cells)
        ours = next(c for c in cells if c["evaluation"] == "fgsm-standard" and c["setting"] == "eps=0.03")
        assert float(ours["ours"]) == pytest.approx(fgsm["accuracy"][0])
        assert f"| checkpoint evaluated | {weights} (epoch" in (reports / "table5.md").read_text()
        index = (reports / "index.md").read_text()
        other = "last" if weights == "best" else "best"
        assert f"measured on the **{weights}** weights" in index and f"report --weights {other}" in index
        assert "weights only" not in (reports / "table5.md").read_text()  # nothing of the other weights mixed in


def test_results_of_the_other_weights_are_missing_with_the_option_that_shows_them(project, capsys):
    assert main(ATTACK + ["--weights", "best"]) == 0
    assert main(["report", "--quiet"]) == 0
    table5 = (project / "reports" / "table5.md").read_text()
    assert "missing (measured on the best weights only; `mm-robust report --weights best` shows it)" in table5
    assert not [c for c in read_csv(project / "reports" / "table5.csv") if c["status"] == "measured"]
    assert json.loads((project / "reports" / "summary.json").read_text())["weights"] == "last"
    assert main(["report", "--quiet", "--weights", "best"]) == 0
    assert [c for c in read_csv(project / "reports" / "table5.csv") if c["status"] == "measured"]


def test_a_best_result_written_before_best_had_its_folder_is_kept_and_shown_as_best(project, capsys):
    """Earlier versions wrote best results into attacks/<run>/ itself: the report shows them for --weights best
    only, and `--weights last` refuses to replace them unless --force."""
    assert main(ATTACK + ["--weights", "best"]) == 0
    results = project / "attacks" / RUN
    for path in sorted((results / "best").iterdir()):
        path.rename(results / path.name)
    (results / "best").rmdir()
    assert main(["report", "--quiet"]) == 0
    assert "measured on the best weights only" in (project / "reports" / "table5.md").read_text()
    assert main(["report", "--quiet", "--weights", "best"]) == 0
    cells = [c for c in read_csv(project / "reports" / "table5.csv") if c["status"] == "measured"]
    assert cells and all(c["checkpoint"] == "best" for c in cells)
    capsys.readouterr()
    before = tree(project / "attacks")
    code, err = call(ATTACK + ["--weights", "last"], capsys)
    assert code == 2 and one_line(err) and "measured on the best weights" in err and "--force" in err, err
    assert tree(project / "attacks") == before


def test_report_rejects_unknown_weights(project, capsys):
    assert main(ATTACK) == 0
    capsys.readouterr()
    code, err = call(["report", "--quiet", "--weights", "middle"], capsys)
    assert code == 2 and one_line(err) and "--weights" in err and "last" in err and "best" in err, err
    assert not (project / "reports").exists()


def best_plan():
    """reproduce's plan for the project's trained baseline run on its best weights, with a small evaluation."""
    plan = plan_for_preset("smoke", device="cpu", weights="best")
    return dataclasses.replace(
        plan, train=(tiny_config("checkpoints", method="baseline"),),
        attack=dataclasses.replace(plan.attack, n_examples=8, batch_size=8, sweep=(0.0,), pgd_steps=2,
                                   bounded_pgd_steps=2, save_examples=0, autoattack=False),
        deform=dataclasses.replace(plan.deform, sets=("rotate-20",), n_examples=8),
        corrupt=dataclasses.replace(plan.corrupt, corruptions=("fog",), severities=(1,), n_examples=8),
        calibration=dataclasses.replace(plan.calibration, n_examples=8, batch_size=8))


def test_reproduce_with_best_weights_writes_and_reports_best(project, capsys):
    plan = best_plan()
    assert plan.weights == "best"
    index = reproduce(plan, Folders(), progress=False)
    assert not list((project / "attacks" / RUN).glob("*.json")), "nothing measured on best goes beside last"
    for evaluation in ("fgsm-standard", "deform", "corruptions", "calibration"):
        assert checkpoint_of(project / "attacks" / RUN / "best" / f"{evaluation}.json") == "best"
    assert json.loads((index.parent / "summary.json").read_text())["weights"] == "best"
    assert "measured on the **best** weights" in index.read_text()


def test_reproduce_cli_passes_its_weights_to_the_plan(project, monkeypatch, capsys):
    seen = {}

    def plan(*args, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr("robustbench_mm.cli.reproduce.plan_for_preset", plan)
    call(["reproduce", "--quiet", "--weights", "best"], capsys)
    assert seen["weights"] == "best"
    monkeypatch.undo()
    code, err = call(["reproduce", "--quiet", "--weights", "middle"], capsys)
    assert code == 2 and one_line(err) and "--weights" in err, err


def test_shards_write_best_results_beside_the_last_ones(project):
    from robustbench_mm.config import AttackConfig, CorruptConfig, DeformConfig

    checkpoints, attacks = project / "checkpoints", project / "attacks"
    configs = {"deform": DeformConfig(sets=("rotate-20",), n_examples=16, batch_size=8, device="cpu"),
               "corrupt": CorruptConfig(corruptions=("fog",), severities=(1,), n_examples=16, batch_size=8,
                                        device="cpu"),
               "attack": AttackConfig(n_examples=16, batch_size=8, protocols=("standard",), sweep=(0.0,),
                                      pgd_steps=2, bounded_pgd_steps=2, save_examples=0, autoattack=True,
                                      aa_budget="smoke", aa_paper_eps=False, device="cpu")}
    ranges = [(0, 8), (8, 16)]
    steps = {"deform": (deform_shard, deform_merge), "corrupt": (corrupt_shard, corrupt_merge),
             "attack": (autoattack_shard, autoattack_merge)}
    last = None
    for weights in ("last", "best"):
        for kind, (shard, merge) in steps.items():
            config = dataclasses.replace(configs[kind], checkpoint=weights)
            for example_range in ranges:
                shard(config, checkpoints, attacks, RUN, example_range)
            merge(config, checkpoints, attacks, RUN, ranges)
        if last is None:
            last = tree(attacks / RUN)
    both = tree(attacks / RUN)
    assert {name: digest for name, digest in both.items() if name in last} == last
    names = {"deform.json", "corruptions.json", "autoattack-8_255.json"}
    assert {n for n in last if "/" not in n} == names
    assert {n for n in both if n.startswith("best/")} == {f"best/{n}" for n in names}
    assert all(checkpoint_of(attacks / RUN / "best" / n) == "best" for n in names)
    assert not (attacks / RUN / ".shards").exists() and not (attacks / RUN / "best" / ".shards").exists()
