"""Evaluation names, typed: each result file is ``attacks/<run>/<evaluation>.json``, and this module is the
one place that builds such a name from its parts and reads the parts back.

An evaluation is a family (what was measured) and, for some families, a variant: the FGSM or PGD
protocol, AutoAttack's eps, the deformation convention and fill. Writers build names with
`Evaluation(...).name`; readers call `Evaluation.of(name)` instead of testing string prefixes.
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


@dataclass(frozen=True)
class Evaluation:
    family: Family
    variant: str = ""

    @property
    def name(self) -> str:
        return f"{self.family.value}-{self.variant}" if self.variant else self.family.value

    @classmethod
    def of(cls, name: str) -> Evaluation | None:
        """The evaluation a result name stands for; None for a name no stage writes."""
        for family in sorted(Family, key=lambda f: -len(f.value)):  # 'pgd-unbounded' before a shorter match
            if name == family.value and family not in WITH_VARIANT:
                return cls(family)
            if name.startswith(family.value + "-") and (family in WITH_VARIANT or family is Family.DEFORM):
                return cls(family, name[len(family.value) + 1:])
        return None


def in_family(name: str, family: Family) -> bool:
    evaluation = Evaluation.of(name)
    return evaluation is not None and evaluation.family is family
