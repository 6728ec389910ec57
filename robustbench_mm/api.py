"""`robustbench_mm.evaluate`: put any PyTorch classifier through the same evaluation as `mm-robust`.

The model goes through the same seam as the CLI's (`model_sources.ModelSource`), so it gets the
same contract checks, attacks, gradient-masking checks, deformation and corruption sets, and the same result
files under ``out/<name>/``; the returned `Evaluation` is read back from those files.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from torch import nn

from robustbench_mm.common.storage import read_json
from robustbench_mm.config import AttackConfig, CorruptConfig, DeformConfig
from robustbench_mm.data.deformations import evaluation_name
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation.attack import run_attacks
from robustbench_mm.evaluation.corrupt import run_corrupt
from robustbench_mm.evaluation.corrupt_results import EVALUATION as CORRUPT_EVALUATION
from robustbench_mm.evaluation.deform import run_deform
from robustbench_mm.runs.results import result_file, results_dir
from robustbench_mm.sources.external import protocols_for, source_from_module
from robustbench_mm.sources.loading import CONTRACT_EVALUATION

ATTACKS = ("fgsm", "pgd", "autoattack")
# The attack stage runs FGSM and unbounded PGD together: its gradient-masking checks compare the two.
ATTACK_STAGE = ("fgsm", "pgd")
DEFORMATION_SETS = {"table7": "all", "table3": "table3"}


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured, copied from the result files it wrote (accuracies in %)."""

    name: str
    dataset: str
    folder: Path  # out/<name>/, holding one JSON per evaluation
    files: tuple[Path, ...]
    n_examples: int
    clean_accuracy: float
    fgsm: Mapping[str, Mapping[float, float]]  # protocol -> {eps: accuracy}, the whole sweep
    pgd_final_accuracy: float | None  # unbounded PGD, after the last step
    gradient_masking_failed: tuple[str, ...] | None  # names of failed checks; None when not attacked
    deformations: Mapping[str, float]  # set name -> accuracy
    contract_flags: tuple[str, ...]  # outputs-probabilities, not-deterministic
    # corruption -> {severity: accuracy}; empty when no corruptions were asked for
    corruptions: Mapping[str, Mapping[int, float]] = field(default_factory=lambda: MappingProxyType({}))
    # RobustBench's corruptions_acc in % (mean over the 15 x 5 standard sets); None unless all 75 were evaluated
    corruption_accuracy: float | None = None
    corruption_source: str | None = None  # "generated" or "official"

    @property
    def flagged(self) -> bool:
        """True when a gradient-masking check failed or the model's contract is doubtful."""
        return bool(self.gradient_masking_failed) or bool(self.contract_flags)


def check_attacks(attacks: Sequence[str]) -> tuple[str, ...]:
    attacks = tuple(dict.fromkeys(attacks))
    for attack in attacks:
        if attack not in ATTACKS:
            raise UsageError(f"unknown attack {attack!r}; valid: {', '.join(ATTACKS)}")
    if "autoattack" in attacks and not set(ATTACK_STAGE) <= set(attacks):
        raise UsageError("attack 'autoattack' runs with 'fgsm' and 'pgd' (its black-box check joins their "
                         "gradient-masking checks): pass attacks=('fgsm', 'pgd', 'autoattack')")
    if attacks and set(attacks) - {"autoattack"} != set(ATTACK_STAGE):
        raise UsageError("attacks 'fgsm' and 'pgd' run together (the gradient-masking checks compare them): "
                         "pass attacks=('fgsm', 'pgd') or attacks=() for deformations only")
    return attacks


def deformation_config(deformations: str | Sequence[str] | None, base: DeformConfig) -> DeformConfig | None:
    if deformations is None or (not isinstance(deformations, str) and not deformations):
        return None
    names = (DEFORMATION_SETS.get(deformations, deformations),) if isinstance(deformations, str) else tuple(deformations)
    return dataclasses.replace(base, sets=names)


def corruption_config(corruptions: str | Sequence[str] | None, base: CorruptConfig) -> CorruptConfig | None:
    """None, "all" (the 15; "all+extra" adds the 4 held-out ones) or corruption names -> the config, or None."""
    if corruptions is None or (not isinstance(corruptions, str) and not corruptions):
        return None
    if corruptions == "all+extra":
        return dataclasses.replace(base, corruptions=("all",), extra=True)
    names = (corruptions,) if isinstance(corruptions, str) else tuple(corruptions)
    return dataclasses.replace(base, corruptions=names)


