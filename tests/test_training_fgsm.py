"""FGSM during training: the numbers equal a separate attack, and training is not changed by it."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_config
from robustbench_mm.cli import main
from robustbench_mm.data.images import load_dataset
from robustbench_mm.errors import UsageError
from robustbench_mm.models.factory import model_from_config
from robustbench_mm.runs.results import result_path
from robustbench_mm.train.fgsm_monitor import fgsm_during_training, resolve_fgsm_examples
from robustbench_mm.train.trainer import train
from test_train import FAST, assert_identical, weights

N_FGSM = 35  # not a multiple of the batch size, so the last batch is a partial one
EVAL_BATCH = 20


def history(run_dir):
    return json.loads((run_dir / "meta.json").read_text())["history"]


def test_fgsm_during_training_leaves_the_weights_bit_identical(tmp_path):
    settings = dict(method="manifold", eval_batch_size=EVAL_BATCH, **FAST)
    without = train(tiny_config(tmp_path / "off", fgsm_eval_examples=0, **settings), progress=False)
    with_fgsm = train(tiny_config(tmp_path / "on", fgsm_eval_examples=N_FGSM, **settings), progress=False)
    for which in ("last", "best"):  # BatchNorm's running statistics are part of the weights
        assert_identical(weights(without, which), weights(with_fgsm, which))
    assert all("fgsm" not in h for h in history(without))
    records = [h["fgsm"] for h in history(with_fgsm)]
    assert len(records) == FAST["epochs"]
    assert all(r["n_examples"] == N_FGSM and r["eps"] == 0.03 and set(r["accuracy"]) == {"standard", "paper"}
               and r["seconds"] > 0 for r in records)


def test_fgsm_during_training_equals_a_separate_attack(tmp_path):
    config = tiny_config(tmp_path / "ck", method="baseline", fgsm_eval_examples=N_FGSM,
                         eval_batch_size=EVAL_BATCH, **{**FAST, "epochs": 3, "milestones": (2,)})
    run = train(config, progress=False)
    records = {h["epoch"]: h for h in history(run)}
    meta = json.loads((run / "meta.json").read_text())
    for which in ("last", "best"):
        out = tmp_path / f"attacks-{which}"
        code = main(["attack", "--checkpoints", str(tmp_path / "ck"), "--out", str(out), "--weights", which,
                     "--n-examples", str(N_FGSM), "--batch-size", str(EVAL_BATCH), "--pgd-steps", "1",
                     "--bounded-pgd-steps", "1", "--save-examples", "0", "--device", "cpu", "--quiet"])
        assert code == 0
        in_training = records[meta["checkpoints"][which]["epoch"]]["fgsm"]["accuracy"]
        for protocol in ("standard", "paper"):
            attacked = json.loads(result_path(out, run.name, f"fgsm-{protocol}", which).read_text())
            assert attacked["n_examples"] == N_FGSM and attacked["eps"] == [0.03]
            assert attacked["accuracy"][0] == in_training[protocol], (which, protocol)


def test_fgsm_during_training_restores_the_mode_and_touches_no_buffer(tmp_path):
    model = model_from_config(tiny_config(tmp_path)).train()
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    data = load_dataset("digits", train=False).subset(30)
    result = fgsm_during_training(model, data, 30, 16)
    assert model.training
    assert_identical(buffers, model.state_dict())
    assert all(p.grad is None for p in model.parameters())
    assert 0 <= result["accuracy"]["standard"] <= 100 and result["n_examples"] == 30


def test_how_many_examples_by_default():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_fgsm_examples(None, cuda, 10000) == 10000
    assert resolve_fgsm_examples(None, cpu, 10000) == 200
    assert resolve_fgsm_examples(None, cpu, 120) == 120
    assert resolve_fgsm_examples(0, cuda, 10000) == 0
    assert resolve_fgsm_examples(500, cpu, 357) == 357


def test_negative_example_count_is_refused(tmp_path):
    with pytest.raises(UsageError, match="--fgsm-eval-examples must be >= 0, got -1"):
        tiny_config(tmp_path, fgsm_eval_examples=-1)
