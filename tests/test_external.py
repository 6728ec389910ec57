"""Models trained elsewhere: the Python API, `--model` on the CLI, `import --from authors`, safe loading,
the model contract and the report, all checked against the same weights in one of our run folders."""

import json
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import robustbench_mm
from robustbench_mm.cli import main
from robustbench_mm.config import AttackConfig, DeformConfig
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation.attack import run_attacks
from robustbench_mm.evaluation.deform import run_deform
from robustbench_mm.data.images import NORMALIZATION
from robustbench_mm.runs.checkpoints import load_model, load_tensors
from robustbench_mm.sources.contract import check_model_contract
from robustbench_mm.sources.weights import read_state_dict

SMALL = AttackConfig(eps=(0.03,), sweep=(0.0, 0.05), pgd_steps=4, pgd_step_size=0.05, bounded_pgd_steps=2,
                     n_examples=24, batch_size=16, save_examples=0, device="cpu")
SMALL_ARGS = ["--eps", "0.03", "--sweep", "0,0.05", "--pgd-steps", "4", "--pgd-step-size", "0.05",
              "--bounded-pgd-steps", "2", "--n-examples", "24", "--batch-size", "16", "--save-examples", "0",
              "--device", "cpu", "--quiet"]
DEFORM = DeformConfig(sets=("rotate-20", "zoom-out-140"), n_examples=24, batch_size=16, device="cpu")
DEFORM_ARGS = ["--sets", "rotate-20,zoom-out-140", "--n-examples", "24", "--batch-size", "16", "--device", "cpu",
               "--quiet"]
VOLATILE = ("finished", "seconds", "git_commit", "model", "device", "data_dir")


# ---- a PreActResNet in the authors' layout, written here from their published key names --------------------


class AuthorsBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class AuthorsPreActResNet(nn.Module):
    """Their layout: conv1, layer1..layer4 of blocks, shortcut.0, linear; takes *normalized* images."""

    def __init__(self, width=8, num_classes=10, blocks=(2, 2, 2, 2), global_pool=False):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        in_planes = width
        for index, (count, stride) in enumerate(zip(blocks, (1, 2, 2, 2)), start=1):
            layers = []
            for s in [stride] + [1] * (count - 1):
                layers.append(AuthorsBlock(in_planes, width * 2 ** (index - 1), s))
                in_planes = width * 2 ** (index - 1)
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        self.linear = nn.Linear(in_planes, num_classes)
        # The authors pool a 4x4 map with avg_pool2d(out, 4); ours averages globally. They agree up to
        # float rounding (the import test); the identity tests pool like ours so results agree bit for bit.
        self.global_pool = global_pool

    def forward(self, x):
        out = self.conv1(x)
        for index in range(1, 5):
            out = getattr(self, f"layer{index}")(out)
        out = F.adaptive_avg_pool2d(out, 1) if self.global_pool else F.avg_pool2d(out, 4)
        return self.linear(out.flatten(1))


def tiny_authors_model():
    """The factory `--model test_external:tiny_authors_model` names: the shape of conftest's tiny runs."""
    return AuthorsPreActResNet(width=8, num_classes=10, global_pool=True)


def to_authors_keys(ours):
    """Our state dict -> theirs (the inverse of the import's mapping, written independently here)."""
    theirs = {}
    for key, tensor in ours.items():
        if key in ("mean", "std"):
            continue
        match = re.match(r"stages\.(\d)\.(\d+)\.(.+)", key)
        if match:
            rest = "shortcut.0.weight" if match.group(3) == "shortcut.weight" else match.group(3)
            key = f"layer{int(match.group(1)) + 1}.{match.group(2)}.{rest}"
        theirs[key] = tensor
    return theirs


@pytest.fixture(scope="module")
def same_weights(tiny_runs, tmp_path_factory):
    """The tiny baseline run, its weights in the authors' layout, and its own attack/deform results."""
    root = tmp_path_factory.mktemp("external")
    run = tiny_runs["baseline"]
    tensors, _ = load_tensors(run / "last.safetensors")
    weights = root / "theirs.safetensors"
    save_file(to_authors_keys(tensors), str(weights))
    ours = root / "ours"
    run_attacks(SMALL, run.parent, ours, runs=[run.name], progress=False)
    run_deform(DEFORM, run.parent, ours, runs=[run.name], progress=False)
    return run, weights, ours / run.name


