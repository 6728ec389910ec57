"""The report's PNG files: each group's records turned into plain numbers, drawn by figures/plots.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustbench_mm.common.storage import copy_file
from robustbench_mm.figures.plots import (
    CIFAR10_CLASSES, EXAMPLES_PER_MODEL, ExampleRows, ForestRow, Series, autoattack_stages_figure, examples_figure,
    fgsm_sweep_figure, forest_figure, model_colors, pgd_figure, save_png, table7_figure, training_figure)
from robustbench_mm.paper import PGD_UNBOUNDED, TABLE5, TABLE5_EPS, TABLE7, paper_table7
from robustbench_mm.report.orderings import block_of
from robustbench_mm.report.records import (
    Group, ModelRuns, RunRecord, column_label, deform_cell, deform_evaluations, deform_look, deform_set_label,
    table7_columns)
from robustbench_mm.report.tables.robustness import stage_series
from robustbench_mm.runs.evaluations import Family, in_family
from robustbench_mm.runs.files import MASKING_FIGURE, deform_samples_file
from robustbench_mm.stats.estimates import SeedValue, estimate


# ---- from records to PNG files ----------------------------------------------------------------


def _group_title(group: Group, what: str) -> str:
    return f"{what} — {group.heading}"


def sweep_series(model: ModelRuns, protocol: str, color: str) -> Series | None:
    """A model's FGSM accuracy vs ε: the mean over seeds with std error bars and each seed's dots,
    or for one seed its value with the exact 95 % interval over test examples."""
    per_eps: dict[float, list[SeedValue]] = {}
    for record in model.runs:
        result = record.result(f"fgsm-{protocol}")
        if not result:
            continue
        sweep = result.get("sweep") or {"eps": result["eps"], "accuracy": result["accuracy"]}
        for eps, accuracy in zip(sweep["eps"], sweep["accuracy"]):
            per_eps.setdefault(round(float(eps), 9), []).append(
                SeedValue(record.name, record.seed, float(accuracy), result.get("n_examples")))
    if not per_eps:
        return None
    eps_values = sorted(per_eps)
    cells = [estimate(per_eps[eps]) for eps in eps_values]
    below, above = [], []
    for cell in cells:
        if cell.std is not None:
            below.append(cell.std)
            above.append(cell.std)
        elif cell.interval is not None:
            below.append(cell.mean - cell.interval[0])
            above.append(cell.interval[1] - cell.mean)
        else:
            below.append(0.0)
            above.append(0.0)
    seeds = max(cell.n_seeds for cell in cells)
    points = tuple((eps, v.value) for eps, cell in zip(eps_values, cells) for v in cell.values) if seeds > 1 else ()
    spread = f"mean ± std, {seeds} seeds" if seeds > 1 else "95 % interval over test examples"
    return Series(f"{model.label} ({spread})", color, eps_values, [cell.mean for cell in cells], (below, above),
                  points)


def draw_fgsm(group: Group, colors: dict[str, str], path: Path) -> bool:
    panels: dict[str, list[Series]] = {}
    for protocol in ("standard", "paper"):
        series = [sweep_series(model, protocol, colors[model.runs[0].name]) for model in group.models]
        panels[protocol] = [s for s in series if s is not None]
    if not any(panels.values()):
        return False
    paper_points = {}
    if group.dataset in TABLE5:  # the paper's stars only where the dataset is the paper's
        for model in group.models:
            value = TABLE5[group.dataset].get(model.key)
            if value is not None:
                paper_points[model.label] = (colors[model.runs[0].name], value)
    n = sorted({str(r.result(f"fgsm-{p}")["n_examples"]) for r in group.runs for p in ("standard", "paper")
                if r.result(f"fgsm-{p}")})
    save_png(fgsm_sweep_figure(panels, paper_points, TABLE5_EPS,
                               _group_title(group, f"FGSM accuracy vs ε ({'/'.join(n)} test images)")), path)
    return True


def pgd_legend_label(model_label: str, protocol: str, final_accuracies: list[float]) -> str:
    """One legend entry per model and protocol; with several seeds, their count and mean final accuracy."""
    if len(final_accuracies) == 1:
        return f"{model_label}, {protocol}: {final_accuracies[0]:.1f} % at the end"
    mean = sum(final_accuracies) / len(final_accuracies)
    return f"{model_label}, {protocol} ({len(final_accuracies)} seeds): mean {mean:.1f} % at the end"


def draw_pgd(group: Group, colors: dict[str, str], path: Path) -> bool:
    """Solid: the paper protocol (Appendix D's verdict); dashed: the standard protocol."""
    series, thresholds, paper_points, step_size = [], set(), {}, set()
    for protocol, style in (("paper", "-"), ("standard", "--")):
        for model in group.models:
            measured = [(record, result) for record in model.runs
                        if (result := record.result(f"pgd-unbounded-{protocol}"))]
            if not measured:
                continue
            label = pgd_legend_label(model.label, protocol, [r["accuracy_per_step"][-1] for _, r in measured])
            for record, result in measured:
                curve = result["accuracy_per_step"]
                series.append(Series(label, colors[record.name], list(range(len(curve))), curve, linestyle=style))
                step_size.add(result.get("step_size"))
                if result.get("threshold") is not None:
                    thresholds.add(result["threshold"])
                if record.key in PGD_UNBOUNDED and group.dataset == "cifar10":
                    paper_points[record.label] = (colors[record.name], PGD_UNBOUNDED[record.key])
    if not series:
        return False
    threshold = thresholds.pop() if len(thresholds) == 1 else None
    title = _group_title(group, f"Unbounded PGD, step {'/'.join(map(str, step_size))}, no ε-ball, worst case "
                                "over iterates\n(solid: paper protocol; dashed: standard)")
    save_png(pgd_figure(series, threshold, paper_points, title), path)
    return True


def draw_autoattack_stages(group: Group, colors: dict[str, str], path: Path) -> bool:
    panels: dict[str, list[Series]] = {}
    for record in group.runs:
        for label, names, values in stage_series(record.results):
            panels.setdefault(label, []).append(Series(record.label, colors[record.name], names, values))
    if not panels:
        return False
    n = sorted({str(r.results[e]["n_examples"]) for r in group.runs for e in r.results if in_family(e, Family.AUTOATTACK)})
    title = _group_title(group, f"AutoAttack, robust accuracy after each stage ({'/'.join(n)} test images)")
    save_png(autoattack_stages_figure(dict(sorted(panels.items())), title), path)
    return True


def draw_table7(group: Group, path: Path) -> bool:
    columns = table7_columns(group)
    evaluation = deform_evaluations(group)[0]  # the report's main Table 7
    if not any(m and any(r.result(evaluation) for r in m.runs) for _, m in columns):
        return False
    sets = list(TABLE7)
    ours = np.full((len(sets), len(columns)), np.nan)
    ours_std = np.full_like(ours, np.nan)
    paper = np.full_like(ours, np.nan)
    for col, (key, model) in enumerate(columns):
        for row, set_name in enumerate(sets):
            cell = deform_cell(model, key, set_name, evaluation)[0]
            if cell is not None:
                ours[row, col] = cell.mean
                if cell.std is not None:
                    ours_std[row, col] = cell.std
            value = paper_table7(set_name, key)
            if value is not None:
                paper[row, col] = value
    seeds = sorted({len(m.runs) for _, m in columns if m})
    labels = [column_label(key, model) for key, model in columns]
    paper_title = "paper (CIFAR-100, PreActResNet34)"
    title = _group_title(group, "Table 7: accuracy (%) under deformations") + "\n" + deform_look(evaluation, command=False)
    if seeds != [1]:
        title += f"\n(ours: mean ± std over {'/'.join(map(str, seeds))} seeds)"
    if group.dataset != "cifar100":
        title += "\n(different dataset from the paper: a sanity check, not a reproduction)"
    save_png(table7_figure([deform_set_label(s) for s in sets], labels, ours, paper, title, paper_title, ours_std),
             path)
    return True


def seeds_note(counts: list[int]) -> str:
    """How many seeds of each model the comparisons drawn rest on, e.g. '1 seed of each model'."""
    low, high = min(counts), max(counts)
    if low == high:
        return f"{low} seed{'s' if low != 1 else ''} of each model"
    return f"{low} to {high} seeds of each model, by comparison: [n] on each row"


def orderings_forest(group: Group) -> tuple[list[ForestRow], str] | None:
    """The forest plot's rows and title, or None when no ordering could be compared.

    The seeds counted are those whose results entered a comparison (its paired seeds), not the
    run folders: a seed trained but not yet attacked adds nothing to the plot.
    """
    sections = {"standard": f"FGSM ε = {group.fgsm_eps:g}, standard protocol",
                "paper": f"FGSM ε = {group.fgsm_eps:g}, paper protocol",
                "autoattack": "AutoAttack ε = 8/255 (positive control)", None: "Deformations (Tables 3 and 7)"}
    shown = [c for c in group.comparisons if c.difference is not None]
    if not shown:
        return None
    counts = [len(c.differences) for c in shown]
    rows = []
    for c, seeds in zip(shown, counts):
        what = f"{c.better.key} > {c.worse.key}"
        if c.claim.evaluation == "deform":
            what = f"{deform_set_label(c.claim.label)}: {what}"
        if len(set(counts)) > 1:
            what += f" [{seeds}]"
        low, high = c.interval if c.interval else (None, None)
        rows.append(ForestRow(what, c.difference, low, high, c.verdict, sections[block_of(c)]))
    return rows, _group_title(group, f"Do the paper's orderings hold? (95 % intervals; {seeds_note(counts)})")


def draw_orderings(group: Group, path: Path) -> bool:
    forest = orderings_forest(group)
    if forest is None:
        return False
    save_png(forest_figure(*forest), path)
    return True


def draw_training(group: Group, colors: dict[str, str], path: Path) -> bool:
    accuracy, nll, best = [], [], {}
    for model in group.models:
        label = model.label if len(model.runs) == 1 else f"{model.label} ({len(model.runs)} seeds)"
        for record in model.runs:
            history = [h for h in (record.meta or {}).get("history", []) if "test_accuracy" in h]
            if not history:
                continue
            epochs = [h["epoch"] for h in history]
            accuracy.append(Series(label, colors[record.name], epochs, [h["test_accuracy"] for h in history]))
            nll.append(Series(label, colors[record.name], epochs, [h["test_nll"] for h in history]))
            chosen = record.meta["checkpoints"].get("best")
            if chosen and chosen.get("test_accuracy") is not None:
                best[record.name] = (colors[record.name], chosen["epoch"], chosen["test_accuracy"])
    if not accuracy:
        return False
    save_png(training_figure(accuracy, nll, best, _group_title(group, "Training curves")), path)
    return True


def _load_examples(record: RunRecord) -> ExampleRows | None:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(record.examples_file))
        rows = ExampleRows(record.label, *(_as_unit(tensors[k]) for k in ("clean", "adversarial")),
                           *(tensors[k].astype(int).tolist() for k in ("labels", "clean_pred", "adversarial_pred")))
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
    n = min(EXAMPLES_PER_MODEL, len(rows.labels))
    return ExampleRows(rows.label, rows.clean[:n], rows.adversarial[:n], rows.labels[:n], rows.clean_pred[:n],
                       rows.adversarial_pred[:n])


