"""`--seeds`: one run folder per seed, named <run name>-s<seed>; bad seed lists are refused before any work."""

from __future__ import annotations

import json

import pytest

from robustbench_mm.cli import main
from robustbench_mm.pipeline import plan_for_preset

TINY_CLI = ["--preset", "smoke", "--epochs", "1", "--n-train", "64", "--n-test", "32", "--width", "4",
            "--batch-size", "32", "--device", "cpu", "--quiet"]


def test_train_seeds_makes_one_folder_per_seed_with_that_seed(tmp_path):
    code = main(["train", "--method", "baseline", "--seeds", "3,5", "--out", str(tmp_path), *TINY_CLI])
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["digits-preactresnet18-baseline-s3", "digits-preactresnet18-baseline-s5"]
    for name, seed in zip(names, (3, 5)):
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        assert meta["config"]["seed"] == seed and meta["config"]["run_name"] == name
    # Different seeds really train different models.
    first, second = ((tmp_path / n / "last.safetensors").read_bytes() for n in names)
    assert first != second


def test_reproduce_plan_trains_every_table_model_per_seed():
    plan = plan_for_preset("smoke", seeds=(0, 1))
    assert [(c.run_name, c.seed) for c in plan.train][:3] == [
        ("digits-preactresnet18-baseline-s0", 0), ("digits-preactresnet18-baseline-s1", 1),
        ("digits-preactresnet18-input-a1-s0", 0)]
    assert len(plan.train) == 12  # six models (four table models, two Table 5 controls), two seeds each
    assert [c.run_name for c in plan_for_preset("smoke").train][0] == "digits-preactresnet18-baseline"


@pytest.mark.parametrize("args, message", [
    (["train", "--method", "baseline", "--seeds", "0,1", "--seed", "2"], "give --seed or --seeds, not both"),
    (["train", "--method", "baseline", "--seeds", "0,0"], "--seeds lists seed 0 twice"),
    (["train", "--method", "baseline", "--seeds", "1,-2"], "--seeds must be whole numbers >= 0, got -2"),
    (["train", "--method", "baseline", "--seeds", ","], "--seeds needs at least one seed"),
    (["reproduce", "--seeds", "0,0"], "--seeds lists seed 0 twice"),
])
def test_bad_seed_lists_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "ck"
    folder = ["--out", str(out)] if args[0] == "train" else ["--checkpoints", str(out)]
    code = main([*args, *folder, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()
