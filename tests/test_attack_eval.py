"""`mm-robust attack` end to end on tiny models: result files, skipping, the summary and bad input."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from robustbench_mm.cli import main
from robustbench_mm.config import AttackConfig
from robustbench_mm.data.images import load_dataset
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation.attack import run_attacks
from robustbench_mm.evaluation.attack_plan import check_num_classes
from robustbench_mm.evaluation.attack_summary import attack_summary
from robustbench_mm.runs.files import EXAMPLES_FILE, MASKING_FIGURE
from robustbench_mm.runs.results import decode_mask


# Two batches (one partial) of a fixed subset, and few steps: these tests check plumbing, not robustness.
SMALL = AttackConfig(eps=(0.03, 0.1), sweep=(0.0, 0.05), pgd_steps=8, pgd_step_size=0.05, bounded_pgd_steps=3,
                     n_examples=24, batch_size=16, save_examples=6, device="cpu")
SMALL_ARGS = ["--eps", "0.03,0.1", "--sweep", "0,0.05", "--pgd-steps", "8", "--pgd-step-size", "0.05",
              "--bounded-pgd-steps", "3", "--n-examples", "24", "--batch-size", "16", "--save-examples", "6",
              "--device", "cpu", "--quiet"]
JSON_FILES = ("fgsm-standard.json", "fgsm-paper.json", "pgd-unbounded-standard.json", "pgd-unbounded-paper.json",
              "pgd-bounded.json", "gradient-masking.json")


@pytest.fixture(scope="module")
def attacked(tiny_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("attacks")
    paths = run_attacks(SMALL, tiny_runs["baseline"].parent, out, progress=False)
    return out, paths


def read(out, run, name):
    return json.loads((out / run / name).read_text())


def mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if not p.name.startswith(".")}


def test_every_model_gets_every_result_file(attacked, tiny_runs):
    out, paths = attacked
    for run_dir in tiny_runs.values():
        names = {p.name for p in (out / run_dir.name).iterdir()}
        assert set(JSON_FILES) | {EXAMPLES_FILE, MASKING_FIGURE} <= names
        assert {out / run_dir.name / f for f in JSON_FILES} <= set(paths)


def test_fgsm_results_follow_the_contract(attacked, tiny_runs):
    out, _ = attacked
    run = tiny_runs["baseline"].name
    n = SMALL.n_examples
    for protocol in ("standard", "paper"):
        result = read(out, run, f"fgsm-{protocol}.json")
        assert result["protocol"] == protocol and result["n_examples"] == n
        assert result["eps"] == [0.03, 0.1] and len(result["accuracy"]) == 2
        assert result["sweep"]["eps"] == [0.0, 0.03, 0.05, 0.1]
        sweep = dict(zip(result["sweep"]["eps"], result["sweep"]["accuracy"]))
        assert result["accuracy"] == [sweep[0.03], sweep[0.1]]
        assert sweep[0.0] == result["clean"]["accuracy"]
        assert result["settings"]["protocol"] == protocol and result["model"]["key"] == "baseline"
        assert "versions" in result and result["settings"]["n_examples"] == n
        assert 0 < result["clean"]["nll"] < 10
    assert read(out, run, "fgsm-standard.json")["protocol_description"] == \
        "matches torchattacks.FGSM (eps on [0,1], CE, clip)"


def test_pgd_and_masking_results_follow_the_contract(attacked, tiny_runs):
    out, _ = attacked
    run = tiny_runs["manifold"].name
    clean = read(out, run, "fgsm-standard.json")["clean"]["accuracy"]
    for protocol in ("standard", "paper"):
        pgd = read(out, run, f"pgd-unbounded-{protocol}.json")
        assert pgd["protocol"] == protocol and pgd["verdict"] == (protocol == "paper")
        assert pgd["steps"] == 8 and pgd["step_size"] == 0.05 and len(pgd["accuracy_per_step"]) == 9
        assert pgd["accuracy_per_step"][0] == clean and pgd["final_accuracy"] == pgd["accuracy_per_step"][-1]
        assert pgd["passed"] == (pgd["final_accuracy"] <= pgd["threshold"]) and pgd["threshold"] == 1.0
        assert "worst case over iterates" in pgd["robust_accuracy"]
        assert all(a >= b for a, b in zip(pgd["accuracy_per_step"], pgd["accuracy_per_step"][1:]))
    masking = read(out, run, "gradient-masking.json")
    names = [c["name"] for c in masking["checks"]]
    assert names == ["unbounded-pgd-reaches-zero", "iterative-at-least-single-step",
                     "accuracy-does-not-rise-with-eps", "eps-zero-equals-clean",
                     "input-gradients-nonzero-and-finite", "logits-deterministic", "optimisation-complete",
                     "success-flags-agree-with-model"]
    assert all(set(c) >= {"name", "passed", "value", "detail"} for c in masking["checks"])
    assert masking["flagged"] == (not all(c["passed"] for c in masking["checks"]))


def test_every_accuracy_is_stored_per_example(attacked, tiny_runs):
    """The shared contract: per_example.correct masks over example_range reproduce every reported accuracy."""
    out, _ = attacked
    run = tiny_runs["baseline"].name
    n = SMALL.n_examples
    expected_labels = {"fgsm-standard.json": {"clean", "eps=0.03", "eps=0.1"},
                       "fgsm-paper.json": {"clean", "eps=0.03", "eps=0.1"},
                       "pgd-unbounded-standard.json": {"clean", "final"}, "pgd-unbounded-paper.json": {"clean", "final"},
                       "pgd-bounded.json": {"clean", "final"}}
    for name, labels in expected_labels.items():
        result = read(out, run, name)
        per_example = result["per_example"]
        assert per_example["example_range"] == [0, n] and set(per_example["correct"]) == labels
        masks = {k: decode_mask(v) for k, v in per_example["correct"].items()}
        assert all(len(m) == n for m in masks.values())
        assert 100 * masks["clean"].mean() == pytest.approx(read(out, run, "fgsm-standard.json")["clean"]["accuracy"])
        if name.startswith("fgsm-"):
            assert [100 * masks[f"eps={e:g}"].mean() for e in result["eps"]] == pytest.approx(result["accuracy"])
        elif name == "pgd-bounded.json":
            assert 100 * masks["final"].mean() == pytest.approx(result["accuracy"])
            assert not (masks["final"] & ~masks["clean"]).any()  # worst case: a clean error is never robust
        else:
            assert 100 * masks["final"].mean() == pytest.approx(result["final_accuracy"])


def test_adversarial_examples_file(attacked, tiny_runs):
    out, _ = attacked
    path = out / tiny_runs["baseline"].name / EXAMPLES_FILE
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    assert metadata["eps"] == "0.03" and metadata["protocol"] == "standard"
    assert tensors["clean"].shape == tensors["adversarial"].shape == (6, 3, 32, 32)
    assert (tensors["adversarial"] - tensors["clean"]).abs().max() <= 0.03 + 1e-6
    assert tensors["labels"].shape == tensors["clean_pred"].shape == tensors["adversarial_pred"].shape == (6,)


def test_rerun_skips_finished_work_and_force_redoes_it(attacked, tiny_runs, tmp_path):
    source, _ = attacked
    out = tmp_path / "attacks"
    shutil.copytree(source, out)
    run = tiny_runs["baseline"].name
    before = mtimes(out / run)
    paths = run_attacks(SMALL, tiny_runs["baseline"].parent, out, runs=[run], progress=False)
    assert mtimes(out / run) == before
    assert {p.name for p in paths} == set(JSON_FILES) | {EXAMPLES_FILE, "model-contract.json"}

    # A run killed after FGSM: the PGD and masking files are missing and are the only ones redone.
    (out / run / "pgd-unbounded-paper.json").unlink()
    (out / run / "gradient-masking.json").unlink()
    run_attacks(SMALL, tiny_runs["baseline"].parent, out, runs=[run], progress=False)
    after = mtimes(out / run)
    assert after["fgsm-standard.json"] == before["fgsm-standard.json"]
    assert after["pgd-unbounded-standard.json"] == before["pgd-unbounded-standard.json"]
    volatile = {"finished": None, "seconds": None, "git_commit": None}  # the tree may turn dirty mid-test
    assert read(out, run, "pgd-unbounded-paper.json") | volatile == \
        read(source, run, "pgd-unbounded-paper.json") | volatile

    # Different settings would replace a finished result of the same weights: refused unless forced.
    changed = AttackConfig(**{**SMALL.to_dict(), "pgd_steps": 5})
    with pytest.raises(UsageError, match=r"other settings \(pgd_steps 8 -> 5\); pass --force"):
        run_attacks(changed, tiny_runs["baseline"].parent, out, runs=[run], progress=False)
    assert mtimes(out / run) == after

    run_attacks(changed, tiny_runs["baseline"].parent, out, runs=[run], force=True, progress=False)
    assert len(read(out, run, "pgd-unbounded-standard.json")["accuracy_per_step"]) == 6
    assert mtimes(out / run)["fgsm-paper.json"] != before["fgsm-paper.json"]


def test_cli_writes_results_and_prints_the_summary_for_both_protocols(attacked, tiny_runs, tmp_path, capsys):
    source, _ = attacked
    out = tmp_path / "attacks"
    shutil.copytree(source, out)  # same settings as SMALL: the CLI reuses the finished files
    code = main(["attack", "--checkpoints", str(tiny_runs["baseline"].parent), "--out", str(out), *SMALL_ARGS])
    printed = capsys.readouterr().out
    assert code == 0
    lines = printed.splitlines()
    assert "FGSM eps=0.03" in lines[1] and "FGSM eps=0.1" in lines[1] and "paper eps=0.03" in lines[1]
    baseline = next(line for line in lines if line.startswith("baseline"))
    fgsm = read(out, tiny_runs["baseline"].name, "fgsm-standard.json")
    assert "standard" in baseline and f"{fgsm['accuracy'][0]:.2f}" in baseline and "36.32 (CIFAR-10)" in baseline
    assert sum(" paper " in line for line in lines[3:]) == 2  # one paper-protocol row per model
    assert "manifold-a2" in printed


def test_summary_marks_flagged_models(attacked, tiny_runs, tmp_path):
    source, paths = attacked
    out = tmp_path / "attacks"
    shutil.copytree(source, out)
    run = tiny_runs["manifold"].name
    masking = read(out, run, "gradient-masking.json")
    masking["checks"][4]["passed"] = False
    masking["flagged"], masking["failed"] = True, [masking["checks"][4]["name"]]
    (out / run / "gradient-masking.json").write_text(json.dumps(masking))
    summary = attack_summary([out / p.relative_to(source) for p in paths])
    row = next(line for line in summary.splitlines() if line.startswith("manifold-a2"))
    assert "FLAGGED: input-gradients-nonzero-and-finite" in row


@pytest.mark.parametrize("args, message", [
    (["--eps", "-0.01"], "--eps values must be finite and >= 0, got -0.01"),
    (["--eps", "1.5"], "--eps 1.5 is outside the [0, 1] pixel range of the standard protocol"),
    (["--eps", "nan"], "--eps values must be finite and >= 0"),
    (["--pgd-steps", "0"], "--pgd-steps must be > 0, got 0"),
    (["--bounded-pgd-steps", "-3"], "--bounded-pgd-steps must be > 0, got -3"),
    (["--protocol", "madry"], "unknown protocol 'madry'; valid: standard, paper"),
    (["--checkpoint", "no-such-run"], "checkpoint 'no-such-run' not found"),
    (["--dataset", "cifar100"], "was trained on digits, not --dataset cifar100"),
    (["--weights", "middle"], "unknown checkpoint 'middle'; valid: last, best"),
    (["--autoattack", "--aa-eps", "eight"], "--aa-eps: expected a number or a fraction like 8/255, got 'eight'"),
    (["--autoattack", "--aa-eps", "8/0"], "--aa-eps: expected a number or a fraction like 8/255, got '8/0'"),
    (["--autoattack", "--aa-eps", "0"], "--aa-eps must be in (0, 1] on the pixel scale, e.g. 8/255, got 0"),
    (["--autoattack", "--aa-eps=-8/255"], "--aa-eps must be in (0, 1] on the pixel scale"),
    (["--autoattack", "--aa-eps", "300/255"], "--aa-eps must be in (0, 1] on the pixel scale"),
    (["--autoattack", "--aa-budget", "plus"], "argument --aa-budget: invalid choice: 'plus'"),
    (["--n-examples", "0"], "--n-examples must be > 0, got 0"),
    (["--n-examples", "-5"], "--n-examples must be > 0, got -5"),
    (["--n-examples", "358"], "--n-examples 358 is more than the 357 images of the digits test set"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny_runs, tmp_path, capsys, args, message):
    out = tmp_path / "attacks"
    try:
        code = main(["attack", "--checkpoints", str(tiny_runs["baseline"].parent), "--out", str(out), "--quiet", *args])
    except SystemExit as exit:  # argparse refuses what its types and choices reject
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_paper_protocol_alone_accepts_eps_above_one():
    assert AttackConfig(eps=(2.0,), protocols=("paper",), sweep=(0.0,)).eps == (2.0,)


def test_corrupted_checkpoint_is_a_clear_error(tiny_runs, tmp_path, capsys):
    broken = tmp_path / "ck" / tiny_runs["baseline"].name
    shutil.copytree(tiny_runs["baseline"], broken)
    weights = broken / "last.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    out = tmp_path / "attacks"
    code = main(["attack", "--checkpoints", str(broken.parent), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "corrupted checkpoint" in err and err.count("\n") == 1
    assert not out.exists()


def test_model_with_the_wrong_number_of_classes_is_refused():
    data = load_dataset("digits", train=False).subset(4)
    loaded = SimpleNamespace(name="cifar100-model", model=SimpleNamespace(linear=torch.nn.Linear(8, 100)))
    with pytest.raises(UsageError, match="predicts 100 classes but digits has 10"):
        check_num_classes(loaded, data)
