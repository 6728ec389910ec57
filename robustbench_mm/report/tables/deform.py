"""Tables 3 and 7: accuracy on every deformation test set beside the paper's, per warp convention and fill."""

from __future__ import annotations

from robustbench_mm.paper import paper_table7
from robustbench_mm.report.records import (
    Group, column_label, deform_cell, deform_evaluations, deform_look, deform_set_label, table7_columns)
from robustbench_mm.report.sections import (
    UNCERTAINTY_NOTE, Block, Section, cell_status, clean_accuracy, comparison_cell, comparison_note, header_facts,
    table_csv_row)


def deform_section(group: Group, sets: tuple[str, ...]) -> Section:
    reference, warning = comparison_note(group, "table7")
    notes = [warning] if warning else []
    notes.append(f"Paper: {reference} (Table 7), the authors' own warp. Each cell: ours / paper (our mean − paper), "
                 f"test accuracy in %. Uncertainty: {UNCERTAINTY_NOTE}.")
    columns = table7_columns(group)
    evaluations = deform_evaluations(group)
    clean = []
    for key, model in columns:
        cell = next((c for c in (model.cell(e, clean_accuracy, "")[0] for e in evaluations) if c), None) \
            if model else None
        if cell:
            clean.append(f"{key} {cell.text()}")
    if clean:
        notes.append("Clean test accuracy of the same examples (not in the paper's table): " + ", ".join(clean) + ".")
    header = ["Test set"] + [column_label(key, m) + (f" `{m.folders}`" if m and not m.runs[0].external and
              [k for k, _ in columns].count(key) > 1 else "") for key, m in columns]
    blocks, rows = [], []
    for index, evaluation in enumerate(evaluations):
        md_rows = []
        for set_name in sets:
            cells = [deform_set_label(set_name)]
            for key, model in columns:
                paper = paper_table7(set_name, key)
                ours, why = deform_cell(model, key, set_name, evaluation)
                cells.append(comparison_cell(ours, paper, why))
                rows.append(table_csv_row(group, model, key, evaluation, set_name, ours, paper, cell_status(ours, why),
                                     reference))
            md_rows.append(cells)
        role = "main table" if index == 0 else "the same models under another warp"
        blocks.append(Block(f"Test accuracy (%) under deformations never seen in training — {deform_look(evaluation)}; "
                            f"{role}", header, md_rows))
    interpolation = {r.results[e].get("interpolation") for r in group.runs for e in evaluations if e in r.results}
    protocol = ("each test image deformed once with its own parameter drawn uniformly from the range (seeded, so "
                f"the set is fixed), {'/'.join(sorted(map(str, interpolation))) or 'unknown'} interpolation")
    facts = header_facts(group, tuple(evaluations), protocol)
    looks = [deform_look(e) + (" — main table" if i == 0 else "") for i, e in enumerate(evaluations)]
    facts.insert(facts.index(("protocol", protocol)) + 1, ("warp convention and fill", "; ".join(looks)))
    return Section(group.heading, facts, notes, blocks, rows)
