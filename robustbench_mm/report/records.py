"""The report's data: the trained models and their result files, read and grouped for the tables.

`load_records` turns ``checkpoints/<run>/meta.json`` and ``attacks/<run>/*.json`` (or, for the best weights,
``attacks/<run>/best/*.json``: run_results.py) into plain `RunRecord`s (checked for type, and dropped as stale
when they measured other weights);
`group_records` puts the models of one table section together, and `ModelRuns` gathers the seeds of
one model identity. The Table 7 helpers say which deform result and which models a table shows.
Everything that draws or writes the report (figures/plots.py, report/build.py, report/tables/supervised.py) builds
on this module and nothing here imports them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from robustbench_mm.config import REPRODUCE_MODELS
from robustbench_mm.data.deformations import DEFORM_EVALUATIONS, DEFORM_SETS, DEFORM_VARIANTS, evaluation_name
from robustbench_mm.errors import UsageError, check_choice
from robustbench_mm.evaluation.attack_plan import NOT_APPLICABLE
from robustbench_mm.paper import TABLE5_EPS, TABLE7_COLUMNS, UNMIXED_METHODS, model_key
from robustbench_mm.presets import deform_convention
from robustbench_mm.report.orderings import Comparison, compare_group
from robustbench_mm.report.record_checks import identity_mismatch, one_folder_per_seed, stale_reason
from robustbench_mm.report.result_checks import PROTOCOLS
from robustbench_mm.report.run_results import (
    examples_file, examples_model, other_weights, read_run_results)
from robustbench_mm.runs.checkpoints import WEIGHT_FILES, find_runs
from robustbench_mm.runs.files import EXAMPLES_FILE
from robustbench_mm.runs.evaluations import is_bpda
from robustbench_mm.runs.meta import read_meta
from robustbench_mm.runs.results import attacked_eps
from robustbench_mm.runs.seeds import split_seed_suffix
from robustbench_mm.stats.estimates import Estimate, SeedValue, estimate

# Keys each evaluation's payload must have for the report to use it.
# Evaluations with one file per setting (autoattack-8_255.json, autoattack-0.03.json): loaded by prefix.
KEY_ORDER = tuple(model_key(method, alpha) for method, alpha in REPRODUCE_MODELS)
METHOD_LABELS = {"baseline": "No mixup (baseline)", "input": "Input mixup", "manifold": "Manifold mixup",
                 "adversarial": "Adv. training (Madry et al.)", "thermometer": "Thermometer (Buckman et al.)"}
NO_BPDA_LAYER = "not applicable (no BPDA layer)"  # explained under the robustness table (verdicts.RULE)
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "digits": "digits (scikit-learn, offline)"}


# ---- records --------------------------------------------------------------------------------

@dataclass
class RunRecord:
    """One trained model and whatever evaluations of it exist."""

    name: str
    model: dict[str, Any]  # identity: key, dataset, arch, preset, width, method, alpha
    meta: dict[str, Any] | None  # checkpoints/<run>/meta.json, None when only results exist
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # evaluation -> why there is no usable result
    examples_file: Path | None = None
    sources: dict[str, Path] = field(default_factory=dict)  # evaluation -> the result file it was read from
    other_weights: set[str] = field(default_factory=set)  # evaluations also measured on the other weights (not shown)

    def beside(self, evaluation: str, file_name: str) -> Path | None:
        """The file `file_name` in the folder `evaluation`'s result was read from (a figure drawn with it)."""
        source = self.sources.get(evaluation)
        return None if source is None else source.parent / file_name

    @property
    def key(self) -> str:
        return self.model["key"]

    @property
    def external(self) -> bool:
        """Trained elsewhere and evaluated through --model or robustbench_mm.evaluate (no run folder of ours)."""
        return bool(self.model.get("external"))

    @property
    def label(self) -> str:
        return f"{self.name} (external)" if self.external else model_label(self.model["method"], self.model.get("alpha"))

    def result(self, evaluation: str) -> dict[str, Any] | None:
        return self.results.get(evaluation)

    @property
    def has_bpda(self) -> bool:
        """Attacked through BPDA surrogates too (`attack` does that for every model with a BPDA layer)."""
        return any(result.get("bpda") for result in self.results.values())

    def why_missing(self, evaluation: str) -> str:
        if is_bpda(evaluation) and "gradient-masking" in self.results and not self.has_bpda:
            return NO_BPDA_LAYER  # attacked by a version that writes BPDA results, so it has no BPDA layer
        return self.missing.get(evaluation, f"no {evaluation}.json for {self.name}")

    @property
    def epochs(self) -> int | None:
        """Epochs trained: from meta.json, else from a result file's model summary."""
        if self.meta:
            return self.meta.get("epoch")
        return next((r["model"].get("epochs_trained") for r in self.results.values()), None)

    @property
    def seed(self) -> int | None:
        """The training seed: from meta.json, else from a result file's model summary, else the folder name."""
        if self.meta:
            return self.meta["config"].get("seed")
        first = next(iter(self.results.values()), None)
        return first["model"].get("train_seed") if first else split_seed_suffix(self.name)[1]


