"""Reports over several seeds: one column per model identity, mean ± std, per-seed CSV columns."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from robustbench_mm.paper import TABLE7
from robustbench_mm.report.build import write_report
from robustbench_mm.report.records import deform_set_label
from robustbench_mm.runs.results import result_path
from robustbench_mm.runs.seeds import seeded_run_name
from test_reporting import table_by_header, write_attacks, write_deform, write_model

SEEDS = (0, 1, 2)
MODELS = (("baseline", 0.0, "baseline"), ("manifold", 2.0, "manifold-a2"))


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """Three seeds of two models; seed 2 of manifold mixup has no deform.json. Report written once."""
    tmp_path = tmp_path_factory.mktemp("seeds")
    checkpoints, attacks, reports = tmp_path / "checkpoints", tmp_path / "attacks", tmp_path / "reports"
    runs = {}
    for method, alpha, key in MODELS:
        for seed in SEEDS:
            base = f"digits-preactresnet18-{key}"
            run, config = write_model(checkpoints, method, alpha, seed=seed, run_name=seeded_run_name(base, seed))
            runs.setdefault(key, []).append(run)
            write_attacks(attacks, run, config)
            if not (key == "manifold-a2" and seed == 2):
                write_deform(attacks, run, config)
    write_report(checkpoints, attacks, reports)
    return attacks, reports, runs


def stored(attacks, run, evaluation):
    return json.loads(result_path(attacks, run, evaluation).read_text())


def test_seeds_of_one_model_share_one_row_with_mean_and_std(seeded):
    attacks, reports, runs = seeded
    fgsm = table_by_header((reports / "table5.md").read_text(), "Model")
    header, rows = fgsm[0], fgsm[1:]
    measured = [row for row in rows if "paper only" not in row[0]]
    assert len(measured) == len(MODELS)  # one row per model identity, not one per seed
    column = header.index("FGSM standard: ours")
    for (_, _, key), row in zip(MODELS, measured):
        assert row[1] == f"`digits-preactresnet18-{key}-s{{0,1,2}}`"
        values = [stored(attacks, run, "fgsm-standard")["accuracy"][0] for run in runs[key]]
        assert row[column] == f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} (3 seeds)"
    assert "| seed | training 0, 1, 2, evaluation 0 |" in (reports / "table5.md").read_text()


def test_table7_columns_group_seeds_and_say_when_one_is_missing(seeded):
    attacks, reports, runs = seeded
    table7 = table_by_header((reports / "table7.md").read_text(), "Test set")
    assert table7[0] == ["Test set", "No mixup (baseline)", "Input mixup (α = 1)", "Input mixup (α = 2)",
                         "Manifold mixup (α = 2)"]
    for row in table7[1:]:
        set_name = next(s for s in TABLE7 if deform_set_label(s) == row[0])
        baseline = [stored(attacks, run, "deform")["sets"][set_name]["accuracy"] for run in runs["baseline"]]
        assert row[1].startswith(f"{np.mean(baseline):.2f} ± {np.std(baseline, ddof=1):.2f} (3 seeds) / ")
        manifold = [stored(attacks, run, "deform")["sets"][set_name]["accuracy"] for run in runs["manifold-a2"][:2]]
        assert row[4].startswith(f"{np.mean(manifold):.2f} ± {np.std(manifold, ddof=1):.2f} (2 seeds) "
                                 "(1 more seed missing) / ")


def test_csv_carries_per_seed_values_std_and_interval(seeded):
    attacks, reports, runs = seeded
    rows = list(csv.DictReader(io.StringIO((reports / "table7.csv").read_text())))
    assert len(rows) == 17 * 4  # two trained identities and two placeholder columns, 17 sets
    for row in (r for r in rows if r["model"] == "baseline"):
        values = [stored(attacks, run, "deform")["sets"][row["setting"]]["accuracy"] for run in runs["baseline"]]
        assert row["run"] == ";".join(runs["baseline"]) and row["n_seeds"] == "3"
        assert row["per_seed"] == ";".join(f"{seed}:{value:g}" for seed, value in zip(SEEDS, values))
        assert float(row["ours"]) == pytest.approx(np.mean(values))
        assert float(row["std"]) == pytest.approx(np.std(values, ddof=1), abs=1e-6)
        half = 4.302653 * np.std(values, ddof=1) / np.sqrt(3)  # Student t, 2 degrees of freedom
        assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx(
            (np.mean(values) - half, np.mean(values) + half), abs=1e-4)
        assert row["train_seed"] == "0;1;2"
    manifold = [r for r in rows if r["model"] == "manifold-a2"]
    assert all(r["n_seeds"] == "2" and r["status"].startswith("measured (1 of 3 seeds missing: no deform.json") for r in manifold)


def test_seeds_of_one_model_share_one_legend_entry():
    """With five seeds per model the PGD and training figures once had 40 legend entries and no room to plot."""
    from robustbench_mm.figures.plots import Series, legend_entries, pgd_figure
    from robustbench_mm.report.figures import pgd_legend_label

    assert legend_entries(["a", "b", "a", "c", "b"]) == [0, 1, 3]
    assert pgd_legend_label("No mixup", "standard", [0.5]) == "No mixup, standard: 0.5 % at the end"
    label = pgd_legend_label("Manifold mixup (α = 2)", "paper", [0.0, 1.0, 2.0])
    assert label == "Manifold mixup (α = 2), paper (3 seeds): mean 1.0 % at the end"
    series = [Series(label, "red", [0, 1], [90.0, final]) for final in (0.0, 1.0, 2.0)]
    figure = pgd_figure(series, 1.0, {}, "title")
    texts = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert texts == [label, "gradient-masking threshold (1 %)"]
    assert len(figure.axes[0].lines) == 4  # every seed is still drawn


def test_fgsm_sweep_has_one_legend_below_both_panels():
    """Inside a panel the legend covered curves and the ε marker; below the panels it covers nothing."""
    from robustbench_mm.figures.plots import Series, fgsm_sweep_figure

    panels = {protocol: [Series(name, color, [0.0, 0.03, 0.1], [98.0, 40.0, 1.0])
                         for name, color in (("No mixup", "gray"), ("Manifold mixup", "red"))]
              for protocol in ("standard", "paper")}
    figure = fgsm_sweep_figure(panels, {"Manifold mixup": ("red", 77.5)}, 0.03, "title")
    assert all(ax.get_legend() is None for ax in figure.axes)
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["No mixup", "Manifold mixup", "paper: Manifold mixup"]
