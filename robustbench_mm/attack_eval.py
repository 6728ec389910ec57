"""`mm-robust attack`: Table 5's FGSM in both protocols, Appendix D's unbounded PGD and the
gradient-masking checks for trained models, written to ``attacks/<run>/``.

Files per model (one JSON per evaluation, each written atomically as soon as it is done):
``fgsm-<protocol>.json``, ``adversarial-examples.safetensors``, ``pgd-unbounded-<protocol>.json``
(one per protocol: Appendix D's verdict comes from ``paper``, the authors' convention),
``pgd-bounded.json`` (PGD-20 at the check eps), ``gradient-masking.json`` (+ ``gradient-masking.png``).
A file made for the same model with identical settings is kept and skipped on re-run unless
``force``, so a killed run keeps what it finished and completes the rest when run again.

Every accuracy is also stored per example (``per_example``: which test examples stayed correct,
see results.py), and iterative attacks count the worst case over their iterates.

The evaluated images are the first `n_examples` of the test set (all of it by default), so
reruns and other stages agree on which images were attacked. Bounded PGD runs in the standard
protocol (pixel scale, cross-entropy, clipping), like AutoAttack.
"""

from __future__ import annotations

import json
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm.auto import tqdm

from .attacks import (
    PROTOCOLS, WORST_CASE_DEFINITION, Check, WorstCase, bounded_pgd_step_size, check_deterministic,
    check_eps_zero_is_clean, check_input_gradients, check_iterative_beats_single_step, check_sweep_does_not_rise,
    check_unbounded_pgd, fgsm, fgsm_sweep, percent, pgd_worst_case,
)
from .attacks.autoattack import (
    BUDGETS, STAGE_LABELS, STAGES, AutoAttackFlags, eps_name, eps_text, run_autoattack,
)
from .attacks.checks import check_black_box_not_stronger
from .checkpoints import load_model, resolve_runs, save_tensors, stored_metadata
from .config import AttackConfig
from .data import ImageSet, load_dataset, to_unit_float
from .errors import UsageError
from .masking_figure import save_gradient_masking_figure
from .metrics import accuracy_and_nll, predict
from .model_sources import ModelSource, check_contracts, from_run
from .paper import PGD_UNBOUNDED, TABLE5
from .progress import progress_bar
from .results import (
    OWN_COMMAND, ConflictHint, as_json, check_result_targets, check_same_settings, check_target_path, decode_mask,
    encode_mask, finished_result, result_path, write_result,
)
from .runtime import resolve_device, seed_everything
from .storage import atomic_write_json, ensure_writable_dir, folder_lock, read_json

EXAMPLES_FILE = "adversarial-examples.safetensors"
MASKING_FIGURE = "gradient-masking.png"
ITERATIVE_PROTOCOL = "standard"  # bounded PGD and the saved examples
VERDICT_PROTOCOL = "paper"  # Appendix D's unbounded-PGD verdict: the authors' convention, when it is run


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
    return f"autoattack-{eps_name(eps)}"


def eps_label(eps: float) -> str:
    """The per-example mask label of an FGSM eps, e.g. 'eps=0.03' (the shared contract)."""
    return f"eps={eps:g}"