@dataclass
class ModelRuns:
    """One model identity (its key and its run name without the ``-s<seed>`` suffix): one run per seed."""

    name: str
    runs: list[RunRecord]
    detail: str = ""  # what tells it from a model of the same name and key, e.g. "12 epochs"

    @property
    def key(self) -> str:
        return self.runs[0].key

    @property
    def label(self) -> str:
        return self.runs[0].label + (f" ({self.detail})" if self.detail else "")

    @property
    def folders(self) -> str:
        """How the table names the runs: the one folder, or the base name with the seeds in braces."""
        suffixes = [split_seed_suffix(r.name)[1] for r in self.runs]
        if len(self.runs) == 1 or None in suffixes:
            return ", ".join(r.name for r in self.runs)
        return f"{self.name}-s{{{','.join(map(str, suffixes))}}}"

    def cell(self, evaluation: str, value_of, absent: str) -> tuple[Estimate | None, str]:
        """The estimate over seeds of `value_of(result)`, and why a seed has no value (or '').

        `absent` says why when the result file exists but `value_of` finds no number in it.
        """
        values, missing, why = [], [], ""
        for record in self.runs:
            result = record.result(evaluation)
            value = value_of(result) if result else None
            if value is None:
                missing.append(record.name)
                why = why or (record.why_missing(evaluation) if result is None else absent)
            else:
                values.append(SeedValue(record.name, record.seed, float(value), result.get("n_examples")))
        return estimate(values, missing), why


def model_runs(records: Iterable[RunRecord]) -> list[ModelRuns]:
    """Runs grouped by model identity: the same key, the same run name up to its seed suffix and the same number
    of epochs trained (seeds trained for different epochs are different models, each labelled with its epochs)."""
    by_identity: dict[tuple[str, str, Any], list[RunRecord]] = {}
    for record in records:
        by_identity.setdefault((record.key, split_seed_suffix(record.name)[0], record.epochs), []).append(record)
    split = Counter((key, base) for key, base, _ in by_identity)
    return [ModelRuns(base, sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, r.name)),
                      f"{epochs} epochs" if split[(key, base)] > 1 else "")
            for (key, base, epochs), runs in by_identity.items()]


def model_label(method: str, alpha: float | None) -> str:
    label = METHOD_LABELS.get(method, method)
    return label if method in UNMIXED_METHODS or alpha is None else f"{label} (α = {alpha:g})"


def adversarial_steps_fact(group: Group) -> tuple[str, str] | None:
    """A header fact for a table that shows an adversarially trained model: its inner attack, read from meta.json,
    and that the smoke preset runs fewer steps than Madry et al.'s 7."""
    settings = sorted({(m["adversarial_training"]["steps"], m["adversarial_training"]["eps"],
                        m["adversarial_training"]["step_size"], r.model["preset"])
                       for r in group.runs if r.meta and (m := r.meta).get("adversarial_training")})
    if not settings:
        return None
    parts = [f"inner L-inf PGD, {steps} steps (ε = {eps:.4g}, step {step:.4g}, random start)"
             + (f" — the {preset} preset's reduced inner attack, Madry et al. use {MADRY_STEPS}"
                if steps < MADRY_STEPS else "") for steps, eps, step, preset in settings]
    return "Adversarial training", "; ".join(parts)


MADRY_STEPS = 7  # the inner attack's steps of Madry et al.'s CIFAR setting (RobustBench's PreActResNet-18 baselines)


def _identity_from_meta(meta: dict[str, Any]) -> dict[str, Any]:
    config = meta["config"]
    alpha = config["alpha"] if config["method"] not in UNMIXED_METHODS else None
    return {"key": model_key(config["method"], alpha), "dataset": config["dataset"], "arch": config["arch"],
            "preset": config["preset"], "width": config["width"], "method": config["method"], "alpha": alpha}


