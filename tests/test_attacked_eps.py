"""`attack --eps 0.05` then `report`: every table, CSV and summary.json reports FGSM at 0.05, labelled, and agrees.

Table 5 still compares with the paper at the paper's ε = 0.03 (read from the sweep); the attacked ε
gets its own block there, and the robustness table and the orderings (paired, from the per-example
masks the attack stored at 0.05) use it. Runs on the two tiny models of the release fixture.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from robustbench_mm.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1.0"
RUNS = ("digits-preactresnet18-baseline", "digits-preactresnet18-manifold-a2")


@pytest.fixture(scope="module")
def attacked(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("eps")
    shutil.copytree(FIXTURE / "checkpoints", work / "checkpoints")
    assert main(["attack", "--checkpoints", str(work / "checkpoints"), "--out", str(work / "attacks"), "--quiet",
                 "--eps", "0.05", "--sweep", "0,0.03", "--pgd-steps", "2", "--bounded-pgd-steps", "2",
                 "--n-examples", "32", "--save-examples", "0", "--device", "cpu"]) == 0
    assert main(["report", "--checkpoints", str(work / "checkpoints"), "--attacks", str(work / "attacks"),
                 "--reports", str(work / "reports"), "--quiet"]) == 0
    return work


def fgsm_at(work: Path, run: str, protocol: str, eps: float) -> float:
    result = json.loads((work / "attacks" / run / f"fgsm-{protocol}.json").read_text())
    return result["sweep"]["accuracy"][result["sweep"]["eps"].index(eps)]


def csv_rows(work: Path, table: str) -> list[dict[str, str]]:
    with open(work / "reports" / f"{table}.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_markdown_table_labels_the_attacked_eps(attacked):
    reports = attacked / "reports"
    assert "FGSM test accuracy (%) at the attacked ε = 0.05" in (reports / "table5.md").read_text()
    assert "FGSM test accuracy (%) at ε = 0.03" in (reports / "table5.md").read_text()  # the paper comparison
    robustness = (reports / "robustness.md").read_text()
    assert "FGSM standard ε = 0.05" in robustness and "FGSM paper protocol ε = 0.05" in robustness
    assert "ε = 0.03" not in robustness
    orderings = (reports / "orderings.md").read_text()
    assert "FGSM ε = 0.05, standard protocol" in orderings and "FGSM ε = 0.05, paper protocol" in orderings
    assert "FGSM ε = 0.03, standard protocol" not in orderings


def test_the_csv_files_agree_with_the_result_files_at_the_attacked_eps(attacked):
    for table in ("table5", "robustness"):
        at_eps = {(r["run"], r["evaluation"]): float(r["ours"]) for r in csv_rows(attacked, table)
                  if r["setting"] == "eps=0.05"}
        assert at_eps == {(run, f"fgsm-{p}"): fgsm_at(attacked, run, p, 0.05)
                          for run in RUNS for p in ("standard", "paper")}, table
    paper_comparison = {(r["run"], r["evaluation"]): float(r["ours"]) for r in csv_rows(attacked, "table5")
                        if r["setting"] == "eps=0.03" and r["run"]}
    assert paper_comparison == {(run, f"fgsm-{p}"): fgsm_at(attacked, run, p, 0.03)
                                for run in RUNS for p in ("standard", "paper")}


def test_the_orderings_are_paired_at_the_attacked_eps(attacked):
    fgsm = [r for r in csv_rows(attacked, "orderings") if r["evaluation"].startswith("fgsm-")]
    assert fgsm and all(r["setting"] == "eps=0.05" for r in fgsm)
    assert all("McNemar" in r["evidence"] for r in fgsm)


def test_summary_json_records_both_eps(attacked):
    summary = json.loads((attacked / "reports" / "summary.json").read_text())
    (group,) = summary["groups"]
    assert group["fgsm_eps"] == 0.05 and group["paper_fgsm_eps"] == 0.03
    robustness = {(c["run"], c["evaluation"]): c["ours"] for c in group["cells"]["robustness"]
                  if c["setting"] == "eps=0.05"}
    assert robustness == {(run, f"fgsm-{p}"): fgsm_at(attacked, run, p, 0.05) for run in RUNS for p in ("standard", "paper")}
