"""`mm-robust report` on synthetic but well-formed result files: tables, summary, index, plots."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from robustbench_mm.attacks import STAGE_LABELS
from robustbench_mm.cli import main
from robustbench_mm.config import TABLE_MODELS, train_config_for_preset
from robustbench_mm.paper import TABLE3_SETS, TABLE5, TABLE7, model_key, paper_table7
from robustbench_mm.report.build import build_report, write_report
from robustbench_mm.report.records import RunRecord, deform_set_label, group_records, load_records
from robustbench_mm.report.sections import CSV_COLUMNS, comparison_cell
from robustbench_mm.runs.meta import META_FORMAT, write_meta
from robustbench_mm.runs.results import fgsm_accuracy, result_path, write_result
from robustbench_mm.stats.significance import clopper_pearson

EPS = [0.0, 0.01, 0.03, 0.1]
STEPS = 20


def synthetic_value(run: str, what: str, n: int = 1000) -> float:
    """A distinct, recognisable accuracy (%) of `n` examples per (run, measurement), so a misplaced cell is caught."""
    return 100 * ((sum(map(ord, run + what)) * 7) % (n + 1)) / n


def leading_number(cell: str) -> float:
    """The value a table cell starts with ('71.23 [61.2, 80.1] / ...' -> 71.23)."""
    return float(re.match(r"-?\d+\.\d+", cell).group())


def interval_text(accuracy: float, n: int) -> str:
    """The exact binomial interval a one-seed cell must show, computed here from the count."""
    low, high = clopper_pearson(round(accuracy * n / 100), n)
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


def write_model(checkpoints, method, alpha, epochs=3, **overrides):
    config = train_config_for_preset("smoke", method=method, alpha=alpha, out=str(checkpoints), epochs=epochs,
                                     milestones=(2,), **overrides)
    run = config.run_name
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_accuracy": 30.0 * e, "lr": 0.05, "seconds": 1.0,
                "images_per_second": 100.0, "test_accuracy": 20.0 * e + len(run) % 5, "test_nll": 2.5 / e}
               for e in range(1, epochs + 1)]
    best = max(history, key=lambda h: h["test_accuracy"])
    meta = {"format": META_FORMAT, "run": run, "dataset": "digits", "method": method, "alpha": alpha, "epoch": epochs,
            "epochs": epochs, "complete": True,
            "checkpoints": {"last": {"epoch": epochs, "test_accuracy": history[-1]["test_accuracy"]},
                            "best": {"epoch": best["epoch"], "test_accuracy": best["test_accuracy"],
                                     "test_nll": best["test_nll"]}},
            "history": history, "config": config.to_dict(), "git_commit": "abcdef1234567890"}
    (checkpoints / run).mkdir(parents=True)
    write_meta(checkpoints / run, meta)
    for kind in ("last", "best"):  # stand-ins: the report only checks that results name these bytes' digest
        (checkpoints / run / f"{kind}.safetensors").write_bytes(fake_weights(run, kind))
    return run, config


def fake_weights(run, kind="last"):
    return f"{kind} weights of {run}".encode()


def model_dict(run, config):
    alpha = config.alpha if config.method != "baseline" else None
    return {"run": run, "key": model_key(config.method, alpha), "dataset": config.dataset, "method": config.method,
            "alpha": alpha, "arch": config.arch, "width": config.width, "preset": config.preset,
            "epochs_trained": config.epochs, "checkpoint": "last", "checkpoint_epoch": config.epochs,
            "train_seed": config.seed, "train_git_commit": "abcdef1234567890",
            "weights_sha256": hashlib.sha256(fake_weights(run)).hexdigest()}


def write_attacks(attacks, run, config, n=50):
    model = model_dict(run, config)
    settings = {"seed": 0, "n_examples": n, "checkpoint": "last"}
    for protocol in ("standard", "paper"):
        accuracy = [synthetic_value(run, f"{protocol}{e}", n) for e in EPS]
        write_result(result_path(attacks, run, f"fgsm-{protocol}"), f"fgsm-{protocol}", model, settings, {
            "protocol": protocol, "protocol_description": f"the {protocol} way", "n_examples": n,
            "clean": {"accuracy": accuracy[0], "nll": 0.3}, "eps": [0.03], "accuracy": [accuracy[2]],
            "sweep": {"eps": EPS, "accuracy": accuracy}})
    curve = [float(v) for v in np.linspace(90, synthetic_value(run, "pgd") / 10, STEPS + 1).round(2)]
    for protocol, scale in (("paper", 1.0), ("standard", 0.5)):
        protocol_curve = [round(v * scale, 2) for v in curve]
        write_result(result_path(attacks, run, f"pgd-unbounded-{protocol}"), f"pgd-unbounded-{protocol}", model,
                     settings, {"n_examples": n, "steps": STEPS, "step_size": 0.01, "accuracy_per_step": protocol_curve,
                                "final_accuracy": protocol_curve[-1], "threshold": 1.0,
                                "passed": protocol_curve[-1] <= 1.0})
    clean = {"accuracy": synthetic_value(run, "standard0.0", n), "nll": 0.3}
    write_result(result_path(attacks, run, "pgd-bounded"), "pgd-bounded", model, settings, {
        "n_examples": n, "eps": 0.03, "steps": 20, "clean": clean, "accuracy": synthetic_value(run, "pgd20", n) / 2})
    stages = [{"stage": stage, "label": label, "robust_accuracy": round(clean["accuracy"] / (4 + i), 2), "seconds": 1.0}
              for i, (stage, label) in enumerate(STAGE_LABELS.items())]
    write_result(result_path(attacks, run, "autoattack-8_255"), "autoattack-8_255", model, settings, {
        "n_examples": n, "eps": 8 / 255, "eps_text": "8/255", "budget": "standard", "clean": clean, "stages": stages,
        "robust_accuracy": stages[-1]["robust_accuracy"]})
    write_result(result_path(attacks, run, "gradient-masking"), "gradient-masking", model, settings, {
        "checks": [{"name": "pgd-reaches-zero", "passed": curve[-1] <= 1.0, "value": curve[-1], "detail": ""},
                   {"name": "finite-gradients", "passed": True, "value": 0, "detail": ""}],
        "flagged": curve[-1] > 1.0})
    rng = np.random.default_rng(len(run))
    clean = rng.random((10, 3, 32, 32), dtype=np.float32)
    save_file({"clean": clean, "adversarial": np.clip(clean + 0.03, 0, 1), "labels": np.arange(10),
               "clean_pred": np.arange(10), "adversarial_pred": (np.arange(10) + 1) % 10},
              str(attacks / run / "adversarial-examples.safetensors"),
              metadata={"attack": "FGSM ε=0.03", "model": json.dumps(model, sort_keys=True)})


def write_deform(attacks, run, config, n=40, evaluation="deform"):
    salt = evaluation.removeprefix("deform")
    sets = {name: {"accuracy": synthetic_value(run, name + salt, n), "nll": 1.0, "seed": 0,
                   "kind": name.rsplit("-", 1)[0], "range": [1, 2]} for name in TABLE7}
    write_result(result_path(attacks, run, evaluation), evaluation, model_dict(run, config),
                 {"seed": 0, "n_examples": n, "checkpoint": "last", "interpolation": "nearest"},
                 {"interpolation": "nearest", "n_examples": n, "clean": {"accuracy": 95.0, "nll": 0.2}, "sets": sets})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """All four table models trained; the input-a2 model lacks its deformation results. Report written once."""
    tmp_path = tmp_path_factory.mktemp("report")
    checkpoints, attacks, reports = tmp_path / "checkpoints", tmp_path / "attacks", tmp_path / "reports"
    runs = {}
    for method, alpha in TABLE_MODELS:
        run, config = write_model(checkpoints, method, alpha)
        runs[model_key(method, alpha if method != "baseline" else None)] = run
        write_attacks(attacks, run, config)
        if run != runs.get("input-a2"):
            write_deform(attacks, run, config)
    draw = tmp_path / "attacks" / "deform-samples-digits.png"
    image = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(draw)
    assert write_report(checkpoints, attacks, reports) == reports / "index.md"
    return checkpoints, attacks, reports, runs


def parse_markdown_tables(text):
    """Every pipe table in `text` as a list of rows (header first, separator dropped)."""
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if not all(set(c) <= {"-"} and c for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def table_by_header(text, first_column):
    return next(t for t in parse_markdown_tables(text) if t[0][0] == first_column)


def assert_real_png(path, min_size=200):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert min(pixels.shape[:2]) >= min_size, (path, pixels.shape)
    colors = np.unique((pixels.astype(np.int32) * [65536, 256, 1]).sum(-1))
    assert len(colors) > 20, f"{path} is nearly blank"
    assert pixels.std() > 10, f"{path} has almost no contrast"


def test_cells_never_invent_numbers():
    assert comparison_cell(71.234, 71.51) == "71.23 / 71.51 (-0.28)"
    assert comparison_cell(None, 71.51, "no deform.json for run-x") == "missing (no deform.json for run-x) / 71.51"
    assert comparison_cell(50.0, None) == "50.00 / – (not in the paper)"
    assert deform_set_label("shear-28.6") == "Shearing U(-28.6°, 28.6°)"
    assert deform_set_label("zoom-out-140") == "Zoom out (140 %)"
    result = {"eps": [0.03], "accuracy": [40.0], "sweep": {"eps": [0.0, 0.05], "accuracy": [90.0, 30.0]}}
    assert fgsm_accuracy(result, 0.03) == 40.0 and fgsm_accuracy(result, 0.05) == 30.0
    assert fgsm_accuracy(result, 0.02) is None


def test_report_tables_carry_the_numbers_of_the_result_files(folders):
    checkpoints, attacks, reports, runs = folders
    table5 = (reports / "table5.md").read_text()
    fgsm = table_by_header(table5, "Model")
    header = fgsm[0]
    rows = {row[1].strip("`"): row for row in fgsm[1:]}
    for key, run in runs.items():
        row = rows[run]
        for protocol in ("standard", "paper"):
            stored = json.loads(result_path(attacks, run, f"fgsm-{protocol}").read_text())
            ours_col = header.index(f"FGSM {protocol if protocol == 'standard' else 'paper protocol'}: ours")
            assert row[ours_col] == f"{stored['accuracy'][0]:.2f} {interval_text(stored['accuracy'][0], 50)}"
            paper = TABLE5["cifar10"].get(key)
            if paper is None:
                assert row[ours_col + 1].startswith("–") and row[ours_col + 2] == "–"
            else:
                assert float(row[ours_col + 1]) == paper
                assert float(row[ours_col + 2]) == pytest.approx(stored["accuracy"][0] - paper, abs=0.006)
    assert any("paper only" in row[0] and row[3] == "not run here" for row in fgsm[1:])
    for fact in ("dataset", "preset", "epochs trained", "checkpoint evaluated", "protocol", "test examples", "seed",
                 "commit (training)", "commit (evaluation)"):
        assert f"| {fact} |" in table5
    assert "Sanity check only" in table5  # digits models against CIFAR numbers

    table7 = table_by_header((reports / "table7.md").read_text(), "Test set")
    assert len(table7) == 1 + 17 and len(table7[0]) == 1 + 4
    for row in table7[1:]:
        set_name = next(s for s in TABLE7 if deform_set_label(s) == row[0])
        for col, key in enumerate(("baseline", "input-a1", "input-a2", "manifold-a2"), start=1):
            if key == "input-a2":
                assert row[col].startswith("missing (no deform.json for ") and not re.search(r"\d+\.\d+ \(", row[col])
                continue
            stored = json.loads(result_path(attacks, runs[key], "deform").read_text())["sets"][set_name]["accuracy"]
            ours, interval, paper, delta = re.fullmatch(r"(\S+) (\[.*\]) / (\S+) \((\S+)\)", row[col]).groups()
            assert (float(ours), float(paper)) == (round(stored, 2), paper_table7(set_name, key))
            assert interval == interval_text(stored, 40)
            assert float(delta) == pytest.approx(stored - paper_table7(set_name, key), abs=0.006)

    table3 = table_by_header((reports / "table3.md").read_text(), "Test set")
    assert [r[0] for r in table3[1:]] == [deform_set_label(s) for s in TABLE3_SETS]


def test_csv_and_summary_agree_with_the_files(folders):
    checkpoints, attacks, reports, runs = folders
    rows = list(csv.DictReader(io.StringIO((reports / "table7.csv").read_text())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 17 * 4
    for row in rows:
        if row["model"] == "input-a2":
            assert row["ours"] == "" and row["delta"] == "" and row["status"].startswith("missing")
            continue
        stored = json.loads(result_path(attacks, row["run"], "deform").read_text())
        assert float(row["ours"]) == stored["sets"][row["setting"]]["accuracy"]
        assert row["n_examples"] == "40" and row["checkpoint"] == "last"
    table5 = list(csv.DictReader(io.StringIO((reports / "table5.csv").read_text())))
    for row in table5:
        if row["status"] == "paper only":
            assert row["ours"] == "" and row["run"] == ""
            continue
        stored = json.loads(result_path(attacks, row["run"], row["evaluation"]).read_text())
        expected = {"clean": lambda: stored["clean"]["accuracy"], "eps=0.03": lambda: stored["accuracy"][0]}.get(
            row["setting"], lambda: stored["final_accuracy"])()
        assert float(row["ours"]) == expected, row
    assert {r["setting"] for r in table5} == {"clean", "eps=0.03", f"steps={STEPS}"}
    summary = json.loads((reports / "summary.json").read_text())
    (group,) = summary["groups"]
    assert {m["run"] for m in group["models"]} == set(runs.values())
    pgd = [c for c in group["cells"]["table5"] if c["evaluation"].startswith("pgd-unbounded-")]
    assert len(pgd) == 2 * len(runs)  # both protocols, every model
    for cell in pgd:
        stored = json.loads(result_path(attacks, cell["run"], cell["evaluation"]).read_text())
        assert cell["ours"] == stored["final_accuracy"]


def test_robustness_table_and_model_info(folders):
    """Every number of "How robust is it really?" and of model_info is copied from its result file."""
    _, attacks, reports, runs = folders
    cells = list(csv.DictReader(io.StringIO((reports / "robustness.csv").read_text())))
    for run in runs.values():
        mine = {(c["evaluation"], c["setting"]): float(c["ours"]) for c in cells
                if c["run"] == run and c["evaluation"] != "verdict"}
        aa = json.loads(result_path(attacks, run, "autoattack-8_255").read_text())
        pgd20 = json.loads(result_path(attacks, run, "pgd-bounded").read_text())
        fgsm = json.loads(result_path(attacks, run, "fgsm-paper").read_text())
        assert mine[("autoattack-8_255", "final")] == aa["robust_accuracy"]
        assert [mine[("autoattack-8_255", s["stage"])] for s in aa["stages"]] == [s["robust_accuracy"]
                                                                                 for s in aa["stages"]]
        assert mine[("pgd-bounded", "final")] == pgd20["accuracy"]
        assert mine[("fgsm-paper", "eps=0.03")] == fgsm["accuracy"][0]
        info = json.loads((reports / "model_info" / f"{run}.json").read_text())
        assert info["eps"] == "8/255" and info["threat_model"] == "Linf" and info["n_examples"] == 50
        assert info["autoattack_acc"] == f"{aa['robust_accuracy']:.2f}" and info["clean_acc"] == \
            f"{aa['clean']['accuracy']:.2f}"
    table = table_by_header((reports / "robustness.md").read_text(), "Model")
    assert "AutoAttack ε = 8/255" in table[0] and "PGD-20 (worst case)" in table[0]
    assert all("APGD-CE" in row[-2] and "Square" in row[-2] for row in table[1:])  # the last column: the verdict
    assert_real_png(reports / "autoattack-stages-digits.png")


def test_plots_and_index(folders):
    checkpoints, attacks, reports, _ = folders
    expected = ["fgsm-eps-sweep", "pgd-unbounded", "autoattack-stages", "table7-ours-vs-paper", "training-curves",
                "adversarial-examples", "deform-samples"]
    index = (reports / "index.md").read_text()
    for stem in expected:
        path = reports / f"{stem}-digits.png"
        assert_real_png(path, min_size=40 if stem == "deform-samples" else 200)
        assert f"]({path.name})" in index
    for linked in ("table5.md", "robustness.md", "table7.md", "table3.md", "table5.csv", "summary.json"):
        assert f"]({linked})" in index and (reports / linked).is_file()


def test_missing_everything_says_so(tmp_path):
    """A trained model with no evaluations: every cell names the missing file, no number appears."""
    checkpoints, attacks, reports = tmp_path / "c", tmp_path / "a", tmp_path / "r"
    run, _ = write_model(checkpoints, "manifold", 2.0)
    write_report(checkpoints, attacks, reports)
    fgsm = table_by_header((reports / "table5.md").read_text(), "Model")
    ours = [row for row in fgsm[1:] if row[1] == f"`{run}`"][0]
    assert ours[3] == f"missing (no fgsm-standard.json for {run})"
    assert ours[6] == f"missing (no fgsm-paper.json for {run})"
    table7 = table_by_header((reports / "table7.md").read_text(), "Test set")
    for row in table7[1:]:
        assert row[1] == "missing (no trained baseline model) / " + f"{paper_table7(next(s for s in TABLE7 if deform_set_label(s) == row[0]), 'baseline'):.2f}"
        assert row[4].startswith(f"missing (no deform.json for {run})")
    assert_real_png(reports / "training-curves-digits.png")
    assert not (reports / "fgsm-eps-sweep-digits.png").exists()


def test_corrupt_result_is_reported_not_used(folders, tmp_path):
    checkpoints, attacks, _, runs = folders
    copy = tmp_path / "attacks"
    shutil.copytree(attacks, copy)
    result_path(copy, runs["baseline"], "deform").write_text("{ half a file")
    records, problems = load_records(checkpoints, copy)
    baseline = next(r for r in records if r.name == runs["baseline"])
    assert "deform" not in baseline.results and "not valid JSON" in baseline.missing["deform"]
    table7 = build_report(records, problems).tables["table7"][0].blocks[0]
    assert all(row[1].startswith("missing (deform.json is not valid JSON") for row in table7.rows)


def test_deform_tables_state_the_warp_and_show_every_convention_present(folders, tmp_path):
    """Ours is the main table for the smoke preset, the authors' for the paper preset; each block says which."""
    checkpoints, attacks, _, runs = folders
    copy = tmp_path / "attacks"
    shutil.copytree(attacks, copy)
    for key in ("baseline", "manifold-a2"):
        write_deform(copy, runs[key], train_config_for_preset("smoke", method=key.split("-")[0]),
                     evaluation="deform-authors")
    records, problems = load_records(checkpoints, copy)
    section = build_report(records, problems).tables["table7"][0]
    facts = dict(section.facts)
    assert facts["warp convention and fill"].startswith("our warp (exact centre, pixels out to their edges), black "
                                                        "fill (`mm-robust deform --convention ours --fill black`) — main")
    assert "the authors' warp" in facts["warp convention and fill"]
    main, other = section.blocks
    assert "our warp" in main.caption and "black fill" in main.caption and "main table" in main.caption
    assert "the authors' warp" in other.caption and "black fill" in other.caption
    column = main.columns.index("Manifold mixup (α = 2)")
    for block, evaluation in ((main, "deform"), (other, "deform-authors")):
        stored = json.loads(result_path(copy, runs["manifold-a2"], evaluation).read_text())["sets"]
        for row in block.rows:
            set_name = next(s for s in TABLE7 if deform_set_label(s) == row[0])
            ours = float(row[column].split(" / ")[0].split(" [")[0])  # "30.00 [16.6, 46.5] / paper ..."
            assert ours == pytest.approx(stored[set_name]["accuracy"], abs=0.005)
    assert {r["evaluation"] for r in section.rows} == {"deform", "deform-authors"}
    assert any(r["evaluation"] == "deform-authors" and r["status"].startswith("missing: no deform-authors.json")
               for r in section.rows if r["model"] == "input-a1")

    for record in records:
        record.model["preset"] = "paper"
    paper_section = build_report(records, problems).tables["table3"][0]
    assert "the authors' warp" in paper_section.blocks[0].caption and "main table" in paper_section.blocks[0].caption
    assert "our warp" in paper_section.blocks[1].caption


