"""Problem sizes per machine kind: small enough that `make bench` takes minutes on 2 CPU cores,
the real model and batch on a GPU, and tiny for the test that only checks the runner works."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    width: int  # PreActResNet18 width (64 = the paper's)
    batch: int
    train_steps: int  # training steps per variant per timed round
    rounds: int  # timed rounds per comparison, after one warm-up round
    train_rounds: int  # the training-step ratios are the closest call: more rounds
    pipeline_steps: int  # batches per variant per round in the input-pipeline comparison
    loader_workers: tuple[int, ...]
    attack_width: int  # 200-step PGD is the costliest section; on a CPU it gets a narrower model
    attack_batch: int
    pgd_steps: int
    attack_rounds: int
    deform_images: int
    corruption_images: int  # the corruption section: images per set (digits has 357 test images)
    corruption_rounds: int  # its reference alone takes ~7 s a round for 357 images on 2 CPU cores
    gpu_batch: int
    gpu_epochs: int  # timed epochs per configuration of the GPU grid

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    # The smoke preset's model and batch (width 16, batch 64): what `make demo` trains on a CPU.
    "cpu": Profile("cpu", width=16, batch=64, train_steps=4, rounds=7, train_rounds=21, pipeline_steps=3,
                   loader_workers=(0, 2), attack_width=8, attack_batch=32, pgd_steps=200, attack_rounds=3,
                   deform_images=256, corruption_images=357, corruption_rounds=3, gpu_batch=100, gpu_epochs=2),
    # The paper's model and batch.
    "gpu": Profile("gpu", width=64, batch=100, train_steps=20, rounds=9, train_rounds=15, pipeline_steps=40,
                   loader_workers=(0, 2, 8), attack_width=64, attack_batch=500, pgd_steps=200, attack_rounds=5,
                   deform_images=10000, corruption_images=10000, corruption_rounds=3, gpu_batch=100, gpu_epochs=2),
    # Checks that every section runs and writes its figures; the numbers mean nothing.
    "quick": Profile("quick", width=4, batch=16, train_steps=1, rounds=2, train_rounds=2, pipeline_steps=1,
                     loader_workers=(0,), attack_width=4, attack_batch=8, pgd_steps=3, attack_rounds=1,
                     deform_images=16, corruption_images=8, corruption_rounds=2, gpu_batch=32, gpu_epochs=1),
}
