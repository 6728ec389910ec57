"""Files written by release 0.1.0 still load and render the same report.

`tests/fixtures/release-0.1.0/` holds two tiny digits runs (width 4, 2 epochs) with every result
file that release wrote (attacks on 32 images with AutoAttack at the smoke budget, deformations,
calibration) and the text of the report it rendered from them. `state.safetensors` (only needed
to resume training), `best.safetensors` (no result measured those weights; the tables render the same without
them) and the folder locks were left out to keep the fixture small.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from robustbench_mm.report.build import write_report

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0"
RENDERED = sorted(p.relative_to(FIXTURE / "reports") for p in (FIXTURE / "reports").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def rerendered(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("release")
    for folder in ("checkpoints", "attacks"):
        shutil.copytree(FIXTURE / folder, work / folder)
    cwd = Path.cwd()
    try:  # the release wrote its report from the folder holding checkpoints/ and attacks/
        os.chdir(work)
        write_report("checkpoints", "attacks", "reports")
    finally:
        os.chdir(cwd)
    return work / "reports"


def test_the_fixture_holds_every_table_of_the_release():
    assert {"index.md", "table5.md", "table7.md", "table3.md", "table1.md", "robustness.md", "orderings.md",
            "summary.json"} <= {p.name for p in RENDERED}
    assert len([p for p in RENDERED if p.parent.name == "model_info"]) == 2


# Deliberate changes to what a table says since the release, each with its reason; everything else must match
# (the robustness table's Verdict column, added by issue 23, is taken out of our rendering by `without_verdicts`).
INTENDED_CHANGES = (
    # FAB-T and Square became our own code (issue 22): the robustness table's note says so.
    ("fixed seed): our active-set APGD-CE and APGD-T, torchattacks' FAB-T and Square;",
     "fixed seed), all four stages our own active-set implementations;"),
)


def as_rendered_now(release_text: str) -> str:
    for before, after in INTENDED_CHANGES:
        release_text = release_text.replace(before, after)
    return release_text


def without_verdicts(text: str) -> str:
    """Our rendering less what issue 23 added to the robustness table: the Verdict column, its rule, its CSV rows."""
    out, in_verdict_table = [], False
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("> **Verdict**") or (line in ("", "> ") and i + 1 < len(lines)
                                                 and lines[i + 1].startswith("> **Verdict**")):
            continue
        if line.startswith("| Model | Run | Clean |") and line.rstrip().endswith("| Verdict |"):
            in_verdict_table = True
        if in_verdict_table and line.startswith("|"):
            line = line.rstrip()[:line.rstrip()[:-1].rstrip().rfind("|") + 1]
        elif not line.startswith("|"):
            in_verdict_table = False
        if line.count(",") > 5 and line.split(",")[5] == "verdict":  # a robustness.csv row of the verdict
            continue
        out.append(line)
    return "\n".join(out)


def without_build_stamp(text: str) -> str:
    """index.md's first line says when and at which commit the report was built; all else must match."""
    return re.sub(r"on \d{4}-\d\d-\d\d \d\d:\d\d UTC at commit `[0-9a-f]+(?:\+dirty)?`", "on <date> at commit <commit>", text)


@pytest.mark.parametrize("name", [p for p in RENDERED if p.name != "summary.json"], ids=str)
def test_each_table_renders_byte_for_byte_as_the_release_did(rerendered, name):
    assert without_verdicts(without_build_stamp((rerendered / name).read_text())) == without_build_stamp(
        as_rendered_now((FIXTURE / "reports" / name).read_text()))


def kept(release: object, ours: object, where: str = "summary") -> list[str]:
    """Where `ours` lost or changed a value the release wrote (fields added since are allowed)."""
    if isinstance(release, dict) and isinstance(ours, dict):
        return [lost for key, value in release.items()
                for lost in (kept(value, ours[key], f"{where}.{key}") if key in ours else [f"{where}.{key} missing"])]
    if isinstance(release, list) and isinstance(ours, list) and len(release) == len(ours):
        return [lost for i, (a, b) in enumerate(zip(release, ours)) for lost in kept(a, b, f"{where}[{i}]")]
    return [] if release == ours else [f"{where}: {release!r} -> {ours!r}"]


def test_summary_json_keeps_every_value_of_the_release_but_when_and_by_which_commit_it_was_written(rerendered):
    ours, theirs = (json.loads((root / "summary.json").read_text()) for root in (rerendered, FIXTURE / "reports"))
    for summary in (ours, theirs):
        del summary["generated"], summary["git_commit"]
    for group in ours["groups"]:  # issue 23 added one verdict row per model to the robustness cells
        group["cells"]["robustness"] = [c for c in group["cells"]["robustness"] if c["evaluation"] != "verdict"]
    assert kept(theirs, ours) == []
