"""Shared fixtures: tiny offline models trained once per test session, on the CPU."""

from __future__ import annotations

import os

import pytest
import torch

from robustbench_mm.config import train_config_for_preset
from robustbench_mm.train.trainer import train

torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = dict(width=8, epochs=3, milestones=(2,), batch_size=32, n_train=320, n_test=120, device="cpu", lr=0.05)


def tiny_config(out, **overrides):
    """A digits config that trains in seconds on two cores."""
    return train_config_for_preset("smoke", out=str(out), **{**TINY, **overrides})


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Baseline and manifold-mixup tiny models in one checkpoints folder: {key: run_dir}."""
    root = tmp_path_factory.mktemp("checkpoints")
    runs = {}
    for method in ("baseline", "manifold"):
        config = tiny_config(root, method=method)
        runs[method] = train(config, progress=False)
    return runs
