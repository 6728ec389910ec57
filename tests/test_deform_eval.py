"""`mm-robust deform` end to end on tiny models: result files, reuse of finished work, the CLI and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from robustbench_mm.cli import main
from robustbench_mm.config import DeformConfig
from robustbench_mm.data.deformations import deform, fill_values, set_matrices, set_seed
from robustbench_mm.data.images import load_dataset
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation import deform as deform_eval
from robustbench_mm.evaluation.deform import result_settings, run_deform
from robustbench_mm.models.metrics import evaluate
from robustbench_mm.runs.checkpoints import load_model
from robustbench_mm.runs.results import decode_mask

SETS = ("rotate-20", "shear-28.6", "zoom-in-80", "zoom-out-140")


def config(**overrides):
    # 40 images in batches of 15: several batches and a partial last one.
    return DeformConfig(**{"sets": SETS, "n_examples": 40, "batch_size": 15, "device": "cpu", **overrides})


def read(path):
    return json.loads(path.read_text())


@pytest.fixture
def checkpoints(tiny_runs):
    return tiny_runs["baseline"].parent


def test_one_complete_json_per_model_with_the_agreed_keys(tiny_runs, checkpoints, tmp_path):
    out = tmp_path / "attacks"
    paths = run_deform(config(), checkpoints, out, progress=False)
    assert sorted(p.parent.name for p in paths) == sorted(r.name for r in tiny_runs.values())
    for path in paths:
        result = read(path)
        assert path == out / result["model"]["run"] / "deform.json"
        assert result["evaluation"] == "deform"
        assert result["settings"] == json.loads(json.dumps(result_settings(config())))
        assert result["interpolation"] == "nearest" and result["n_examples"] == 40 and result["seed"] == 0
        assert result["convention"] == "ours" and result["fill"] == "black" and result["fill_pixel"] == [0, 0, 0]
        assert list(result["sets"]) == list(SETS)
        for name, entry in result["sets"].items():
            assert 0 <= entry["accuracy"] <= 100 and entry["nll"] > 0
            assert entry["seed"] == set_seed(0, name)
            assert entry["kind"] == name.rsplit("-", 1)[0]
        assert result["sets"]["shear-28.6"]["range"] == pytest.approx(28.6479, abs=1e-4)
        assert result["sets"]["zoom-out-140"]["range"] == 140
    png = out / "deform-samples-digits.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_numbers_match_a_direct_computation(tiny_runs, checkpoints, tmp_path):
    """Batching must pair each image with its own matrix; clean accuracy equals the plain evaluator's."""
    run_deform(config(), checkpoints, tmp_path, runs=[tiny_runs["manifold"].name], progress=False)
    result = read(tmp_path / tiny_runs["manifold"].name / "deform.json")
    model = load_model(tiny_runs["manifold"]).model
    data = load_dataset("digits", train=False).subset(40)
    assert result["clean"]["accuracy"] == pytest.approx(evaluate(model, data)["accuracy"], abs=1e-4)
    for name in SETS:
        _, theta = set_matrices(name, 40, 0)
        with torch.no_grad():
            logits = model(deform(data.as_float(), theta))
        expected = 100.0 * (logits.argmax(1) == data.labels).double().mean().item()
        assert result["sets"][name]["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_per_example_masks_say_which_images_each_set_got_right(tiny_runs, checkpoints, tmp_path):
    """The shared per-example contract: "clean" and one mask per set over test images [0, n)."""
    run = [tiny_runs["manifold"].name]
    path = tmp_path / run[0] / "deform.json"
    run_deform(config(sets=("rotate-20",)), checkpoints, tmp_path, runs=run, progress=False)
    run_deform(config(sets=("rotate-20", "zoom-in-80")), checkpoints, tmp_path, runs=run, progress=False)
    result = read(path)
    assert result["per_example"]["example_range"] == [0, 40]
    masks = {label: decode_mask(m) for label, m in result["per_example"]["correct"].items()}
    assert list(masks) == ["clean", "rotate-20", "zoom-in-80"]  # the earlier run's set kept its mask
    model = load_model(tiny_runs["manifold"]).model
    data = load_dataset("digits", train=False).subset(40)
    with torch.no_grad():
        assert (masks["clean"] == (model(data.as_float()).argmax(1) == data.labels).numpy()).all()
        for name in ("rotate-20", "zoom-in-80"):
            _, theta = set_matrices(name, 40, 0)
            expected = (model(deform(data.as_float(), theta)).argmax(1) == data.labels).numpy()
            assert (masks[name] == expected).all()
            assert 100.0 * masks[name].mean() == pytest.approx(result["sets"][name]["accuracy"], abs=1e-9)
    assert not masks["clean"].all() and not (masks["clean"] == masks["rotate-20"]).all()  # masks say something


def test_a_stored_result_without_masks_is_redone(tiny_runs, checkpoints, tmp_path):
    run = [tiny_runs["baseline"].name]
    path = tmp_path / run[0] / "deform.json"
    run_deform(config(sets=("rotate-20",)), checkpoints, tmp_path, runs=run, progress=False)
    old = read(path)
    del old["per_example"]
    path.write_text(json.dumps(old))
    run_deform(config(sets=("rotate-20",)), checkpoints, tmp_path, runs=run, progress=False)
    assert list(read(path)["per_example"]["correct"]) == ["clean", "rotate-20"]


def test_each_convention_and_fill_has_its_own_file_and_says_so(tiny_runs, checkpoints, tmp_path):
    """Results of both conventions and both fills coexist; each matches a direct computation with its warp."""
    run = [tiny_runs["baseline"].name]
    sets = ("rotate-20", "zoom-out-140")
    for convention in ("ours", "authors"):
        for fill in ("black", "mean"):
            run_deform(config(sets=sets, convention=convention, fill=fill), checkpoints, tmp_path, runs=run,
                       progress=False)
    names = sorted(p.name for p in (tmp_path / run[0]).glob("deform*.json"))
    assert names == ["deform-authors-mean.json", "deform-authors.json", "deform-mean.json", "deform.json"]
    model = load_model(tiny_runs["baseline"]).model
    data = load_dataset("digits", train=False).subset(40)
    accuracies = set()
    for name in names:
        result = read(tmp_path / run[0] / name)
        convention = "authors" if "authors" in name else "ours"
        fill = "mean" if "mean" in name else "black"
        assert result["evaluation"] == name.removesuffix(".json")
        assert (result["convention"], result["fill"]) == (convention, fill)
        assert (result["settings"]["convention"], result["settings"]["fill"]) == (convention, fill)
        assert f"{convention} convention: " in result["method"]
        assert ("mean pixel" if fill == "mean" else "black (0)") in result["method"]
        pixel = fill_values(fill, "digits")
        assert result["fill_pixel"] == pytest.approx([0.0] * 3 if pixel is None else pixel.tolist())
        with torch.no_grad():
            for set_name in sets:
                _, maps = set_matrices(set_name, 40, 0, convention)
                logits = model(deform(data.as_float(), maps, convention=convention, fill=pixel))
                expected = 100.0 * (logits.argmax(1) == data.labels).double().mean().item()
                assert result["sets"][set_name]["accuracy"] == pytest.approx(expected, abs=1e-9)
        accuracies.add(tuple(result["sets"][n]["accuracy"] for n in sets))
    assert len(accuracies) > 1  # the variants really warp differently
    assert (tmp_path / "deform-samples-digits-authors-mean.png").is_file()


def test_finished_work_is_skipped_new_sets_are_added_and_force_redoes(tiny_runs, checkpoints, tmp_path, monkeypatch):
    run = [tiny_runs["baseline"].name]
    path = tmp_path / run[0] / "deform.json"
    run_deform(config(sets=("rotate-20",)), checkpoints, tmp_path, runs=run, progress=False)
    first = read(path)

    evaluated = []
    real = deform_eval.evaluate_model
    monkeypatch.setattr(deform_eval, "evaluate_model", lambda *a, **k: evaluated.append(a[2]) or real(*a, **k))
    run_deform(config(sets=("rotate-20",)), checkpoints, tmp_path, runs=run, progress=False)
    assert evaluated == [] and read(path) == first

    run_deform(config(sets=("rotate-20", "zoom-in-80")), checkpoints, tmp_path, runs=run, progress=False)
    assert evaluated == [("zoom-in-80",)]
    grown = read(path)
    assert list(grown["sets"]) == ["rotate-20", "zoom-in-80"]
    assert grown["sets"]["rotate-20"] == first["sets"]["rotate-20"]

    run_deform(config(sets=("rotate-20",)), checkpoints, tmp_path, runs=run, force=True, progress=False)
    assert evaluated[-1] == ("rotate-20",)
    assert list(read(path)["sets"]) == ["rotate-20", "zoom-in-80"]  # forcing one set keeps the others

    before = path.read_bytes()
    with pytest.raises(UsageError, match=r"other settings \(seed 0 -> 5\); pass --force"):
        run_deform(config(sets=("rotate-20",), seed=5), checkpoints, tmp_path, runs=run, progress=False)
    assert path.read_bytes() == before  # a finished result of the same weights is never silently replaced
    run_deform(config(sets=("rotate-20",), seed=5), checkpoints, tmp_path, runs=run, force=True, progress=False)
    reseeded = read(path)
    assert list(reseeded["sets"]) == ["rotate-20"]  # other settings: a new result, nothing mixed in
    assert reseeded["sets"]["rotate-20"]["seed"] == set_seed(5, "rotate-20") != first["sets"]["rotate-20"]["seed"]


def test_an_interrupted_run_keeps_finished_models_and_a_rerun_completes(tiny_runs, checkpoints, tmp_path, monkeypatch):
    real = deform_eval.evaluate_model
    calls = []

    def dies_on_second_model(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(deform_eval, "evaluate_model", dies_on_second_model)
    with pytest.raises(KeyboardInterrupt):
        run_deform(config(sets=("rotate-20",)), checkpoints, tmp_path, progress=False)
    first, second = calls
    assert read(tmp_path / first / "deform.json")["sets"]["rotate-20"]
    assert not (tmp_path / second / "deform.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))

    calls.clear()
    monkeypatch.setattr(deform_eval, "evaluate_model", lambda *a, **k: calls.append(k.get("desc")) or real(*a, **k))
    run_deform(config(sets=("rotate-20",)), checkpoints, tmp_path, progress=False)
    assert calls == [second]


def test_cli_prints_the_table7_summary_beside_the_paper(tiny_runs, checkpoints, tmp_path, capsys):
    code = main(["deform", "--checkpoints", str(checkpoints), "--out", str(tmp_path), "--sets", "table3",
                 "--n-examples", "40", "--device", "cpu", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    lines = {line.split("|")[0].strip(): line for line in out.splitlines() if "|" in line}
    assert list(lines) == ["test set", "clean", "Rotation U(-20°, 20°)", "Rotation U(-60°, 60°)",
                           "Shearing U(-28.6°, 28.6°)", "Shearing U(-57.3°, 57.3°)", "Zoom in (80 %)",
                           "Zoom out (140 %)", "Zoom out (160 %)"]
    assert "baseline" in lines["test set"] and "manifold-a2" in lines["test set"]
    assert "/ 52.96" in lines["Rotation U(-20°, 20°)"] and "/ 60.08" in lines["Rotation U(-20°, 20°)"]
    stored = read(tmp_path / tiny_runs["baseline"].name / "deform.json")
    assert f"{stored['sets']['zoom-in-80']['accuracy']:.2f} / 47.95" in lines["Zoom in (80 %)"]
    assert "time of a clean evaluation pass" in out
    assert "ours convention, black fill" in out


@pytest.mark.parametrize("args, message", [
    (["--sets", "rotate-20,rotate-30"], "unknown deformation set 'rotate-30'; valid: all, table3, rotate-20"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--checkpoint", "no-such-run"], "checkpoint 'no-such-run' not found"),
    (["--interpolation", "bicubic"], "unknown interpolation 'bicubic'; valid: nearest, bilinear"),
    (["--convention", "paper"], "unknown convention 'paper'; valid: ours, authors"),
    (["--fill", "white"], "unknown fill 'white'; valid: black, mean"),
    (["--weights", "middle"], "unknown --weights 'middle'; valid: last, best"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(checkpoints, tmp_path, capsys, args, message):
    out = tmp_path / "attacks"
    code = main(["deform", "--checkpoints", str(checkpoints), "--out", str(out), "--device", "cpu", "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_non_integer_seed_is_refused_by_the_parser(checkpoints, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["deform", "--checkpoints", str(checkpoints), "--out", str(tmp_path), "--seed", "1.5"])
    assert exit_info.value.code == 2
    assert "--seed" in capsys.readouterr().err


def test_cpu_evaluation_batch_is_capped_where_outcomes_do_not_depend_on_it():
    from robustbench_mm.common.runtime import CPU_EVALUATION_BATCH, evaluation_batch

    assert evaluation_batch(500, torch.device("cpu")) == CPU_EVALUATION_BATCH == 128
    assert evaluation_batch(64, torch.device("cpu")) == 64
    assert evaluation_batch(500, torch.device("cuda")) == 500
