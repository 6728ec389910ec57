"""The report side of `mm-robust corrupt`: the corruptions table, its orderings and figures, and RobustBench's
model card and unaggregated_results.csv, on synthetic but well-formed corruptions.json files."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from robustbench_mm.data.corruptions import CORRUPTIONS, LABELS, SEVERITIES
from robustbench_mm.report.build import write_report
from robustbench_mm.report.corruption_orderings import compare_under_corruption
from robustbench_mm.report.publish import _safe_report_path
from robustbench_mm.report.records import ModelRuns, RunRecord, load_records
from robustbench_mm.report.robustbench_card import CARD_FIELDS, ROBUSTBENCH_CORRUPTIONS
from robustbench_mm.report.tables.corruptions import relative_corruption_error
from robustbench_mm.runs.results import encode_mask, result_path, write_result
from robustbench_mm.stats.significance import HOLDS, NOT_DISTINGUISHABLE
from test_reporting import model_dict, table_by_header, write_attacks, write_model

N = 32
DIFFERS = {"motion_blur": "ImageMagick vs imagecorruptions", "snow": "streaks as motion_blur",
           "impulse_noise": "skimage today vs 0.14"}


def masks_for(run: str, strength: float) -> dict[str, np.ndarray]:
    """Per set a mask of N images; `strength` in [0, 1] raises every set's accuracy."""
    rng = np.random.default_rng(sum(map(ord, run)))
    masks = {"clean": rng.random(N) < 0.9}
    for c_index, name in enumerate(CORRUPTIONS):
        for severity in SEVERITIES:
            masks[f"{name}-{severity}"] = rng.random(N) < (0.85 - 0.1 * severity - 0.01 * c_index + strength)
    return masks


