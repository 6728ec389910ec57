"""Which result files `mm-robust attack` writes for an `AttackConfig`, with which settings, and the checks
made before any of them is written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from robustbench_mm.attacks.autoattack import BUDGETS, eps_name
from robustbench_mm.attacks.core import NO_PIXEL_STD, PROTOCOLS, protocol_applies
from robustbench_mm.config import AttackConfig
from robustbench_mm.data.images import ImageSet
from robustbench_mm.errors import UsageError
from robustbench_mm.runs.checkpoints import stored_metadata
from robustbench_mm.models.thermometer import bpda_layers
from robustbench_mm.runs.evaluations import Evaluation, Family, bpda_name
from robustbench_mm.runs.files import EXAMPLES_FILE
from robustbench_mm.runs.matching import SettingsSource
from robustbench_mm.runs.results import (
    OWN_COMMAND, ConflictHint, as_json, check_result_targets, check_same_settings, check_target_path, result_path,
    results_dir)
from robustbench_mm.sources.loading import ModelSource

ITERATIVE_PROTOCOL = "standard"  # bounded PGD and the saved examples


VERDICT_PROTOCOL = "paper"  # Appendix D's unbounded-PGD verdict: the authors' convention, when it is run


NOT_APPLICABLE = "not applicable (input encoding)"  # how the report names a protocol a model cannot be attacked in


def protocols_not_applicable(config: AttackConfig, loaded: ModelSource) -> dict[str, str]:
    """protocol -> why, for the requested protocols `loaded`'s model cannot be attacked in.

    The `paper` protocol measures eps on the normalized input, so it needs a pixel-scale `std`
    buffer; a model whose first layer is an input encoding (thermometer) has none. As
    `sources.external.protocols_for` does for models trained elsewhere and the in-training FGSM
    (`train.fgsm_monitor`) does for every run, that protocol is dropped for such a model and the
    reason goes into every result file of it (``protocols_not_applicable``).
    """
    return {p: f"{NOT_APPLICABLE}: {NO_PIXEL_STD}" for p in config.protocols
            if not protocol_applies(PROTOCOLS[p], loaded.model)}


def config_for_model(config: AttackConfig, loaded: ModelSource) -> AttackConfig:
    """`config` with only the protocols that apply to `loaded`'s model (see `protocols_not_applicable`)."""
    skipped = protocols_not_applicable(config, loaded)
    if not skipped:
        return config
    kept = tuple(p for p in config.protocols if p not in skipped)
    if not kept:
        raise UsageError(f"model {loaded.name!r} cannot be attacked in the {', '.join(skipped)} protocol: "
                         f"{NO_PIXEL_STD}; add --protocol standard")
    return dataclasses.replace(config, protocols=kept)


def sweep_grid(config: AttackConfig) -> list[float]:
    """The accuracy-vs-eps curve: the sweep, every requested eps, and 0, ascending."""
    return sorted({0.0, *map(float, config.sweep), *map(float, config.eps)})


def check_eps(config: AttackConfig) -> float:
    """Where bounded PGD is compared with FGSM: the first positive --eps, else the largest swept eps."""
    positive = [float(e) for e in config.eps if e > 0]
    return positive[0] if positive else max(sweep_grid(config))


def examples_protocol(config: AttackConfig) -> str:
    return ITERATIVE_PROTOCOL if ITERATIVE_PROTOCOL in config.protocols else config.protocols[0]


def verdict_protocol(protocols) -> str:
    """Which unbounded-PGD run decides Appendix D's sanity check: `paper` when run, else the first."""
    return VERDICT_PROTOCOL if VERDICT_PROTOCOL in protocols else protocols[0]


def autoattack_eps(config: AttackConfig) -> list[float]:
    """Where AutoAttack runs: --aa-eps, then the paper's eps on the pixel scale (once if they coincide)."""
    if not config.autoattack:
        return []
    values = [float(config.aa_eps)] + ([check_eps(config)] if config.aa_paper_eps else [])
    return list({eps_name(e): e for e in values}.values())


def autoattack_evaluation(eps: float) -> str:
    return Evaluation(Family.AUTOATTACK, eps_name(eps)).name


