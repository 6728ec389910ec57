"""Sharded deformation evaluation and AutoAttack without Ray: shards over disjoint test-index ranges merge
into the deform.json / autoattack-<eps>.json one run writes, and a finished shard is not measured again."""

from __future__ import annotations

import json

import pytest
import torch

from robustbench_mm.config import AttackConfig, DeformConfig
from robustbench_mm.evaluation import attack as attack_eval
from robustbench_mm.evaluation.attack import run_attacks
from robustbench_mm.evaluation.deform import run_deform
from robustbench_mm.scheduling import autoattack_shards, shards
from robustbench_mm.scheduling.autoattack_shards import autoattack_merge, autoattack_shard
from robustbench_mm.scheduling.graph import shard_ranges
from robustbench_mm.scheduling.shards import deform_merge, deform_shard, shard_path

TIMING_FIELDS = {"finished", "seconds"}


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_FIELDS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_shards_merge_into_the_file_one_run_writes(tiny_runs, tmp_path, monkeypatch):
    # 40 images in batches of 15 over 3 shards: [0, 15), [15, 30), [30, 40), the last a partial batch.
    config = DeformConfig(sets=("rotate-20", "zoom-in-80"), n_examples=40, batch_size=15, device="cpu")
    checkpoints, run = tiny_runs["manifold"].parent, tiny_runs["manifold"].name
    run_deform(config, checkpoints, tmp_path / "single", runs=[run], progress=False)
    ranges = shard_ranges(40, 3, config.batch_size)
    assert ranges == [(0, 15), (15, 30), (30, 40)]
    for example_range in reversed(ranges):  # any order: the merge puts them in index order
        deform_shard(config, checkpoints, tmp_path / "sharded", run, example_range)
    measured = []
    monkeypatch.setattr(shards, "measure_model", lambda *a, **k: measured.append(a) or None)
    assert deform_shard(config, checkpoints, tmp_path / "sharded", run, ranges[1]) == \
        shard_path(tmp_path / "sharded", run, config, ranges[1])
    assert measured == [], "a finished shard is kept, not measured again"
    merged = deform_merge(config, checkpoints, tmp_path / "sharded", run, ranges)
    single = json.loads((tmp_path / "single" / run / "deform.json").read_text())
    assert without_timings(json.loads(merged.read_text())) == without_timings(single)
    assert not (tmp_path / "sharded" / run / ".shards").exists()


def test_autoattack_shards_merge_into_the_file_one_run_writes(tiny_runs, tmp_path, monkeypatch):
    # 30 images in chunks of 10 over 2 shards: [0, 10) and [10, 30), the second two chunks.
    config = AttackConfig(n_examples=30, batch_size=10, protocols=("standard",), sweep=(0.0,), pgd_steps=3,
                          bounded_pgd_steps=2, save_examples=0, autoattack=True, aa_budget="smoke",
                          aa_paper_eps=False, device="cpu")
    checkpoints, run = tiny_runs["manifold"].parent, tiny_runs["manifold"].name
    run_attacks(config, checkpoints, tmp_path / "single", runs=[run], progress=False)
    ranges = shard_ranges(30, 2, config.batch_size)
    assert ranges == [(0, 10), (10, 30)]
    with pytest.raises(ValueError, match="must start and end on multiples of the chunk size 10"):
        autoattack_shard(config, checkpoints, tmp_path / "sharded", run, (0, 15))  # would cut chunk [10, 20)
    autoattack_shard(config, checkpoints, tmp_path / "sharded", run, ranges[0])

    class Killed(Exception):
        pass

    attack = autoattack_shards.run_autoattack

    def killed_after_one_chunk(*args):
        def save_then_die(flags):
            args[-1](flags)
            raise Killed

        return attack(*args[:-1], save_then_die)

    monkeypatch.setattr(autoattack_shards, "run_autoattack", killed_after_one_chunk)
    with pytest.raises(Killed):
        autoattack_shard(config, checkpoints, tmp_path / "sharded", run, ranges[1])
    resumed_with = []
    monkeypatch.setattr(autoattack_shards, "run_autoattack",
                        lambda *args: resumed_with.append(args[10] and int(args[10].done.sum())) or attack(*args))
    autoattack_shard(config, checkpoints, tmp_path / "sharded", run, ranges[1])
    assert resumed_with == [10], "the restarted shard continues after its finished chunk"
    autoattack_shard(config, checkpoints, tmp_path / "sharded", run, ranges[1])
    assert resumed_with == [10], "a finished shard is kept, not attacked again"

    [merged] = autoattack_merge(config, checkpoints, tmp_path / "sharded", run, ranges)
    single = json.loads((tmp_path / "single" / run / merged.name).read_text())
    assert without_timings(json.loads(merged.read_text())) == without_timings(single)
    assert not (tmp_path / "sharded" / run / ".shards").exists()
    # The attack stage after the merge reads its flags for the black-box masking check: no AutoAttack again.
    monkeypatch.setattr(attack_eval, "run_autoattack", lambda *a: pytest.fail("AutoAttack ran again"))
    loaded, data = autoattack_shards._model_and_images(config, checkpoints, run)
    attacks = attack_eval.ModelAttacks(loaded, data, config, tmp_path / "sharded" / run, torch.device("cpu"),
                                       force=False, progress=False)
    [check] = attacks.black_box_checks()
    masking = json.loads((tmp_path / "single" / run / "gradient-masking.json").read_text())
    assert [check.to_dict()] == [c for c in masking["checks"] if c["name"] == check.name]
