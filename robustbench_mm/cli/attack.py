"""`mm-robust attack`."""

from __future__ import annotations

import argparse

from robustbench_mm.cli.common import (
    add_device, add_external_model, add_model_inputs, add_quiet, add_test_subset, external_source_from_args,
    float_list, fraction)
from robustbench_mm.config import AA_BUDGETS, DATASETS, AttackConfig
from robustbench_mm.errors import UsageError
from robustbench_mm.evaluation.attack import run_attacks
from robustbench_mm.evaluation.attack_summary import attack_summary
from robustbench_mm.sources.external import protocols_for


DEFAULTS = AttackConfig()


def protocol_list(text: str) -> tuple[str, ...]:
    """'standard,paper' -> ('standard', 'paper'); names are checked by AttackConfig."""
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "attack", help="FGSM (Table 5), unbounded PGD (Appendix D) and gradient-masking checks into attacks/",
        description="Attack every trained model in --checkpoints (or those named with --checkpoint): FGSM in the "
                    "standard and the paper's protocol over an eps sweep, 200-step unbounded PGD, and automatic "
                    "gradient-masking checks. One JSON per model and evaluation goes under --out/<run>/; finished "
                    "evaluations are skipped on re-run unless --force.")
    p.add_argument("--eps", type=float_list, default=DEFAULTS.eps,
                   help="FGSM eps for the table: one value or a comma list, e.g. 0,0.005,0.01 (default 0.03)")
    p.add_argument("--protocol", type=protocol_list,
                   help="standard (eps on [0,1], CE, clip; torchattacks' FGSM), paper (eps on the normalized input, "
                        "BCE on softmax, no clip), or both as a comma list (default: standard,paper; a --model "
                        "without --normalization: standard)")
    p.add_argument("--sweep", type=float_list, default=DEFAULTS.sweep,
                   help="eps grid of the accuracy-vs-eps curve; 0 and --eps are always added "
                        f"(default {','.join(f'{e:g}' for e in DEFAULTS.sweep)})")
    p.add_argument("--pgd-steps", type=int, default=DEFAULTS.pgd_steps, help="unbounded PGD iterations (default 200)")
    p.add_argument("--pgd-step-size", type=float, default=DEFAULTS.pgd_step_size,
                   help="unbounded PGD step on the [0, 1] scale (default 0.01)")
    p.add_argument("--pgd-threshold", type=float, default=DEFAULTS.pgd_pass_threshold,
                   help="unbounded PGD passes when final accuracy (%%) is at most this (default 1)")
    p.add_argument("--bounded-pgd-steps", type=int, default=DEFAULTS.bounded_pgd_steps,
                   help="steps of the bounded PGD compared with FGSM at the first --eps (default 20)")
    p.add_argument("--max-fgsm-only-share", type=float, default=DEFAULTS.max_fgsm_only_share,
                   help="%% of examples FGSM may fool that bounded PGD does not (default %(default)s)")
    p.add_argument("--max-sweep-rise", type=float, default=DEFAULTS.max_sweep_rise,
                   help="percentage points FGSM accuracy may rise along the eps sweep (default %(default)s)")
    p.add_argument("--max-zero-gradient-share", type=float, default=DEFAULTS.max_zero_gradient_share,
                   help="%% of inputs allowed an all-zero or non-finite input gradient (default %(default)s)")
    p.add_argument("--autoattack", action="store_true",
                   help="also run AutoAttack (standard L-inf: APGD-CE, APGD-T, FAB-T, Square at the reference "
                        "settings) at --aa-eps and at the paper's eps (the first --eps) on the pixel scale")
    # AutoAttack's own options default to None, so that one given without --autoattack is refused, not ignored
    p.add_argument("--aa-eps", type=fraction,
                   help="AutoAttack eps on the [0, 1] pixel scale: a number or a fraction (default 8/255)")
    p.add_argument("--aa-paper-eps", action=argparse.BooleanOptionalAction,
                   help="also run AutoAttack at the paper's eps, the first --eps (default: yes)")
    p.add_argument("--aa-budget", choices=AA_BUDGETS,
                   help="standard: the reference settings (default); smoke: a small budget for the CPU demo, "
                        "labelled as such in every table")
    p.add_argument("--max-black-box-share", type=float,
                   help="%% of examples Square may fool that every white-box AutoAttack stage missed "
                        f"(default {DEFAULTS.max_black_box_share}, AutoAttack's own threshold)")
    add_test_subset(p, DEFAULTS.batch_size, cpu_capped=False)
    p.add_argument("--dataset", help=f"refuse models not trained on this dataset: {', '.join(DATASETS)}; "
                                     "with --model: the test set to evaluate on")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed,
                   help="seeds AutoAttack's stages (APGD, FAB, Square draw random numbers); FGSM and PGD here draw "
                        f"none (default: {DEFAULTS.seed})")
    p.add_argument("--save-examples", type=int, default=DEFAULTS.save_examples,
                   help="adversarial examples saved per model at the first --eps (default 16; 0 = none)")
    add_model_inputs(p, DEFAULTS.checkpoint, "redo evaluations that are already finished")
    add_external_model(p, with_dataset=False)
    add_device(p)
    add_quiet(p)
    p.set_defaults(run=run)


AUTOATTACK_OPTIONS = {"aa_eps": "--aa-eps", "aa_paper_eps": "--aa-paper-eps", "aa_budget": "--aa-budget",
                      "max_black_box_share": "--max-black-box-share"}


def autoattack_settings(args) -> dict:
    """AutoAttack's options as given, the defaults for the others; refused when given without --autoattack."""
    given = [flag for name, flag in AUTOATTACK_OPTIONS.items() if getattr(args, name) is not None]
    if given and not args.autoattack:
        raise UsageError(f"{', '.join(given)} {'sets' if len(given) == 1 else 'set'} AutoAttack, which runs only "
                         f"with --autoattack: add --autoattack, or leave {'it' if len(given) == 1 else 'them'} out")
    return {name: getattr(DEFAULTS, name) if getattr(args, name) is None else getattr(args, name)
            for name in AUTOATTACK_OPTIONS}


def config_from_args(args, source=None) -> AttackConfig:
    protocols = protocols_for(source, args.protocol, DEFAULTS.protocols) if source else args.protocol or DEFAULTS.protocols
    return AttackConfig(
        eps=args.eps, protocols=protocols, sweep=args.sweep, pgd_steps=args.pgd_steps,
        pgd_step_size=args.pgd_step_size, pgd_pass_threshold=args.pgd_threshold,
        bounded_pgd_steps=args.bounded_pgd_steps, max_fgsm_only_share=args.max_fgsm_only_share,
        max_sweep_rise=args.max_sweep_rise, max_zero_gradient_share=args.max_zero_gradient_share,
        n_examples=args.n_examples, batch_size=args.batch_size,
        checkpoint=DEFAULTS.checkpoint if source else args.weights or DEFAULTS.checkpoint, seed=args.seed,
        device=args.device, save_examples=args.save_examples, dataset=args.dataset, data_dir=args.data_dir,
        autoattack=args.autoattack, **autoattack_settings(args),
    )


def run(args) -> int:
    source = external_source_from_args(args)
    config = config_from_args(args, source)
    paths = run_attacks(config, args.checkpoints, args.out, runs=args.checkpoint, force=args.force,
                        progress=not args.quiet, sources=None if source is None else [source])
    print(attack_summary(paths))
    return 0
