"""Attacks: how close FGSM and 200-step unbounded PGD come to the cost of the gradients they need
(forward + backward to the input, times the steps), and the active-set runner against its bound
(1.25 x the forward+backward passes of the examples still standing, summed over steps) and against
a plain torchattacks PGD loop over the same images; AutoAttack's APGD-CE (100 steps at 8/255), ours
with the active set against torchattacks' APGD, which attacks every image for every step; likewise
AutoAttack's FAB-T (one target run of the 9, each costs about the same) and Square (the queries cut to
the profile's PGD steps), ours against torchattacks' FAB and Square, with the examples fooled compared.

The active set only pays off on a model that classifies correctly to begin with (an untrained one
is fooled at step 0), so the stand-in model is first trained briefly on the benchmark's training
images; that training is not timed."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
import torchattacks

from bench_data import benchmark_dataset, benchmark_model
from report import figure, ratio_figure, section
from robustbench_mm.attacks import PROTOCOLS, REFERENCE, fgsm, pgd, pgd_worst_case
from robustbench_mm.attacks.apgd import ApgdSettings, apgd
from robustbench_mm.attacks.autoattack import still_robust
from robustbench_mm.attacks.fab import FabSettings, fab
from robustbench_mm.attacks.square import SquareSettings, square
from robustbench_mm.data.images import ImageSet, to_unit_float
from timing import interleaved, median, ratio, repeated

TITLE = "Attacks"
EPS = 0.03
STEP_SIZE = 0.01
UNBOUNDED_EPS = 1.0  # torchattacks needs a ball; on [0, 1] images one of radius 1 never binds
RUNNER_BATCHES = 2  # the runner and the torchattacks loop go over this many batches of images
REPEATS = 10  # single-step variants are timed as this many calls in a row
TRAIN_STEPS = 150  # untimed: enough for the stand-in to classify most digits, so the attack has work to do
ACTIVE_SET_BOUND = 1.25  # runner time <= this x (example-steps x one example's forward+backward)
APGD_EPS = 8 / 255
FAB_TARGETS = 1  # of AutoAttack's 9: every target run costs about the same, and the CPU bench stays short


def input_gradient_pass(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The bound's unit: one forward pass and one backward pass to the input, nothing else."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
    return grad


def briefly_trained(model: torch.nn.Module, train: ImageSet, steps: int, batch: int) -> torch.nn.Module:
    """The stand-in after `steps` plain SGD steps on cross-entropy (seeded), back in eval mode."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(train), (batch,), generator=generator).to(train.labels.device)
        optimizer.zero_grad()
        F.cross_entropy(model(to_unit_float(train.images[index])), train.labels[index]).backward()
        optimizer.step()
    return model.eval()


def active_set_runner(model: torch.nn.Module, data: ImageSet, steps: int, batch: int,
                      memory_format: torch.memory_format, spent: list[int]) -> None:
    """`mm-robust attack`'s unbounded PGD (standard protocol): worst case per example, active set."""
    run = pgd_worst_case(model, data.images, data.labels, PROTOCOLS["standard"], steps, STEP_SIZE, None, batch,
                         memory_format)
    spent.append(run.example_steps)


def torchattacks_loop(attack, data: ImageSet, batch: int) -> None:
    """The plain loop a torchattacks user writes: attack each batch, nothing recorded."""
    for start in range(0, len(data), batch):
        attack(to_unit_float(data.images[start:start + batch]), data.labels[start:start + batch])


def our_apgd_loop(model: torch.nn.Module, data: ImageSet, batch: int, settings: ApgdSettings,
                  out: dict[str, object]) -> None:
    """AutoAttack's APGD-CE stage as `mm-robust attack` runs it: one chunk of `batch` images at a time."""
    outcomes = [apgd(model, to_unit_float(data.images[start:start + batch]), data.labels[start:start + batch],
                     settings) for start in range(0, len(data), batch)]
    out["fooled"] = torch.cat([o.fooled for o in outcomes]).cpu()
    out["example_steps"] = sum(o.example_steps for o in outcomes)


