"""Table cells with their uncertainty, for every table of the report.

A cell is one measurement (an accuracy in %) of one model identity, taken once per training seed.
`estimate` turns those per-seed values into an `Estimate`, which prints as

- several seeds: ``71.23 ± 1.20 (3 seeds)``: mean ± sample standard deviation over seeds;
- one seed: ``71.00 [61.1, 79.6]``: the exact binomial (Clopper-Pearson) 95 % interval over the
  test examples, from the accuracy and the number of examples it was measured on;

and carries the CSV columns `ESTIMATE_COLUMNS` (per-seed values, std, interval bounds). With
several seeds the CSV interval is the Student-t 95 % interval of the mean over seeds.

Which runs are seeds of one model is decided by `seeds.split_seed_suffix` (folders ``<base>-s<seed>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from robustbench_mm.stats.significance import clopper_pearson, correct_count, mean_std, t_interval

ESTIMATE_COLUMNS = ("n_seeds", "per_seed", "std", "ci_low", "ci_high", "uncertainty")


@dataclass(frozen=True)
class SeedValue:
    """One seed's number for a cell: accuracy in %, and how many test examples it was measured on."""

    run: str
    seed: int | None
    value: float
    n_examples: int | None = None


@dataclass(frozen=True)
class Estimate:
    """A cell's values over seeds, with the spread or interval that goes with them."""

    values: tuple[SeedValue, ...]
    missing: tuple[str, ...] = ()  # runs of the same model that lack this number

    @property
    def n_seeds(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean_std([v.value for v in self.values])[0]

    @property
    def std(self) -> float | None:
        return mean_std([v.value for v in self.values])[1]

    @property
    def interval(self) -> tuple[float, float] | None:
        """95 % interval in %: over seeds (Student t) with several, over test examples with one."""
        if self.n_seeds > 1:
            return t_interval([v.value for v in self.values])
        only = self.values[0]
        if not only.n_examples:
            return None
        try:
            low, high = clopper_pearson(correct_count(only.value, only.n_examples), only.n_examples)
        except ValueError:  # not a whole number of examples (e.g. an averaged value): no exact interval
            return None
        return 100 * low, 100 * high

    @property
    def kind(self) -> str:
        """What the uncertainty is, in words for the CSV and table notes."""
        if self.n_seeds > 1:
            return f"std over {self.n_seeds} seeds; interval: Student t over seeds"
        if self.interval is None:
            return "one seed, no interval (number of examples unknown)"
        return f"one seed; exact binomial 95 % interval over {self.values[0].n_examples} test examples"

    def text(self) -> str:
        if self.n_seeds > 1:
            text = f"{self.mean:.2f} ± {self.std:.2f} ({self.n_seeds} seeds)"
        elif self.interval is not None:
            low, high = self.interval
            text = f"{self.mean:.2f} [{low:.1f}, {high:.1f}]"
        else:
            text = f"{self.mean:.2f}"
        if self.missing:
            text += f" ({len(self.missing)} more seed{'s' if len(self.missing) > 1 else ''} missing)"
        return text

    def columns(self) -> dict[str, Any]:
        """The CSV columns `ESTIMATE_COLUMNS`: per-seed values as 'seed:value' pairs joined by ';'."""
        interval = self.interval
        return {
            "n_seeds": self.n_seeds,
            "per_seed": ";".join(f"{'?' if v.seed is None else v.seed}:{v.value:g}" for v in self.values),
            "std": None if self.std is None else round(self.std, 6),
            "ci_low": None if interval is None else round(interval[0], 6),
            "ci_high": None if interval is None else round(interval[1], 6),
            "uncertainty": self.kind,
        }


def estimate(values: Sequence[SeedValue], missing: Sequence[str] = ()) -> Estimate | None:
    """The cell's estimate, or None when no seed has the number."""
    ordered = tuple(sorted(values, key=lambda v: (v.seed is None, v.seed if v.seed is not None else 0, v.run)))
    return Estimate(ordered, tuple(missing)) if ordered else None


EMPTY_COLUMNS = {column: None for column in ESTIMATE_COLUMNS}


def estimate_columns(cell: Estimate | None) -> dict[str, Any]:
    return cell.columns() if cell is not None else dict(EMPTY_COLUMNS)