def evaluate(model: nn.Module, dataset: str = "cifar10", attacks: Sequence[str] = ATTACK_STAGE,
             deformations: str | Sequence[str] | None = "table7", corruptions: str | Sequence[str] | None = None,
             n_examples: int | None = None,
             device: str | None = None, out: str | Path = "attacks", normalization: Any = None, name: str | None = None,
             *, data_dir: str = "data", download: bool = True, batch_size: int | None = None, force: bool = False,
             checkpoints: str | Path = "checkpoints", attack_config: AttackConfig | None = None,
             deform_config: DeformConfig | None = None, corrupt_config: CorruptConfig | None = None,
             progress: bool = False) -> Evaluation:
    """Evaluate `model` (it maps [0, 1] images to logits; or pass `normalization=(mean, std)` and it gets
    (x - mean) / std) on `dataset`'s test set, writing the CLI's result files under ``out/<name>/``.

    attacks: ("fgsm", "pgd") runs FGSM in both protocols, 200-step unbounded PGD and the
    gradient-masking checks; () runs none. deformations: "table7" (all 17 sets), "table3", set
    names, or None. corruptions: None (default), "all" (the 15 CIFAR-10-C corruptions at severities
    1-5, from the official files under data_dir/CIFAR-10-C when there, else generated), "all+extra",
    or corruption names. `attack_config` / `deform_config` / `corrupt_config` set everything else (eps,
    steps, seed, severities, source, ...);
    `n_examples`, `device` ("auto", "cpu", "cuda"; default: the configs', "auto") and `batch_size`
    override theirs. The model is moved to the device and back to the CPU. `name` defaults to the model's class
    name and a digest of its weights; a name holding another model's results needs `force=True`.
    """
    attacks = check_attacks(attacks)
    overrides = {"n_examples": n_examples, "device": device, "batch_size": batch_size}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    deform = deformation_config(deformations, dataclasses.replace(deform_config or DeformConfig(), **overrides))
    corrupt = corruption_config(corruptions, dataclasses.replace(corrupt_config or CorruptConfig(), **overrides))
    if not attacks and deform is None and corrupt is None:
        raise UsageError("nothing to evaluate: pass attacks=('fgsm', 'pgd'), deformations and/or corruptions")
    source = source_from_module(model, dataset, name, normalization, data_dir, download, out, checkpoints, force)
    attack = None
    if attacks:
        base = dataclasses.replace(attack_config or AttackConfig(), **overrides)
        # Both protocols (the default) shrink to `standard` for a model without normalization; a choice is kept.
        requested = None if base.protocols == AttackConfig().protocols else base.protocols
        attack = dataclasses.replace(base, dataset=dataset, protocols=protocols_for(source, requested, base.protocols),
                                     autoattack=base.autoattack or "autoattack" in attacks)
    files: list[Path] = []
    if attack is not None:
        files += run_attacks(attack, checkpoints, out, force=force, progress=progress, sources=[source])
    if deform is not None:
        files += run_deform(deform, checkpoints, out, force=force, progress=progress, sources=[source])
    if corrupt is not None:
        files += run_corrupt(corrupt, checkpoints, out, force=force, progress=progress, sources=[source])
    deform_result = evaluation_name(deform.convention, deform.fill) if deform is not None else None
    folder = results_dir(out, source.name, source.checkpoint)
    return read_evaluation(folder, source.name, source.dataset, tuple(dict.fromkeys(files)), deform_result)


def read_evaluation(folder: Path, name: str, dataset: str, files: tuple[Path, ...],
                    deform_result: str | None) -> Evaluation:
    """The `Evaluation` of the result files in `folder` (``out/<name>/``); `deform_result` names the deform file,
    if any."""
    def load(evaluation: str) -> dict[str, Any] | None:
        path = result_file(folder, evaluation)
        return read_json(path) if path in files else None

    fgsm = {}
    for protocol in ("standard", "paper"):
        result = load(f"fgsm-{protocol}")
        if result is not None:
            fgsm[protocol] = MappingProxyType(dict(zip(result["sweep"]["eps"], result["sweep"]["accuracy"])))
    # Appendix D's verdict comes from the paper protocol when it ran (attack_eval.verdict_protocol).
    pgd, masking = load("pgd-unbounded-paper") or load("pgd-unbounded-standard"), load("gradient-masking")
    deform = load(deform_result) if deform_result else None
    corrupt = load(CORRUPT_EVALUATION)
    contract_path = result_file(folder, CONTRACT_EVALUATION)  # written by either stage
    contract = read_json(contract_path) if contract_path.is_file() else None
    first = load("fgsm-standard") or load("fgsm-paper") or deform or corrupt
    by_corruption: dict[str, dict[int, float]] = {}
    for entry in corrupt["sets"].values() if corrupt else ():
        by_corruption.setdefault(entry["corruption"], {})[entry["severity"]] = entry["accuracy"]
    return Evaluation(
        name=name, dataset=dataset, folder=folder, files=files, n_examples=first["n_examples"],
        clean_accuracy=first["clean"]["accuracy"], fgsm=MappingProxyType(fgsm),
        pgd_final_accuracy=pgd["final_accuracy"] if pgd else None,
        gradient_masking_failed=tuple(masking["failed"]) if masking else None,
        deformations=MappingProxyType({k: v["accuracy"] for k, v in deform["sets"].items()} if deform else {}),
        contract_flags=tuple(contract["contract"]["flags"]) if contract else (),
        corruptions=MappingProxyType({k: MappingProxyType(v) for k, v in by_corruption.items()}),
        corruption_accuracy=corrupt["summary"]["corruptions_accuracy"] if corrupt else None,
        corruption_source=corrupt["source"] if corrupt else None,
    )