def evaluation_settings(config: AttackConfig, evaluation: str, dataset: str) -> dict[str, Any]:
    """The settings that decide an evaluation's numbers: a stored file is reused only if they match."""
    common = {"dataset": dataset, "n_examples": config.n_examples, "checkpoint": config.checkpoint,
              "batch_size": config.batch_size, "seed": config.seed}
    pgd = {"pgd_steps": config.pgd_steps, "pgd_step_size": config.pgd_step_size,
           "pgd_pass_threshold": config.pgd_pass_threshold}
    if evaluation.startswith("fgsm-"):
        return {**common, "protocol": evaluation[len("fgsm-"):], "eps": list(config.eps), "sweep": sweep_grid(config)}
    if evaluation.startswith("pgd-unbounded-"):
        return {**common, "protocol": evaluation[len("pgd-unbounded-"):], **pgd, "robust_accuracy": "worst-case"}
    if evaluation == "pgd-bounded":
        return {**common, "protocol": ITERATIVE_PROTOCOL, "eps": check_eps(config), "steps": config.bounded_pgd_steps,
                "robust_accuracy": "worst-case"}
    if evaluation == "adversarial-examples":
        return {**common, "protocol": examples_protocol(config), "eps": float(config.eps[0]),
                "count": config.save_examples}
    if evaluation.startswith("autoattack-"):
        eps = next(e for e in autoattack_eps(config) if autoattack_evaluation(e) == evaluation)
        return {**common, "eps": eps, "norm": "Linf", "budget": config.aa_budget,
                "components": BUDGETS[config.aa_budget].to_dict(), "chunk_size": config.batch_size}
    if evaluation == "gradient-masking":
        if config.autoattack:
            common = {**common, "black_box_eps": autoattack_eps(config)[0], "aa_budget": config.aa_budget,
                      "max_black_box_share": config.max_black_box_share}
        return {**common, "protocols": list(config.protocols), "eps": list(config.eps), "sweep": sweep_grid(config),
                **pgd, "bounded_pgd_steps": config.bounded_pgd_steps, "robust_accuracy": "worst-case",
                "max_fgsm_only_share": config.max_fgsm_only_share, "max_sweep_rise": config.max_sweep_rise,
                "max_zero_gradient_share": config.max_zero_gradient_share}
    raise ValueError(f"unknown evaluation {evaluation!r}")


def result_evaluations(config: AttackConfig) -> list[str]:
    """The JSON result files `attack` writes per model."""
    return [*(f"fgsm-{p}" for p in config.protocols), *(f"pgd-unbounded-{p}" for p in config.protocols), "pgd-bounded",
            *(autoattack_evaluation(eps) for eps in autoattack_eps(config)), "gradient-masking"]


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


