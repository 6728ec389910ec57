import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from robustbench_mm.cli import main
from robustbench_mm.config import train_config_for_preset
from robustbench_mm.errors import UsageError
from robustbench_mm.train.trainer import Trainer, lr_at, train

FAST = dict(epochs=2, milestones=(1,), n_train=96, n_test=40, width=4)


def weights(run_dir, which="last"):
    return load_file(str(run_dir / f"{which}.safetensors"))


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_step_schedule():
    config = train_config_for_preset("paper", method="baseline")
    assert [lr_at(config, e) for e in (0, 399, 400, 799, 800, 1199)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_presets_match_the_spec():
    paper = train_config_for_preset("paper", method="manifold")
    assert (paper.epochs, paper.milestones, paper.batch_size, paper.momentum, paper.nesterov, paper.weight_decay) == (
        1200, (400, 800), 100, 0.9, True, 1e-4)
    assert paper.alpha == 2.0 and paper.loss == "bce" and paper.dataset == "cifar10"
    assert train_config_for_preset("fast", method="input").alpha == 1.0
    assert train_config_for_preset("smoke", method="input").dataset == "digits"


def test_same_seed_gives_bit_identical_weights(tmp_path):
    a = train(tiny_config(tmp_path / "a", method="manifold", **FAST), progress=False)
    b = train(tiny_config(tmp_path / "b", method="manifold", **FAST), progress=False)
    c = train(tiny_config(tmp_path / "c", method="manifold", seed=1, **FAST), progress=False)
    assert_identical(weights(a), weights(b))
    assert not torch.equal(weights(a)["linear.weight"], weights(c)["linear.weight"])


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch):
    settings = dict(method="input", **{**FAST, "epochs": 3, "milestones": (2,)})
    full = train(tiny_config(tmp_path / "full", **settings), progress=False)

    original = Trainer._write_meta
    calls = {"n": 0}

    def stop_after_first_epoch(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_write_meta", stop_after_first_epoch)
    config = tiny_config(tmp_path / "cut", **settings)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    meta = json.loads((tmp_path / "cut" / config.run_name / "meta.json").read_text())
    assert meta["epoch"] == 1 and meta["complete"] is False
    monkeypatch.setattr(Trainer, "_write_meta", original)
    resumed = train(config, resume=True, progress=False)
    assert_identical(weights(full), weights(resumed))
    assert json.loads((resumed / "meta.json").read_text())["complete"] is True


def test_meta_records_config_metrics_and_labels_both_checkpoints(tiny_runs):
    run = tiny_runs["manifold"]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["method"] == "manifold" and meta["alpha"] == 2.0 and meta["dataset"] == "digits"
    assert meta["config"]["seed"] == 0 and meta["seed"] == 0
    assert {"torch", "python"} <= set(meta["versions"]) and meta["git_commit"]
    assert set(meta["checkpoints"]) == {"last", "best"}
    assert "paper reports" in meta["checkpoints"]["best"]["selection"]
    assert meta["checkpoints"]["last"]["epoch"] == meta["epochs"] == len(meta["history"])
    best = max(h["test_accuracy"] for h in meta["history"])
    assert meta["checkpoints"]["best"]["test_accuracy"] == best
    assert all({"train_loss", "test_accuracy", "test_nll", "images_per_second"} <= set(h) for h in meta["history"])
    assert (run / "best.safetensors").is_file() and (run / "state.safetensors").is_file()


def test_existing_run_needs_resume_or_force(tmp_path):
    config = tiny_config(tmp_path, method="baseline", **FAST)
    run = train(config, progress=False)
    before = (run / "last.safetensors").read_bytes()
    with pytest.raises(UsageError, match="already exists; pass --resume to continue it or --force"):
        train(config, progress=False)
    assert (run / "last.safetensors").read_bytes() == before
    assert train(config, resume=True, progress=False) == run  # complete: nothing to do
    train(config, force=True, progress=False)


def test_resume_with_changed_settings_is_refused(tmp_path):
    config = tiny_config(tmp_path, method="baseline", **FAST)
    train(config, progress=False)
    changed = tiny_config(tmp_path, method="baseline", **{**FAST, "lr": 0.2})
    with pytest.raises(UsageError, match=r"lr=0.05 \(now 0.2\)"):
        train(changed, resume=True, progress=False)


def test_cli_method_all_trains_the_four_table_models(tmp_path, capsys):
    code = main(["train", "--preset", "smoke", "--method", "all", "--out", str(tmp_path), "--epochs", "1",
                 "--n-train", "64", "--n-test", "32", "--width", "4", "--batch-size", "32", "--device", "cpu",
                 "--quiet"])
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["digits-preactresnet18-baseline", "digits-preactresnet18-input-a1",
                     "digits-preactresnet18-input-a2", "digits-preactresnet18-manifold-a2"]


@pytest.mark.parametrize("args, message", [
    (["--dataset", "mnist"], "unknown dataset 'mnist'; valid: cifar10, cifar100, digits"),
    (["--method", "cutmix"], "unknown method 'cutmix'; valid: baseline, input, manifold, adversarial, thermometer, all"),
    (["--preset", "huge"], "unknown preset 'huge'; valid: paper, fast, smoke"),
    (["--arch", "resnet50"], "unknown architecture 'resnet50'"),
    (["--alpha", "0", "--method", "input"], "--alpha must be > 0, got 0.0"),
    (["--alpha", "-1"], "--alpha has no effect with --method baseline"),
    (["--epochs", "0"], "--epochs must be > 0, got 0"),
    (["--batch-size", "-4"], "--batch-size must be > 0, got -4"),
    (["--loss", "mse"], "unknown loss 'mse'; valid: bce, ce"),
    (["--dataset", "cifar10", "--no-download", "--data-dir", "/nonexistent"], "cifar10 not found"),
    (["--device", "cuda"], "no CUDA GPU"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "ck"
    code = main(["train", "--preset", "smoke", "--out", str(out), "--quiet", "--method", "baseline", *args]
                if "--method" not in args else ["train", "--preset", "smoke", "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not any(p.suffix in (".json", ".safetensors") for p in out.rglob("*")) if out.exists() else True


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["train", "--preset", "smoke", "--method", "baseline", "--out", str(blocker / "sub"), "--quiet"])
    assert code == 2
    assert "is not writable" in capsys.readouterr().err
