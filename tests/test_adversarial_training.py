"""Table 5's two controls as trained models: PGD adversarial training and thermometer encoding.

Tiny digits models (width 4, 64 images, 2 steps an epoch) on the CPU: seconds in all.
"""

import copy
import json

import pytest
import torch
from conftest import tiny_config
from torch import nn

from robustbench_mm.attacks import PROTOCOLS, input_gradient, pgd, random_start
from robustbench_mm.cli import main
from robustbench_mm.config import METHOD_SETTINGS, train_config_for_preset
from robustbench_mm.errors import UsageError
from robustbench_mm.models.factory import model_from_config
from robustbench_mm.models.thermometer import ThermometerPreActResNet, bpda
from robustbench_mm.pipeline import finished_training
from robustbench_mm.runs.checkpoints import (
    STATE_FILE, load_model, load_tensors, parse_state_metadata, save_tensors, state_metadata)
from robustbench_mm.train.trainer import Trainer, train

SMALL = dict(width=4, epochs=2, milestones=(1,), batch_size=32, n_train=64, n_test=24, fgsm_eval_examples=24)


def small_config(out, method, **overrides):
    return tiny_config(out, method=method, **{**SMALL, **overrides})


class Recorder(nn.Module):
    """Passes every call through to `model`, keeping a copy of each input and whether it came with a mix argument."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.calls = []

    def forward(self, x, mix=None, *rest):
        self.calls.append(x.detach().clone())
        return self.model(x, mix, *rest)


def test_inner_attack_is_the_evaluations_pgd_from_the_same_random_start(tmp_path):
    trainer = Trainer(small_config(tmp_path, "adversarial", adv_steps=3), progress=False)
    trainer.build()
    c = trainer.config
    torch.manual_seed(1)
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    reference_model = copy.deepcopy(trainer.model).train()  # the weights before the step, in the trainer's mode
    generator_state = trainer.generator.get_state()
    trainer.model.train()
    recorder = Recorder(trainer.model)
    trainer.step_model = recorder
    trainer.train_step(x, y, None)
    # adv_steps forward+backward passes for the attack, then the training forward: no extra pass.
    assert len(recorder.calls) == c.adv_steps + 1
    trained_on = recorder.calls[-1]

    generator = torch.Generator().manual_seed(0)
    generator.set_state(generator_state)
    start = random_start(x, c.adv_eps, generator)
    run = pgd(reference_model, x, y, PROTOCOLS["standard"], c.adv_steps, c.adv_step_size, c.adv_eps, start=start)
    assert torch.equal(trained_on, run.adversarial)  # bit for bit
    assert torch.equal(recorder.calls[0], start)  # the attack starts from the random start, not from x
    assert (trained_on - x).abs().max() <= c.adv_eps + 1e-6 and 0 <= trained_on.min() and trained_on.max() <= 1
    assert not torch.equal(trained_on, x)


@pytest.fixture(scope="module")
def control_runs(tmp_path_factory):
    """One finished two-epoch run per control method, with the Trainer that trained it: {method: trainer}."""
    root = tmp_path_factory.mktemp("controls")
    trainers = {}
    for method in ("adversarial", "thermometer"):
        trainer = Trainer(small_config(root, method), progress=False)
        trainer.run()
        trainers[method] = trainer
    return trainers


@pytest.mark.parametrize("method", ["adversarial", "thermometer"])
def test_control_trains_checkpoints_resumes_and_reloads_with_identical_logits(tmp_path, monkeypatch, control_runs,
                                                                              method):
    full = control_runs[method]
    run_dir = full.run_dir
    meta = json.loads((run_dir / "meta.json").read_text())
    assert meta["complete"] and meta["method"] == method and meta["alpha"] is None
    assert all("fgsm" in h and "test_accuracy" in h for h in meta["history"])  # FGSM at every epoch
    if method == "adversarial":
        assert meta["adversarial_training"]["steps"] == 3 == meta["config"]["adv_steps"]  # the smoke preset's 3
        assert meta["adversarial_training"]["model_mode"] == "train"
        assert run_dir.name == "digits-preactresnet18-adversarial"
    else:
        assert meta["input_encoding"] == {"kind": "thermometer", "levels": 16, "differentiable": False,
                                          "bpda_surrogate": "Athalye et al. (2018)"}
        assert set(meta["history"][-1]["fgsm"]["accuracy"]) == {"standard"}  # no pixel-scale std: no paper protocol
        assert run_dir.name == "digits-preactresnet18-thermometer"

    # Stopped after its first epoch and resumed: the same weights as the uninterrupted run.
    original = Trainer._write_meta

    def stop_after_first_epoch(self):
        original(self)
        if self.state.epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_write_meta", stop_after_first_epoch)
    config = small_config(tmp_path, method)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    monkeypatch.setattr(Trainer, "_write_meta", original)
    resumed = train(config, resume=True, progress=False)
    for which in ("last", "best"):
        ours, theirs = load_model(resumed, which).model.state_dict(), load_model(run_dir, which).model.state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    # load_model rebuilds the same network from meta.json: identical logits to the model in the trainer.
    loaded = load_model(run_dir)
    assert type(loaded.model) is type(full.model)
    x = torch.rand(6, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), full.model.eval()(x))


def test_thermometer_run_reloads_with_zero_input_gradient_and_a_bpda_gradient(control_runs):
    model = load_model(control_runs["thermometer"].run_dir).model
    assert isinstance(model, ThermometerPreActResNet) and model.levels == 16
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    grad, _ = input_gradient(model, x, y, PROTOCOLS["standard"].loss)
    assert torch.count_nonzero(grad) == 0
    with bpda(model) as switched:
        bpda_grad, _ = input_gradient(model, x, y, PROTOCOLS["standard"].loss)
    assert switched == ["encoding"] and torch.count_nonzero(bpda_grad) > 0


def test_adversarial_run_reloads_as_a_plain_preactresnet_with_a_gradient(control_runs):
    model = load_model(control_runs["adversarial"].run_dir).model
    x, y = torch.rand(4, 3, 32, 32), torch.randint(0, 10, (4,))
    grad, _ = input_gradient(model, x, y, PROTOCOLS["standard"].loss)
    assert torch.count_nonzero(grad) > 0 and model.std.shape == (1, 3, 1, 1)


def test_presets_state_the_inner_attack():
    for preset, steps in (("paper", 7), ("fast", 7), ("smoke", 3)):
        config = train_config_for_preset(preset, method="adversarial")
        assert (config.adv_eps, config.adv_step_size, config.adv_steps) == (8 / 255, 2 / 255, steps)
        assert config.alpha == 0 and config.run_name.endswith("-preactresnet18-adversarial")
    assert train_config_for_preset("fast", method="thermometer").thermometer_levels == 16


def test_model_from_config_builds_the_configs_encoding():
    model = model_from_config(train_config_for_preset("smoke", method="thermometer", thermometer_levels=4, width=4))
    assert isinstance(model, ThermometerPreActResNet) and model.levels == 4
    assert model.network.conv1.in_channels == 12 and model.network.std.shape == (1, 12, 1, 1)
    assert not hasattr(model, "std")  # no pixel-scale std: the paper protocol must not apply
    plain = model_from_config(train_config_for_preset("smoke", method="adversarial", width=4))
    assert plain.conv1.in_channels == 3


@pytest.mark.parametrize("overrides, message", [
    (dict(method="thermometer", thermometer_levels=1), "--thermometer-levels must be a whole number of at least 2"),
    (dict(method="thermometer", thermometer_levels=0), "--thermometer-levels must be a whole number of at least 2"),
    (dict(method="thermometer", thermometer_levels=2.0), "--thermometer-levels must be a whole number"),
    (dict(method="adversarial", adv_eps=-0.01), "--adv-eps must be > 0"),
    (dict(method="adversarial", adv_eps=0.0), "--adv-eps must be > 0"),
    (dict(method="adversarial", adv_eps=float("nan")), "--adv-eps"),
    (dict(method="adversarial", adv_eps=8.0), "--adv-eps is on the [0, 1] pixel scale"),
    (dict(method="adversarial", adv_step_size=-2 / 255), "--adv-step-size must be > 0"),
    (dict(method="adversarial", adv_steps=0), "--adv-steps must be a whole number of at least 1"),
    (dict(method="adversarial", alpha=1.0), "--method adversarial mixes nothing"),
])
def test_bad_settings_are_one_line_usage_errors(overrides, message):
    with pytest.raises(UsageError) as error:
        train_config_for_preset("smoke", **overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("args, message", [
    (["--method", "thermometer", "--thermometer-levels", "1"], "--thermometer-levels must be a whole number"),
    (["--method", "adversarial", "--adv-eps", "-0.1"], "--adv-eps must be > 0"),
    (["--method", "adversarial", "--adv-steps", "0"], "--adv-steps must be a whole number of at least 1"),
    (["--method", "thermometer", "--alpha", "1"], "--alpha has no effect with --method thermometer"),
])
def test_cli_bad_settings_are_one_line_exit_2(tmp_path, capsys, args, message):
    code = main(["train", "--preset", "smoke", "--out", str(tmp_path / "ck"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "ck").exists()


def test_a_run_saved_before_the_control_settings_existed_still_resumes_and_counts_as_finished(tmp_path):
    # The smoke preset sets adv_steps = 3; an older run's config lacks it and reads back the default 7.
    config = small_config(tmp_path, "baseline", epochs=1, milestones=(1,), fgsm_eval_examples=0)
    run_dir = train(config, progress=False)
    meta = json.loads((run_dir / "meta.json").read_text())
    for name in METHOD_SETTINGS:
        del meta["config"][name]
    (run_dir / "meta.json").write_text(json.dumps(meta))
    tensors, metadata = load_tensors(run_dir / STATE_FILE)
    payload = parse_state_metadata(run_dir / STATE_FILE, metadata)
    for name in METHOD_SETTINGS:
        del payload["config"][name]
    save_tensors(run_dir / STATE_FILE, tensors, state_metadata(payload))
    assert finished_training(config)  # `reproduce` does not retrain it
    assert train(config, resume=True, progress=False) == run_dir  # and --resume does not refuse it