class ModelAttacks:
    """Every attack on one model. Each piece runs at most once, and only when a file still needs it."""

    def __init__(self, loaded: ModelSource, data: ImageSet, config: AttackConfig, out_dir: Path,
                 device: torch.device, force: bool, progress: bool):
        self.loaded = loaded
        self.model = loaded.model
        self.data = data
        self.config = config
        self.out_dir = out_dir
        self.device = device
        self.force = force
        self.progress = progress
        self.summary = loaded.summary
        self.grid = sweep_grid(config)
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
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

    def settings(self, evaluation: str) -> dict[str, Any]:
        return evaluation_settings(self.config, evaluation, self.data.name)

    def stored(self, evaluation: str) -> dict[str, Any] | None:
        if self.force:
            return None
        return finished_result(result_path(self.out_dir.parent, self.out_dir.name, evaluation), self.summary,
                               self.settings(evaluation))

    def base_payload(self) -> dict[str, Any]:
        return {"n_examples": len(self.data), "device": str(self.device),
                "data_dir": self.config.data_dir or self.loaded.data_dir}

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
        return self.out_dir / f"{evaluation}.partial.json"

    def resumed_flags(self, evaluation: str, path: Path | None = None) -> AutoAttackFlags | None:
        """Flags a killed run saved for these exact model and settings, or None (then it starts afresh).

        `path`: where they were saved (default the model's partial file; a shard keeps its own).
        """
        path = path or self.partial_path(evaluation)
        if self.force or not path.is_file():
            return None
        try:
            saved = read_json(path)
            if saved["model"] != as_json(self.summary) or saved["settings"] != as_json(self.settings(evaluation)):
                return None
            masks = {k: torch.from_numpy(decode_mask(v)) for k, v in saved["flags"].items()}
            start, stop = saved["example_range"]
            return AutoAttackFlags(start, stop, masks["clean"], {s: masks[s] for s in STAGES}, masks["done"],
                                   {s: float(saved["seconds"].get(s, 0.0)) for s in STAGES},
                                   {s: int(n) for s, n in saved.get("example_steps", {}).items()})
        except (UsageError, KeyError, TypeError, ValueError):
            return None

    def save_flags(self, evaluation: str, flags: AutoAttackFlags, path: Path | None = None) -> None:
        masks = {"clean": flags.clean, **flags.after, "done": flags.done}
        path = path or self.partial_path(evaluation)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {
            "model": self.summary, "settings": self.settings(evaluation), "example_range": [flags.start, flags.stop],
            "device": str(self.device),  # the merge of shards records it as a single run would
            "seconds": flags.seconds, "example_steps": flags.example_steps,
            "flags": {k: encode_mask(v) for k, v in masks.items()}})

    def autoattack(self, eps: float) -> dict[str, Any]:
        """{"flags": AutoAttackFlags, "seconds": per stage}, from the stored result when it is there."""
        evaluation = autoattack_evaluation(eps)
        if evaluation not in self.autoattack_runs:
            stored = self.stored(evaluation)
            if stored is not None:
                masks = {k: torch.from_numpy(decode_mask(v)) for k, v in stored["per_example"]["correct"].items()}
                flags = AutoAttackFlags(0, len(self.data), masks["clean"], {s: masks[s] for s in STAGES},
                                        torch.ones(len(self.data), dtype=torch.bool),
                                        {st["stage"]: st["seconds"] for st in stored["stages"]},
                                        {st["stage"]: st["example_steps"] for st in stored["stages"]
                                         if "example_steps" in st})
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

    def run(self) -> list[Path]:
        written: list[Path] = []
        done: list[Path] = []
        with folder_lock(self.out_dir):
            for protocol in self.config.protocols:
                self._produce(f"fgsm-{protocol}", lambda p=protocol: self.fgsm_payload(p), written, done)
            self._write_examples(written, done)
            for protocol in self.config.protocols:
                self._produce(f"pgd-unbounded-{protocol}", lambda p=protocol: self.pgd_payload(p), written, done)
            self._produce("pgd-bounded", self.bounded_pgd_payload, written, done)
            for eps in autoattack_eps(self.config):
                evaluation = autoattack_evaluation(eps)
                self._produce(evaluation, lambda e=eps: self.autoattack_payload(e), written, done)
                self.partial_path(evaluation).unlink(missing_ok=True)  # the result file now holds every flag
            self._produce("gradient-masking", self.masking_payload, written, done)
        if self.progress:
            tqdm.write(f"{self.loaded.name}: {len(written)} result file(s) written, {len(done)} already finished "
                       f"with these settings, in {self.out_dir}", file=sys.stderr)
        return sorted(written + done)

    def _produce(self, evaluation: str, payload, written: list[Path], done: list[Path]) -> None:
        path = result_path(self.out_dir.parent, self.out_dir.name, evaluation)
        if self.stored(evaluation) is not None:
            done.append(path)
            return
        write_result(path, evaluation, self.summary, self.settings(evaluation), payload())
        written.append(path)

    def fgsm_payload(self, protocol_name: str) -> dict[str, Any]:
        protocol = PROTOCOLS[protocol_name]
        accuracy = self.sweep_accuracy(protocol_name)
        at = dict(zip(self.grid, accuracy))
        payload = {
            "protocol": protocol_name,
            "protocol_description": protocol.description,
            "loss": protocol.loss_name,
            "clip": protocol.clip,
            **self.base_payload(),
            "clean": self.clean,
            "eps": [float(e) for e in self.config.eps],
            "accuracy": [at[float(e)] for e in self.config.eps],
            "sweep": {"eps": self.grid, "accuracy": accuracy},
        }
        if protocol.eps_on_normalized_input:
            payload["pixel_step_per_eps"] = self.model.std.flatten().tolist()  # per channel: eps * std
        correct = self.fgsm_sweep(protocol_name)["correct"]
        payload["per_example"] = self.per_example(
            {"clean": self.clean_correct, **{eps_label(float(e)): correct[self.grid.index(float(e))]
                                             for e in self.config.eps}})
        return payload

    def pgd_payload(self, protocol_name: str) -> dict[str, Any]:
        c = self.config
        protocol = PROTOCOLS[protocol_name]
        run = self.unbounded_pgd(protocol_name)
        curve = run["accuracy_per_step"]
        verdict = verdict_protocol(c.protocols)
        return {
            "protocol": protocol_name, "protocol_description": protocol.description, "loss": protocol.loss_name,
            "projection": "none (unbounded)", "random_start": False, "clip": protocol.clip,
            "robust_accuracy": WORST_CASE_DEFINITION,
            **self.base_payload(),
            "steps": c.pgd_steps, "step_size": c.pgd_step_size,
            "accuracy_per_step": curve, "final_accuracy": curve[-1],
            "threshold": c.pgd_pass_threshold, "passed": curve[-1] <= c.pgd_pass_threshold,
            "verdict": protocol_name == verdict, "verdict_protocol": verdict,
            "seconds": run["seconds"], "example_steps": run["example_steps"],
            "per_example": self.per_example({"clean": self.clean_correct, "final": run["final"]}),
        }

    def bounded_pgd_payload(self) -> dict[str, Any]:
        c = self.config
        eps = check_eps(c)
        run = self.bounded_pgd
        return {
            "protocol": ITERATIVE_PROTOCOL, "loss": PROTOCOLS[ITERATIVE_PROTOCOL].loss_name, "clip": True,
            "projection": "L-inf ball", "random_start": False, "robust_accuracy": WORST_CASE_DEFINITION,
            **self.base_payload(),
            "eps": eps, "steps": c.bounded_pgd_steps, "step_size": bounded_pgd_step_size(eps, c.bounded_pgd_steps),
            "clean": self.clean, "accuracy": run["accuracy"],
            "seconds": run["seconds"], "example_steps": run["example_steps"],
            "per_example": self.per_example({"clean": self.clean_correct, "final": run["final"]}),
        }

    def autoattack_payload(self, eps: float) -> dict[str, Any]:
        flags = self.autoattack(eps)["flags"]
        budget = self.config.aa_budget
        stages = [{"stage": s, "label": STAGE_LABELS[s], "robust_accuracy": percent(flags.after[s]),
                   "seconds": round(flags.seconds.get(s, 0.0), 3),
                   **({"example_steps": flags.example_steps[s]} if s in flags.example_steps else {})} for s in STAGES]
        return {
            "eps": eps, "eps_text": eps_text(eps), "norm": "Linf", "threat_model": "Linf", "version": "standard",
            "budget": budget, "components": BUDGETS[budget].to_dict(),
            "implementation": "mm-robust's own APGD-CE, APGD-T, FAB-T (multi-targeted) and Square: the reference "
                              "arithmetic with the active set (an example leaves a stage once it is fooled; Square "
                              "queries only the examples not yet fooled), the same per-example outcome as "
                              "torchattacks 3.5.1's components from the same seed; configured one by one",
            "robust_accuracy_definition": "an example is robust if it is classified correctly and no stage found "
                                          "a misclassified image inside the eps-ball and [0, 1]; each stage runs "
                                          "only on the examples every earlier stage failed to fool",
            **self.base_payload(), "seed": self.config.seed, "chunk_size": self.config.batch_size,
            "clean": {"accuracy": percent(flags.clean)}, "stages": stages, "robust_accuracy": percent(flags.final),
            "per_example": self.per_example({"clean": flags.clean, **{s: flags.after[s] for s in STAGES},
                                             "final": flags.final}),
        }

    def checks(self) -> list[Check]:
        c = self.config
        eps = check_eps(c)
        sweeps = {p: (self.grid, self.sweep_accuracy(p)) for p in c.protocols}
        standard_correct = self.fgsm_sweep(ITERATIVE_PROTOCOL)["correct"][self.grid.index(eps)]
        second_pass = predict(self.model, self.data, c.batch_size)
        curves = {p: self.unbounded_pgd(p)["accuracy_per_step"] for p in c.protocols}
        return [
            check_unbounded_pgd(curves, c.pgd_pass_threshold, verdict_protocol(c.protocols)),
            check_iterative_beats_single_step(standard_correct, self.bounded_pgd["final"], eps, c.bounded_pgd_steps,
                                              c.max_fgsm_only_share),
            check_sweep_does_not_rise(sweeps, c.max_sweep_rise),
            check_eps_zero_is_clean(sweeps, self.clean["accuracy"]),
            check_input_gradients({p: self.fgsm_sweep(p)["gradient_size"] for p in c.protocols},
                                  c.max_zero_gradient_share),
            check_deterministic(self.clean_logits.cpu(), second_pass.cpu()),
            *self.black_box_checks(),
        ]

    def black_box_checks(self) -> list[Check]:
        """The seventh check, where AutoAttack ran: at its first eps, Square against the white-box stages."""
        if not self.config.autoattack:
            return []
        eps = autoattack_eps(self.config)[0]
        flags = self.autoattack(eps)["flags"]
        return [check_black_box_not_stronger(flags.after["fab-t"], flags.after["square"], eps,
                                             self.config.max_black_box_share)]

    def masking_payload(self) -> dict[str, Any]:
        checks = [check.to_dict() for check in self.checks()]
        failed = [check["name"] for check in checks if not check["passed"]]
        title = (f"Gradient-masking checks: {self.loaded.name} ({self.loaded.checkpoint} checkpoint, "
                 f"{len(self.data)} images) - " + (f"FLAGGED: {', '.join(failed)}" if failed else "all passed"))
        save_gradient_masking_figure(self.out_dir / MASKING_FIGURE, checks, title)
        return {**self.base_payload(), "check_eps": check_eps(self.config),
                "bounded_pgd_step_size": bounded_pgd_step_size(check_eps(self.config), self.config.bounded_pgd_steps),
                "checks": checks, "flagged": bool(failed), "failed": failed, "figure": MASKING_FIGURE}

    def _write_examples(self, written: list[Path], done: list[Path]) -> None:
        count = min(self.config.save_examples, len(self.data))
        if count == 0:
            return
        path = self.out_dir / EXAMPLES_FILE
        metadata = examples_metadata(self.config, self.summary, self.data.name)
        if not self.force and stored_metadata(path) == metadata:
            done.append(path)
            return
        clean = to_unit_float(self.data.images[:count])
        labels = self.data.labels[:count]
        adversarial = fgsm(self.model, clean, labels, float(self.config.eps[0]), PROTOCOLS[metadata["protocol"]])
        with torch.no_grad():
            tensors = {"clean": clean, "adversarial": adversarial, "labels": labels,
                       "clean_pred": self.model(clean).argmax(1), "adversarial_pred": self.model(adversarial).argmax(1)}
        save_tensors(path, tensors, metadata)
        written.append(path)


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