def _as_unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def _examples_caption(record: RunRecord) -> str:
    from safetensors import safe_open

    with safe_open(str(record.examples_file), framework="numpy") as handle:
        metadata = handle.metadata() or {}
    if "eps" not in metadata:
        return "attacked"
    return f"FGSM ε = {float(metadata['eps']):g}\n({metadata.get('protocol', '?')} protocol)"


def draw_examples(group: Group, path: Path) -> bool:
    records = [r for r in group.runs if r.examples_file]
    models = [m for m in (_load_examples(r) for r in records) if m is not None and m.labels]
    if not models:
        return False
    attack = _examples_caption(records[0])
    class_names = CIFAR10_CLASSES if group.dataset == "cifar10" else (
        tuple(map(str, range(10))) if group.dataset == "digits" else None)
    title = _group_title(group, "Adversarial examples (green = correct, red = wrong)")
    save_png(examples_figure(models, class_names, attack, title), path)
    return True


def draw_group(group: Group, reports_root: Path, attacks_root: Path) -> dict[str, str]:
    """Write every figure this group has data for; return {file name: caption}, in reading order."""
    colors = model_colors([r.key for r in group.runs])
    colors = {r.name: colors[r.key] for r in group.runs}
    drawers = [
        ("fgsm-eps-sweep", "FGSM accuracy vs ε, both protocols", lambda p: draw_fgsm(group, colors, p)),
        ("pgd-unbounded", "Unbounded PGD: accuracy after every iteration", lambda p: draw_pgd(group, colors, p)),
        ("autoattack-stages", "AutoAttack: robust accuracy after each stage",
         lambda p: draw_autoattack_stages(group, colors, p)),
        ("table7-ours-vs-paper", "Table 7: ours vs the paper", lambda p: draw_table7(group, p)),
        ("orderings", "Do the paper's orderings hold? Our differences with 95 % intervals",
         lambda p: draw_orderings(group, p)),
        ("training-curves", "Training curves: test accuracy and NLL per epoch", lambda p: draw_training(group, colors, p)),
        ("adversarial-examples", "Adversarial examples: clean, attacked, and the perturbation",
         lambda p: draw_examples(group, p)),
    ]
    written = {}
    for stem, caption, draw in drawers:
        name = f"{stem}-{group.slug}.png"
        if draw(reports_root / name):
            written[name] = caption
    # Figures the evaluation stages drew themselves are copied, so reports/ stands on its own.
    main = deform_evaluations(group)[0]  # the sample grid of the warp the main Table 7 used
    copies = [(attacks_root / deform_samples_file(group.dataset, main),
               f"deform-samples-{group.slug}.png",
               f"The deformation test sets on the first test images ({deform_look(main, command=False)})")]
    # A model's masking figure only with its gradient-masking result: one dropped as stale (other weights)
    # leaves a figure of the old weights behind.
    # It lies beside the result it was drawn with: attacks/<run>/, or attacks/<run>/best/ for the best weights.
    copies += [(r.beside("gradient-masking", MASKING_FIGURE), f"gradient-masking-{r.name}.png",
                f"Gradient-masking checks: {r.label}") for r in group.runs if "gradient-masking" in r.results]
    for source, name, caption in copies:
        if source.is_file():
            copy_file(source, reports_root / name)
            written[name] = caption
    return written
