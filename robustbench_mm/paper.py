"""The paper's published numbers (Verma et al., 2019), for side-by-side tables."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SupervisedRow:
    """One row of the paper's Table 1 (CIFAR-10) or Table 2 (CIFAR-100): test accuracy (%) and test NLL.

    `source` is who measured it: the paper's authors ("ours" in the paper), or a number the paper
    quotes from Zhang et al. (2017); only the authors' rows are compared with our models.
    `nll` None is the paper's "n/a".
    """

    table: str
    dataset: str
    arch: str
    label: str
    method: str
    alpha: float | None
    mix_layers: str  # "paper" = {input, stage 1, stage 2}; "all" adds stage 3 ("all layers")
    source: str
    accuracy: float
    nll: float | None

    @property
    def key(self) -> str:
        return model_key(self.method, self.alpha)

    @property
    def compared(self) -> bool:
        return self.source == "authors"


def _rows(table: str, dataset: str, arch: str, *rows: tuple) -> tuple[SupervisedRow, ...]:
    return tuple(SupervisedRow(table, dataset, arch, *row) for row in rows)


ZHANG = "Zhang et al. (2017), quoted by the paper"
# Tables 1 and 2 in the paper's row order (SPEC §11).
SUPERVISED = (
    *_rows("table1", "cifar10", "preactresnet18",
           ("No mixup", "baseline", None, "paper", "authors", 94.88, 0.2646),
           ("Input mixup (α = 1), Zhang et al.", "input", 1.0, "paper", ZHANG, 96.10, None),
           ("Input mixup (α = 1)", "input", 1.0, "paper", "authors", 96.498, 0.1945),
           ("Manifold mixup (α = 2)", "manifold", 2.0, "paper", "authors", 97.104, 0.1407)),
    *_rows("table1", "cifar10", "preactresnet152",
           ("No mixup", "baseline", None, "paper", "authors", 95.797, 0.1994),
           ("Input mixup (α = 1)", "input", 1.0, "paper", "authors", 96.844, 0.2312),
           ("Manifold mixup (α = 2)", "manifold", 2.0, "paper", "authors", 97.238, 0.1419),
           ("Manifold mixup all layers (α = 6)", "manifold", 6.0, "all", "authors", 97.622, 0.0957)),
    *_rows("table2", "cifar100", "preactresnet18",
           ("No mixup, Zhang et al.", "baseline", None, "paper", ZHANG, 74.4, None),
           ("No mixup", "baseline", None, "paper", "authors", 75.32, 1.284),
           ("Input mixup (α = 1), Zhang et al.", "input", 1.0, "paper", ZHANG, 78.9, None),
           ("Manifold mixup (α = 2)", "manifold", 2.0, "paper", "authors", 78.95, 0.913)),
    *_rows("table2", "cifar100", "preactresnet34",
           ("Input mixup (α = 1)", "input", 1.0, "paper", "authors", 77.208, 1.085),
           ("Manifold mixup (α = 2)", "manifold", 2.0, "paper", "authors", 79.609, 0.930)),
)

# Table 5: FGSM eps = 0.03, test accuracy (%), PreActResNet18.
TABLE5 = {
    "cifar10": {
        "thermometer": 80.97,  # Buckman et al. (2018), as the paper quotes it
        "adversarial": 60.30,  # Madry et al. (2018), as the paper quotes it
        "baseline": 36.32,
        "input-a1": 71.51,
        "manifold-a2": 77.50,
    },
    "cifar100": {
        "input-a1": 40.7,
        "manifold-a2": 44.96,
    },
}

# Appendix D: unbounded PGD, 200 iterations, step 0.01 -> accuracy (%).
PGD_UNBOUNDED = {"input-a1": 1.0, "manifold-a2": 0.0}

# Table 7 (CIFAR-100, PreActResNet34): columns baseline | input a=1 | input a=2 | manifold a=2.
TABLE7_COLUMNS = ("baseline", "input-a1", "input-a2", "manifold-a2")
TABLE7 = {
    "rotate-20": (52.96, 55.55, 56.48, 60.08),
    "rotate-40": (33.82, 37.73, 36.78, 42.13),
    "rotate-60": (26.77, 28.47, 27.53, 33.78),
    "rotate-80": (24.19, 26.72, 25.34, 29.95),
    "shear-28.6": (55.92, 58.16, 60.01, 62.85),
    "shear-57.3": (35.66, 39.34, 39.70, 44.27),
    "shear-114.6": (19.57, 22.94, 22.80, 24.69),
    "shear-143.2": (17.55, 21.66, 21.22, 23.56),
    "shear-171.9": (22.38, 25.53, 25.27, 28.02),
    "zoom-in-20": (2.43, 1.90, 2.45, 2.03),
    "zoom-in-40": (4.97, 4.47, 5.23, 4.17),
    "zoom-in-60": (12.68, 13.75, 13.12, 11.49),
    "zoom-in-80": (47.95, 52.18, 50.47, 52.70),
    "zoom-out-120": (43.18, 60.02, 61.62, 63.59),
    "zoom-out-140": (19.34, 41.81, 42.02, 45.29),
    "zoom-out-160": (11.12, 25.48, 25.85, 27.02),
    "zoom-out-180": (7.98, 18.11, 18.02, 15.68),
}
TABLE3_SETS = ("rotate-20", "rotate-60", "shear-28.6", "shear-57.3", "zoom-in-80", "zoom-out-140", "zoom-out-160")


# Methods without a mixing coefficient: their key is the method's name (Table 5's two controls and the baseline).
UNMIXED_METHODS = ("baseline", "adversarial", "thermometer")
TABLE5_CONTROLS = ("thermometer", "adversarial")  # the rows the paper quotes from Buckman et al. and Madry et al.


def model_key(method: str, alpha: float | None) -> str:
    """'baseline', 'input-a1', 'manifold-a2', 'adversarial', 'thermometer': how the paper's columns name a model."""
    return method if method in UNMIXED_METHODS else f"{method}-a{alpha:g}"