def check_attack_targets(config: AttackConfig, models: list[ModelSource], out_root: str | Path, force: bool,
                         hint: ConflictHint = OWN_COMMAND) -> None:
    """Refuse, before anything is written, every file `attack` would lose or cannot write (see results.py)."""
    check_result_targets([(result_path(out_root, loaded.name, evaluation), loaded.summary,
                           evaluation_settings(config, evaluation, loaded.dataset))
                          for loaded in models for evaluation in result_evaluations(config)], force, hint)
    if config.save_examples > 0:
        for loaded in models:
            check_examples_target(Path(out_root) / loaded.name / EXAMPLES_FILE,
                                  examples_metadata(config, loaded.summary, loaded.dataset), force, hint)


def load_test_set(loaded: ModelSource, config: AttackConfig, cache: dict) -> ImageSet:
    data_dir = config.data_dir or loaded.data_dir
    key = (loaded.dataset, data_dir)
    if key not in cache:
        full = load_dataset(loaded.dataset, False, data_dir, loaded.download)
        if config.n_examples is not None and config.n_examples > len(full):
            raise UsageError(f"--n-examples {config.n_examples} is more than the {len(full)} images of the "
                             f"{full.name} test set; give at most {len(full)} or leave it out for all of them")
        cache[key] = full.subset(config.n_examples)
    return cache[key]