def load_records(checkpoints_root: str | Path, attacks_root: str | Path,
                 weights: str = "last") -> tuple[list[RunRecord], list[str]]:
    """Every run found in either folder, with its results measured on `weights` ("last" or "best"); plus problems
    worth telling the reader."""
    check_choice("--weights", weights, WEIGHT_FILES)
    checkpoints_root, attacks_root = Path(checkpoints_root), Path(attacks_root)
    problems: list[str] = []
    metas: dict[str, dict[str, Any]] = {}
    run_folders = find_runs(checkpoints_root)  # a broken meta.json still leaves the weights to check against
    for run_dir in run_folders:
        try:
            metas[run_dir.name] = read_meta(run_dir)
        except UsageError as exc:
            problems.append(f"skipped checkpoint {run_dir.name}: {exc}")
    has_folder = {run_dir.name for run_dir in run_folders}
    result_runs = sorted(p.name for p in attacks_root.iterdir() if p.is_dir()) if attacks_root.is_dir() else []
    records = []
    for name in sorted(set(metas) | set(result_runs)):
        if (attacks_root / name).exists() and not (attacks_root / name).is_dir():
            problems.append(f"{str(attacks_root / name)!r} is a file where the results folder of {name} should be")
        read = read_run_results(attacks_root, name, weights)
        results, missing, sources = read.results, read.missing, read.sources
        problems += read.problems
        _mark_not_applicable(results, missing)
        meta = metas.get(name)
        digests: dict[str, tuple[str | None, str]] = {}  # each weights file is hashed once
        if name in has_folder:
            _drop_stale_results(checkpoints_root / name, results, missing, problems, digests)
        if meta is not None:
            identity = _identity_from_meta(meta)
        elif results:
            summary = next(iter(results.values()))["model"]
            identity = {k: summary.get(k) for k in ("key", "dataset", "arch", "preset", "width", "method", "alpha",
                                                    "external", "contract_flags", "weights_file")}
            if not identity["external"] and name not in has_folder:
                problems.append(f"{name}: results exist but {str(checkpoints_root / name)!r} does not; their weights "
                                "cannot be checked and the training curves are missing")
        else:
            if read.other_weights:
                problems.append(f"{name}: has results measured on the {other_weights(weights)} weights only; "
                                f"`mm-robust report --weights {other_weights(weights)}` shows them")
            continue
        for evaluation, result in list(results.items()):
            why = identity_mismatch(name, identity if meta is not None else {}, result["model"])
            if why is not None:
                del results[evaluation]
                missing[evaluation] = why
                problems.append(f"{name}: {evaluation}.json not used: {why}")
        for evaluation, result in results.items():
            trained = result["model"].get("epochs_trained")
            if meta is not None and trained != meta["epoch"]:
                problems.append(f"{name}: {evaluation}.json measured the model after {trained} epochs, but it has "
                                f"trained {meta['epoch']} since; rerun the evaluation to refresh it")
        examples = examples_file(attacks_root, name, weights)
        if examples is not None and name in has_folder:
            model = examples_model(examples)
            why = stale_reason(checkpoints_root / name, model, "attack", digests) if model else \
                "it records no model, so it cannot be tied to these weights, rerun attack"
            if why is not None:
                problems.append(f"{name}: {EXAMPLES_FILE} not used: {why}")
                examples = None
        records.append(RunRecord(name, identity, meta, results, missing, examples,
                                 {e: sources[e] for e in results}, read.other_weights))
    records, duplicates = one_folder_per_seed(records)
    return records, problems + duplicates


def _mark_not_applicable(results: dict[str, dict[str, Any]], missing: dict[str, str]) -> None:
    """A protocol `attack` left out for this model (no pixel-scale `std`: an input encoding) is shown as
    "not applicable (input encoding)" in every table, not as a missing file."""
    skipped = {p for result in results.values() for p in (result.get("protocols_not_applicable") or {})}
    for protocol in skipped:
        for evaluation in (f"fgsm-{protocol}", f"pgd-unbounded-{protocol}"):
            if evaluation not in results:
                missing[evaluation] = NOT_APPLICABLE


def _drop_stale_results(run_dir: Path, results: dict[str, dict[str, Any]], missing: dict[str, str],
                        problems: list[str], digests: dict[str, tuple[str | None, str]]) -> None:
    """Move every result not made from the weights now in `run_dir` from `results` to `missing`.

    A run retrained with --force, another seed or method under the same name, or a copied weights
    file keeps its folder name; only the weights digest tells its old results from its own.
    `digests` caches each weights file's hash.
    """
    for evaluation, result in list(results.items()):
        stage = "deform" if evaluation in DEFORM_EVALUATIONS else "calibrate" if evaluation == "calibration" else \
            "corrupt" if evaluation == "corruptions" else "attack"
        why = stale_reason(run_dir, result["model"], stage, digests)
        if why is not None:
            del results[evaluation]
            missing[evaluation] = why
            problems.append(f"{run_dir.name}: {evaluation}.json not used: {why}")


# ---- groups: one section of every table per (dataset, architecture, preset) ----------------