def without_volatile(value):
    """A result without its timings, dates, commit, device and model summary: the numbers only."""
    if isinstance(value, dict):
        return {k: without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    return value


def read(folder, evaluation):
    return without_volatile(json.loads((folder / f"{evaluation}.json").read_text()))


def assert_same_numbers(ours, theirs, evaluations):
    for evaluation in evaluations:
        mine = read(ours, evaluation)
        other = read(theirs, evaluation)
        if evaluation == "gradient-masking":  # the figure's title names the model
            mine.pop("figure"), other.pop("figure")
        assert mine == other, evaluation


def test_cli_model_gives_the_numbers_of_the_same_weights_in_a_run_folder(same_weights, tmp_path, capsys):
    run, weights, ours = same_weights
    out = tmp_path / "attacks"
    common = ["--model", "test_external:tiny_authors_model", "--weights", str(weights), "--normalization", "digits",
              "--dataset", "digits", "--name", "theirs", "--out", str(out), "--checkpoints", str(run.parent)]
    assert main(["attack", *common, *SMALL_ARGS]) == 0
    assert main(["deform", *common, *DEFORM_ARGS]) == 0
    theirs = out / "theirs"
    assert_same_numbers(ours, theirs, ("fgsm-standard", "fgsm-paper", "pgd-unbounded-paper", "pgd-unbounded-standard",
                                       "pgd-bounded", "gradient-masking", "deform"))
    model = json.loads((theirs / "fgsm-standard.json").read_text())["model"]
    assert model["external"] is True and model["factory"] == "test_external:tiny_authors_model"
    assert model["normalization"] == {"mean": list(NORMALIZATION["digits"][0]), "std": list(NORMALIZATION["digits"][1])}
    import hashlib
    assert model["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    contract = json.loads((theirs / "model-contract.json").read_text())
    assert contract["contract"]["flags"] == [] and contract["contract"]["outputs"] == "logits"


def test_api_gives_the_numbers_of_the_same_weights_in_a_run_folder(same_weights, tmp_path):
    run, weights, ours = same_weights
    model = tiny_authors_model()
    model.load_state_dict(read_state_dict(weights))
    result = robustbench_mm.evaluate(model, dataset="digits", normalization="digits", attack_config=SMALL,
                                     deform_config=DEFORM, deformations=DEFORM.sets, out=tmp_path / "attacks",
                                     name="api", checkpoints=run.parent)
    assert isinstance(result, robustbench_mm.Evaluation)
    assert_same_numbers(ours, tmp_path / "attacks" / "api",
                        ("fgsm-standard", "fgsm-paper", "pgd-unbounded-paper", "pgd-unbounded-standard", "pgd-bounded",
                         "gradient-masking", "deform"))
    fgsm = json.loads((ours / "fgsm-standard.json").read_text())
    pgd = json.loads((ours / "pgd-unbounded-paper.json").read_text())
    assert result.clean_accuracy == fgsm["clean"]["accuracy"] and result.n_examples == 24
    assert result.fgsm["standard"][0.03] == fgsm["accuracy"][0]
    assert result.pgd_final_accuracy == pgd["final_accuracy"]
    assert set(result.deformations) == {"rotate-20", "zoom-out-140"} and result.contract_flags == ()
    with pytest.raises(AttributeError):
        result.clean_accuracy = 0.0  # frozen


def test_api_without_normalization_runs_the_standard_protocol_only(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 10))
    result = robustbench_mm.evaluate(model, dataset="digits", attack_config=SMALL, deformations=None,
                                     out=tmp_path / "attacks", checkpoints=tmp_path / "none")
    assert set(result.fgsm) == {"standard"} and result.name.startswith("Sequential-")
    paper_only = AttackConfig(**{**SMALL.to_dict(), "protocols": ("paper",)})
    with pytest.raises(UsageError, match="paper protocol measures eps on the normalized input"):
        robustbench_mm.evaluate(model, dataset="digits", deformations=None, out=tmp_path / "attacks", name="y",
                                attack_config=paper_only)
    assert not (tmp_path / "attacks" / "y").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"attacks": ("autoattack",)}, "attack 'autoattack' runs with 'fgsm' and 'pgd'"),
    ({"attacks": ("cw",)}, "unknown attack 'cw'; valid: fgsm, pgd, autoattack"),
    ({"attacks": ("fgsm",)}, "'fgsm' and 'pgd' run together"),
    ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
    ({"normalization": ((0.5, 0.5), (0.2, 0.2))}, "1 or 3 means"),
    ({"normalization": (0.5, 0.0)}, "std must be > 0"),
    ({"deformations": ("spin-5",)}, "unknown deformation set 'spin-5'"),
    ({"name": "../up"}, "must be a plain folder name"),
])
def test_api_bad_input_writes_nothing(tmp_path, kwargs, message):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(UsageError, match=re.escape(message)):
        robustbench_mm.evaluate(model, **{"dataset": "digits", "out": tmp_path / "attacks", **kwargs})
    assert not (tmp_path / "attacks").exists()


# ---- import --from authors ----------------------------------------------------------------------------------


def randomized_authors_model(**kwargs):
    """An authors'-layout model with non-trivial BN statistics, in eval mode."""
    torch.manual_seed(1)
    model = AuthorsPreActResNet(**kwargs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def test_import_from_authors_matches_their_logits(tmp_path, capsys):
    theirs = randomized_authors_model(width=4, num_classes=100, blocks=(3, 4, 6, 3))
    weights = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 5, "arch": "preactresnet34", "state_dict": theirs.state_dict()}, weights)
    code = main(["import", "--from", "authors", "--weights", str(weights), "--dataset", "cifar100", "--name",
                 "authors-mm", "--method", "manifold", "--checkpoints", str(tmp_path / "checkpoints")])
    assert code == 0, capsys.readouterr().err
    loaded = load_model(tmp_path / "checkpoints" / "authors-mm")
    assert loaded.config.arch == "preactresnet34" and loaded.config.width == 4 and loaded.config.alpha == 2.0
    assert loaded.meta["imported"]["from"] == "authors"
    x = torch.rand(6, 3, 32, 32)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION["cifar100"])
    with torch.no_grad():
        expected = theirs((x - mean) / std)
        torch.testing.assert_close(loaded.model(x), expected, rtol=1e-5, atol=1e-5)


