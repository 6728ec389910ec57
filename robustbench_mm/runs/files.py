"""The names of the files the stages write: one place shared by each writer and every reader."""

from __future__ import annotations

# `--weights best` results: attacks/<run>/best/, the same file names as the last weights' in attacks/<run>/.
BEST_RESULTS_FOLDER = "best"
EXAMPLES_FILE = "adversarial-examples.safetensors"  # `mm-robust attack`, attacks/<run>/: saved adversarial examples
MASKING_FIGURE = "gradient-masking.png"  # `mm-robust attack`, attacks/<run>/: the gradient-masking checks


def deform_samples_file(dataset: str, evaluation: str) -> str:
    """`mm-robust deform`'s sample grid under attacks/, for the deformation result `evaluation` (deform[-authors][-mean])."""
    return f"deform-samples-{dataset}{evaluation.removeprefix('deform')}.png"


def corrupt_samples_file(dataset: str) -> str:
    """`mm-robust corrupt`'s sample grid under attacks/: one test image under every corruption and severity."""
    return f"corrupt-samples-{dataset}.png"
