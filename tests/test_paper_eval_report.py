"""The report's Tables 1 and 2, the FGSM-vs-epoch curves (Table 5, right) and the reliability diagrams."""

from __future__ import annotations

import csv
import io
import json

import pytest
from test_reporting import assert_real_png, model_dict, table_by_header, write_model

from robustbench_mm.evaluation.calibrate import reliability_bins
from robustbench_mm.paper import SUPERVISED
from robustbench_mm.report.build import write_report
from robustbench_mm.report.epoch_curves import cost_share
from robustbench_mm.runs.meta import write_meta
from robustbench_mm.runs.results import result_path, write_result

CONDITIONS = ("clean", "rotate-60", "fgsm-standard eps=0.03")


def add_fgsm_history(checkpoints, run):
    """In-training FGSM on every epoch, as `training_fgsm` records it; each epoch took 1 s, FGSM 0.25 s."""
    meta = json.loads((checkpoints / run / "meta.json").read_text())
    for h in meta["history"]:
        h["fgsm"] = {"eps": 0.03, "n_examples": 200, "seconds": 0.25,
                     "accuracy": {"standard": 10.0 * h["epoch"], "paper": 30.0 + h["epoch"]}}
    meta["checkpoints"]["last"]["test_nll"] = meta["history"][-1]["test_nll"]
    del meta["checkpoints"]["best"]["test_nll"]  # a number the table must not make up
    write_meta(checkpoints / run, meta)
    return meta


def write_calibration(attacks, run, config):
    conditions = {name: {"accuracy": 90.0 - 20 * i, "nll": 0.3, "ece": 1.5 + i, "mean_confidence": 91.0,
                         "description": name, "reliability": reliability_bins([0.2, 0.9, 0.95], [False, True, True])}
                  for i, name in enumerate(CONDITIONS)}
    write_result(result_path(attacks, run, "calibration"), "calibration", model_dict(run, config),
                 {"seed": 0, "n_examples": 3, "checkpoint": "last", "bins": 15},
                 {"n_examples": 3, "bins": 15, "conditions": conditions})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A baseline with in-training FGSM and calibration, a manifold-mixup model with neither; no input mixup."""
    root = tmp_path_factory.mktemp("paper-eval")
    checkpoints, attacks, reports = root / "checkpoints", root / "attacks", root / "reports"
    baseline, config = write_model(checkpoints, "baseline", 0.0)
    meta = add_fgsm_history(checkpoints, baseline)
    write_calibration(attacks, baseline, config)
    manifold, _ = write_model(checkpoints, "manifold", 2.0)
    write_report(checkpoints, attacks, reports)
    return reports, meta, baseline, manifold


def rows_of(table):
    header, *rows = table
    return [dict(zip(header, row)) for row in rows]


def test_table1_gives_both_checkpoints_beside_the_paper_with_ece(report):
    reports, meta, baseline, manifold = report
    text = (reports / "table1.md").read_text()
    assert "**Sanity check only:**" in text  # digits against the paper's CIFAR-10
    rows = rows_of(table_by_header(text, "Model"))
    ours = [r for r in rows if r["Run"] == f"`{baseline}`"]
    assert [r["Checkpoint"] for r in ours] == [f"last (epoch {meta['epoch']})",
                                               f"best (epoch {meta['checkpoints']['best']['epoch']})"]
    last = ours[0]
    accuracy, nll = meta["history"][-1]["test_accuracy"], meta["history"][-1]["test_nll"]
    assert last["Test accuracy (%): ours"] == f"{accuracy:.2f}" and last["accuracy: paper"] == "94.88"
    assert last["accuracy: Δ"] == f"{accuracy - 94.88:+.2f}"
    assert last["Test NLL: ours"] == f"{nll:.4f}" and last["NLL: Δ"] == f"{nll - 0.2646:+.4f}"
    assert [last[f"ECE (%) {c}"] for c in CONDITIONS] == ["1.50", "2.50", "3.50"]
    assert ours[1]["ECE (%) clean"] == "– (measured on the last checkpoint)"
    assert ours[1]["Test NLL: ours"].startswith("missing")


def test_untrained_models_are_missing_never_a_number(report):
    reports, *_ = report
    rows = rows_of(table_by_header((reports / "table1.md").read_text(), "Model"))
    input_row = next(r for r in rows if r["Model"] == "Input mixup (α = 1)")
    assert input_row["Test accuracy (%): ours"] == "missing (no trained input-a1 model)"
    assert input_row["accuracy: paper"] == "96.498"
    zhang = next(r for r in rows if r["Model"].startswith("Input mixup (α = 1), Zhang"))
    assert zhang["Test accuracy (%): ours"] == "not run here" and zhang["accuracy: paper"] == "96.1"
    # No CIFAR-100 model was trained: every paper row of Table 2 is there, and every one of our cells is missing.
    table2 = (reports / "table2.md").read_text()
    for row in (r for r in SUPERVISED if r.table == "table2"):
        assert f"| {row.label}" in table2 and f"{row.accuracy:g}" in table2
    parsed = list(csv.DictReader(io.StringIO((reports / "table2.csv").read_text())))
    assert parsed and all(r["ours"] == "" and r["status"] in ("paper only", "missing: no cifar100 preactresnet18 "
                                                                  "model trained", "missing: no cifar100 "
                                                                  "preactresnet34 model trained") for r in parsed)
    measured = list(csv.DictReader(io.StringIO((reports / "table1.csv").read_text())))
    assert all((r["ours"] != "") == (r["status"] == "measured") for r in measured)


def test_table5_epoch_curve_csv_figure_and_index(report):
    reports, meta, baseline, manifold = report
    rows = list(csv.DictReader(io.StringIO((reports / "table5-epochs.csv").read_text())))
    assert {r["run"] for r in rows} == {baseline}  # the manifold model was trained without in-training FGSM
    standard = [(int(r["epoch"]), float(r["fgsm_accuracy"])) for r in rows if r["protocol"] == "standard"]
    assert standard == [(h["epoch"], 10.0 * h["epoch"]) for h in meta["history"]]
    assert {float(r["fgsm_share_of_epoch"]) for r in rows} == {0.25}
    index = (reports / "index.md").read_text()
    for name in ("fgsm-vs-epoch-digits.png", "reliability-digits.png"):
        assert_real_png(reports / name)
        assert f"]({name})" in index
    assert "25 % of a training epoch" in index
    for name in ("table1.md", "table2.md", "table5-epochs.csv"):
        assert f"]({name})" in index
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["fgsm_during_training"]["median_share_of_epoch"] == 0.25
    assert summary["supervised_tables"]["table1"]


def test_cost_share_counts_each_evaluation_once():
    rows = [{"run": "a", "epoch": 1, "fgsm_share_of_epoch": 0.1}, {"run": "a", "epoch": 1, "fgsm_share_of_epoch": 0.1},
            {"run": "a", "epoch": 2, "fgsm_share_of_epoch": 0.3}, {"run": "b", "epoch": 1, "fgsm_share_of_epoch": 0.2}]
    assert cost_share(rows) == pytest.approx(0.2)
    assert cost_share([]) is None
