"""'Do the paper's orderings hold?': per-example masks from result files, paired tests, verdicts, forest plot."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from robustbench_mm.report.figures import orderings_forest
from robustbench_mm.paper import TABLE7, ordering_claims
from robustbench_mm.report.build import write_report
from robustbench_mm.report.orderings import UNTESTED, compare_group
from robustbench_mm.report.records import group_records, load_records
from robustbench_mm.runs.results import encode_mask, result_path, write_result
from robustbench_mm.runs.seeds import seeded_run_name
from test_reporting import assert_real_png, model_dict, parse_markdown_tables, write_model

N = 20
# Manifold right and baseline wrong on 10 examples, the reverse on 2, both right on 5, both wrong on 3:
# exact McNemar p = 2 * P(X <= 2 | X ~ Binomial(12, 1/2)) = 158 / 4096.
MANIFOLD = np.array([True] * 10 + [False] * 2 + [True] * 5 + [False] * 3)
BASELINE = np.array([False] * 10 + [True] * 2 + [True] * 5 + [False] * 3)
P_VALUE = 158 / 4096


def write_fgsm(attacks, run, config, protocol, correct, with_masks=True):
    accuracy = 100 * correct.mean()
    payload = {"protocol": protocol, "protocol_description": protocol, "n_examples": correct.size,
               "clean": {"accuracy": 100.0, "nll": 0.1}, "eps": [0.03], "accuracy": [accuracy],
               "sweep": {"eps": [0.0, 0.03], "accuracy": [100.0, accuracy]}}
    if with_masks:
        payload["per_example"] = {"example_range": [0, correct.size],
                                  "correct": {"clean": encode_mask(np.ones(correct.size, bool)),
                                              "eps=0.03": encode_mask(correct)}}
    write_result(result_path(attacks, run, f"fgsm-{protocol}"), f"fgsm-{protocol}", model_dict(run, config),
                 {"seed": 0, "n_examples": correct.size}, payload)


def write_deform_masks(attacks, run, config, correct):
    """Every deformation set with the same mask, shifted so the report must read each set's own mask."""
    masks = {name: np.roll(correct, i) for i, name in enumerate(TABLE7)}
    write_result(result_path(attacks, run, "deform"), "deform", model_dict(run, config),
                 {"seed": 0, "n_examples": correct.size}, {
                     "interpolation": "bilinear", "n_examples": correct.size, "clean": {"accuracy": 100.0, "nll": 0.1},
                     "sets": {name: {"accuracy": 100 * m.mean(), "nll": 1.0} for name, m in masks.items()},
                     "per_example": {"example_range": [0, correct.size],
                                     "correct": {name: encode_mask(m) for name, m in masks.items()}}})


def orderings_rows(reports, caption_start):
    """The rows of the orderings.md block whose caption starts with `caption_start`, keyed by ordering."""
    text = (reports / "orderings.md").read_text()
    block = text.split(f"**{caption_start}")[1]
    table = parse_markdown_tables(block)[0]
    return {row[0]: dict(zip(table[0], row)) for row in table[1:]}


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    """Baseline and manifold mixup, one seed: standard FGSM in the paper's order, paper FGSM reversed."""
    tmp = tmp_path_factory.mktemp("orderings")
    checkpoints, attacks, reports = tmp / "c", tmp / "a", tmp / "r"
    runs = {}
    for method, alpha, mask in (("baseline", 0.0, BASELINE), ("manifold", 2.0, MANIFOLD)):
        run, config = write_model(checkpoints, method, alpha)
        runs[method] = (run, config)
        write_fgsm(attacks, run, config, "standard", mask)
        write_fgsm(attacks, run, config, "paper", BASELINE if method == "manifold" else MANIFOLD)
        write_deform_masks(attacks, run, config, mask)
    write_report(checkpoints, attacks, reports)
    return checkpoints, attacks, reports, runs