def torchattacks_apgd_loop(attack, data: ImageSet, batch: int, out: dict[str, object]) -> None:
    robust = [attack.perturb(to_unit_float(data.images[start:start + batch]), data.labels[start:start + batch],
                             cheap=True)[0] for start in range(0, len(data), batch)]
    out["fooled"] = ~torch.cat(robust).cpu()


def our_stage_loop(attack, data: ImageSet, batch: int, out: dict[str, object]) -> None:
    """Our FAB-T or Square (`attack(x, labels)`) as `mm-robust attack` runs it: one chunk at a time."""
    out["fooled"] = torch.cat([attack(to_unit_float(data.images[start:start + batch]), data.labels[start:start + batch])
                               .fooled for start in range(0, len(data), batch)]).cpu()


def torchattacks_stage_loop(model: torch.nn.Module, attack, eps: float, data: ImageSet, batch: int,
                            out: dict[str, object]) -> None:
    """torchattacks' FAB or Square per chunk; fooled as AutoAttack reads their images (wrong, in the ball)."""
    fooled = []
    for start in range(0, len(data), batch):
        x, labels = to_unit_float(data.images[start:start + batch]), data.labels[start:start + batch]
        fooled.append(~still_robust(model, x, attack.perturb(x, labels), labels, eps))
    out["fooled"] = torch.cat(fooled).cpu()