def write_corruptions(attacks, run, config, strength=0.0, skip=()):
    masks = {k: v for k, v in masks_for(run, strength).items() if k not in skip}
    sets = {}
    for label, mask in masks.items():
        if label == "clean":
            continue
        name, severity = label.rsplit("-", 1)
        sets[label] = {"corruption": name, "severity": int(severity), "label": f"{LABELS[name]} {severity}",
                       "accuracy": 100 * float(mask.mean()), "nll": 1.0, "ece": 5.0 + int(severity),
                       "parameters": 0.1, "seconds": 0.1, "generate_seconds": 0.1}
    complete = len(sets) == 75
    mean = sum(e["accuracy"] for e in sets.values()) / 75 if complete else None
    per = {}
    for name in CORRUPTIONS:
        entries = [e for e in sets.values() if e["corruption"] == name]
        if entries:
            per[name] = {"accuracy": sum(e["accuracy"] for e in entries) / len(entries),
                         "ece": sum(e["ece"] for e in entries) / len(entries),
                         "severities": [e["severity"] for e in entries]}
    summary = {"complete": complete, "corruptions_acc": None if mean is None else mean / 100,
               "corruptions_accuracy": mean,
               "corruptions_ece": sum(e["ece"] for e in sets.values()) / 75 if complete else None,
               "per_corruption": per}
    write_result(result_path(attacks, run, "corruptions"), "corruptions", model_dict(run, config),
                 {"source": "generated", "seed": 0, "n_examples": N, "checkpoint": "last"},
                 {"source": "generated", "reference": "make_cifar_c.py", "differs_from_reference": DIFFERS,
                  "arithmetic_note": "float32", "n_examples": N, "seed": 0, "units": {},
                  "clean": {"accuracy": 100 * float(masks["clean"].mean()), "nll": 0.3, "ece": 2.0, "seconds": 0.1},
                  "sets": sets, "summary": summary,
                  "per_example": {"example_range": [0, N],
                                  "correct": {k: encode_mask(v) for k, v in masks.items()}}})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Baseline and manifold mixup with every result file and corruptions.json; the report written once."""
    tmp = tmp_path_factory.mktemp("corruptions")
    checkpoints, attacks, reports = tmp / "checkpoints", tmp / "attacks", tmp / "reports"
    runs = {}
    for method, alpha, strength in (("baseline", None, 0.0), ("manifold", 2.0, 0.12)):
        run, config = write_model(checkpoints, method, alpha if alpha else 1.0)
        write_attacks(attacks, run, config)
        write_corruptions(attacks, run, config, strength)
        runs[method] = run
    image = (np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(attacks / "corrupt-samples-digits.png")
    write_report(checkpoints, attacks, reports)
    return attacks, reports, runs


def stored(attacks, run):
    return json.loads(result_path(attacks, run, "corruptions").read_text())


def test_table_cells_equal_the_result_files(report):
    attacks, reports, runs = report
    text = (reports / "corruptions.md").read_text()
    summary = table_by_header(text, "Model")
    header = summary[0]
    rows = {row[1].strip("`"): row for row in summary[1:]}
    for run in runs.values():
        result, row = stored(attacks, run), rows[run]
        assert row[header.index("Clean")].startswith(f"{result['clean']['accuracy']:.2f} [")
        mean = next(c for c in header if c.startswith("Mean over the 15"))
        assert row[header.index(mean)] == f"{result['summary']['corruptions_accuracy']:.2f}"
        ece = next(c for c in header if c.startswith("ECE"))
        assert row[header.index(ece)] == f"{result['summary']['corruptions_ece']:.2f}"
    assert rows[runs["baseline"]][-1] == "100.00"  # the baseline against itself
    assert any(r[0].startswith("RobustBench reference: AugMix, WideResNet-40-2") and r[3] == "88.82"
               for r in summary[1:])
    per = [t for t in re.split(r"\n\n", text) if t.startswith("| Model | Gaussian noise")]
    per_rows = [line.split(" | ") for line in per[0].splitlines()[2:]]
    for row in per_rows:
        run = runs["baseline"] if row[0].strip("| ").startswith("No mixup") else runs["manifold"]
        for name, cell in zip(CORRUPTIONS, row[1:]):
            assert float(cell.strip(" |")) == round(stored(attacks, run)["summary"]["per_corruption"][name]["accuracy"],
                                                   2)
    for fact in ("corrupted images", "severities", "corruptions that differ from the reference", "seed"):
        assert f"| {fact} |" in text
    assert "impulse_noise, motion_blur, snow" in text or "motion_blur, snow, impulse_noise" in text
    assert "relative to our baseline; the AlexNet normalisation is ImageNet-only" in text
    assert "sanity checks of the scale only" in text  # digits is not CIFAR-10
    cells = [c for c in csv.DictReader(io.StringIO((reports / "corruptions.csv").read_text()))
             if c["setting"] == "corruptions_acc" and c["run"]]
    assert {c["run"]: float(c["ours"]) for c in cells} == {
        run: stored(attacks, run)["summary"]["corruptions_accuracy"] for run in runs.values()}
    group = json.loads((reports / "summary.json").read_text())["groups"][0]
    assert any(c["setting"] == "relative_ce" for c in group["cells"]["corruptions"])
    assert "corruptions" in group["facts"]
    index = (reports / "index.md").read_text()
    for name in ("corruptions-heatmap-digits.png", "corruptions-severity-digits.png", "corrupt-samples-digits.png",
                 "corruptions.md"):
        assert name in index and (reports / name).is_file()


def test_relative_corruption_error_by_hand_on_two_corruptions():
    model = {("fog", 1): 0.9, ("fog", 2): 0.7, ("snow", 1): 0.8, ("snow", 2): 0.4}
    baseline = {("fog", 1): 0.8, ("fog", 2): 0.6, ("snow", 1): 0.6, ("snow", 2): 0.4}
    # fog: (0.1 + 0.3) / (0.2 + 0.4) = 2/3; snow: (0.2 + 0.6) / (0.4 + 0.6) = 0.8; mean = 0.7333...
    assert relative_corruption_error(model, baseline, ("fog", "snow"), (1, 2)) == pytest.approx((2 / 3 + 0.8) / 2)
    assert relative_corruption_error(baseline, baseline, ("fog", "snow"), (1, 2)) == pytest.approx(1.0)
    assert relative_corruption_error(model, {k: v for k, v in baseline.items() if k != ("snow", 2)},
                                     ("fog", "snow"), (1, 2)) is None


def test_model_card_fields_and_types_are_robustbenchs(report):
    attacks, reports, runs = report
    for run in runs.values():
        for threat, field in (("Linf", "autoattack_acc"), ("corruptions", "corruptions_acc")):
            path = reports / "model_info" / "digits" / threat / f"{run}.json"
            card = json.loads(path.read_text())
            assert tuple(card) == CARD_FIELDS  # every ModelInfo field, in its order, as dataclasses.asdict gives
            assert isinstance(card["additional_data"], bool) and card["additional_data"] is False
            assert type(card["number_forward_passes"]) is int
            assert card["dataset"] == "digits" and isinstance(card["architecture"], str)
            for key in ("clean_acc", field):
                assert isinstance(card[key], str) and card[key] == str(round(float(card[key]), 2))
            assert card["reported"] is None and card["corruptions_mce"] is None
            assert path.read_text() == json.dumps(card, indent=2)  # update_json's formatting
        linf = json.loads((reports / "model_info" / "digits" / "Linf" / f"{run}.json").read_text())
        assert linf["eps"] == "8/255" and linf["corruptions_acc"] is None
        corr = json.loads((reports / "model_info" / "digits" / "corruptions" / f"{run}.json").read_text())
        result = stored(attacks, run)
        assert corr["eps"] is None and corr["autoattack_acc"] is None
        assert corr["corruptions_acc"] == str(round(result["summary"]["corruptions_accuracy"], 2))
        assert corr["clean_acc"] == str(round(result["clean"]["accuracy"], 2))
    assert (reports / "model_info" / f"{runs['baseline']}.json").is_file()  # the older card stays


def test_unaggregated_results_csv_has_robustbenchs_two_header_rows(report):
    attacks, reports, runs = report
    text = (reports / "model_info" / "digits" / "corruptions" / "unaggregated_results.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["", *(c for c in ROBUSTBENCH_CORRUPTIONS for _ in SEVERITIES)]
    assert rows[1] == ["", *(str(s) for _ in ROBUSTBENCH_CORRUPTIONS for s in SEVERITIES)]
    assert sorted(ROBUSTBENCH_CORRUPTIONS) == sorted(CORRUPTIONS) and rows[0][1] == "shot_noise"
    assert {row[0] for row in rows[2:]} == set(runs.values())
    for row in rows[2:]:
        result = stored(attacks, row[0])
        for (name, severity), value in zip(zip(rows[0][1:], rows[1][1:]), row[1:]):
            assert float(value) == pytest.approx(result["sets"][f"{name}-{severity}"]["accuracy"] / 100, abs=1e-9)
            assert 0 <= float(value) <= 1
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(io.StringIO(text), header=[0, 1], index_col=0)
    assert frame.shape == (2, 75) and frame.loc[runs["baseline"]].mean() == pytest.approx(
        stored(attacks, runs["baseline"])["summary"]["corruptions_acc"])


def _runs(name, key, method, masks_list):
    runs = []
    for seed, masks in enumerate(masks_list):
        sets = {label: {"accuracy": 100 * float(m.mean())} for label, m in masks.items()}
        result = {"summary": {"corruptions_accuracy": sum(s["accuracy"] for s in sets.values()) / len(sets)},
                  "sets": sets, "per_example": {"example_range": [0, 200],
                                                "correct": {k: encode_mask(v) for k, v in masks.items()}}}
        runs.append(RunRecord(f"{name}-s{seed}", {"key": key, "method": method}, None, {"corruptions": result}))
    for run, seed in zip(runs, range(len(runs))):
        run.meta = {"config": {"seed": seed}}
    return ModelRuns(name, runs)


def test_orderings_paired_test_on_synthetic_masks():
    rng = np.random.default_rng(0)
    labels = ("fog-1", "snow-1", "fog-2")
    base = {label: rng.random(200) < 0.5 for label in labels}
    better = {label: base[label] | (rng.random(200) < 0.3) for label in labels}  # right wherever the baseline is
    result = compare_under_corruption(_runs("mix", "manifold-a2", "manifold", [better]),
                                      _runs("base", "baseline", "baseline", [base]), labels)
    expected = 100 * (np.mean([better[k] for k in labels]) - np.mean([base[k] for k in labels]))
    assert result.paired and result.n_examples == 200 and result.difference == pytest.approx(expected)
    assert result.verdict == HOLDS and result.interval[0] > 0
    same = compare_under_corruption(_runs("mix", "manifold-a2", "manifold", [base]),
                                    _runs("base", "baseline", "baseline", [base]), labels)
    assert same.verdict == NOT_DISTINGUISHABLE and same.difference == 0
    # Two seeds: paired by seed, the bootstrap resamples seeds and images.
    two = compare_under_corruption(_runs("mix", "manifold-a2", "manifold", [better, better]),
                                   _runs("base", "baseline", "baseline", [base, base]), labels)
    assert len(two.differences) == 2 and two.verdict == HOLDS and "2 seeds × 200 test images" in two.evidence


def test_orderings_table_gains_the_corruption_block(report):
    _, reports, _ = report
    orderings = (reports / "orderings.md").read_text()
    assert "Common corruptions (mean over the 15 × 5 sets): each mixup model against the baseline" in orderings
    short = next(line for line in orderings.splitlines() if line.startswith("> **In short:**"))
    assert "; Common corruptions: " in short
    rows = [r for r in csv.DictReader(io.StringIO((reports / "orderings.csv").read_text()))
            if r["evaluation"] == "corruptions"]
    assert len(rows) == 1 and rows[0]["better"] == "manifold-a2" and rows[0]["worse"] == "baseline"
    assert rows[0]["verdict"] in (HOLDS, NOT_DISTINGUISHABLE) and rows[0]["paired"] == "True"


def test_stale_and_malformed_corruption_results_are_refused(report, tmp_path):
    attacks, _, runs = report
    checkpoints = attacks.parent / "checkpoints"
    records, problems = load_records(checkpoints, attacks)
    assert all("corruptions" in r.results for r in records) and not problems
    copy = tmp_path / "attacks"
    import shutil
    shutil.copytree(attacks, copy)
    path = result_path(copy, runs["baseline"], "corruptions")
    result = json.loads(path.read_text())
    result["model"]["weights_sha256"] = "0" * 64
    path.write_text(json.dumps(result))
    result2 = json.loads(result_path(copy, runs["manifold"], "corruptions").read_text())
    result2["sets"]["fog-1"]["accuracy"] = 140.0
    result_path(copy, runs["manifold"], "corruptions").write_text(json.dumps(result2))
    records, problems = load_records(checkpoints, copy)
    # The stand-in weights file is no safetensors file, so the report calls it corrupted rather than other weights.
    assert any("corruptions.json not used:" in p and "corrupt" in p.split("not used:")[1] for p in problems)
    assert any("has malformed sets" in p for p in problems)
    assert not any("corruptions" in r.results for r in records)


def test_publish_allows_robustbenchs_layout_and_nothing_deeper():
    assert _safe_report_path("model_info/cifar10/Linf/run.json")
    assert _safe_report_path("model_info/cifar10/corruptions/unaggregated_results.csv")
    assert not _safe_report_path("model_info/cifar10/other/run.json")
    assert not _safe_report_path("model_info/../Linf/run.json")
    assert not _safe_report_path("model_info/cifar10/Linf/x/run.json")
    assert not _safe_report_path("other/cifar10/Linf/run.json")


def test_robustbench_folders_are_refused_when_linked_and_removed_when_emptied(report, tmp_path, monkeypatch):
    import shutil

    from robustbench_mm.errors import UsageError

    monkeypatch.setattr("robustbench_mm.report.figures.draw_group", lambda group, staging, attacks_root: {})
    attacks = report[0]
    work = tmp_path / "work"
    shutil.copytree(attacks.parent / "checkpoints", work / "checkpoints")
    shutil.copytree(attacks, work / "attacks")
    reports = work / "reports"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (reports / "model_info").mkdir(parents=True)
    (reports / "model_info" / "digits").symlink_to(elsewhere)  # a link: the report must not write through it
    with pytest.raises(UsageError, match=r"did not write \(model_info/digits\)"):
        write_report(work / "checkpoints", work / "attacks", reports)
    assert not any(elsewhere.iterdir())
    (reports / "model_info" / "digits").unlink()
    write_report(work / "checkpoints", work / "attacks", reports)
    assert (reports / "model_info" / "digits" / "corruptions" / "unaggregated_results.csv").is_file()
    for path in [*(work / "attacks").glob("*/autoattack-*.json"), *(work / "attacks").glob("*/corruptions.json")]:
        path.unlink()
    write_report(work / "checkpoints", work / "attacks", reports)
    assert not (reports / "model_info").exists()  # every card gone, and the folders the report made with them
