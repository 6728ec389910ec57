"""Evaluation names, typed: each result file is ``attacks/<run>/<evaluation>.json``, and this module is the
one place that builds such a name from its parts and reads the parts back.

An evaluation is a family (what was measured) and, for some families, a variant: the FGSM or PGD
protocol, AutoAttack's eps, the deformation convention and fill. Writers build names with
`Evaluation(...).name`; readers call `Evaluation.of(name)` instead of testing string prefixes.

BPDA (Athalye et al., 2018): the attacks that follow gradients can also run with the backward pass
through each non-differentiable layer's differentiable surrogate (`models.thermometer.bpda`). Such
a result is the same family and variant with ``bpda=True``, named with a ``-bpda`` suffix:
``fgsm-standard-bpda``, ``pgd-unbounded-standard-bpda``, ``pgd-bounded-bpda``,
``autoattack-8_255-bpda``. Only the families in `BPDA_FAMILIES` have a BPDA variant; the plain
result stays beside it, so a report shows the defence before and after.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Family(str, Enum):
    FGSM = "fgsm"  # variant: the protocol
    PGD_UNBOUNDED = "pgd-unbounded"  # variant: the protocol
    PGD_BOUNDED = "pgd-bounded"
    AUTOATTACK = "autoattack"  # variant: the eps as a file-name part, e.g. 8_255
    GRADIENT_MASKING = "gradient-masking"
    ADVERSARIAL_EXAMPLES = "adversarial-examples"
    DEFORM = "deform"  # variant: '', 'authors', 'mean' or 'authors-mean'
    CALIBRATION = "calibration"
    CORRUPTIONS = "corruptions"


WITH_VARIANT = (Family.FGSM, Family.PGD_UNBOUNDED, Family.AUTOATTACK)
BPDA_FAMILIES = (Family.FGSM, Family.PGD_UNBOUNDED, Family.PGD_BOUNDED, Family.AUTOATTACK)
BPDA_SUFFIX = "-bpda"


@dataclass(frozen=True)
class Evaluation:
    family: Family
    variant: str = ""
    bpda: bool = False  # the gradient attacks ran through the model's BPDA surrogates

    def __post_init__(self) -> None:
        if self.bpda and self.family not in BPDA_FAMILIES:
            raise ValueError(f"{self.family.value} has no BPDA variant")

    @property
    def name(self) -> str:
        base = f"{self.family.value}-{self.variant}" if self.variant else self.family.value
        return base + BPDA_SUFFIX if self.bpda else base

    @property
    def plain(self) -> Evaluation:
        """The same evaluation without BPDA."""
        return Evaluation(self.family, self.variant)

    def with_bpda(self) -> Evaluation:
        return Evaluation(self.family, self.variant, bpda=True)

    @classmethod
    def of(cls, name: str) -> Evaluation | None:
        """The evaluation a result name stands for; None for a name no stage writes."""
        if name.endswith(BPDA_SUFFIX):
            plain = cls.of(name[:-len(BPDA_SUFFIX)])
            return plain.with_bpda() if plain is not None and plain.family in BPDA_FAMILIES else None
        for family in sorted(Family, key=lambda f: -len(f.value)):  # 'pgd-unbounded' before a shorter match
            if name == family.value and family not in WITH_VARIANT:
                return cls(family)
            if name.startswith(family.value + "-") and (family in WITH_VARIANT or family is Family.DEFORM):
                return cls(family, name[len(family.value) + 1:])
        return None


def in_family(name: str, family: Family) -> bool:
    evaluation = Evaluation.of(name)
    return evaluation is not None and evaluation.family is family


def is_bpda(name: str) -> bool:
    evaluation = Evaluation.of(name)
    return evaluation is not None and evaluation.bpda


def bpda_name(name: str) -> str:
    """'pgd-bounded' -> 'pgd-bounded-bpda' (the name must be of a family with a BPDA variant)."""
    evaluation = Evaluation.of(name)
    if evaluation is None:
        raise ValueError(f"unknown evaluation {name!r}")
    return evaluation.with_bpda().name
