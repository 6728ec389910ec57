"""What each of `mm-robust attack`'s result files holds, built from the measurements of `ModelAttacks`
(evaluation/attack.py), which reads them through `self`; and the saved adversarial examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustbench_mm.attacks import PROTOCOLS, WORST_CASE_DEFINITION, bounded_pgd_step_size, fgsm, percent
from robustbench_mm.attacks.autoattack import BUDGETS, STAGES, STAGE_LABELS, eps_text
from robustbench_mm.data.images import to_unit_float
from robustbench_mm.evaluation.attack_plan import ITERATIVE_PROTOCOL, check_eps, examples_metadata, verdict_protocol
from robustbench_mm.runs.checkpoints import save_tensors, stored_metadata
from robustbench_mm.runs.files import EXAMPLES_FILE
from robustbench_mm.runs.results import eps_label


class ResultPayloads:
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