def run_attacks(config: AttackConfig, checkpoints_root: str | Path = "checkpoints", out_root: str | Path = "attacks",
                runs: list[str] | None = None, force: bool = False, progress: bool = True,
                sources: list[ModelSource] | None = None, hint: ConflictHint = OWN_COMMAND) -> list[Path]:
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
    test_sets: dict = {}
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
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        attacks = ModelAttacks(loaded, data.to(device), config, out_root / loaded.name, device, force, progress)
        paths.extend(attacks.run())
        model.to("cpu")
    return paths


# ---- the terminal summary -------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def paper_fgsm_value(model: dict[str, Any]) -> tuple[float | None, bool]:
    """The paper's Table 5 number for this kind of model, and whether it is for the model's own dataset."""
    own = model["dataset"] in TABLE5
    return TABLE5[model["dataset"] if own else "cifar10"].get(model["key"]), own


def _summary_rows(results: dict[str, dict], run: str) -> list[list[str]]:
    fgsm_results = [results[f"fgsm-{p}"] for p in PROTOCOLS if f"fgsm-{p}" in results]
    model = fgsm_results[0]["model"]
    paper_value, own_dataset = paper_fgsm_value(model)
    paper_text = _fmt(paper_value) + ("" if own_dataset or paper_value is None else " (CIFAR-10)")
    masking = results.get("gradient-masking")
    pgd_runs = {p: results[f"pgd-unbounded-{p}"] for p in PROTOCOLS if f"pgd-unbounded-{p}" in results}
    pgd_text = "–"
    if pgd_runs:
        verdict = verdict_protocol(list(pgd_runs))
        pgd = pgd_runs[verdict]
        others = "".join(f"; {p}-protocol {r['final_accuracy']:.2f}" for p, r in pgd_runs.items() if p != verdict)
        pgd_text = (f"{pgd['final_accuracy']:.2f} {'ok' if pgd['passed'] else 'FAILED'} ({verdict}-protocol{others}; "
                    f"Appendix D {_fmt(PGD_UNBOUNDED.get(model['key']))})")
    masking_text = "–" if masking is None else (
        "FLAGGED: " + ", ".join(masking["failed"]) if masking["flagged"] else f"all {len(masking['checks'])} passed")
    rows = []
    for index, result in enumerate(fgsm_results):
        first = index == 0
        rows.append([model["key"] if first else "", result["protocol"], _fmt(result["clean"]["accuracy"]),
                     *(_fmt(a) for a in result["accuracy"]), paper_text,
                     pgd_text if first else "", masking_text if first else "", run if first else ""])
    return rows


