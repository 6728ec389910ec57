"""The benchmark runner works and its arithmetic is right; no test here times anything."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
from gpu_bench import peak_tflops  # noqa: E402
from timing import interleaved, ratio, rotated  # noqa: E402


def test_ratio_is_the_median_of_per_round_ratios():
    stats = ratio([2.0, 3.0, 10.0], [1.0, 2.0, 2.0])
    assert stats == {"value": 2.0, "min": 1.5, "max": 5.0, "rounds": 3}
    assert ratio([4.0], [2.0], scale=0.5)["value"] == 1.0
    with pytest.raises(ValueError):
        ratio([1.0, 2.0], [1.0])


def test_rounds_rotate_the_order_of_the_variants():
    assert [rotated(["a", "b", "c"], r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                        device=torch.device("cpu"), rounds=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a"]
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}


def test_goals_are_checked_in_the_right_direction():
    assert report.figure("k", "l", 1.02, "ratio", ("<=", 1.03))["met"] is True
    assert report.figure("k", "l", 1.05, "ratio", ("<=", 1.03))["met"] is False
    assert report.figure("k", "l", 0.85, "ratio", (">=", 0.9))["met"] is False
    assert "met" not in report.figure("k", "l", 3.0, "s")


def test_gpu_peaks_match_the_most_specific_name_first():
    assert peak_tflops("NVIDIA H100 PCIe")["bf16"] == 756.0
    assert peak_tflops("NVIDIA H100 80GB HBM3")["bf16"] == 989.4
    assert peak_tflops("NVIDIA GeForce GTX 1080") is None


def test_merge_keeps_sections_not_measured_now(tmp_path):
    machine = {"tag": "t"}
    first = report.merge_results(tmp_path / "t.json", machine, {"name": "cpu"}, {"a": {"x": 1}, "b": {"x": 2}})
    (tmp_path / "t.json").write_text(json.dumps(first))
    second = report.merge_results(tmp_path / "t.json", machine, {"name": "cpu"}, {"b": {"x": 3}})
    assert second["sections"] == {"a": {"x": 1}, "b": {"x": 3}}


def run_bench(*args):
    return subprocess.run([sys.executable, str(BENCH / "run.py"), *args], capture_output=True, text=True,
                          timeout=300)


def test_quick_training_run_writes_json_and_markdown(tmp_path):
    finished = run_bench("--quick", "--only", "training", "--device", "cpu", "--out", str(tmp_path))
    assert finished.returncode == 0, finished.stderr
    tag = f"cpu-{os.cpu_count()}core-quick"
    results = json.loads((tmp_path / f"{tag}.json").read_text())
    assert results["format"] == report.RESULT_FORMAT
    assert results["machine"]["device"] == "cpu" and results["machine"]["torch"]
    training = results["sections"]["training"]
    keys = {f["key"] for f in training["figures"]}
    assert {"training.input_over_baseline", "training.manifold_over_baseline"} <= keys
    assert all(f["value"] > 0 for f in training["figures"])
    assert "opt-in" in results["sections"]["e2e"]["skipped"]
    markdown = (tmp_path / f"{tag}.md").read_text()
    assert "manifold mixup step / baseline step" in markdown


def test_unknown_section_is_one_line_exit_2(tmp_path):
    finished = run_bench("--only", "training,warp", "--out", str(tmp_path))
    assert finished.returncode == 2
    assert "unknown section(s) ['warp']; valid: training, pipeline" in finished.stderr
    assert finished.stderr.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_gpu_grid_configuration_and_figures_run_on_a_cpu():
    """The GPU grid's per-configuration code and its figures, at toy size on the CPU, so a GPU
    session does not discover a bug in them; only the CUDA calls themselves are left out."""
    from bench_data import benchmark_dataset
    from gpu_bench import grid_section, one_configuration
    from profiles import PROFILES

    profile = PROFILES["quick"]
    data = benchmark_dataset(torch.device("cpu"), "data").subset(64)
    run = one_configuration(profile, torch.device("cpu"), data, "fp32", False, False, batch=16, width=4)
    assert run["images"] == 64 and len(run["epoch_seconds"]) == profile.gpu_epochs
    assert run["peak_memory_gib"] is None and run["flops_per_image"] > 0
    section = grid_section("NVIDIA H100 80GB HBM3", data.name, profile, [run], ["('bf16', ...) failed: demo"])
    values = {f["key"]: f for f in section["figures"]}
    assert set(values) == {"gpu.fp32.cl0.compile0.batch16.epoch_s", "gpu.fp32.cl0.compile0.batch16.images_per_s",
                           "gpu.fp32.cl0.compile0.batch16.share_of_peak"}
    assert values["gpu.fp32.cl0.compile0.batch16.epoch_s"]["goal"] == "<= 2"
    assert 0 < values["gpu.fp32.cl0.compile0.batch16.share_of_peak"]["value"] < 100
    assert "('bf16', ...) failed: demo" in section["notes"]
    assert "every configuration failed" in grid_section("x", "d", profile, [], ["all bad"])["skipped"]


def test_keep_refuses_a_folder_that_already_holds_files(tmp_path):
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "mine.txt").write_text("a user's file")
    finished = run_bench("--only", "e2e", "--keep", str(kept), "--out", str(tmp_path / "out"))
    assert finished.returncode == 2
    assert f"--keep {str(kept)!r} is not an empty folder" in finished.stderr
    assert finished.stderr.count("\n") == 1
    assert [p.name for p in kept.iterdir()] == ["mine.txt"] and not (tmp_path / "out").exists()


def test_a_kept_run_folder_holds_what_the_command_wrote(tmp_path):
    """`--keep` leaves the reproduction's folder in place; without it the folder is temporary."""
    from smoke_runs import run_folder

    with run_folder(tmp_path, "kept") as folder:
        (folder / "checkpoints").mkdir()
    assert (tmp_path / "kept" / "checkpoints").is_dir()
    with pytest.raises(FileExistsError):
        with run_folder(tmp_path, "kept"):
            pass
    with run_folder(None, "temp") as folder:
        temporary = folder
        (folder / "x").write_text("")
    assert not temporary.exists()


