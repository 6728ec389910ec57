"""`mm-robust reproduce`: train -> attack -> deform -> corrupt -> calibrate -> report, resumable at every stage.

Each stage already skips finished work (a complete training run, a result file made with the
same settings), so running the pipeline again after a stop finishes only what is left.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from robustbench_mm.config import (
    CHECKPOINT_KINDS, REPRODUCE_MODELS, AttackConfig, CalibrationConfig, CorruptConfig, DeformConfig, TrainConfig,
    train_config_for_preset)
from robustbench_mm.errors import UsageError, check_choice
from robustbench_mm.evaluation.attack import run_attacks
from robustbench_mm.evaluation.attack_plan import check_attack_targets
from robustbench_mm.evaluation.calibrate import check_calibration_targets, run_calibration
from robustbench_mm.evaluation.corrupt import check_corrupt_targets, run_corrupt
from robustbench_mm.evaluation.deform import check_deform_targets, run_deform
from robustbench_mm.evaluation.test_sets import TestSets
from robustbench_mm.presets import AUTOATTACK, EVALUATION_EXAMPLES, PRESETS, deform_convention
from robustbench_mm.report.build import write_report
from robustbench_mm.runs.checkpoints import load_model
from robustbench_mm.runs.meta import META_FILE, read_meta
from robustbench_mm.runs.results import ConflictHint
from robustbench_mm.runs.seeds import for_seeds
from robustbench_mm.sources.loading import ModelSource, from_run
from robustbench_mm.train.trainer import resume_free, train


@dataclass(frozen=True)
class Folders:
    checkpoints: Path = Path("checkpoints")
    attacks: Path = Path("attacks")
    reports: Path = Path("reports")


@dataclass(frozen=True)
class Plan:
    """The exact settings of every stage, fixed before any work starts."""

    train: tuple[TrainConfig, ...]
    attack: AttackConfig
    deform: DeformConfig
    calibration: CalibrationConfig = CalibrationConfig()
    # The 15 corruptions x 5 severities; official CIFAR-10-C / CIFAR-100-C files when under the data dir, else generated
    corrupt: CorruptConfig = CorruptConfig()

    def __post_init__(self) -> None:
        kinds = {c.checkpoint for c in (self.attack, self.deform, self.calibration, self.corrupt)}
        if len(kinds) != 1:  # the report shows the results of one set of weights
            raise UsageError(f"every evaluation stage of a plan must use the same --weights, got {sorted(kinds)}")

    @property
    def weights(self) -> str:
        """The checkpoint every evaluation uses and the report shows: "last" or "best"."""
        return self.attack.checkpoint


def plan_for_preset(preset: str, dataset: str | None = None, arch: str | None = None, device: str = "auto",
                    checkpoints: str | Path = "checkpoints", data_dir: str | None = None,
                    weights: str = "last", seeds: tuple[int, ...] | None = None) -> Plan:
    """The four table models of `preset` (the paper's alphas), Table 5's two controls (`REPRODUCE_MODELS`:
    adversarial training and thermometer encoding) and the preset's evaluation settings.

    `weights` picks the checkpoint every evaluation uses: "last", or "best" (the highest test
    accuracy seen during training, what the paper reported). `seeds` trains each model once per
    seed, in folders ``<run name>-s<seed>``; None trains one run per model, as before.
    """
    check_choice("preset", preset, PRESETS)
    check_choice("--weights", weights, CHECKPOINT_KINDS)
    models = tuple(for_seeds([
        train_config_for_preset(preset, method=method, alpha=alpha, dataset=dataset, arch=arch, device=device,
                                out=str(checkpoints), data_dir=data_dir)
        for method, alpha in REPRODUCE_MODELS], seeds))
    examples = EVALUATION_EXAMPLES[preset]
    return Plan(models, AttackConfig(n_examples=examples["attack"], checkpoint=weights, device=device,
                                     **AUTOATTACK[preset]),
                DeformConfig(n_examples=examples["deform"], convention=deform_convention(preset), checkpoint=weights,
                             device=device),
                CalibrationConfig(convention=deform_convention(preset), checkpoint=weights, device=device),
                CorruptConfig(n_examples=examples["corrupt"], checkpoint=weights, device=device))


def reproduce_hint(command: str) -> ConflictHint:
    """What reproduce, which has no --force, offers against a finished result made with other settings."""
    return ConflictHint(out_option="--attacks",
                        replace=f"reproduce never replaces one: run `mm-robust {command} --force ...` on that model "
                                "with the new settings first")


def check_evaluation_targets(plan: Plan, folders: Folders, trained: list[TrainConfig]) -> None:
    """Refuse a finished result of an already trained model that a stage would have to replace, before any
    training or evaluation spends time. Models still to train get new weights: their old results are stale."""
    loaded: dict[tuple[str, str], ModelSource] = {}

    def models(checkpoint: str) -> list[ModelSource]:
        for config in trained:
            if (config.run_name, checkpoint) not in loaded:
                run_dir = Path(config.out) / config.run_name
                loaded[config.run_name, checkpoint] = from_run(load_model(run_dir, checkpoint, "cpu"))
        return [loaded[config.run_name, checkpoint] for config in trained]

    check_attack_targets(plan.attack, models(plan.attack.checkpoint), folders.attacks, False, reproduce_hint("attack"))
    check_deform_targets(plan.deform, models(plan.deform.checkpoint), folders.attacks, False, reproduce_hint("deform"))
    check_corrupt_targets(plan.corrupt, models(plan.corrupt.checkpoint), folders.attacks, False,
                          reproduce_hint("corrupt"))
    check_calibration_targets(plan.calibration, models(plan.calibration.checkpoint), folders.attacks, False,
                              reproduce_hint("calibrate"))


def reproduce(plan: Plan, folders: Folders = Folders(), progress: bool = True) -> Path:
    """Run every stage of `plan`; return the path of the report's index.md."""
    runs = [config.run_name for config in plan.train]
    started = time.perf_counter()
    check_evaluation_targets(plan, folders, [config for config in plan.train if finished_training(config)])
    for index, config in enumerate(plan.train, start=1):
        step = f"train {index}/{len(plan.train)}: {config.run_name} ({config.epochs} epochs)"
        if finished_training(config):
            _stage(progress, f"{step}: already complete, skipped")
            continue
        _stage(progress, step)
        train(config, resume=True, progress=progress)  # continues a stopped run; refuses one with other settings
    _stage(progress, f"attack: FGSM and unbounded PGD (both protocols), PGD-{plan.attack.bounded_pgd_steps}, "
                     f"AutoAttack ({plan.attack.aa_budget} budget), gradient-masking checks on {len(runs)} models")
    test_sets = TestSets()  # the three evaluation stages read the same test images: load them once
    run_attacks(plan.attack, folders.checkpoints, folders.attacks, runs=runs, progress=progress,
                hint=reproduce_hint("attack"), test_sets=test_sets)
    _stage(progress, f"deform: the 17 deformation test sets on {len(runs)} models ({plan.deform.convention} warp)")
    run_deform(plan.deform, folders.checkpoints, folders.attacks, runs=runs, progress=progress,
               hint=reproduce_hint("deform"), test_sets=test_sets)
    _stage(progress, f"corrupt: {len(plan.corrupt.corruptions)} common corruptions x {len(plan.corrupt.severities)} "
                     f"severities on {len(runs)} models")
    run_corrupt(plan.corrupt, folders.checkpoints, folders.attacks, runs=runs, progress=progress,
                hint=reproduce_hint("corrupt"), test_sets=test_sets)
    _stage(progress, f"calibrate: ECE and reliability bins (clean, {plan.calibration.deform_set}, FGSM) on {len(runs)} models")
    run_calibration(plan.calibration, folders.checkpoints, folders.attacks, runs=runs, progress=progress,
                    hint=reproduce_hint("calibrate"), test_sets=test_sets)
    _stage(progress, "report: tables 1, 2, 3, 5, 7 and plots")
    index = write_report(folders.checkpoints, folders.attacks, folders.reports, weights=plan.weights)
    _stage(progress, f"done in {time.perf_counter() - started:.0f} s")
    return index


def finished_training(config: TrainConfig) -> bool:
    """True when the run exists, is complete, and was trained with exactly these settings.

    Checked here rather than by calling `train`, which would load the data and rewrite the
    run's meta.json (and with it the commit that later result files are matched against).
    """
    run_dir = Path(config.out) / config.run_name
    if not (run_dir / META_FILE).is_file():
        return False
    meta = read_meta(run_dir)
    ours = config.to_dict()
    free = resume_free(config)
    return meta["complete"] and all(meta["config"][k] == ours[k] for k in ours if k not in free)


def _stage(progress: bool, message: str) -> None:
    if progress:
        print(f"== {message}", file=sys.stderr, flush=True)
