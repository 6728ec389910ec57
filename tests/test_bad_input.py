"""Every user mistake, across all commands: one line naming the problem, exit code 2, no traceback,
and no file created or changed."""

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_mm.cli import main

RUN = "digits-preactresnet18-baseline"


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path("payload-ran"),))


ATTACK_SMALL = ["attack", "--checkpoint", RUN, "--quiet", "--eps", "0.03", "--sweep", "0", "--pgd-steps", "2",
                "--bounded-pgd-steps", "2", "--n-examples", "8", "--batch-size", "8", "--save-examples", "2",
                "--device", "cpu"]
DEFORM_SMALL = ["deform", "--checkpoint", RUN, "--quiet", "--sets", "rotate-20", "--n-examples", "8", "--device", "cpu"]


@pytest.fixture(scope="module")
def finished_results(tiny_runs, tmp_path_factory, monkeypatch_module):
    """attacks/ holding finished attack and deform results of the baseline run, made once."""
    root = tmp_path_factory.mktemp("results")
    monkeypatch_module.chdir(root)
    shutil.copytree(tiny_runs["baseline"], root / "checkpoints" / RUN)
    assert main(ATTACK_SMALL) == 0 and main(DEFORM_SMALL) == 0
    return root / "attacks"


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
def workspace(tmp_path, tiny_runs, finished_results, monkeypatch):
    """A project folder with one trained and evaluated run, one corrupted run, a planted pickle and a
    read-only-like blocker."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_runs["baseline"], tmp_path / "checkpoints" / RUN)
    shutil.copytree(finished_results, tmp_path / "attacks")
    broken = tmp_path / "checkpoints" / "broken"
    shutil.copytree(tiny_runs["baseline"], broken)
    data = (broken / "last.safetensors").read_bytes()
    (broken / "last.safetensors").write_bytes(data[: len(data) // 3])
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump(Payload(), handle)
    (tmp_path / "blocker").write_text("a file where a folder should be")
    (tmp_path / "empty").mkdir()
    no_keys = tmp_path / "checkpoints" / "nokeys"
    shutil.copytree(tiny_runs["baseline"], no_keys)
    meta = json.loads((no_keys / "meta.json").read_text())
    del meta["epoch"]
    (no_keys / "meta.json").write_text(json.dumps(meta))
    write_cifar_folders(tmp_path / "data")
    return tmp_path


def write_cifar_folders(data):
    """CIFAR-10 as it must not be: a corrupt archive, a folder missing files, labels out of range."""
    (data / "corrupt").mkdir(parents=True)
    (data / "corrupt" / "cifar-10-python.tar.gz").write_bytes(b"not a tar archive at all")
    (data / "partial" / "cifar-10-batches-py").mkdir(parents=True)
    folder = data / "badlabels" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [3, 10]}
        (folder / name).write_bytes(pickle.dumps(batch))
        if name == "test_batch":
            (data / "partial" / "cifar-10-batches-py" / name).write_bytes(pickle.dumps(batch))


def folder_at(relative):
    def setup(root):
        path = root / relative
        path.unlink()
        path.mkdir()
    return setup


def file_at(relative):
    def setup(root):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text("a user's file")
    return setup


def irregular_weights(relative, kind):
    """A weights path that is no regular file: a link to /dev/zero, a folder or a FIFO (22.10)."""
    def setup(root):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        if kind == "device":
            path.symlink_to("/dev/zero")
        elif kind == "folder":
            path.mkdir()
        else:
            os.mkfifo(path)
    return setup


def snapshot(root):
    """Every file's SHA-256 and every folder (a failed command must not leave an empty one behind)."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


ATTACK = ["attack", "--checkpoint", RUN, "--quiet", "--n-examples", "8"]
DEFORM = ["deform", "--checkpoint", RUN, "--quiet", "--n-examples", "8"]
TRAIN = ["train", "--preset", "smoke", "--method", "baseline", "--quiet"]
MANIFOLD = ["train", "--preset", "smoke", "--method", "manifold", "--quiet"]
EXTERNAL = ["attack", "--quiet"]
FACTORY = "test_external:tiny_authors_model"
IMPORT = ["import", "--from", "authors", "--dataset", "digits", "--checkpoints", "checkpoints"]

