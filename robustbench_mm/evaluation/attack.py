"""`mm-robust attack`: Table 5's FGSM in both protocols, Appendix D's unbounded PGD and the
gradient-masking checks for trained models, written to ``attacks/<run>/`` (``attacks/<run>/best/`` for the
best weights: runs/results.py `results_dir`).

Files per model (one JSON per evaluation, each written atomically as soon as it is done):
``fgsm-<protocol>.json``, ``adversarial-examples.safetensors``, ``pgd-unbounded-<protocol>.json``
(one per protocol: Appendix D's verdict comes from ``paper``, the authors' convention),
``pgd-bounded.json`` (PGD-20 at the check eps), ``gradient-masking.json`` (+ ``gradient-masking.png``).
A file made for the same model with identical settings is kept and skipped on re-run unless
``force``, so a killed run keeps what it finished and completes the rest when run again.

Every accuracy is also stored per example (``per_example``: which test examples stayed correct,
see runs/results.py), and iterative attacks count the worst case over their iterates.

The evaluated images are the first `n_examples` of the test set (all of it by default), so
reruns and other stages agree on which images were attacked. Bounded PGD runs in the standard
protocol (pixel scale, cross-entropy, clipping), like AutoAttack.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from robustbench_mm.attacks import PROTOCOLS, WorstCase, bounded_pgd_step_size, fgsm_sweep, percent, pgd_worst_case
from robustbench_mm.attacks.autoattack import BUDGETS, AutoAttackFlags, eps_text, run_autoattack
from robustbench_mm.common.progress import progress_bar
from robustbench_mm.common.runtime import memory_format, resolve_device, seed_everything
from robustbench_mm.common.storage import ensure_writable_dir, folder_lock
from robustbench_mm.config import AttackConfig
from robustbench_mm.data.images import ImageSet, to_unit_float
from robustbench_mm.evaluation.attack_payloads import ResultPayloads
from robustbench_mm.evaluation.attack_plan import (
    ITERATIVE_PROTOCOL, autoattack_eps, autoattack_evaluation, bpda_config, check_attack_targets, check_dataset,
    check_eps, check_num_classes, config_for_model, evaluation_settings, protocols_not_applicable, sweep_grid)
from robustbench_mm.evaluation.autoattack_state import AutoAttackState, flags_of_result
from robustbench_mm.evaluation.masking_checks import MaskingChecks
from robustbench_mm.evaluation.test_sets import TestSets
from robustbench_mm.models.metrics import accuracy_and_nll, predict
from robustbench_mm.models.thermometer import bpda, bpda_layers
from robustbench_mm.runs.checkpoints import load_model, resolve_runs
from robustbench_mm.runs.evaluations import bpda_name
from robustbench_mm.runs.results import (
    OWN_COMMAND, ConflictHint, as_json, decode_mask, encode_mask, finished_result, result_file, results_dir,
    write_result)
from robustbench_mm.sources.loading import ModelSource, check_contracts, from_run


class ModelAttacks(ResultPayloads, MaskingChecks):
    """Every attack on one model. Each piece runs at most once, and only when a file still needs it."""

    def __init__(self, loaded: ModelSource, data: ImageSet, config: AttackConfig, out_dir: Path,
                 device: torch.device, force: bool, progress: bool):
        self.loaded = loaded
        self.model = loaded.model
        self.data = data
        self.not_applicable = protocols_not_applicable(config, loaded)  # protocol -> why it is left out
        self.config = config_for_model(config, loaded)
        self.out_dir = out_dir
        self.device = device
        self.force = force
        self.progress = progress
        self.summary = loaded.summary
        self.grid = sweep_grid(config)
        self.memory_format = memory_format(device)
        self.fgsm_sweeps: dict[str, dict[str, torch.Tensor]] = {}
        self.iterative: dict[str, dict[str, Any]] = {}
        self.autoattack_runs: dict[str, dict[str, Any]] = {}

    # ---- plumbing -----------------------------------------------------------------------------

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size = self.config.batch_size
        for start in range(0, len(self.data), size):
            x = to_unit_float(self.data.images[start:start + size]).contiguous(memory_format=self.memory_format)
            yield x, self.data.labels[start:start + size]

    @property
    def n_batches(self) -> int:
        return -(-len(self.data) // self.config.batch_size)

    def bar(self, what: str, total: int, unit: str = "step"):
        return progress_bar(total=total, desc=f"{self.loaded.name}: {what}", unit=unit, leave=False,
                            disable=not self.progress)

    def named(self, evaluation: str) -> str:
        """The result name of `evaluation` (a plain name such as 'pgd-bounded') for this set of attacks."""
        return evaluation

    def settings(self, evaluation: str) -> dict[str, Any]:
        return evaluation_settings(self.config, self.named(evaluation), self.data.name)

    def stored(self, evaluation: str) -> dict[str, Any] | None:
        if self.force:
            return None
        return finished_result(result_file(self.out_dir, self.named(evaluation)), self.summary,
                               self.settings(evaluation))

    def base_payload(self) -> dict[str, Any]:
        payload = {"n_examples": len(self.data), "device": str(self.device),
                   "data_dir": self.config.data_dir or self.loaded.data_dir}
        if self.not_applicable:
            payload["protocols_not_applicable"] = dict(self.not_applicable)
        return payload

    def per_example(self, correct: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The shared per-example contract: which of the test examples [0, N) stayed correct, per label."""
        return {"example_range": [0, len(self.data)], "correct": {k: encode_mask(v) for k, v in correct.items()}}

    # ---- measurements -------------------------------------------------------------------------

    @cached_property
    def clean_logits(self) -> torch.Tensor:
        return predict(self.model, self.data, self.config.batch_size)

    @cached_property
    def clean_correct(self) -> torch.Tensor:
        return (self.clean_logits.argmax(1) == self.data.labels).cpu()

    @cached_property
    def clean(self) -> dict[str, float]:
        """Accuracy counted like every attacked accuracy here, so FGSM at eps 0 can be compared exactly."""
        return {"accuracy": percent(self.clean_correct),
                "nll": accuracy_and_nll(self.clean_logits, self.data.labels)["nll"]}

    def fgsm_sweep(self, protocol_name: str) -> dict[str, torch.Tensor]:
        """{"correct": bool (len(grid), N), "gradient_size": (N,)} on the CPU, computed once per protocol."""
        if protocol_name not in self.fgsm_sweeps:
            protocol = PROTOCOLS[protocol_name]
            correct, sizes = [], []
            with self.bar(f"FGSM {protocol_name}", self.n_batches) as bar:
                for x, labels in self.batches():
                    sweep = fgsm_sweep(self.model, x, labels, self.grid, protocol)
                    correct.append(sweep.correct)
                    sizes.append(sweep.gradient_size)
                    bar.update()
            self.fgsm_sweeps[protocol_name] = {"correct": torch.cat(correct, dim=1).cpu(),
                                               "gradient_size": torch.cat(sizes).cpu()}
        return self.fgsm_sweeps[protocol_name]

    def sweep_accuracy(self, protocol_name: str) -> list[float]:
        return (100.0 * self.fgsm_sweep(protocol_name)["correct"].double().mean(dim=1)).tolist()

    def worst_case(self, what: str, protocol_name: str, steps: int, step_size: float,
                   eps: float | None) -> tuple[WorstCase, float]:
        """PGD over every example with the active set: (per-example worst case, wall seconds)."""
        start = time.perf_counter()
        with self.bar(what, len(self.data), unit="example") as bar:
            result = pgd_worst_case(self.model, self.data.images, self.data.labels, PROTOCOLS[protocol_name], steps,
                                    step_size, eps, self.config.batch_size, self.memory_format, on_done=bar.update)
        return result, round(time.perf_counter() - start, 3)

    def unbounded_pgd(self, protocol_name: str) -> dict[str, Any]:
        """{"accuracy_per_step", "final" (bool mask), "seconds", ...}, from the stored file when it is there."""
        evaluation = f"pgd-unbounded-{protocol_name}"
        if evaluation not in self.iterative:
            stored = self.stored(evaluation)
            if stored is not None:
                self.iterative[evaluation] = {"accuracy_per_step": stored["accuracy_per_step"],
                                              "final": torch.from_numpy(decode_mask(
                                                  stored["per_example"]["correct"]["final"])),
                                              "seconds": stored.get("seconds"),
                                              "example_steps": stored.get("example_steps")}
            else:
                c = self.config
                result, seconds = self.worst_case(f"unbounded PGD {protocol_name} ({c.pgd_steps} steps)",
                                                  protocol_name, c.pgd_steps, c.pgd_step_size, None)
                self.iterative[evaluation] = {"accuracy_per_step": result.accuracy_per_step(), "final": result.final,
                                              "seconds": seconds, "example_steps": result.example_steps}
        return self.iterative[evaluation]

    @cached_property
    def bounded_pgd(self) -> dict[str, Any]:
        stored = self.stored("pgd-bounded")
        if stored is not None:
            return {"accuracy": stored["accuracy"], "seconds": stored.get("seconds"),
                    "final": torch.from_numpy(decode_mask(stored["per_example"]["correct"]["final"])),
                    "example_steps": stored.get("example_steps")}
        c = self.config
        eps = check_eps(c)
        result, seconds = self.worst_case(f"bounded PGD ({c.bounded_pgd_steps} steps, eps {eps:g})", ITERATIVE_PROTOCOL,
                                          c.bounded_pgd_steps, bounded_pgd_step_size(eps, c.bounded_pgd_steps), eps)
        return {"accuracy": percent(result.final), "final": result.final, "seconds": seconds,
                "example_steps": result.example_steps}

    def partial_path(self, evaluation: str) -> Path:
        return self.out_dir / f"{self.named(evaluation)}.partial.json"

    def resumed_flags(self, evaluation: str, path: Path | None = None) -> AutoAttackFlags | None:
        """Flags a killed run saved for these exact model and settings, or None (then it starts afresh).

        `path`: where they were saved (default the model's partial file; a shard keeps its own).
        """
        if self.force:
            return None
        state = AutoAttackState.load(path or self.partial_path(evaluation), self.summary, self.settings(evaluation))
        return state.flags if state is not None else None

    def save_flags(self, evaluation: str, flags: AutoAttackFlags, path: Path | None = None) -> None:
        state = AutoAttackState(as_json(self.summary), self.settings(evaluation), str(self.device), flags)
        state.save(path or self.partial_path(evaluation))

    def use_autoattack_flags(self, evaluation: str, flags: AutoAttackFlags) -> None:
        """Report `flags` (merged from shards) as this model's AutoAttack at `evaluation`, as if run here."""
        self.autoattack_runs[evaluation] = {"flags": flags}

    def autoattack(self, eps: float) -> dict[str, Any]:
        """{"flags": AutoAttackFlags, "seconds": per stage}, from the stored result when it is there."""
        evaluation = autoattack_evaluation(eps)
        if evaluation not in self.autoattack_runs:
            stored = self.stored(evaluation)
            if stored is not None:
                flags = flags_of_result(stored, len(self.data))
            else:
                resumed = self.resumed_flags(evaluation)
                done_before = int(resumed.done.sum()) if resumed is not None else 0
                with self.bar(f"AutoAttack eps {eps_text(eps)} ({self.config.aa_budget})", len(self.data),
                              unit="example") as bar:
                    bar.update(done_before)

                    def after_chunk(flags: AutoAttackFlags) -> None:
                        self.save_flags(evaluation, flags)
                        bar.update(int(flags.done.sum()) - bar.n)

                    flags = run_autoattack(self.model, self.data.images, self.data.labels, eps, self.data.num_classes,
                                           0, len(self.data), self.config.batch_size, self.config.seed,
                                           BUDGETS[self.config.aa_budget], resumed, after_chunk)
            self.autoattack_runs[evaluation] = {"flags": flags}
        return self.autoattack_runs[evaluation]

    # ---- result files -------------------------------------------------------------------------

    BPDA = False  # BpdaAttacks: the same attacks through the model's BPDA surrogates

    def run(self) -> list[Path]:
        written: list[Path] = []
        done: list[Path] = []
        with folder_lock(self.out_dir), (bpda(self.model) if self.BPDA else nullcontext()):
            for protocol in self.config.protocols:
                self._produce(f"fgsm-{protocol}", lambda p=protocol: self.fgsm_payload(p), written, done)
            if not self.BPDA:
                self._write_examples(written, done)
            for protocol in self.config.protocols:
                self._produce(f"pgd-unbounded-{protocol}", lambda p=protocol: self.pgd_payload(p), written, done)
            self._produce("pgd-bounded", self.bounded_pgd_payload, written, done)
            for eps in autoattack_eps(self.config):
                evaluation = autoattack_evaluation(eps)
                self._produce(evaluation, lambda e=eps: self.autoattack_payload(e), written, done)
                self.partial_path(evaluation).unlink(missing_ok=True)  # the result file now holds every flag
            if not self.BPDA:
                self._produce("gradient-masking", self.masking_payload, written, done)
        if self.progress:
            tqdm.write(f"{self.loaded.name}: {len(written)} result file(s) written, {len(done)} already finished "
                       f"with these settings, in {self.out_dir}", file=sys.stderr)
        return sorted(written + done)

    def _produce(self, evaluation: str, payload, written: list[Path], done: list[Path]) -> None:
        path = result_file(self.out_dir, self.named(evaluation))
        if self.stored(evaluation) is not None:
            done.append(path)
            return
        write_result(path, self.named(evaluation), self.summary, self.settings(evaluation), payload())
        written.append(path)


