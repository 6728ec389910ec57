"""PGD adversarial training (Madry et al., 2018): ``--method adversarial``.

Every training batch is replaced by its L-inf PGD adversarial examples before the optimiser
step: a uniform random start in the eps-ball on the [0, 1] pixel scale (clipped to [0, 1]),
then ``adv_steps`` signed-gradient steps of ``adv_step_size``, each projected back onto the
ball and clipped to [0, 1]. RobustBench's PreActResNet-18 baselines (Rice et al., 2020, and
the Madry et al. setting they follow) use eps 8/255, step 2/255 and 7-10 steps; the `paper`
and `fast` presets use 8/255, 2/255, 7 steps, the `smoke` preset 3 steps (`TrainConfig.adv_*`,
saved with the run and in meta.json's ``adversarial_training``).

One PGD
-------
The inner maximisation *is* the evaluation's attack: `robustbench_mm.attacks.pgd.pgd` in the
``standard`` protocol (cross-entropy summed over the batch, so each example's step follows its
own loss; pixel scale; clipping), started from `attacks.pgd.random_start`. It skips only the
attack's last forward pass (``final_forward=False``), which would classify the last iterate and
nothing more. The random start is drawn from the trainer's device generator, so runs are
reproducible and ``--resume`` continues the same random stream. Nothing in the loop waits for
the device: no ``.item()``, no data-dependent shapes (PGD here attacks every example for every
step; the evaluation's active set is only for measuring).

Train or eval mode for the inner attack: train mode
----------------------------------------------------
The attack runs the model exactly as the training step does, in train mode: BatchNorm
normalises with the statistics of the batch being attacked, and each attack forward pass also
updates the running statistics. That is what Madry et al.'s own code does (their CIFAR model is
built once with ``mode='train'`` and attacked as it is) and what Rice et al.'s
``train_cifar.py`` does (``model.train()`` for the epoch, then ``attack_pgd`` on it), and Rice et
al.'s PreActResNet-18 is RobustBench's PGD-trained PreActResNet-18 entry. Wong et al.'s fast
adversarial training does the same. (TRADES switches to eval mode for its inner attack; that is
the other common choice, not the one the RobustBench PreActResNet-18 baselines made.)

Why it keeps BatchNorm sane: the gradient the attack follows is that of the very function the
optimiser then trains (batch statistics of a batch of points in the same eps-ball), not of the
running averages, which lag behind the weights early in training; and every input the running
statistics see, attack iterates and the final adversarial batch alike, lies in the eps-ball
around a training image, i.e. in the distribution the model is trained on, so at test time
(eval mode) the running statistics describe the inputs the model was fitted to. The random
generator, not the mode, is the only source of randomness: the same start gives the same
adversarial batch bit for bit (`tests/test_adversarial_training.py`).

Cost: about (adv_steps + 1) clean steps per step (adv_steps forward+backward passes to the
input, then the training step); `make bench` measures it.
"""

from __future__ import annotations

import torch

from robustbench_mm.attacks.core import PROTOCOLS
from robustbench_mm.attacks.pgd import pgd, random_start

INNER_PROTOCOL = "standard"  # pixel-scale eps, cross-entropy, clip to [0, 1]
MODEL_MODE = "train"  # the model's mode during the inner attack (module docstring)


def adversarial_examples(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: float,
                         step_size: float, steps: int, generator: torch.Generator | None) -> torch.Tensor:
    """Madry et al.'s PGD adversarial examples of a training batch: random start, `steps` projected steps.

    The model is attacked in whatever mode it is in (the trainer keeps it in train mode). Returns
    the last iterate, detached, in x's memory format.
    """
    start = random_start(x, eps, generator)
    run = pgd(model, x, labels, PROTOCOLS[INNER_PROTOCOL], steps, step_size, eps, start=start, final_forward=False)
    return run.adversarial


def adversarial_training_meta(config) -> dict:
    """What meta.json records about the inner attack, so every table can state it."""
    return {"attack": "L-inf PGD, random start", "protocol": INNER_PROTOCOL, "eps": config.adv_eps,
            "step_size": config.adv_step_size, "steps": config.adv_steps, "model_mode": MODEL_MODE,
            "every_batch": True}


__all__ = ["INNER_PROTOCOL", "MODEL_MODE", "adversarial_examples", "adversarial_training_meta"]