def test_stale_result_is_flagged(folders, tmp_path):
    """A model trained further after its evaluation: the report says the numbers are out of date."""
    checkpoints, attacks, _, runs = folders
    assert load_records(checkpoints, attacks)[1] == []
    copy = tmp_path / "checkpoints"
    shutil.copytree(checkpoints, copy)
    run_dir = copy / runs["manifold-a2"]
    meta = json.loads((run_dir / "meta.json").read_text())
    write_meta(run_dir, {**meta, "epoch": meta["epoch"] + 5})
    problems = load_records(copy, attacks)[1]
    assert len(problems) == 8  # one per evaluation file of that run
    assert all(p.startswith(runs["manifold-a2"]) and "rerun the evaluation" in p for p in problems)


def test_report_cli(folders, capsys):
    checkpoints, attacks, reports, _ = folders
    code = main(["report", "--checkpoints", str(checkpoints), "--attacks", str(attacks), "--reports", str(reports)])
    assert code == 0
    assert str(reports / "index.md") in capsys.readouterr().out
    assert main(["report", "--checkpoints", str(checkpoints / "nope"), "--attacks", str(attacks / "nope"),
                 "--reports", str(reports)]) == 2
    assert "nothing to report" in capsys.readouterr().err


def identity(dataset, arch="preactresnet18", preset="paper", key="baseline", width=64):
    method = key.split("-")[0]
    alpha = None if key == "baseline" else float(key.rsplit("-a", 1)[1])
    return {"key": key, "dataset": dataset, "arch": arch, "preset": preset, "width": width, "method": method,
            "alpha": alpha}