def test_one_seed_orderings_use_mcnemar_on_the_stored_masks(one_seed):
    _, _, reports, _ = one_seed
    key = "Manifold mixup (α = 2) ahead of No mixup (baseline)"
    standard = orderings_rows(reports, "FGSM ε = 0.03, standard protocol")[key]
    assert standard["Verdict"] == "**holds**"
    assert standard["Ours: A vs B"] == f"{100 * MANIFOLD.mean():.2f} vs {100 * BASELINE.mean():.2f}"
    assert "10 right only for A, 2 only for B" in standard["Evidence"]
    assert f"p = {P_VALUE:.2g}" in standard["Evidence"]
    assert standard["Paper: A vs B"] == "77.50 vs 36.32"
    paper = orderings_rows(reports, "FGSM ε = 0.03, paper protocol")[key]
    assert paper["Verdict"] == "**reversed**"
    rows = list(csv.DictReader(io.StringIO((reports / "orderings.csv").read_text())))
    fgsm = [r for r in rows if r["protocol"] == "standard"]
    assert len(fgsm) == 1  # the only Table 5 ordering both trained models take part in
    assert float(fgsm[0]["p_value"]) == pytest.approx(P_VALUE, abs=1e-6)
    assert float(fgsm[0]["difference"]) == pytest.approx(100 * (MANIFOLD.mean() - BASELINE.mean()))
    # One Table 7 comparison per set (manifold against the baseline), each on that set's own stored mask.
    deform = [r for r in rows if r["protocol"] == ""]
    assert len(deform) == len(TABLE7)
    for row in deform:
        claimed_manifold_better = row["better"] == "manifold-a2"
        assert row["paired"] == "True" and row["n_examples"] == str(N)
        assert row["verdict"] == ("holds" if claimed_manifold_better else "reversed")
    index = (reports / "index.md").read_text()
    assert "Do the paper's orderings hold?" in index and "](orderings.md)" in index
    assert_real_png(reports / "orderings-digits.png")


def test_the_report_rereads_the_masks_not_the_accuracies(one_seed, tmp_path):
    """Swapping the two models' stored masks (accuracies untouched) must flip the verdict."""
    checkpoints, attacks, _, runs = one_seed
    for (run, config), mask in zip((runs["baseline"], runs["manifold"]), (MANIFOLD, BASELINE)):
        path = result_path(attacks, run, "fgsm-standard")
        stored = json.loads(path.read_text())
        stored["per_example"]["correct"]["eps=0.03"] = encode_mask(mask)
        copy = result_path(tmp_path / "a", run, "fgsm-standard")
        copy.parent.mkdir(parents=True)
        copy.write_text(json.dumps(stored))
    write_report(checkpoints, tmp_path / "a", tmp_path / "r")
    row = orderings_rows(tmp_path / "r", "FGSM ε = 0.03, standard protocol")[
        "Manifold mixup (α = 2) ahead of No mixup (baseline)"]
    assert row["Verdict"] == "**reversed**"


def test_without_masks_one_seed_says_it_cannot_test(tmp_path):
    checkpoints, attacks, reports = tmp_path / "c", tmp_path / "a", tmp_path / "r"
    for method, alpha, mask in (("baseline", 0.0, BASELINE), ("manifold", 2.0, MANIFOLD)):
        run, config = write_model(checkpoints, method, alpha)
        write_fgsm(attacks, run, config, "standard", mask, with_masks=False)
    write_report(checkpoints, attacks, reports)
    row = orderings_rows(reports, "FGSM ε = 0.03, standard protocol")[
        "Manifold mixup (α = 2) ahead of No mixup (baseline)"]
    assert row["Verdict"] == "**not tested (no per-example results)**"


def test_several_seeds_pair_seeds_and_examples(tmp_path):
    """Three seeds: seed 0 as above, seeds 1 and 2 with the roles of the disagreeing examples kept."""
    checkpoints, attacks, reports = tmp_path / "c", tmp_path / "a", tmp_path / "r"
    for method, alpha, mask in (("baseline", 0.0, BASELINE), ("manifold", 2.0, MANIFOLD)):
        for seed in (0, 1, 2):
            key = "baseline" if method == "baseline" else "manifold-a2"
            run, config = write_model(checkpoints, method, alpha, seed=seed,
                                      run_name=seeded_run_name(f"digits-preactresnet18-{key}", seed))
            write_fgsm(attacks, run, config, "standard", np.roll(mask, seed))
            # paper protocol: the ordering flips sign from seed to seed
            write_fgsm(attacks, run, config, "paper", np.roll(mask if seed != 1 else ~mask, seed))
    write_report(checkpoints, attacks, reports)
    key = "Manifold mixup (α = 2) ahead of No mixup (baseline)"
    standard = orderings_rows(reports, "FGSM ε = 0.03, standard protocol")[key]
    assert standard["Verdict"] == "**holds**"
    assert "paired bootstrap over 3 seeds × 20 examples" in standard["Evidence"]
    assert "with the paper in 3, against it in 0 of 3" in standard["Evidence"]
    assert standard["Ours: A vs B"] == f"{100 * MANIFOLD.mean():.2f} vs {100 * BASELINE.mean():.2f} (3 seeds)"
    paper = orderings_rows(reports, "FGSM ε = 0.03, paper protocol")[key]
    assert paper["Verdict"] == "**not distinguishable at this sample size**"