# ---- loading files we did not write: never run their code ----------------------------------------------------


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
@pytest.mark.parametrize("command", ["attack", "deform", "import", "api"])
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, capsys, monkeypatch, writer, command):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "weights.pt"
    if writer == "pickle":
        with open(evil, "wb") as handle:
            pickle.dump({"state_dict": Payload(marker)}, handle)
    else:
        torch.save({"state_dict": Payload(marker)}, evil)
    message = "it is a pickle that needs code execution to load"
    if command == "api":
        with pytest.raises(UsageError, match=message):
            read_state_dict(evil)
    else:
        argv = {"import": ["import", "--from", "authors", "--weights", str(evil), "--dataset", "digits", "--name",
                           "x", "--method", "baseline"],
                }.get(command, [command, "--model", "test_external:tiny_authors_model", "--weights", str(evil),
                                "--dataset", "digits", "--quiet"])
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pt"]


def test_mismatched_weights_name_missing_unexpected_and_misshaped_keys(tmp_path):
    model = AuthorsPreActResNet(width=4)
    state = dict(model.state_dict())
    state.pop("linear.bias")
    state["extra.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(5, 3, 3, 3)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    from robustbench_mm.sources.weights import load_strict
    with pytest.raises(UsageError) as caught:
        load_strict(AuthorsPreActResNet(width=4), read_state_dict(path), str(path))
    text = str(caught.value)
    assert "missing 1 key(s) ['linear.bias']" in text and "unexpected 1 key(s) ['extra.weight']" in text
    assert "conv1.weight (5, 3, 3, 3) where the model has (4, 3, 3, 3)" in text


# ---- the model contract ------------------------------------------------------------------------------------


class Noisy(nn.Module):
    def __init__(self, softmax=False, noise=False, classes=10):
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, classes)
        self.softmax, self.noise = softmax, noise

    def forward(self, x):
        out = self.linear(x.flatten(1))
        if self.noise:
            out = out + torch.randn_like(out)
        return out.softmax(1) if self.softmax else out


def test_contract_flags_probabilities_and_randomness_and_refuses_wrong_shapes():
    x = torch.rand(4, 3, 32, 32)
    model = Noisy().train()
    assert check_model_contract(model, x, 10, "m").flags == () and not model.training
    assert check_model_contract(Noisy(softmax=True), x, 10, "m").flags == ("outputs-probabilities",)
    assert check_model_contract(Noisy(noise=True), x, 10, "m").flags == ("not-deterministic",)
    with pytest.raises(UsageError, match=re.escape("outputs shape (4, 100) for 4 images; expected (batch, classes) = (4, 10)")):
        check_model_contract(Noisy(classes=100), x, 10, "m")


def test_flagged_model_is_recorded_and_warned_about(tmp_path, capsys):
    result = robustbench_mm.evaluate(Noisy(softmax=True), dataset="digits", attacks=(), deformations=("rotate-20",),
                                     deform_config=DEFORM, out=tmp_path / "attacks", name="soft")
    assert result.contract_flags == ("outputs-probabilities",) and result.flagged
    assert "its outputs are probabilities" in capsys.readouterr().err


# ---- the report: external models beside ours -----------------------------------------------------------------


def test_report_places_external_models_beside_ours_marked_external(same_weights, tmp_path):
    run, weights, ours = same_weights
    attacks = tmp_path / "attacks"
    shutil.copytree(ours, attacks / run.name)
    model = tiny_authors_model()
    model.load_state_dict(read_state_dict(weights))
    robustbench_mm.evaluate(model, dataset="digits", normalization="digits", attack_config=SMALL,
                            deform_config=DEFORM, deformations=DEFORM.sets, out=attacks, name="their-net",
                            checkpoints=run.parent)
    assert main(["report", "--checkpoints", str(run.parent), "--attacks", str(attacks),
                 "--reports", str(tmp_path / "reports")]) == 0
    table5 = (tmp_path / "reports" / "table5.md").read_text()
    table7 = (tmp_path / "reports" / "table7.md").read_text()
    assert table5.count("## digits") == 1  # one section: the external model joined our digits group
    assert "their-net (external)" in table5 and "their-net (external)" in table7
    summary = json.loads((tmp_path / "reports" / "summary.json").read_text())
    models = summary["groups"][0]["models"]
    external = {m["run"]: m.get("external", False) for m in models}
    assert external.pop("their-net") is True and external[run.name] is False and not any(external.values())


def test_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code = readme.split("<!-- evaluate-example -->\n```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("clean ") and "flagged: " in out
    assert (tmp_path / "attacks" / "my-model" / "deform.json").is_file()
    assert (tmp_path / "attacks" / "my-model" / "gradient-masking.json").is_file()