def evaluation_settings(config: AttackConfig, evaluation: str, dataset: str) -> dict[str, Any]:
    """The settings that decide an evaluation's numbers: a stored file is reused only if they match."""
    common = {"dataset": dataset, "n_examples": config.n_examples, "checkpoint": config.checkpoint,
              "batch_size": config.batch_size, "seed": config.seed}
    pgd = {"pgd_steps": config.pgd_steps, "pgd_step_size": config.pgd_step_size,
           "pgd_pass_threshold": config.pgd_pass_threshold}
    parsed = Evaluation.of(evaluation)
    if parsed is not None and parsed.bpda:
        return {**evaluation_settings(bpda_config(config), parsed.plain.name, dataset), "bpda": BPDA_VERSION}
    family = parsed.family if parsed is not None else None
    if family is Family.FGSM:
        return {**common, "protocol": parsed.variant, "eps": list(config.eps), "sweep": sweep_grid(config)}
    if family is Family.PGD_UNBOUNDED:
        return {**common, "protocol": parsed.variant, **pgd, "robust_accuracy": "worst-case"}
    if family is Family.PGD_BOUNDED:
        return {**common, "protocol": ITERATIVE_PROTOCOL, "eps": check_eps(config), "steps": config.bounded_pgd_steps,
                "robust_accuracy": "worst-case"}
    if family is Family.ADVERSARIAL_EXAMPLES:
        return {**common, "protocol": examples_protocol(config), "eps": float(config.eps[0]),
                "count": config.save_examples}
    if family is Family.AUTOATTACK:
        eps = next(e for e in autoattack_eps(config) if autoattack_evaluation(e) == evaluation)
        return {**common, "eps": eps, "norm": "Linf", "budget": config.aa_budget,
                "components": BUDGETS[config.aa_budget].to_dict(), "chunk_size": config.batch_size}
    if family is Family.GRADIENT_MASKING:
        if config.autoattack:
            common = {**common, "black_box_eps": autoattack_eps(config)[0], "aa_budget": config.aa_budget,
                      "max_black_box_share": config.max_black_box_share}
        return {**common, "protocols": list(config.protocols), "eps": list(config.eps), "sweep": sweep_grid(config),
                **pgd, "bounded_pgd_steps": config.bounded_pgd_steps, "robust_accuracy": "worst-case",
                "max_fgsm_only_share": config.max_fgsm_only_share, "max_sweep_rise": config.max_sweep_rise,
                "max_zero_gradient_share": config.max_zero_gradient_share,
                "indicators": {"examples": "the first batch", "incomplete_window": config.incomplete_window,
                               "max_loss_movement": config.max_loss_movement,
                               "max_unsettled_share": config.max_unsettled_share,
                               "max_silent_success_share": config.max_silent_success_share}}
    raise ValueError(f"unknown evaluation {evaluation!r}")


def result_evaluations(config: AttackConfig) -> list[str]:
    """The JSON result files `attack` writes per model."""
    return [*(Evaluation(Family.FGSM, p).name for p in config.protocols),
            *(Evaluation(Family.PGD_UNBOUNDED, p).name for p in config.protocols), Family.PGD_BOUNDED.value,
            *(autoattack_evaluation(eps) for eps in autoattack_eps(config)), Family.GRADIENT_MASKING.value]


# Stored in every BPDA result's settings, so a result made by an earlier surrogate is never reused as current:
# True (release 0.1 to issue 23): the thermometer surrogate's ramps covered the bucket below each switch point;
# 2: ramps centred on each switch point (models/thermometer.py).
BPDA_VERSION = 2
BPDA_PROTOCOL = ITERATIVE_PROTOCOL  # BPDA attacks: the standard protocol only (pixel scale, CE, clipping)


def bpda_config(config: AttackConfig) -> AttackConfig:
    """The config the BPDA attacks run with: `config` in the standard protocol only."""
    return dataclasses.replace(config, protocols=(BPDA_PROTOCOL,))


def bpda_evaluations(config: AttackConfig) -> list[str]:
    """The BPDA result files `attack` also writes for a model with BPDA layers (`models.thermometer.bpda_layers`):
    FGSM and unbounded PGD in the standard protocol, bounded PGD and AutoAttack at every eps it runs at."""
    return [Evaluation(Family.FGSM, BPDA_PROTOCOL, bpda=True).name,
            Evaluation(Family.PGD_UNBOUNDED, BPDA_PROTOCOL, bpda=True).name,
            Evaluation(Family.PGD_BOUNDED, bpda=True).name,
            *(bpda_name(autoattack_evaluation(eps)) for eps in autoattack_eps(config))]


def model_evaluations(config: AttackConfig, loaded: ModelSource) -> list[str]:
    """Every JSON result file `attack` writes for `loaded` (its own protocols; BPDA ones where it has BPDA layers)."""
    own = config_for_model(config, loaded)
    return result_evaluations(own) + (bpda_evaluations(own) if bpda_layers(loaded.model) else [])


def check_dataset(loaded: ModelSource, dataset: str | None) -> None:
    trained_on = loaded.dataset
    if dataset is not None and dataset != trained_on:
        raise UsageError(f"checkpoint {loaded.name!r} was trained on {trained_on}, not --dataset {dataset}; "
                         f"drop --dataset or pass --checkpoint with {dataset} models only")


def check_num_classes(loaded: ModelSource, data: ImageSet) -> None:
    """Our models' class count, read from their last layer (any model's output shape: model_sources.check_contracts)."""
    linear = getattr(loaded.model, "linear", None)
    if not isinstance(linear, torch.nn.Linear):
        return
    outputs = linear.out_features
    if outputs != data.num_classes:
        raise UsageError(f"checkpoint {loaded.name!r} predicts {outputs} classes but {data.name} has "
                         f"{data.num_classes}; evaluate it on the dataset it was trained on")