def test_corruption_overall_ratio_is_total_over_total_per_round():
    from corruption_bench import overall_ratio

    times = {"a": {"batched": [1.0, 2.0], "per-image": [10.0, 10.0]},
             "b": {"batched": [1.0, 2.0], "per-image": [30.0, 30.0]}}
    assert overall_ratio(times) == {"value": 15.0, "min": 10.0, "max": 20.0, "rounds": 2}  # 40/2 and 40/4


def test_quick_corruption_section_reports_every_corruption(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("cv2")
    finished = run_bench("--quick", "--only", "corruptions", "--device", "cpu", "--out", str(tmp_path),
                         "--label", "Shared machine")
    assert finished.returncode == 0, finished.stderr
    results = json.loads((tmp_path / f"cpu-{os.cpu_count()}core-shared-machine-quick.json").read_text())
    figures = {f["key"]: f for f in results["sections"]["corruptions"]["figures"]}
    from robustbench_mm.data.corruptions import ALL_CORRUPTIONS

    for name in ALL_CORRUPTIONS:
        assert {f"corrupt.{name}.batched_images_per_s", f"corrupt.{name}.per_image_images_per_s",
                f"corrupt.{name}.speedup"} <= set(figures)
    assert figures["corrupt.speedup_overall"]["goal"] == ">= 20"
    assert figures["corrupt.generation_over_evaluation"]["goal"] == "<= 1"
    assert figures["corrupt.corrupted_over_clean_evaluation"]["goal"] == "<= 1.2"
    assert all(f["value"] > 0 for f in figures.values())
