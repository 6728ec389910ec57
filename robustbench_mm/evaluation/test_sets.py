"""The test images every evaluation stage attacks, deforms or calibrates on, loaded once.

One `TestSets` serves a whole `reproduce` (attack, deform and calibrate read the same images), or
one stage run alone. Each stage evaluates the first `n_examples` of the test set, so every stage
and every rerun agree on which images were used.
"""

from __future__ import annotations

from robustbench_mm.data.images import ImageSet, load_dataset
from robustbench_mm.errors import UsageError


class TestSets:
    __test__ = False  # not a pytest class, despite its name

    def __init__(self) -> None:
        self._full: dict[tuple[str, str | None], ImageSet] = {}

    def get(self, dataset: str, data_dir: str | None, download: bool, n_examples: int | None) -> ImageSet:
        """The first `n_examples` test images of `dataset` (all of them for None), on the CPU."""
        key = (dataset, data_dir)
        if key not in self._full:
            self._full[key] = load_dataset(dataset, False, data_dir, download)
        full = self._full[key]
        if n_examples is not None and n_examples > len(full):
            raise UsageError(f"--n-examples {n_examples} is more than the {len(full)} images of the {full.name} test "
                             f"set; give at most {len(full)} or leave it out for all of them")
        return full.subset(n_examples)