def test_claims_come_from_the_papers_tables():
    claims = ordering_claims("cifar10")
    fgsm = [(c.better, c.worse) for c in claims if c.evaluation == "fgsm"]
    assert fgsm[:3] == [("manifold-a2", "input-a1"), ("manifold-a2", "baseline"), ("input-a1", "baseline")]
    # Table 5's controls (80.97 thermometer, 60.30 adversarial training) ranked against every other row
    assert fgsm[3:] == [("thermometer", "manifold-a2"), ("thermometer", "input-a1"), ("thermometer", "adversarial"),
                        ("thermometer", "baseline"), ("manifold-a2", "adversarial"), ("input-a1", "adversarial"),
                        ("adversarial", "baseline")]
    assert all("Madry" in c.source for c in claims if "adversarial" in (c.better, c.worse))
    assert [(c.better, c.worse) for c in ordering_claims("cifar100") if c.evaluation == "fgsm"] == [
        ("manifold-a2", "input-a1")]
    zoom = [c for c in claims if c.label == "zoom-in-20"]  # the paper's manifold mixup is not best there
    assert {(c.better, c.worse) for c in zoom} == {("baseline", "manifold-a2"), ("input-a2", "manifold-a2"),
                                                   ("manifold-a2", "input-a1")}
    assert all(c.paper_better > c.paper_worse for c in claims)
    assert sum(c.evaluation == "deform" for c in claims) == 3 * len(TABLE7)


def test_deformation_orderings_read_the_deform_result_they_are_given(one_seed):
    checkpoints, attacks, _, _ = one_seed
    (group,) = group_records(load_records(checkpoints, attacks)[0])
    ours = [c for c in compare_group(group.models, "digits", "deform") if c.protocol is None]
    authors = [c for c in compare_group(group.models, "digits", "deform-authors") if c.protocol is None]
    assert all(c.paired and c.evaluation == "deform" for c in ours)
    assert all(c.verdict == UNTESTED and c.evaluation == "deform-authors" for c in authors)  # no such files here


def test_forest_title_counts_the_seeds_with_results_not_the_run_folders(tmp_path):
    """Five seeds trained, one attacked: the plot rests on one seed and its title must say so (issue 13)."""
    checkpoints, attacks = tmp_path / "c", tmp_path / "a"
    for method, alpha, mask in (("baseline", 0.0, BASELINE), ("manifold", 2.0, MANIFOLD)):
        key = "baseline" if method == "baseline" else "manifold-a2"
        for seed in range(5):
            run, config = write_model(checkpoints, method, alpha, seed=seed,
                                      run_name=seeded_run_name(f"digits-preactresnet18-{key}", seed))
            if seed == 0:
                write_fgsm(attacks, run, config, "standard", mask)
            if seed < 3:
                write_deform_masks(attacks, run, config, mask)
    (group,) = group_records(load_records(checkpoints, attacks)[0])
    rows, title = orderings_forest(group)
    assert "5 seeds" not in title
    assert "1 to 3 seeds of each model, by comparison" in title  # FGSM rests on seed 0, deformations on seeds 0-2
    fgsm = [r for r in rows if r.section.startswith("FGSM")]
    assert [r.label for r in fgsm] == ["manifold-a2 > baseline [1]"]
    assert all(r.label.endswith(" [3]") for r in rows if not r.section.startswith("FGSM"))
    # Only the FGSM results: every comparison rests on the one attacked seed.
    for path in attacks.glob("*/deform.json"):
        path.unlink()
    (group,) = group_records(load_records(checkpoints, attacks)[0])
    rows, title = orderings_forest(group)
    assert "(95 % intervals; 1 seed of each model)" in title and [r.label for r in rows] == ["manifold-a2 > baseline"]