def test_groups_split_by_setting_and_say_when_the_paper_is_not_comparable():
    records = [RunRecord(f"run{i}", identity(*ident), None) for i, ident in enumerate(
        [("digits", "preactresnet18", "smoke"), ("cifar100", "preactresnet34"), ("cifar10",),
         ("cifar10", "preactresnet34")])]
    groups = group_records(records)
    assert [(g.dataset, g.arch, g.slug) for g in groups] == [
        ("cifar10", "preactresnet18", "cifar10-preactresnet18-paper"),
        ("cifar10", "preactresnet34", "cifar10-preactresnet34-paper"),
        ("cifar100", "preactresnet34", "cifar100"), ("digits", "preactresnet18", "digits")]
    report = build_report(records, [])
    table5 = {g.slug: s.notes[0] for g, s in zip(groups, report.tables["table5"])}
    table7 = {g.slug: s.notes[0] for g, s in zip(groups, report.tables["table7"])}
    assert table5["digits"].startswith("**Sanity check only:**")
    assert table5["cifar10-preactresnet18-paper"].startswith("Paper: CIFAR-10")  # the paper's own setting
    assert "architecture preactresnet34" in table5["cifar10-preactresnet34-paper"]
    assert table7["cifar100"].startswith("Paper: CIFAR-100")
    assert table7["cifar10-preactresnet18-paper"].startswith("**Sanity check only:**")
