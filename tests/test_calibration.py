"""Calibration: ECE against a hand-computed case, and `mm-robust calibrate` on tiny trained models."""

from __future__ import annotations

import json

import pytest

from robustbench_mm.cli import main
from robustbench_mm.config import CalibrationConfig
from robustbench_mm.data.deformations import plan_warp, set_matrices
from robustbench_mm.data.images import load_dataset
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation.calibrate import expected_calibration_error, reliability_bins, run_calibration
from robustbench_mm.evaluation.deform import evaluate_on
from robustbench_mm.models.metrics import evaluate
from robustbench_mm.runs.checkpoints import load_model
from robustbench_mm.runs.results import decode_mask, result_path

# Five predictions, 15 bins of width 1/15: 0.10 falls in bin 1, 0.48 and 0.52 in bin 7, 0.94 and 0.98 in bin 14.
CONFIDENCE = [0.10, 0.48, 0.52, 0.94, 0.98]
CORRECT = [False, True, False, True, True]


def test_ece_matches_a_hand_computed_case():
    # bin 1: accuracy 0, confidence 0.10 -> 1 * 0.10; bin 7: accuracy 0.5, confidence 0.5 -> 0;
    # bin 14: accuracy 1, confidence 0.96 -> 2 * 0.04. ECE = 0.18 / 5 = 3.6 %.
    assert expected_calibration_error(CONFIDENCE, CORRECT) == pytest.approx(3.6)
    # One bin: |accuracy 0.6 - mean confidence 0.604| = 0.4 %.
    assert expected_calibration_error(CONFIDENCE, CORRECT, n_bins=1) == pytest.approx(0.4)
    assert expected_calibration_error([0.7, 0.7], [True, False]) == pytest.approx(20.0)
    assert expected_calibration_error([1.0, 0.0], [True, False]) == 0.0  # the ends belong to the outer bins
    assert expected_calibration_error([], []) == 0.0


def test_reliability_bins_match_the_same_case():
    bins = reliability_bins(CONFIDENCE, CORRECT)
    assert len(bins["edges"]) == 16 and bins["edges"][0] == 0 and bins["edges"][-1] == 1
    assert [i for i, c in enumerate(bins["count"]) if c] == [1, 7, 14]
    assert [bins["count"][i] for i in (1, 7, 14)] == [1, 2, 2]
    assert [bins["accuracy"][i] for i in (1, 7, 14)] == pytest.approx([0.0, 50.0, 100.0])
    assert [bins["confidence"][i] for i in (1, 7, 14)] == pytest.approx([10.0, 50.0, 96.0])
    assert bins["accuracy"][0] is None and bins["confidence"][0] is None


def test_calibrate_writes_conditions_and_per_example_masks(tiny_runs, tmp_path):
    root = tiny_runs["baseline"].parent
    config = CalibrationConfig(n_examples=40, batch_size=16, device="cpu")
    paths = run_calibration(config, root, tmp_path, progress=False)
    result = json.loads(paths[0].read_text())
    assert result["evaluation"] == "calibration" and result["bins"] == 15 and result["n_examples"] == 40
    conditions = result["conditions"]
    assert list(conditions) == ["clean", "rotate-60", "fgsm-standard eps=0.03"]
    masks = result["per_example"]["correct"]
    assert result["per_example"]["example_range"] == [0, 40] and set(masks) == set(conditions)
    for name, condition in conditions.items():
        assert 100 * decode_mask(masks[name]).mean() == pytest.approx(condition["accuracy"])
        assert sum(condition["reliability"]["count"]) == 40 and 0 <= condition["ece"] <= 100
    # The clean and deformed numbers are the ones the other stages measure on the same images.
    loaded = load_model(root / paths[0].parent.name, "last")
    data = load_dataset("digits", train=False).subset(40)
    clean = evaluate(loaded.model, data, 16)
    assert conditions["clean"]["accuracy"] == pytest.approx(clean["accuracy"])
    assert conditions["clean"]["nll"] == pytest.approx(clean["nll"], rel=1e-5)
    _, maps = set_matrices("rotate-60", 40, 0)
    deformed, deformed_correct = evaluate_on(loaded.model, data, plan_warp(maps, 32), 16)
    assert conditions["rotate-60"]["accuracy"] == pytest.approx(deformed["accuracy"])
    assert (decode_mask(masks["rotate-60"]) == deformed_correct.numpy()).all()
    # A second run with the same settings keeps the file.
    before = paths[0].stat().st_mtime_ns
    run_calibration(config, root, tmp_path, progress=False)
    assert paths[0].stat().st_mtime_ns == before


@pytest.mark.parametrize("settings, message", [
    (dict(bins=0), "--bins must be > 0"),
    (dict(deform_set="rotate-45"), "unknown deformation set 'rotate-45'"),
    (dict(protocol="pgd"), "unknown protocol 'pgd'"),
    (dict(eps=2.0), "--eps must be finite"),
    (dict(checkpoint="first"), "unknown --weights 'first'"),
])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(UsageError, match=message):
        CalibrationConfig(**settings)


def test_calibrate_command_uses_the_last_weights_by_default(tiny_runs, tmp_path, capsys):
    root = tiny_runs["baseline"].parent
    code = main(["calibrate", "--checkpoints", str(root), "--checkpoint", tiny_runs["baseline"].name,
                 "--out", str(tmp_path), "--n-examples", "20", "--device", "cpu", "--quiet"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(result_path(tmp_path, tiny_runs["baseline"].name, "calibration").read_text())
    assert result["model"]["checkpoint"] == "last" and result["n_examples"] == 20