@dataclass
class Group:
    dataset: str
    arch: str
    preset: str
    runs: list[RunRecord]
    slug: str = ""

    @property
    def models(self) -> list[ModelRuns]:
        """The group's model identities, in the paper's column order; seeds of one identity together."""
        return model_runs(self.runs)

    @property
    def heading(self) -> str:
        return f"{DATASET_NAMES.get(self.dataset, self.dataset)} · {self.arch} · {self.preset} preset"

    @cached_property
    def fgsm_eps(self) -> float:
        """The FGSM eps the group's models were attacked at (`mm-robust attack --eps`, its first value): every
        table, the orderings and summary.json report FGSM there; Table 5 compares with the paper at its 0.03.
        When runs were attacked at different eps, the most common one (the smallest of a tie)."""
        counts = Counter(eps for record in self.runs for protocol in PROTOCOLS
                         if (result := record.result(f"fgsm-{protocol}")) and (eps := attacked_eps(result)) is not None)
        return min(counts, key=lambda eps: (-counts[eps], eps)) if counts else TABLE5_EPS

    @cached_property
    def comparisons(self) -> list[Comparison]:
        """The paper's orderings tested on this group, once per report (each runs a paired bootstrap)."""
        return compare_group(self.models, self.dataset, deform_evaluations(self)[0], self.fgsm_eps)


def _key_rank(record: RunRecord) -> tuple[int, str]:
    key = record.key
    return (KEY_ORDER.index(key) if key in KEY_ORDER else len(KEY_ORDER), record.name)


def group_records(records: Iterable[RunRecord]) -> list[Group]:
    """Models that belong in one table, table models first in the paper's column order."""
    by_id: dict[tuple[str, str, str], list[RunRecord]] = {}
    for record in records:
        if not record.external:
            by_id.setdefault((record.model["dataset"], record.model["arch"], record.model["preset"]), []).append(record)
    # A model trained elsewhere joins every table of its dataset, beside ours; its own group if there is none.
    ours = list(by_id)
    for record in records:
        if record.external:
            for ident in [i for i in ours if i[0] == record.model["dataset"]] or \
                    [(record.model["dataset"], "external", "external")]:
                by_id.setdefault(ident, []).append(record)
    groups = [Group(*ident, sorted(runs, key=_key_rank)) for ident, runs in sorted(by_id.items())]
    datasets = [g.dataset for g in groups]
    for group in groups:
        # Plot files are named by dataset; architecture and preset join the name only when needed.
        group.slug = group.dataset if datasets.count(group.dataset) == 1 else f"{group.dataset}-{group.arch}-{group.preset}"
    return groups


# ---- Table 7: its columns and which deform result it shows ----------------------------------


def deform_set_label(name: str) -> str:
    """How the paper's Table 7 names the row, e.g. 'Rotation U(-20°, 20°)'."""
    return DEFORM_SETS[name].label if name in DEFORM_SETS else name


def table7_columns(group: Group) -> list[tuple[str, ModelRuns | None]]:
    """The paper's four models (a placeholder where one is not trained), then any other models."""
    models = group.models
    columns: list[tuple[str, ModelRuns | None]] = []
    for key in TABLE7_COLUMNS:
        matches = [m for m in models if m.key == key]
        columns += [(key, m) for m in matches] or [(key, None)]
    columns += [(m.key, m) for m in models if m.key not in TABLE7_COLUMNS]
    return columns


WARP_TEXT = {"ours": "our warp (exact centre, pixels out to their edges)",
             "authors": "the authors' warp (their scipy code's centre, border and rotation sign)"}


FILL_TEXT = {"black": "black fill", "mean": "mean-pixel fill"}


def deform_evaluations(group: Group) -> list[str]:
    """The deform results shown for `group`, the main one first: the one its preset's `reproduce` makes."""
    main = evaluation_name(deform_convention(group.preset))
    present = [e for e in DEFORM_EVALUATIONS if any(e in r.results for r in group.runs)]
    return [main] + [e for e in present if e != main]


def deform_look(evaluation: str, command: bool = True) -> str:
    """'the authors' warp (...), black fill' for a deform result name, with the command that makes it."""
    convention, fill = DEFORM_VARIANTS[evaluation]
    text = f"{WARP_TEXT[convention]}, {FILL_TEXT[fill]}"
    return text + f" (`mm-robust deform --convention {convention} --fill {fill}`)" if command else text


def deform_cell(model: ModelRuns | None, key: str, set_name: str,
                evaluation: str = "deform") -> tuple[Estimate | None, str]:
    """One Table 7 cell over seeds, and why it (or some seed of it) is missing."""
    if model is None:
        return None, f"no trained {key} model"
    return model.cell(evaluation, lambda r: (r["sets"].get(set_name) or {}).get("accuracy"),
                      f"{evaluation}.json has no {set_name}")


def column_label(key: str, model: ModelRuns | None) -> str:
    """A Table 7 column's name: the method and its α, or the name of a model trained elsewhere."""
    if model is not None and model.runs[0].external:
        return model.label
    return model_label(*_method_alpha(key))


def _method_alpha(key: str) -> tuple[str, float | None]:
    if key in UNMIXED_METHODS:
        return key, None
    method, _, alpha = key.partition("-a")
    return method, float(alpha)