BPDA_DESCRIPTION = ("BPDA (Athalye et al., 2018): forward pass through the real model, backward pass through each "
                    "non-differentiable layer's differentiable surrogate (models/thermometer.py: the BpdaLayer "
                    "protocol); Square, which uses no gradients, is unchanged")


class BpdaAttacks(ModelAttacks):
    """The gradient attacks once more with BPDA, for a model with BPDA layers: FGSM and unbounded PGD in the
    standard protocol, PGD-20 and AutoAttack (its gradient stages through the surrogates), each written as
    ``<evaluation>-bpda.json`` (runs/evaluations.py) beside the plain result."""

    BPDA = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = bpda_config(self.config)
        self.layers = [name or "(the model)" for name, _ in bpda_layers(self.model)]

    def named(self, evaluation: str) -> str:
        return bpda_name(evaluation)

    def base_payload(self) -> dict[str, Any]:
        return {**super().base_payload(), "bpda": {"layers": self.layers, "description": BPDA_DESCRIPTION}}


def load_test_set(loaded: ModelSource, config: AttackConfig, test_sets: TestSets) -> ImageSet:
    return test_sets.get(loaded.dataset, config.data_dir or loaded.data_dir, loaded.download, config.n_examples)


def run_attacks(config: AttackConfig, checkpoints_root: str | Path = "checkpoints", out_root: str | Path = "attacks",
                runs: list[str] | None = None, force: bool = False, progress: bool = True,
                sources: list[ModelSource] | None = None, hint: ConflictHint = OWN_COMMAND,
                test_sets: TestSets | None = None) -> list[Path]:
    """Attack every model in `checkpoints_root` (or the named `runs`, or the given `sources`);
    returns the result files of those models.

    Every checkpoint and test set is loaded and checked before the first attack, so a bad one
    stops the run before anything is written; `hint` names the options a refusal points to.
    """
    device = resolve_device(config.device)
    models = sources if sources is not None else [
        from_run(load_model(run_dir, config.checkpoint, "cpu")) for run_dir in resolve_runs(checkpoints_root, runs)]
    for loaded in models:
        check_dataset(loaded, config.dataset)
    test_sets = test_sets or TestSets()
    datasets = [load_test_set(loaded, config, test_sets) for loaded in models]
    for loaded, data in zip(models, datasets):
        check_num_classes(loaded, data)
    contracts = check_contracts(models, datasets)
    check_attack_targets(config, models, out_root, force, hint)
    out_root = ensure_writable_dir(Path(out_root), hint.out_option)
    paths = []
    for loaded in models:
        paths.extend(contracts.write(loaded, out_root, force))
    for loaded, data in zip(models, datasets):
        seed_everything(config.seed)  # the attacks draw no random numbers; this pins any library code that might
        model = loaded.model.to(device).eval()
        model.to(memory_format=memory_format(device))
        out_dir = results_dir(out_root, loaded.name, loaded.checkpoint)
        attacks = ModelAttacks(loaded, data.to(device), config, out_dir, device, force, progress)
        paths.extend(attacks.run())
        if bpda_layers(model):  # the defence after: the same attacks through its surrogates
            seed_everything(config.seed)
            paths.extend(BpdaAttacks(loaded, data.to(device), config, out_dir, device, force, progress).run())
        model.to("cpu")
    return paths


# ---- the terminal summary -------------------------------------------------------------------------


