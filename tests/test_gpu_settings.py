"""The GPU configuration (bf16 autocast, channels-last, torch.compile) exercised on the CPU.

No CUDA device runs these tests, so MM_ROBUST_GPU_SETTINGS=1 makes the CPU take exactly the code
paths a GPU run takes (`common.runtime.gpu_settings`): the trainer autocasts to bf16 and keeps the
model channels-last, `--compile` wraps the step model, and the attacks feed channels-last batches.
Attacks stay in fp32: their outcomes must equal a plain fp32 run's.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from robustbench_mm.common.runtime import GPU_SETTINGS_ENV, gpu_settings
from robustbench_mm.config import AttackConfig
from robustbench_mm.evaluation.attack import run_attacks
from robustbench_mm.runs.checkpoints import load_model
from robustbench_mm.train.trainer import Trainer

ATTACK = AttackConfig(eps=(0.03,), sweep=(0.0, 0.03), pgd_steps=5, bounded_pgd_steps=3, n_examples=48, batch_size=16,
                      save_examples=0, device="cpu")


@pytest.fixture(scope="module")
def gpu_configured_run(tmp_path_factory):
    """One short training with the GPU configuration on the CPU: (trainer, dtypes seen at the classifier)."""
    root = tmp_path_factory.mktemp("gpu-settings")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(GPU_SETTINGS_ENV, "1")
        config = tiny_config(root / "checkpoints", method="baseline", precision="bf16", channels_last=True,
                             compile=True, epochs=1, milestones=(1,), n_train=96, n_test=48, fgsm_eval_examples=16)
        trainer = Trainer(config, progress=False)
        trainer.run(resume=False, force=False)
        # One more step of the trained model, watching the dtype its classifier computes in.
        seen: list[torch.dtype] = []
        trainer.model.linear.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
        trainer.model.train()
        trainer.train_step(x.contiguous(memory_format=torch.channels_last), y, None)
    return trainer, seen


def test_the_switch_applies_the_gpu_configuration_only_where_asked(monkeypatch):
    assert gpu_settings(torch.device("cuda"))
    monkeypatch.delenv(GPU_SETTINGS_ENV, raising=False)
    assert not gpu_settings(torch.device("cpu"))
    monkeypatch.setenv(GPU_SETTINGS_ENV, "1")
    assert gpu_settings(torch.device("cpu"))


def test_training_autocasts_to_bf16_keeps_channels_last_and_compiles(gpu_configured_run):
    trainer, seen = gpu_configured_run
    assert torch.bfloat16 in seen  # the training steps ran under bf16 autocast
    convolutions = [m.weight for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
    assert any(not w.is_contiguous() for w in convolutions)  # (a 1x1 kernel is both layouts at once)
    assert isinstance(trainer.step_model, torch._dynamo.eval_frame.OptimizedModule)
    meta = json.loads((trainer.run_dir / "meta.json").read_text())
    assert meta["complete"] and all(torch.isfinite(torch.tensor(h["train_loss"])) for h in meta["history"])
    assert meta["config"]["precision"] == "bf16" and meta["config"]["compile"] is True


def test_attacks_on_channels_last_batches_give_the_fp32_outcomes(gpu_configured_run, tmp_path, monkeypatch):
    trainer, _ = gpu_configured_run
    outcomes = {}
    for setting in ("1", "0"):
        monkeypatch.setenv(GPU_SETTINGS_ENV, setting)
        out = tmp_path / f"attacks-{setting}"
        run_attacks(ATTACK, trainer.run_dir.parent, out, progress=False)
        result = json.loads((out / trainer.run_dir.name / "fgsm-standard.json").read_text())
        pgd = json.loads((out / trainer.run_dir.name / "pgd-bounded.json").read_text())
        outcomes[setting] = (result["per_example"], pgd["per_example"], result["accuracy"], pgd["accuracy"])
    assert outcomes["1"] == outcomes["0"]
    loaded = load_model(trainer.run_dir, "last", "cpu")
    assert next(loaded.model.parameters()).dtype == torch.float32  # weights are stored and evaluated in fp32