def attack_summary(paths: list[Path]) -> str:
    """A Table-5-style table of the result files in `paths`: per model and protocol, beside the paper."""
    by_run: dict[Path, dict[str, dict]] = {}
    for path in paths:
        if path.suffix == ".json":
            by_run.setdefault(path.parent, {})[path.stem] = read_json(path)
    by_run = {run_dir: results for run_dir, results in sorted(by_run.items())
              if any(f"fgsm-{p}" in results for p in PROTOCOLS)}
    if not by_run:
        return "no FGSM results to summarise"
    first = next(r for results in by_run.values() for k, r in results.items() if k.startswith("fgsm-"))
    header = ["model", "protocol", "clean", *(f"FGSM eps={e:g}" for e in first["eps"]), "paper eps=0.03",
              "unbounded PGD", "gradient masking", "run"]
    rows = [row for run_dir, results in by_run.items() for row in _summary_rows(results, run_dir.name)]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"Test accuracy (%) under FGSM (Table 5) and unbounded PGD (Appendix D), "
             f"first {first['n_examples']} test images",
             "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    if any(not paper_fgsm_value(r["model"])[1] for results in by_run.values() for r in results.values()):
        lines.append("(CIFAR-10): the paper's CIFAR-10 value beside a model of another dataset, for scale only.")
    return "\n".join(lines)