def test_seeds_pair_by_seed_number_not_by_position():
    """A model missing seed 0's result once had its seed 1 paired with the other model's seed 0."""
    from robustbench_mm.report.orderings import paired_seeds

    better = [(1, "b1"), (2, "b2")]
    worse = [(0, "w0"), (1, "w1"), (2, "w2")]
    assert paired_seeds(better, worse) == [("b1", "w1"), ("b2", "w2")]
    # Two single runs trained with different seeds share no seed number: they still pair.
    assert paired_seeds([(3, "b3")], [(0, "w0")]) == [("b3", "w0")]
    assert paired_seeds([(None, "b")], [(None, "w")]) == [("b", "w")]


def write_autoattack(attacks, run, config, correct, budget="smoke"):
    """An AutoAttack result at 8/255 with its per-example masks (clean: all right; final: `correct`)."""
    accuracy = 100 * correct.mean()
    stages = [{"stage": s, "label": s, "robust_accuracy": accuracy, "seconds": 1.0, "example_steps": 1}
              for s in ("apgd-ce", "apgd-t", "fab-t", "square")]
    write_result(result_path(attacks, run, "autoattack-8_255"), "autoattack-8_255", model_dict(run, config),
                 {"seed": 0, "n_examples": correct.size}, {
                     "eps": 8 / 255, "eps_text": "8/255", "norm": "Linf", "budget": budget, "n_examples": correct.size,
                     "clean": {"accuracy": 100.0}, "stages": stages, "robust_accuracy": accuracy,
                     "per_example": {"example_range": [0, correct.size],
                                     "correct": {"clean": encode_mask(np.ones(correct.size, bool)),
                                                 "final": encode_mask(correct)}}})


def test_adversarial_training_ahead_of_each_mixup_model_under_autoattack_is_tested_on_the_masks(tmp_path):
    """The positive control: adversarial training (MANIFOLD's mask: 10 right where manifold mixup, given BASELINE's
    mask, is wrong, 2 the other way) holds with exact McNemar p = 158/4096; input mixup with the same mask as
    adversarial training disagrees nowhere, so that ordering cannot be told apart from noise. No baseline row:
    the control is against the mixup models only."""
    checkpoints, attacks, reports = tmp_path / "c", tmp_path / "a", tmp_path / "r"
    for method, alpha, mask in (("adversarial", 0.0, MANIFOLD), ("manifold", 2.0, BASELINE),
                                ("input", 1.0, MANIFOLD), ("baseline", 0.0, BASELINE)):
        run, config = write_model(checkpoints, method, alpha)
        write_autoattack(attacks, run, config, mask)
    write_report(checkpoints, attacks, reports)
    rows = orderings_rows(reports, "AutoAttack ε = 8/255 (smoke budget)")
    assert set(rows) == {"Adv. training (Madry et al.) ahead of Manifold mixup (α = 2)",
                         "Adv. training (Madry et al.) ahead of Input mixup (α = 1)"}
    manifold = rows["Adv. training (Madry et al.) ahead of Manifold mixup (α = 2)"]
    assert manifold["Verdict"] == "**holds**" and manifold["Paper: A vs B"] == "–"
    assert "10 right only for A, 2 only for B" in manifold["Evidence"] and f"p = {P_VALUE:.2g}" in manifold["Evidence"]
    assert manifold["Source"].startswith("positive control (issue 23), not the paper's ordering")
    assert rows["Adv. training (Madry et al.) ahead of Input mixup (α = 1)"]["Verdict"] == (
        "**not distinguishable at this sample size**")
    csv_rows = [r for r in csv.DictReader(io.StringIO((reports / "orderings.csv").read_text()))
                if r["evaluation"] == "autoattack-8_255"]
    assert len(csv_rows) == 2 and {r["better"] for r in csv_rows} == {"adversarial"}
    manifold_csv = next(r for r in csv_rows if r["worse"] == "manifold-a2")
    assert float(manifold_csv["difference"]) == pytest.approx(40.0)  # (10 - 2) / 20 examples
    assert "positive control" in (reports / "orderings.md").read_text().split("**FGSM")[0]  # the note says where from