def paper_table7(set_name: str, key: str) -> float | None:
    row = TABLE7.get(set_name)
    if row is None or key not in TABLE7_COLUMNS:
        return None
    return row[TABLE7_COLUMNS.index(key)]


# ---- the orderings the paper reports --------------------------------------------------------------
# The paper's robustness claims are orderings between models: "manifold mixup > input mixup > no
# mixup under FGSM" (Section 5.3, Table 5) and "Manifold Mixup consistently allows the model to be
# more robust to random shearing, rescaling, and rotation" (Table 3 and its full version, Table 7).
# Each `Claim` is one pairwise ordering read off the paper's own numbers, so the report can test it
# on our runs. (Appendix D's unbounded PGD is a sanity check, not an ordering: the report's PGD table.)


@dataclass(frozen=True)
class Claim:
    """The paper reports model `better` ahead of model `worse` on one measurement."""

    source: str  # where in the paper, e.g. "Table 5 (CIFAR-10, FGSM ε = 0.03)"
    evaluation: str  # "fgsm" (checked under each FGSM protocol), "deform" or "autoattack"
    label: str  # a deformation set name; "" for an FGSM ordering (its `eps` says where it is tested)
    better: str  # model keys, as `model_key` names them
    worse: str
    paper_better: float | None  # the paper's accuracies (%); None for an ordering the paper gives no numbers for
    paper_worse: float | None
    eps: float | None = None  # the FGSM eps the ordering is tested at (None for a deformation set)


TABLE5_EPS = 0.03  # Table 5's FGSM eps: every paper comparison at FGSM is made at it