CASES = [
    # train
    (TRAIN + ["--dataset", "mnist"], "unknown dataset 'mnist'; valid: cifar10, cifar100, digits"),
    (TRAIN + ["--epochs", "0"], "--epochs must be > 0, got 0"),
    (TRAIN + ["--width", "0"], "--width must be > 0, got 0"),
    (["train", "--preset", "smoke", "--method", "baseline", "--quiet", "--width", "8", "--epochs", "1"],
     "already exists; pass --resume"),
    (TRAIN + ["--out", "blocker/sub"], "is not writable"),
    (TRAIN + ["--dataset", "cifar100", "--no-download", "--data-dir", "empty"], "cifar100 not found in"),
    (TRAIN + ["--milestones", "5,2"], "--milestones must be increasing"),
    # 11.1: everything validated before anything is touched; --force never loses the run
    (TRAIN + ["--force", "--batch-size", "5000"], "--batch-size 5000 is larger than the 1440 training images"),
    (TRAIN + ["--resume", "--force"], "--resume continues a run and --force starts it over"),
    (TRAIN + ["--dataset", "cifar100", "--no-download", "--data-dir", "empty", "--out", "fresh"],
     "cifar100 not found in"),
    # 11.5: broken CIFAR files
    (TRAIN + ["--dataset", "cifar10", "--data-dir", "data/corrupt"], "corrupt cifar10 archive"),
    (TRAIN + ["--dataset", "cifar10", "--data-dir", "data/partial"], "incomplete or corrupt cifar10 folder"),
    (TRAIN + ["--dataset", "cifar10", "--data-dir", "data/badlabels"], "labels from 3 to 10, outside 0..9"),
    # 11.6: small things
    (TRAIN + ["--alpha", "1"], "--alpha has no effect with --method baseline"),
    (["train", "--preset", "smoke", "--run-name", "mine", "--quiet"], "--run-name names one run but --method all"),
    (TRAIN + ["--run-name", "../escape"], "--run-name must be a plain folder name"),
    (TRAIN + ["--run-name", "/tmp/absolute"], "--run-name must be a plain folder name"),
    (["train", "--bogus"], "unrecognized arguments: --bogus (see mm-robust train --help)"),
    # 11.4: NaN/inf for every float option, seeds outside 0 .. 2**32 - 1
    (TRAIN + ["--lr", "nan"], "--lr must be a finite number, got nan"),
    (MANIFOLD + ["--alpha", "inf"], "--alpha must be a finite number, got inf"),
    (TRAIN + ["--momentum", "nan"], "--momentum must be a finite number, got nan"),
    (TRAIN + ["--weight-decay", "inf"], "--weight-decay must be a finite number, got inf"),
    (TRAIN + ["--lr-gamma", "nan"], "--lr-gamma must be in (0, 1], got nan"),
    (TRAIN + ["--seed", str(2**32)], "--seed must be at most 4294967295"),
    # AutoAttack's options without --autoattack were ignored silently (probe 2026-12-03)
    (ATTACK + ["--aa-eps", "4/255"], "--aa-eps sets AutoAttack, which runs only with --autoattack: add --autoattack, or leave it out"),
    (ATTACK + ["--no-aa-paper-eps", "--aa-budget", "smoke"], "--aa-paper-eps, --aa-budget set AutoAttack"),
    (ATTACK + ["--pgd-step-size", "nan"], "--pgd-step-size must be a finite number, got nan"),
    (ATTACK + ["--pgd-threshold", "nan"], "--pgd-threshold must be a percentage in [0, 100], got nan"),
    (ATTACK + ["--sweep", "0,inf"], "--sweep values must be finite and >= 0, got inf"),
    (ATTACK + ["--seed", str(2**32)], "--seed must be at most 4294967295"),
    (DEFORM + ["--seed", str(2**32)], "--seed must be at most 4294967295"),
    # attack
    (ATTACK + ["--eps", "-0.1"], "--eps values must be finite and >= 0, got -0.1"),
    (ATTACK + ["--eps", "1.5"], "--eps 1.5 is outside the [0, 1] pixel range of the standard protocol"),
    (ATTACK + ["--pgd-steps", "0"], "--pgd-steps must be > 0, got 0"),
    (ATTACK + ["--protocol", "fancy"], "unknown protocol 'fancy'; valid: standard, paper"),
    (ATTACK + ["--n-examples", "0"], "--n-examples must be > 0, got 0"),
    (ATTACK + ["--weights", "middle"], "unknown checkpoint 'middle'; valid: last, best"),
    (ATTACK + ["--dataset", "cifar100"], "cifar100"),
    (["attack", "--checkpoint", "nope", "--quiet"], "checkpoint 'nope' not found"),
    (["attack", "--checkpoint", "broken", "--quiet"], "corrupted checkpoint"),
    (["attack", "--checkpoint", "evil.pt", "--quiet"], "refusing to load 'evil.pt': pickle-based checkpoints"),
    (["attack", "--checkpoints", "empty", "--quiet"], "no trained models found in 'empty'"),
    (["attack", "--checkpoint", RUN, "--quiet", "--out", "blocker/sub"], "is not writable"),
    (ATTACK_SMALL, "is a folder where a result file should be", folder_at(f"attacks/{RUN}/pgd-unbounded-standard.json")),
    (ATTACK_SMALL + ["--out", "results"], "is a file where a run's results folder should be",
     file_at(f"results/{RUN}")),
    (["attack", "--checkpoint", "nokeys", "--quiet"], "missing key 'epoch'"),
    # 11.2: a finished result for the same weights is not replaced by one with other settings
    (ATTACK_SMALL + ["--n-examples", "16"], "with other settings (n_examples 8 -> 16); pass --force"),
    (ATTACK_SMALL + ["--eps", "0.05"], "with other settings (eps [0.03] -> [0.05]"),
    (DEFORM_SMALL + ["--interpolation", "bilinear"],
     "with other settings (interpolation \"nearest\" -> \"bilinear\"); pass --force"),
    (ATTACK_SMALL + ["--save-examples", "4"], f"'attacks/{RUN}/adversarial-examples.safetensors' holds a finished "
     "result for these weights made with other settings (count 2 -> 4); pass --force"),
    # models trained elsewhere: --model and import
    (EXTERNAL + ["--weights", "evil.pt", "--dataset", "digits", "--model", "no_such_module:f"],
     "cannot import 'no_such_module'"),
    (EXTERNAL + ["--weights", "evil.pt", "--dataset", "digits", "--model", "math:pi"], "is not callable"),
    (EXTERNAL + ["--weights", "evil.pt", "--dataset", "digits", "--model", "test_external"],
     "must look like package.module:factory"),
    (["deform", "--quiet", "--model", "test_external:nowhere", "--weights", "evil.pt", "--dataset", "digits"],
     "has no attribute 'nowhere'"),
    (EXTERNAL + ["--model", FACTORY, "--weights", f"checkpoints/{RUN}/last.safetensors", "--dataset", "digits"],
     "do not fit the model: missing"),
    (EXTERNAL + ["--model", FACTORY, "--weights", "nothing.safetensors", "--dataset", "digits"],
     "missing weights file 'nothing.safetensors'"),
    (EXTERNAL + ["--model", FACTORY, "--weights", "evil.pt", "--dataset", "digits"],
     "refusing to load 'evil.pt': it is a pickle that needs code execution"),
    (EXTERNAL + ["--model", FACTORY, "--weights", "evil.pt", "--dataset", "digits", "--normalization", "0.5,0.5,0.5"],
     "--normalization takes 2 values (mean,std) or 6 (3 means, 3 stds), got 3"),
    (EXTERNAL + ["--model", FACTORY, "--weights", "evil.pt", "--dataset", "digits", "--normalization", "0.5,0"],
     "normalization std must be > 0"),
    (EXTERNAL + ["--model", FACTORY, "--weights", "evil.pt", "--dataset", "digits", "--name", RUN],
     f"--name '{RUN}' is a trained run"),
    (EXTERNAL + ["--model", FACTORY, "--weights", "evil.pt"], "--model needs --dataset"),
    (EXTERNAL + ["--model", FACTORY, "--weights", "evil.pt", "--dataset", "digits", "--checkpoint", RUN],
     "--checkpoint and --model exclude each other"),
    (ATTACK + ["--name", "x"], "--name is only for --model"),
    (IMPORT + ["--weights", f"checkpoints/{RUN}/last.safetensors", "--name", "x", "--method", "baseline"],
     "not the authors' PreActResNet layout: no 'layer1.*' keys"),
    (IMPORT + ["--weights", "evil.pt", "--name", "x", "--method", "baseline"],
     "refusing to load 'evil.pt': it is a pickle that needs code execution"),
    (IMPORT + ["--weights", "evil.pt", "--name", RUN, "--method", "baseline"], "already exists"),
    (IMPORT + ["--weights", "evil.pt", "--name", "x", "--method", "mixup"], "unknown method 'mixup'"),
    (["import", "--from", "keras", "--weights", "evil.pt", "--dataset", "digits", "--name", "x", "--method",
      "baseline"], "invalid choice: 'keras'"),
    # 22.10: weights that are no regular file say what they are, at once
    *[(EXTERNAL + ["--model", FACTORY, "--weights", f"odd/{kind}.safetensors", "--dataset", "digits"],
       f"weights file 'odd/{kind}.safetensors' is not a regular file (a {kind})",
       irregular_weights(f"odd/{kind}.safetensors", kind)) for kind in ("device", "folder", "FIFO")],
    *[(["attack", "--checkpoint", "broken", "--quiet"], f"is not a regular file (a {kind})",
       irregular_weights("checkpoints/broken/last.safetensors", kind)) for kind in ("device", "folder", "FIFO")],
    (["deform", "--checkpoint", "broken", "--quiet"], "is not a regular file (a device)",
     irregular_weights("checkpoints/broken/last.safetensors", "device")),
    # deform
    (DEFORM + ["--sets", "rotate-30"], "unknown deformation set 'rotate-30'; valid: all, table3, rotate-20"),
    (DEFORM + ["--seed", "-1"], "--seed must be >= 0, got -1"),
    (DEFORM + ["--sets", ""], "--sets '' names no set"),
    (DEFORM + ["--interpolation", "cubic"], "unknown interpolation 'cubic'; valid: nearest, bilinear"),
    (DEFORM + ["--batch-size", "0"], "--batch-size must be > 0, got 0"),
    (["deform", "--checkpoint", "gone", "--quiet"], "checkpoint 'gone' not found"),
    # report / reproduce
    (["report", "--reports", "blocker/sub"], "is not writable"),
    (["report", "--reports", "blocker/sub", "--quiet"], "choose another with --reports"),
    (["report", "--quiet"], "holds files mm-robust report did not write (index.md)", file_at("reports/index.md")),
    (["report", "--quiet", "--attacks", "blocker"], "--attacks 'blocker' is a file"),
    (ATTACK + ["--checkpoint", RUN], f"--checkpoint '{RUN}' names a run already given"),
    (["reproduce", "--preset", "huge", "--quiet"], "unknown preset 'huge'; valid:"),
    (["calibrate", "--checkpoint", RUN, "--quiet", "--bins", "100000000000"], "--bins must be at most 1000"),
    (["reproduce", "--cluster", "ray", "--gpus-per-task", "nan", "--quiet"],
     "--gpus-per-task must be a finite number >= 0, got nan"),
    (["reproduce", "--cluster", "ray", "--cpus-per-task", "inf", "--quiet"],
     "--cpus-per-task must be a finite number > 0, got inf"),
    (["reproduce", "--dataset", "mnist", "--quiet"], "unknown dataset 'mnist'"),
    # 22.11: every output folder is checked before any training
    (["reproduce", "--reports", "/proc/x", "--quiet"], "output folder '/proc/x' is not writable"),
    (["reproduce", "--attacks", "blocker/sub", "--quiet"], "choose another with --attacks"),
    # 22.8: a Ray address and shard count checked before Ray starts; only loopback is ever contacted
    (["reproduce", "--cluster", "ray", "--address", "notanaddress", "--quiet"],
     "--address 'notanaddress' is not HOST:PORT (e.g. 10.0.0.5:6379, ray://10.0.0.5:10001) or auto; to use a "
     "cluster, start one there with `ray start --head --port=6379`"),
    (["reproduce", "--cluster", "ray", "--address", "127.0.0.1:70000", "--quiet"], "is not HOST:PORT"),
    (["reproduce", "--cluster", "ray", "--shards", "100000", "--address", "notused", "--quiet"],
     "--shards must be from 1 to 1024, got 100000"),
    (["reproduce", "--cluster", "ray", "--address", "127.0.0.1:1", "--quiet"],
     "no Ray cluster reachable at --address '127.0.0.1:1' (connection refused); start one there with `ray start"),
    (["reproduce", "--preset", "fast", "--dataset", "cifar10", "--data-dir", "empty", "--quiet"],
     "cifar10 not found in"),
]
if not torch.cuda.is_available():
    CASES.append((ATTACK + ["--device", "cuda"], "--device cuda was given but no CUDA GPU is visible"))


CASES = [case if len(case) == 3 else (*case, None) for case in CASES]


@pytest.mark.parametrize("argv, message, setup", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_bad_input(workspace, capsys, argv, message, setup, monkeypatch):
    monkeypatch.setattr("robustbench_mm.data.images._download_cifar", _no_network)
    if setup is not None:
        setup(workspace)
    before = snapshot(workspace)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse-level mistakes exit from the parser
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert snapshot(workspace) == before
    assert not (workspace / "payload-ran").exists()


def _no_network(name, data_dir):
    from robustbench_mm.errors import UsageError

    raise UsageError(f"{name} not found in {str(data_dir)!r} and could not be downloaded (offline)")


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20
