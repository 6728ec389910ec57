"""The gradient-masking checks and attack-failure indicators of one model's attacks, and the
``gradient-masking.json`` payload with its figure: a part of `ModelAttacks` (evaluation/attack.py) with a name
of its own, reading the attacks' measurements through `self`."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import torch

from robustbench_mm.attacks import (
    PROTOCOLS, Check, bounded_pgd_step_size, check_deterministic, check_eps_zero_is_clean, check_input_gradients,
    check_iterative_beats_single_step, check_sweep_does_not_rise, check_unbounded_pgd)
from robustbench_mm.attacks.checks import (
    ATTACK_FAILURE_INDICATORS, check_black_box_not_stronger, check_incomplete_optimisation, check_silent_success)
from robustbench_mm.attacks.indicators import reevaluate
from robustbench_mm.attacks.pgd import PgdRun, pgd
from robustbench_mm.data.images import to_unit_float
from robustbench_mm.evaluation.attack_plan import ITERATIVE_PROTOCOL, autoattack_eps, check_eps, verdict_protocol
from robustbench_mm.figures.masking import save_gradient_masking_figure
from robustbench_mm.models.metrics import predict
from robustbench_mm.runs.files import MASKING_FIGURE


class MaskingChecks:
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
            *self.indicator_checks(),
        ]

    @cached_property
    def traced_pgd(self) -> tuple[PgdRun, torch.Tensor, str]:
        """Bounded PGD (the check eps, standard protocol) once more on the first batch, every example for every
        step with its loss recorded: (the run, the labels, what it is called).

        It runs at least four windows' worth of steps: whether the loss has settled over the last `window`
        iterates says something only when the attack had steps before them to climb."""
        c = self.config
        eps = check_eps(c)
        steps = max(c.bounded_pgd_steps, 4 * c.incomplete_window)
        count = min(len(self.data), c.batch_size)
        x = to_unit_float(self.data.images[:count]).contiguous(memory_format=self.memory_format)
        labels = self.data.labels[:count]
        run = pgd(self.model, x, labels, PROTOCOLS[ITERATIVE_PROTOCOL], steps, bounded_pgd_step_size(eps, steps), eps,
                  record_losses=True)
        return run, labels, f"{steps}-step PGD at eps {eps:g} on the first {count} examples"

    def indicator_checks(self) -> list[Check]:
        """Pintor et al.'s incomplete optimisation (the loss trace where PGD failed) and silent success (PGD's own
        success flags on its last iterate against a fresh evaluation of the images it returned)."""
        c = self.config
        run, labels, what = self.traced_pgd
        failed = run.worst_case()[-1].cpu()
        claimed = run.correct[-1].logical_not().cpu()
        return [check_incomplete_optimisation(run.losses, failed, what, c.incomplete_window, c.max_loss_movement,
                                              c.max_unsettled_share),
                check_silent_success(claimed, reevaluate(self.model, run.adversarial, labels, c.batch_size),
                                     f"{what}, last iterate", c.max_silent_success_share)]

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
        failed = [c["name"] for c in checks if not c["passed"] and c["name"] not in ATTACK_FAILURE_INDICATORS]
        attack_failures = [c["name"] for c in checks if not c["passed"] and c["name"] in ATTACK_FAILURE_INDICATORS]
        title = (f"Gradient-masking checks: {self.loaded.name} ({self.loaded.checkpoint} checkpoint, "
                 f"{len(self.data)} images) - " + (f"FLAGGED: {', '.join(failed)}" if failed else "all passed")
                 + (f"; attack-failure indicators tripped: {', '.join(attack_failures)}" if attack_failures else ""))
        save_gradient_masking_figure(self.out_dir / MASKING_FIGURE, checks, title)
        return {**self.base_payload(), "check_eps": check_eps(self.config),
                "bounded_pgd_step_size": bounded_pgd_step_size(check_eps(self.config), self.config.bounded_pgd_steps),
                "checks": checks, "flagged": bool(failed), "failed": failed, "attack_failures": attack_failures,
                "figure": MASKING_FIGURE}
