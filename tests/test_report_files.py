"""The report writes model_info/<run>.json like every other file: listed in its manifest, never over a user's file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from robustbench_mm.config import TABLE_MODELS
from robustbench_mm.errors import UsageError
from robustbench_mm.report.build import write_report
from robustbench_mm.report.publish import REPORT_MANIFEST
from test_reporting import write_attacks, write_model


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*")) if p.name != ".lock"}


@pytest.fixture
def two_models(tmp_path, monkeypatch):
    """Two models with AutoAttack results (so each gets a model_info), and no report yet.

    The figures are left out (they are tested elsewhere) to keep these reports quick.
    """
    monkeypatch.setattr("robustbench_mm.report.figures.draw_group", lambda group, staging, attacks_root: {})
    checkpoints, attacks = tmp_path / "checkpoints", tmp_path / "attacks"
    runs = []
    for method, alpha in (TABLE_MODELS[0], TABLE_MODELS[-1]):
        run, config = write_model(checkpoints, method, alpha)
        write_attacks(attacks, run, config)
        runs.append(run)
    return checkpoints, attacks, tmp_path / "reports", runs


def test_a_users_model_info_file_is_never_replaced(two_models, tmp_path):
    checkpoints, attacks, reports, runs = two_models
    write_report(checkpoints, attacks, tmp_path / "elsewhere")
    ours = (tmp_path / "elsewhere" / "model_info" / f"{runs[0]}.json").read_bytes()
    (reports / "model_info").mkdir(parents=True)
    (reports / "model_info" / f"{runs[0]}.json").write_text('{"mine": true}')
    (reports / "model_info" / "notes.txt").write_text("mine too")
    before = tree(tmp_path)
    with pytest.raises(UsageError, match=f"did not write \\(model_info/{runs[0]}.json\\)"):
        write_report(checkpoints, attacks, reports)
    assert tree(tmp_path) == before
    # A model_info folder that is a file is refused the same way.
    shutil.rmtree(reports / "model_info")
    (reports / "model_info").write_text("a file")
    before = tree(tmp_path)
    with pytest.raises(UsageError, match="did not write \\(model_info\\)"):
        write_report(checkpoints, attacks, reports)
    assert tree(tmp_path) == before
    # The very bytes the report writes (a model_info from before the manifest listed them) lose nothing if replaced.
    (reports / "model_info").unlink()
    (reports / "model_info").mkdir()
    (reports / "model_info" / f"{runs[0]}.json").write_bytes(ours)
    (reports / "model_info" / "notes.txt").write_text("mine too")
    write_report(checkpoints, attacks, reports)
    manifest = json.loads((reports / REPORT_MANIFEST).read_text())["files"]
    assert {f"model_info/{run}.json" for run in runs} <= set(manifest)
    assert "model_info/notes.txt" not in manifest and (reports / "model_info" / "notes.txt").read_text() == "mine too"


def test_model_info_of_a_removed_model_is_removed_and_the_manifest_cannot_reach_outside(two_models, tmp_path):
    checkpoints, attacks, reports, runs = two_models
    write_report(checkpoints, attacks, reports)
    assert all((reports / "model_info" / f"{run}.json").is_file() for run in runs)
    # A manifest naming files outside the report folder (damaged or hostile) never gets them deleted.
    outside = tmp_path / "outside.json"
    outside.write_text("keep")
    manifest_path = reports / REPORT_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    digest = hashlib.sha256(b"keep").hexdigest()
    manifest["files"].update({"../outside.json": digest, "model_info/../../outside.json": digest,
                              str(outside): digest, "model_info/x/../../../outside.json": digest})
    manifest_path.write_text(json.dumps(manifest))
    shutil.rmtree(checkpoints / runs[1])
    shutil.rmtree(attacks / runs[1])
    write_report(checkpoints, attacks, reports)
    assert (reports / "model_info" / f"{runs[0]}.json").is_file()
    assert not (reports / "model_info" / f"{runs[1]}.json").exists()
    assert outside.read_text() == "keep"
    # Without AutoAttack results no model_info is left, and the folder the report made goes with them.
    for path in attacks.glob("*/autoattack-*.json"):
        path.unlink()
    write_report(checkpoints, attacks, reports)
    assert not (reports / "model_info").exists()
    assert not any(name.startswith("model_info/") for name in json.loads(manifest_path.read_text())["files"])