def examples_metadata(config: AttackConfig, summary: dict[str, Any], dataset: str) -> dict[str, str]:
    """The metadata of the adversarial-examples file: the model (weights digest included) and the settings.

    The writer stores it and the pre-check compares a finished file with it, so both see the same plan.
    """
    return {"eps": repr(float(config.eps[0])), "protocol": examples_protocol(config),
            "model": json.dumps(as_json(summary), sort_keys=True),
            "settings": json.dumps(as_json(evaluation_settings(config, "adversarial-examples", dataset)),
                                   sort_keys=True)}


def check_examples_target(path: Path, metadata: dict[str, str], force: bool, hint: ConflictHint) -> None:
    """Like `results.check_result_targets` for the examples file: a finished one for the same weights
    made with other settings is refused unless `force`; one for other weights (or unreadable) is replaced."""
    check_target_path(path, hint)
    stored = None if force else stored_metadata(path)
    if stored is None:
        return
    try:
        stored_model, stored_settings = json.loads(stored["model"]), json.loads(stored["settings"])
    except (KeyError, TypeError, ValueError):
        return  # not a file this version wrote with its settings: nothing to compare, it is redone
    if isinstance(stored_model, dict) and isinstance(stored_settings, dict):
        check_same_settings(path, stored_model, stored_settings, json.loads(metadata["model"]),
                            json.loads(metadata["settings"]), hint)


# Stored setting -> the AttackConfig field it comes from (derived settings such as "components" are absent).
SETTING_FIELDS = {
    **{name: name for name in ("n_examples", "checkpoint", "batch_size", "seed", "pgd_steps", "pgd_step_size",
                               "pgd_pass_threshold", "eps", "sweep", "bounded_pgd_steps", "protocols", "aa_budget",
                               "max_black_box_share", "max_fgsm_only_share", "max_sweep_rise",
                               "max_zero_gradient_share")},
    "chunk_size": "batch_size", "steps": "bounded_pgd_steps", "count": "save_examples", "budget": "aa_budget",
    "black_box_eps": "aa_eps",
}
OPTIONS = {  # AttackConfig field -> `mm-robust attack` option
    "eps": "--eps", "protocols": "--protocol", "sweep": "--sweep", "pgd_steps": "--pgd-steps",
    "pgd_step_size": "--pgd-step-size", "pgd_pass_threshold": "--pgd-threshold",
    "bounded_pgd_steps": "--bounded-pgd-steps", "max_fgsm_only_share": "--max-fgsm-only-share",
    "max_sweep_rise": "--max-sweep-rise", "max_zero_gradient_share": "--max-zero-gradient-share",
    "n_examples": "--n-examples", "batch_size": "--batch-size", "checkpoint": "--weights", "seed": "--seed",
    "save_examples": "--save-examples", "autoattack": "--autoattack", "aa_eps": "--aa-eps",
    "aa_paper_eps": "--aa-paper-eps", "aa_budget": "--aa-budget", "max_black_box_share": "--max-black-box-share",
}


def _autoattack_as_stored(config: AttackConfig, stored: dict[str, Any]) -> AttackConfig:
    """AutoAttack on when the stored gradient-masking or AutoAttack settings hold its budget, off when they do not."""
    if "protocols" in stored or "budget" in stored:  # only these two files record whether AutoAttack ran
        return dataclasses.replace(config, autoattack="aa_budget" in stored or "budget" in stored)
    return config


def settings_source(config: AttackConfig, loaded: ModelSource, evaluation: str) -> SettingsSource:
    """How `evaluation`'s settings for `loaded` come from the options, for a refusal to name the matching ones."""
    return SettingsSource("attack", config, lambda c: evaluation_settings(config_for_model(c, loaded), evaluation,
                                                                          loaded.dataset),
                          SETTING_FIELDS, OPTIONS, _autoattack_as_stored)


def check_attack_targets(config: AttackConfig, models: list[ModelSource], out_root: str | Path, force: bool,
                         hint: ConflictHint = OWN_COMMAND) -> None:
    """Refuse, before anything is written, every file `attack` would lose or cannot write (see runs/results.py)."""
    check_result_targets([(result_path(out_root, loaded.name, evaluation, loaded.checkpoint), loaded.summary,
                           evaluation_settings(config_for_model(config, loaded), evaluation, loaded.dataset),
                           settings_source(config, loaded, evaluation))
                          for loaded in models for evaluation in model_evaluations(config, loaded)], force, hint)
    if config.save_examples > 0:
        for loaded in models:
            check_examples_target(results_dir(out_root, loaded.name, loaded.checkpoint) / EXAMPLES_FILE,
                                  examples_metadata(config, loaded.summary, loaded.dataset), force, hint)