def ordering_claims(dataset: str, fgsm_eps: float = TABLE5_EPS) -> list[Claim]:
    """The orderings to test on runs of `dataset`: Table 5's for CIFAR-100 there, CIFAR-10's elsewhere
    (as the report's Table 5 compares), tested at `fgsm_eps` (the eps the models were attacked at), and
    Table 7's manifold-mixup comparisons on every dataset."""
    table5 = "cifar100" if dataset == "cifar100" else "cifar10"
    ranked = sorted(((key, value) for key, value in TABLE5[table5].items() if key in TABLE7_COLUMNS),
                    key=lambda item: -item[1])
    source = f"Table 5 ({'CIFAR-100' if table5 == 'cifar100' else 'CIFAR-10'}, FGSM ε = {TABLE5_EPS:g})"
    claims = [Claim(source, "fgsm", "", better, worse, high, low, fgsm_eps)
              for i, (better, high) in enumerate(ranked) for worse, low in ranked[i + 1:]]
    # Table 5 also ranks its two controls (quoted from Buckman et al. and Madry et al.) against the mixup models.
    every = sorted(((key, value) for key, value in TABLE5[table5].items()
                    if key in TABLE7_COLUMNS or key in TABLE5_CONTROLS), key=lambda item: -item[1])
    control_source = f"{source}, with Buckman et al.'s and Madry et al.'s rows as the paper quotes them"
    claims += [Claim(control_source, "fgsm", "", better, worse, high, low, fgsm_eps)
               for i, (better, high) in enumerate(every) for worse, low in every[i + 1:]
               if better in TABLE5_CONTROLS or worse in TABLE5_CONTROLS]
    manifold = TABLE7_COLUMNS.index("manifold-a2")
    for set_name, row in TABLE7.items():
        table = "Table 3 and 7" if set_name in TABLE3_SETS else "Table 7"
        for column, key in enumerate(TABLE7_COLUMNS):
            if column == manifold or row[column] == row[manifold]:
                continue
            (better, high), (worse, low) = sorted([("manifold-a2", row[manifold]), (key, row[column])],
                                                 key=lambda item: -item[1])
            claims.append(Claim(f"{table} (CIFAR-100, PreActResNet34)", "deform", set_name, better, worse, high, low))
    return claims


# ---- the positive control under AutoAttack: issue 23's ordering, not one the paper reports ------------------
# Madry et al.'s adversarial training is the accepted L-inf defence, so it must stay ahead of every mixup model
# under the strongest attack. The paper's Table 5 lists the same rows but ranks them the other way under FGSM
# (CIFAR-10, eps = 0.03: adversarial training 60.30 against 71.51 and 77.50 for input and manifold mixup), which
# is why the ordering is tested under AutoAttack as well: a control that FGSM alone cannot settle.
AUTOATTACK_ORDERING_EPS = 8 / 255  # RobustBench's CIFAR L-inf eps, where the verdicts are drawn too
AUTOATTACK_ORDERING_SOURCE = ("positive control (issue 23), not the paper's ordering: the paper's Table 5 lists "
                              "these rows but ranks adversarial training below mixup under FGSM")
MIXUP_KEY_PREFIXES = ("input-a", "manifold-a")


def autoattack_claims(keys) -> list[Claim]:
    """Adversarial training ahead of each mixup model among the model `keys`, under AutoAttack at 8/255."""
    mixup = sorted({key for key in keys if key.startswith(MIXUP_KEY_PREFIXES)})
    return [Claim(AUTOATTACK_ORDERING_SOURCE, "autoattack", "", "adversarial", key, None, None, AUTOATTACK_ORDERING_EPS)
            for key in mixup]


# ---- common corruptions: public reference points (not the paper's) ----------------------------------------


@dataclass(frozen=True)
class CorruptionAnchor:
    """One model of RobustBench's CIFAR-10-C leaderboard: its card's clean_acc and corruptions_acc (%)."""

    model_name: str  # RobustBench's model name (its model_info file name)
    method: str
    architecture: str
    dataset: str
    clean_acc: float
    corruptions_acc: float


CORRUPTION_ANCHOR_SOURCE = ("RobustBench's CIFAR-10-C leaderboard: model_info/cifar10/corruptions/<model>.json in "
                            "github.com/RobustBench/robustbench (commit 78fcc9e)")
CORRUPTION_ANCHORS = (
    CorruptionAnchor("Standard", "Standard training", "WideResNet-28-10", "cifar10", 94.78, 73.46),
    CorruptionAnchor("Kireev2021Effectiveness_AugMixNoJSD", "AugMix (without the JSD term)", "PreActResNet-18",
                     "cifar10", 94.97, 86.60),
    CorruptionAnchor("Hendrycks2020AugMix_WRN", "AugMix", "WideResNet-40-2", "cifar10", 95.08, 88.82),
    CorruptionAnchor("Erichson2022NoisyMix", "NoisyMix", "WideResNet-28-4", "cifar10", 96.73, 92.78),
)
