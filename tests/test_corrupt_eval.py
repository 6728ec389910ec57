"""`mm-robust corrupt` end to end on tiny models: result files against a direct evaluation of `corrupt(...)`,
reuse of finished work, subsets and shards, the official-file source, the API and bad input."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustbench_mm import api
from robustbench_mm.cli import main
from robustbench_mm.config import CorruptConfig
from robustbench_mm.data.corruptions import CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt
from robustbench_mm.data.images import ImageSet, load_dataset
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation import corrupt as corrupt_eval
from robustbench_mm.evaluation.calibrate import expected_calibration_error
from robustbench_mm.evaluation.corrupt import run_corrupt
from robustbench_mm.evaluation.corrupt_results import aggregate, format_summary, load_results, set_label
from robustbench_mm.runs.checkpoints import load_model
from robustbench_mm.runs.results import decode_mask
from robustbench_mm.scheduling import corrupt_shards
from robustbench_mm.scheduling.corrupt_shards import corrupt_merge, corrupt_shard, shard_path
from robustbench_mm.scheduling.graph import shard_ranges
from robustbench_mm.sources.loading import from_run

CORRUPTED = ("gaussian_noise", "motion_blur", "fog")
TIMING_FIELDS = {"finished", "seconds", "generate_seconds"}


def config(**overrides):
    # 40 images in batches of 15: several batches and a partial last one.
    return CorruptConfig(**{"corruptions": CORRUPTED, "severities": (1, 5), "n_examples": 40, "batch_size": 15,
                            "device": "cpu", **overrides})


def read(path):
    return json.loads(path.read_text())


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


@pytest.fixture
def checkpoints(tiny_runs):
    return tiny_runs["baseline"].parent


def direct(model, images, labels):
    """Accuracy (%), mean NLL, ECE and the correct mask of `model` on float images, in one plain pass."""
    with torch.no_grad():
        logits = model(images).float()
    correct = logits.argmax(1) == labels
    confidence = F.softmax(logits, 1).amax(1)
    return (100.0 * correct.double().mean().item(), F.cross_entropy(logits, labels).item(),
            expected_calibration_error(confidence.double().numpy(), correct.numpy(), 15), correct.numpy())


def test_the_file_matches_a_direct_evaluation_of_corrupted_images(tiny_runs, checkpoints, tmp_path):
    run = tiny_runs["manifold"].name
    [path] = run_corrupt(config(), checkpoints, tmp_path, runs=[run], progress=False)
    result = read(path)
    assert path == tmp_path / run / "corruptions.json" and result["evaluation"] == "corruptions"
    assert result["source"] == "generated" and result["seed"] == 0 and result["n_examples"] == 40
    assert result["settings"] == {"source": "generated", "seed": 0, "n_examples": 40, "checkpoint": "last",
                                  "data_dir": None}
    assert list(result["differs_from_reference"]) == ["motion_blur"]  # only the differing ones evaluated here
    labels = [set_label(n, s) for n in CORRUPTED for s in (1, 5)]
    assert list(result["sets"]) == labels
    assert result["per_example"]["example_range"] == [0, 40]
    masks = {label: decode_mask(m) for label, m in result["per_example"]["correct"].items()}
    assert list(masks) == ["clean", *labels] and all(len(m) == 40 for m in masks.values())
    model = load_model(tiny_runs["manifold"]).model
    data = load_dataset("digits", train=False).subset(40)
    accuracy, nll, ece, correct = direct(model, data.as_float(), data.labels)
    assert result["clean"]["accuracy"] == pytest.approx(accuracy, abs=1e-9) and (masks["clean"] == correct).all()
    assert result["clean"]["nll"] == pytest.approx(nll, rel=1e-5) and result["clean"]["ece"] == pytest.approx(ece, abs=1e-4)
    for name in CORRUPTED:
        for severity in (1, 5):
            entry = result["sets"][set_label(name, severity)]
            assert (entry["corruption"], entry["severity"]) == (name, severity)
            accuracy, nll, ece, correct = direct(model, corrupt(data.as_float(), name, severity, 0, range(40)),
                                                 data.labels)
            assert entry["accuracy"] == pytest.approx(accuracy, abs=1e-9)
            assert (masks[set_label(name, severity)] == correct).all()
            assert entry["nll"] == pytest.approx(nll, rel=1e-5) and entry["ece"] == pytest.approx(ece, abs=1e-4)
            assert entry["seconds"] > 0 and entry["generate_seconds"] > 0
    assert not (masks["clean"] == masks["gaussian_noise-5"]).all()  # the masks say something
    summary = result["summary"]
    assert summary["corruptions_acc"] is None and not summary["complete"]  # 6 of the 75 sets
    assert summary["per_corruption"]["fog"]["accuracy"] == pytest.approx(
        (result["sets"]["fog-1"]["accuracy"] + result["sets"]["fog-5"]["accuracy"]) / 2)
    png = tmp_path / "corrupt-samples-digits.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = format_summary(load_results([path]))
    assert "Motion blur" in text and "(s1,5)" in text and "incomplete" in text and "clean evaluation pass" in text


def test_corruptions_acc_is_the_plain_mean_over_the_75_standard_sets():
    rng = np.random.default_rng(0)
    sets = {set_label(n, s): {"corruption": n, "severity": s, "accuracy": float(rng.uniform(0, 100)),
                              "ece": float(rng.uniform(0, 10))}
            for n in CORRUPTIONS + EXTRA_CORRUPTIONS for s in range(1, 6)}
    summary = aggregate(sets)
    standard = [sets[set_label(n, s)]["accuracy"] for n in CORRUPTIONS for s in range(1, 6)]
    assert summary["complete"] and summary["corruptions_accuracy"] == pytest.approx(np.mean(standard))
    assert summary["corruptions_acc"] == pytest.approx(np.mean(standard) / 100)  # RobustBench's: a fraction
    assert summary["per_corruption"]["spatter"]["severities"] == [1, 2, 3, 4, 5]  # extras reported, never averaged in
    del sets["fog-3"]
    assert aggregate(sets)["corruptions_acc"] is None and not aggregate(sets)["complete"]


def test_finished_sets_are_skipped_new_ones_added_and_force_redoes(tiny_runs, checkpoints, tmp_path, monkeypatch):
    run = [tiny_runs["baseline"].name]
    path = tmp_path / run[0] / "corruptions.json"
    run_corrupt(config(severities=(1,)), checkpoints, tmp_path, runs=run, progress=False)
    first = read(path)
    measured, made = [], []
    real_measure, real_make = corrupt_eval.measure_set, corrupt_eval.CorruptTestData.corrupted
    monkeypatch.setattr(corrupt_eval, "measure_set", lambda *a: measured.append(a[4]) or real_measure(*a))
    monkeypatch.setattr(corrupt_eval.CorruptTestData, "corrupted",
                        lambda self, *a: made.append(a[:2]) or real_make(self, *a))

    run_corrupt(config(severities=(1,)), checkpoints, tmp_path, runs=run, progress=False)
    assert measured == [] and made == [] and read(path) == first  # the grid is current too

    run_corrupt(config(severities=(1, 3)), checkpoints, tmp_path, runs=run, progress=False)
    # the grid (now showing severities 1 and 3) is redrawn, then only the new sets are made and evaluated
    assert made == [(n, s) for n in CORRUPTED for s in (1, 3)] + [(n, 3) for n in CORRUPTED]
    assert measured == [set_label(n, 3) for n in CORRUPTED]
    grown = read(path)
    assert list(grown["sets"]) == [set_label(n, s) for n in CORRUPTED for s in (1, 3)]
    assert grown["sets"]["fog-1"] == first["sets"]["fog-1"]

    measured.clear()
    run_corrupt(config(corruptions=("fog",), severities=(1,)), checkpoints, tmp_path, runs=run, force=True,
                progress=False)
    assert measured == ["fog-1"]
    assert list(read(path)["sets"]) == list(grown["sets"])  # forcing one set keeps the others

    before = path.read_bytes()
    with pytest.raises(UsageError, match=r"other settings \(seed 0 -> 5\); pass --force"):
        run_corrupt(config(seed=5), checkpoints, tmp_path, runs=run, progress=False)
    assert path.read_bytes() == before  # a finished result of the same weights is never silently replaced


def test_a_stopped_run_keeps_finished_corruptions_and_a_rerun_completes(tiny_runs, checkpoints, tmp_path, monkeypatch):
    run = [tiny_runs["baseline"].name]
    path = tmp_path / run[0] / "corruptions.json"
    real = corrupt_eval.measure_set
    measured = []

    def stops_at_fog(*args):
        if args[4].startswith("fog"):
            raise KeyboardInterrupt
        measured.append(args[4])
        return real(*args)

    monkeypatch.setattr(corrupt_eval, "measure_set", stops_at_fog)
    with pytest.raises(KeyboardInterrupt):
        run_corrupt(config(), checkpoints, tmp_path, runs=run, progress=False)
    assert list(read(path)["sets"]) == [set_label(n, s) for n in CORRUPTED[:2] for s in (1, 5)]
    assert not list(tmp_path.rglob("*.tmp"))
    measured.clear()
    monkeypatch.setattr(corrupt_eval, "measure_set", lambda *a: measured.append(a[4]) or real(*a))
    run_corrupt(config(), checkpoints, tmp_path, runs=run, progress=False)
    assert measured == ["fog-1", "fog-5"]
    whole = tmp_path / "whole"
    run_corrupt(config(), checkpoints, whole, runs=run, progress=False)
    assert without_timings(read(path)) == without_timings(read(whole / run[0] / "corruptions.json"))


def test_a_subset_gets_the_first_rows_of_the_whole_run(tiny_runs, checkpoints, tmp_path):
    run = [tiny_runs["manifold"].name]
    # 25 is not on a batch boundary (15): the subset's last batch is not one of the whole run's
    [whole] = run_corrupt(config(n_examples=60), checkpoints, tmp_path / "whole", runs=run, progress=False)
    [part] = run_corrupt(config(n_examples=25), checkpoints, tmp_path / "part", runs=run, progress=False)
    whole, part = read(whole), read(part)
    assert whole["n_examples"] == 60 and part["n_examples"] == 25
    for label, mask in part["per_example"]["correct"].items():
        assert (decode_mask(mask) == decode_mask(whole["per_example"]["correct"][label])[:25]).all(), label


def test_shards_merge_into_the_file_one_run_writes(tiny_runs, checkpoints, tmp_path, monkeypatch):
    # 40 images in batches of 15 over 3 shards: [0, 15), [15, 30), [30, 40), the last a partial batch.
    run = tiny_runs["manifold"].name
    run_corrupt(config(), checkpoints, tmp_path / "single", runs=[run], progress=False)
    ranges = shard_ranges(40, 3, 15)
    for example_range in reversed(ranges):  # any order: the merge puts them in index order
        corrupt_shard(config(), checkpoints, tmp_path / "sharded", run, example_range)
    measured = []
    monkeypatch.setattr(corrupt_shards, "measure_model", lambda *a, **k: measured.append(a) or None)
    assert corrupt_shard(config(), checkpoints, tmp_path / "sharded", run, ranges[1]) == \
        shard_path(tmp_path / "sharded", run, ranges[1])
    assert measured == [], "a finished shard is kept, not measured again"
    merged = corrupt_merge(config(), checkpoints, tmp_path / "sharded", run, ranges)
    single = read(tmp_path / "single" / run / "corruptions.json")
    assert without_timings(read(merged)) == without_timings(single)
    assert not (tmp_path / "sharded" / run / ".shards").exists()
    assert (tmp_path / "sharded" / "corrupt-samples-digits.png").is_file()


def official_files(folder, images_uint8, labels, names):
    """CIFAR-10-C's layout: <name>.npy (5 n, 32, 32, 3) uint8, severity s in rows (s-1) n .. s n, and labels.npy.

    Severity s holds the clean images turned by s quarter turns (and darkened by corruption number), so a
    model's answers differ from set to set and a transposed or misplaced row shows."""
    folder.mkdir(parents=True)
    hwc = images_uint8.permute(0, 2, 3, 1).numpy()
    for number, name in enumerate(names):
        turned = [np.rot90(hwc, severity, axes=(1, 2)) // (number + 1) for severity in range(1, 6)]
        np.save(folder / f"{name}.npy", np.ascontiguousarray(np.concatenate(turned)).astype(np.uint8))
    np.save(folder / "labels.npy", np.tile(labels.numpy(), 5))


def test_official_files_are_read_checked_and_labelled(tiny_runs, tmp_path, monkeypatch):
    """A fabricated 'cifar10' test set of 30 digits with its CIFAR-10-C files beside it (RobustBench's layout)."""
    digits = load_dataset("digits", train=False).subset(30)
    fake = ImageSet("cifar10", digits.images, digits.labels, 10)
    monkeypatch.setattr("robustbench_mm.evaluation.test_sets.load_dataset", lambda *a, **k: fake)
    data_dir = tmp_path / "data"
    official_files(data_dir / "CIFAR-10-C", digits.images, digits.labels, ("fog", "snow"))
    loaded = from_run(load_model(tiny_runs["baseline"]))
    source = dataclasses.replace(loaded, dataset="cifar10", data_dir=str(data_dir))
    out = tmp_path / "attacks"
    [path] = run_corrupt(config(corruptions=("fog", "snow"), n_examples=20), out_root=out, sources=[source],
                         progress=False)
    result = read(path)
    assert result["source"] == "official" and result["settings"]["source"] == "official"
    assert result["differs_from_reference"] == {} and result["seed"] is None
    for name in ("fog", "snow"):
        for severity in (1, 5):
            rows = np.load(data_dir / "CIFAR-10-C" / f"{name}.npy")[(severity - 1) * 30:(severity - 1) * 30 + 20]
            images = torch.from_numpy(rows).permute(0, 3, 1, 2).float() / 255  # the first 20 images of the set
            accuracy, _, _, correct = direct(loaded.model, images, digits.labels[:20])
            assert result["sets"][set_label(name, severity)]["accuracy"] == pytest.approx(accuracy, abs=1e-9)
            assert (decode_mask(result["per_example"]["correct"][set_label(name, severity)]) == correct).all()
    masks = [decode_mask(m) for m in result["per_example"]["correct"].values()]
    assert any((m != masks[0]).any() for m in masks[1:])  # the sets differ for the model
    # A malformed file is refused with one line before anything is written.
    np.save(data_dir / "CIFAR-10-C" / "snow.npy", np.zeros((5 * 30, 32, 32, 3), dtype=np.float32))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match=r"snow.npy: expected dtype uint8, got float32"):
        run_corrupt(config(corruptions=("fog", "snow"), n_examples=20), out_root=out, sources=[source],
                    progress=False, force=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(UsageError, match=r"--source official: there are no official corrupted files for digits"):
        run_corrupt(config(source="official"), out_root=out, sources=[loaded], progress=False)


def test_the_api_returns_the_corruption_accuracies(tiny_runs, tmp_path):
    model = load_model(tiny_runs["baseline"]).model
    evaluation = api.evaluate(model, "digits", attacks=(), deformations=None, corruptions=("fog",), n_examples=20,
                              device="cpu", out=tmp_path, name="tiny", corrupt_config=CorruptConfig(severities=(2,)))
    stored = read(tmp_path / "tiny" / "corruptions.json")
    assert evaluation.corruptions == {"fog": {2: stored["sets"]["fog-2"]["accuracy"]}}
    assert evaluation.corruption_source == "generated" and evaluation.corruption_accuracy is None
    assert evaluation.clean_accuracy == stored["clean"]["accuracy"] and evaluation.n_examples == 20


def snapshot(root):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


@pytest.mark.parametrize("args, message", [
    (["--corruptions", "fog,blur"], "unknown corruption 'blur'; valid: all, gaussian_noise, shot_noise"),
    (["--severities", "0"], "unknown severity 0; valid: 1, 2, 3, 4, 5"),
    (["--severities", "1,6"], "unknown severity 6; valid: 1, 2, 3, 4, 5"),
    (["--source", "web"], "unknown --source 'web'; valid: auto, generated, official"),
    (["--source", "official"], "--source official: there are no official corrupted files for digits"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--weights", "middle"], "unknown --weights 'middle'; valid: last, best"),
    (["--checkpoint", "no-such-run"], "checkpoint 'no-such-run' not found"),
    (["--seed", "3"], "other settings (seed 0 -> 3); pass --force"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_changed(tiny_runs, checkpoints, tmp_path, capsys, args, message):
    out = tmp_path / "attacks"
    base = ["corrupt", "--checkpoints", str(checkpoints), "--checkpoint", tiny_runs["baseline"].name, "--out", str(out),
            "--device", "cpu", "--quiet", "--n-examples", "16", "--corruptions", "fog", "--severities", "1"]
    assert main(base) == 0
    capsys.readouterr()
    before = snapshot(out)
    code = main(base + args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot(out) == before