def attack_costs(profile, device: torch.device, data_dir: str) -> dict:
    batch, steps = profile.attack_batch, profile.pgd_steps
    data = benchmark_dataset(device, data_dir, train=False, n=RUNNER_BATCHES * batch).to(device)
    model = benchmark_model(profile.attack_width, device)
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    x = to_unit_float(data.images[:batch]).contiguous(memory_format=memory_format)
    labels = data.labels[:batch]
    standard = PROTOCOLS["standard"]

    gradient = repeated(partial(input_gradient_pass, model, x, labels), REPEATS)
    single = interleaved({
        "gradient": gradient,
        "fgsm": repeated(partial(fgsm, model, x, labels, EPS, standard), REPEATS),
        "torchattacks-fgsm": repeated(partial(torchattacks.FGSM(model, eps=EPS), x, labels), REPEATS),
    }, device, profile.rounds)

    train = benchmark_dataset(device, data_dir, train=True, n=4096).to(device)
    trained = briefly_trained(benchmark_model(profile.attack_width, device), train,
                              min(TRAIN_STEPS, 10 * steps), batch)
    trained_gradient = repeated(partial(input_gradient_pass, trained, x, labels), REPEATS)
    torchattacks_pgd = torchattacks.PGD(trained, eps=UNBOUNDED_EPS, alpha=STEP_SIZE, steps=steps, random_start=False)
    spent: list[int] = []
    # The single-step rounds above warmed every kernel up; a PGD warm-up round would double the cost.
    iterative = interleaved({
        "gradient": gradient,
        "pgd": partial(pgd, model, x, labels, standard, steps, STEP_SIZE, None),
        "trained-gradient": trained_gradient,
        "runner": partial(active_set_runner, trained, data, steps, batch, memory_format, spent),
        "torchattacks-loop": partial(torchattacks_loop, torchattacks_pgd, data, batch),
    }, device, profile.attack_rounds, warmup=0)
    apgd_steps = min(REFERENCE.apgd_ce_steps, steps)
    apgd_settings = ApgdSettings(loss="ce", eps=APGD_EPS, steps=apgd_steps, restarts=REFERENCE.apgd_ce_restarts,
                                 rho=REFERENCE.apgd_rho, seed=0)
    reference_apgd = torchattacks.APGD(trained, norm="Linf", eps=APGD_EPS, steps=apgd_steps,
                                       n_restarts=REFERENCE.apgd_ce_restarts, seed=0, loss="ce", rho=REFERENCE.apgd_rho)
    ours_out: dict[str, object] = {}
    theirs_out: dict[str, object] = {}
    apgd_rounds = interleaved({
        "ours": partial(our_apgd_loop, trained, data, batch, apgd_settings, ours_out),
        "torchattacks": partial(torchattacks_apgd_loop, reference_apgd, data, batch, theirs_out),
    }, device, profile.attack_rounds, warmup=0)
    apgd_disagree = int((ours_out["fooled"] != theirs_out["fooled"]).sum())
    fab_steps, square_queries = min(REFERENCE.fab_t_steps, steps), min(REFERENCE.square_queries, steps)
    fab_settings = FabSettings(eps=APGD_EPS, steps=fab_steps, restarts=REFERENCE.fab_t_restarts, targets=FAB_TARGETS,
                               seed=0)
    reference_fab = torchattacks.FAB(trained, norm="Linf", eps=APGD_EPS, steps=fab_steps,
                                     n_restarts=REFERENCE.fab_t_restarts, seed=0, multi_targeted=True)
    reference_fab.n_target_classes = FAB_TARGETS
    square_settings = SquareSettings(eps=APGD_EPS, queries=square_queries, p_init=REFERENCE.square_p_init,
                                     restarts=REFERENCE.square_restarts, seed=0)
    reference_square = torchattacks.Square(trained, norm="Linf", eps=APGD_EPS, n_queries=square_queries,
                                           n_restarts=REFERENCE.square_restarts, p_init=REFERENCE.square_p_init,
                                           loss="margin", seed=0)
    stage_out: dict[str, dict[str, object]] = {name: {} for name in ("fab", "torchattacks-fab", "square",
                                                                     "torchattacks-square")}
    stage_rounds = interleaved({
        "fab": partial(our_stage_loop, partial(fab, trained, settings=fab_settings), data, batch, stage_out["fab"]),
        "torchattacks-fab": partial(torchattacks_stage_loop, trained, reference_fab, APGD_EPS, data, batch,
                                    stage_out["torchattacks-fab"]),
        "square": partial(our_stage_loop, partial(square, trained, settings=square_settings), data, batch,
                          stage_out["square"]),
        "torchattacks-square": partial(torchattacks_stage_loop, trained, reference_square, APGD_EPS, data, batch,
                                       stage_out["torchattacks-square"]),
    }, device, profile.attack_rounds, warmup=0)
    stages_disagree = {name: int((stage_out[name]["fooled"] != stage_out[f"torchattacks-{name}"]["fooled"]).sum())
                       for name in ("fab", "square")}
    example_steps = spent[0]  # the same in every round: the attack is deterministic
    per_example = [t / (REPEATS * batch) for t in iterative["trained-gradient"]]
    bound = [ACTIVE_SET_BOUND * example_steps * t for t in per_example]
    with torch.no_grad():
        clean_accuracy = 100.0 * (trained(to_unit_float(data.images)).argmax(1) == data.labels).double().mean().item()

    figures = [
        ratio_figure("attacks.fgsm_bound_over_time", "FGSM: (forward+backward) time / FGSM time",
                     ratio(single["gradient"], single["fgsm"]), (">=", 0.9)),
        ratio_figure("attacks.pgd_bound_over_time", f"PGD-{steps}: {steps} x (forward+backward) time / PGD time",
                     ratio(iterative["gradient"], iterative["pgd"], scale=steps / REPEATS), (">=", 0.9)),
        ratio_figure("attacks.active_set_bound_over_time",
                     f"active-set PGD-{steps}: {ACTIVE_SET_BOUND:g} x (example-steps x one example's forward+backward)"
                     " / runner time", ratio(bound, iterative["runner"]), (">=", 1.0)),
        ratio_figure("attacks.torchattacks_fgsm_over_ours", "torchattacks FGSM time / our FGSM time",
                     ratio(single["torchattacks-fgsm"], single["fgsm"])),
        ratio_figure("attacks.torchattacks_loop_over_runner",
                     f"torchattacks PGD-{steps} loop time / active-set runner time ({len(data)} images, same model)",
                     ratio(iterative["torchattacks-loop"], iterative["runner"]), (">=", 10.0)),
        ratio_figure("attacks.torchattacks_apgd_over_ours",
                     f"torchattacks APGD-CE-{apgd_steps} time / our active-set APGD-CE ({len(data)} images, eps 8/255, "
                     "same model)", ratio(apgd_rounds["torchattacks"], apgd_rounds["ours"])),
        figure("attacks.apgd_flags_differ", "examples whose APGD-CE outcome differs between ours and torchattacks'",
               apgd_disagree, "examples", ("<=", 0)),
        ratio_figure("attacks.torchattacks_fab_over_ours",
                     f"torchattacks FAB-T-{fab_steps} ({FAB_TARGETS} target) time / our active-set FAB-T "
                     f"({len(data)} images, eps 8/255, same model)",
                     ratio(stage_rounds["torchattacks-fab"], stage_rounds["fab"])),
        figure("attacks.fab_flags_differ", "examples whose FAB-T outcome differs between ours and torchattacks'",
               stages_disagree["fab"], "examples", ("<=", 0)),
        ratio_figure("attacks.torchattacks_square_over_ours",
                     f"torchattacks Square-{square_queries} time / our Square ({len(data)} images, eps 8/255, "
                     "same model)", ratio(stage_rounds["torchattacks-square"], stage_rounds["square"])),
        figure("attacks.square_flags_differ", "examples whose Square outcome differs between ours and torchattacks'",
               stages_disagree["square"], "examples", ("<=", 0)),
        figure("attacks.apgd_example_steps_share",
               f"our APGD-CE's example-steps / {apgd_steps + 1} x images (torchattacks spends all of them)",
               100.0 * ours_out["example_steps"] / ((apgd_steps + 1) * len(data)), "%"),
        figure("attacks.apgd_robust_accuracy", f"APGD-CE-{apgd_steps} robust accuracy at 8/255",
               100.0 * (1 - ours_out["fooled"].double().mean().item()), "%"),
        figure("attacks.example_steps_share", f"example-steps spent / {steps + 1} x images (what the active set saves)",
               100.0 * example_steps / ((steps + 1) * len(data)), "%"),
        figure("attacks.trained_clean_accuracy", "stand-in's clean accuracy on the attacked images", clean_accuracy,
               "%"),
        figure("attacks.gradient_ms", "one forward+backward to the input",
               1000 * median(single["gradient"]) / REPEATS, "ms"),
        figure("attacks.pgd_s", f"PGD-{steps} on one batch", median(iterative["pgd"]), "s"),
        figure("attacks.runner_images_per_s", f"runner, PGD-{steps}", len(data) / median(iterative["runner"]),
               "images/s"),
    ]
    settings = {"model": f"PreActResNet18 width {profile.attack_width} (eval mode; untrained for FGSM and the "
                         f"single-batch PGD, {min(TRAIN_STEPS, 10 * steps)} SGD steps for the runner and torchattacks)", "batch": batch,
                "pgd_steps": steps, "step_size": STEP_SIZE, "fgsm_eps": EPS, "protocol": "standard",
                "runner_images": len(data), "data": data.name}
    notes = ["The runner is `mm-robust attack`'s unbounded PGD (`pgd_worst_case`): worst case over iterates, "
             "fooled examples leave the batch and waiting ones fill it; it also records when each example fell, "
             "which the torchattacks loop does not.",
             f"torchattacks PGD runs with eps={UNBOUNDED_EPS:g} (never binds on [0, 1] images), no random start."]
    return section(TITLE, settings, figures, notes, {**{f"single.{k}": v for k, v in single.items()},
                                                     **{f"iterative.{k}": v for k, v in iterative.items()},
                                                     **{f"apgd.{k}": v for k, v in apgd_rounds.items()},
                                                     **{f"stages.{k}": v for k, v in stage_rounds.items()}})
