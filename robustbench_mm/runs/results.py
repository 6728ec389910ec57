"""Result files under ``attacks/<run>/``: one JSON per (model, evaluation), written atomically.

Results of a run's best weights go to ``attacks/<run>/best/`` under the same names, so they live beside
those of its last weights (`results_dir`); a model trained elsewhere has one set of weights, in ``attacks/<run>/``.

Every file carries the model it measured, the exact settings, and provenance, so the report
stage can rebuild tables from these files alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from robustbench_mm.common.runtime import provenance
from robustbench_mm.common.storage import atomic_write_json, check_writable_dir, read_json
from robustbench_mm.errors import UsageError
from robustbench_mm.paper import model_key
from robustbench_mm.runs.checkpoints import WEIGHT_FILES, LoadedModel
from robustbench_mm.runs.files import BEST_RESULTS_FOLDER
from robustbench_mm.runs.matching import matching_command

RESULT_FORMAT = "mm-robust-result/1"
EXTERNAL = "external"  # the checkpoint (and key, method, preset) of a model trained elsewhere


def model_summary(loaded: LoadedModel) -> dict[str, Any]:
    """Who was evaluated: enough to place the numbers in the right table cell."""
    meta = loaded.meta
    config = loaded.config
    return {
        "run": loaded.name,
        "key": model_key(config.method, config.alpha),
        "dataset": config.dataset,
        "method": config.method,
        "alpha": config.alpha if config.method != "baseline" else None,
        "arch": config.arch,
        "width": config.width,
        "preset": config.preset,
        "epochs_trained": meta["epoch"],
        "checkpoint": loaded.which,
        "checkpoint_epoch": loaded.epoch,
        "train_seed": config.seed,
        "train_git_commit": meta.get("git_commit", "unknown"),
        "weights_sha256": loaded.weights_sha256,
    }


def as_json(obj: Any) -> Any:
    """`obj` as it reads back from JSON (tuples become lists), for comparing with stored files."""
    return json.loads(json.dumps(obj))


def results_dir(root: str | Path, run: str, weights: str) -> Path:
    """The folder of `run`'s results measured on `weights` ("last", "best", or "external" for a model trained
    elsewhere): both of a run's checkpoints are legitimate, so neither may replace the other's results."""
    if weights not in (*WEIGHT_FILES, EXTERNAL):
        raise ValueError(f"unknown weights {weights!r}")
    folder = Path(root) / run
    return folder / BEST_RESULTS_FOLDER if weights == "best" else folder


def result_file(folder: str | Path, evaluation: str) -> Path:
    """The result file of `evaluation` in a results folder (see `results_dir`)."""
    return Path(folder) / f"{evaluation}.json"


def result_path(root: str | Path, run: str, evaluation: str, weights: str = "last") -> Path:
    return result_file(results_dir(root, run, weights), evaluation)


def write_result(path: Path, evaluation: str, model: dict[str, Any], settings: dict[str, Any],
                 payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {
        "format": RESULT_FORMAT,
        "evaluation": evaluation,
        "model": model,
        "settings": settings,
        **payload,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **provenance(),
    })


def _stored_result(path: Path) -> dict[str, Any] | None:
    """A readable mm-robust result at `path`, else None (a corrupt file holds no result to keep)."""
    if not path.is_file():
        return None
    try:
        stored = read_json(path)
    except UsageError:
        return None
    if not isinstance(stored, dict) or stored.get("format") != RESULT_FORMAT or \
            not isinstance(stored.get("model"), dict) or not isinstance(stored.get("settings"), dict):
        return None
    return stored


def finished_result(path: Path, model: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result if it exists and was made for this exact model (weights digest included) and settings."""
    stored = _stored_result(path)
    if stored is None or stored["model"] != as_json(model) or stored["settings"] != as_json(settings):
        return None
    return stored


def replaced_result(path: Path, model: dict[str, Any], settings: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """(the stored result, why) when `path` holds one that a rewrite for `model` and `settings` must replace
    rather than extend: other weights, another model record or other settings. None when there is nothing
    there, it is unreadable, or it can be extended."""
    stored = _stored_result(path)
    if stored is None or (stored["model"] == as_json(model) and stored["settings"] == as_json(settings)):
        return None
    if stored["model"].get("weights_sha256") != model.get("weights_sha256"):
        return stored, "other weights"
    differing = differing_settings(stored["settings"], settings)
    return stored, f"other settings ({'; '.join(differing)})" if differing else "another record of this model"


def dropped_note(path: Path, why: str, dropped: list[str], shown: int = 8) -> str:
    """One line saying that replacing `path` drops the entries `dropped` it held (a partial rerun keeps them
    only when they were measured on the same weights with the same settings)."""
    names = ", ".join(dropped[:shown]) + (f" and {len(dropped) - shown} more" if len(dropped) > shown else "")
    return (f"{str(path)!r} was made with {why}: it is replaced, dropping the {len(dropped)} stored set(s) this "
            f"run does not redo: {names}")


def differing_settings(stored: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """'name: stored -> new' for every setting that differs, in the order of `settings`."""
    new = as_json(settings)
    names = list(new) + [k for k in stored if k not in new]
    return [f"{name} {_short(stored.get(name))} -> {_short(new.get(name))}"
            for name in names if stored.get(name) != new.get(name)]


def _short(value: Any, limit: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class ConflictHint:
    """How the command that refuses a result target lets its user out, in options it really has."""

    out_option: str = "--out"  # the command's option for the results folder
    replace: str = "pass --force to replace it (the stored result is discarded)"

    @property
    def elsewhere(self) -> str:
        return f"choose another {self.out_option}"


OWN_COMMAND = ConflictHint()  # attack, deform, calibrate: they have --force and --out


def check_result_targets(planned: Iterable[tuple], force: bool, hint: ConflictHint = OWN_COMMAND) -> None:
    """Refuse, before any evaluation starts, to write where a result would be lost or cannot go.

    `planned` holds (path, model summary, settings) for every result file a command may write, and may add
    the `SettingsSource` of those settings, so a refusal names the options that match the stored result.
    A finished result for the same weights made with other settings is kept unless `force`:
    silently replacing it would change a table without anyone asking. A result for other weights
    is stale and is replaced. A folder where a result file should be, or a file where its run
    folder should be, is refused as well.
    """
    planned = list(planned)
    for path, *_ in planned:
        check_target_path(path, hint)
    # Every folder a result goes to, before any work: an unwritable one (read-only, chattr +i) would otherwise
    # end the run in a traceback once the first result is measured.
    for folder in dict.fromkeys(Path(path).parent for path, *_ in planned):
        check_writable_dir(folder, hint.out_option)
    if force:
        return
    kept = []  # (path, stored, model summary, settings, SettingsSource or None) of every result these weights made
    for path, model, settings, *source in planned:
        stored = _stored_result(path)
        if stored is not None and stored["model"].get("weights_sha256") == model["weights_sha256"]:
            kept.append((path, stored, model, settings, source[0] if source else None))
    conflicts = [entry for entry in kept if differing_settings(entry[1]["settings"], entry[3])]
    if conflicts:
        # One set of options for all of them: the command named must not trade one refusal for another.
        command = matching_command([(stored["settings"], source) for _, stored, _, _, source in kept]) \
            if all(entry[4] is not None for entry in kept) else None
        path, stored, model, settings, _ = conflicts[0]
        check_same_settings(path, stored["model"], stored["settings"], model, settings, hint, command)


def check_target_path(path: Path, hint: ConflictHint = OWN_COMMAND) -> None:
    """A result file can go to `path`: no folder stands there, and no file where its run folder goes."""
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise UsageError(f"{str(path.parent)!r} is a file where a run's results folder should be; move it away "
                         f"or {hint.elsewhere}")
    if path.exists() and not path.is_file():
        raise UsageError(f"{str(path)!r} is a folder where a result file should be; move it away or {hint.elsewhere}")


def check_same_settings(path: Path, stored_model: dict[str, Any], stored_settings: dict[str, Any],
                        model: dict[str, Any], settings: dict[str, Any], hint: ConflictHint = OWN_COMMAND,
                        matching: str | None = None) -> None:
    """Refuse to replace what `path` holds for these same weights when it was made with other settings, naming
    the `matching` command (`matching.matching_command`) when there is one, or what it holds for the run's
    other checkpoint (a best result written before best results had their folder)."""
    check_same_checkpoint(path, stored_model, model, hint)
    if stored_model.get("weights_sha256") != model["weights_sha256"]:
        return  # other weights: stale, replaced
    differing = differing_settings(stored_settings, settings)
    if differing:
        matches = "" if matching is None else f"; {matching} matches the stored settings"
        raise UsageError(f"{str(path)!r} holds a finished result for these weights made with other settings "
                         f"({'; '.join(differing)}); {hint.replace}, or {hint.elsewhere}{matches}")


def check_same_checkpoint(path: Path, stored_model: dict[str, Any], model: dict[str, Any],
                          hint: ConflictHint = OWN_COMMAND) -> None:
    """Refuse to replace a result of a run's last weights with one of its best, or the other way round:
    both are legitimate results of the run, and only the folder they belong in tells them apart."""
    stored, new = stored_model.get("checkpoint"), model.get("checkpoint")
    if stored == new or stored not in WEIGHT_FILES or new not in WEIGHT_FILES:
        return  # a model trained elsewhere has one set of weights
    home = path.parent / BEST_RESULTS_FOLDER if stored == "best" else path.parent.parent
    raise UsageError(f"{str(path)!r} holds a result measured on the {stored} weights, whose results belong in "
                     f"{str(home)!r}; move it there, or {hint.replace}, or {hint.elsewhere}")


# ---- per-example outcomes -------------------------------------------------------------------------
# Result files keep, per evaluation, which test examples were classified correctly, so the report
# can pair two models on the same examples and bootstrap over examples. A boolean mask is stored as
# base64 of numpy's packbits (10,000 examples -> 1,668 characters), under
# ``"per_example": {"example_range": [start, stop], "correct": {label: {"n": N, "bits": "..."}}}``;
# `example_range` is the half-open range of test-set indices the masks cover, in order.


def eps_label(eps: float) -> str:
    """The per-example mask label of an FGSM eps in a result file, e.g. 'eps=0.03'."""
    return f"eps={eps:g}"


def fgsm_accuracy(result: dict[str, Any], eps: float) -> float | None:
    """The accuracy (%) an FGSM result file reports at `eps`: from its `--eps` values, else from its sweep."""
    sweep = result.get("sweep") or {}
    for eps_list, accuracy_list in ((result.get("eps", []), result.get("accuracy", [])),
                                    (sweep.get("eps", []), sweep.get("accuracy", []))):
        for e, a in zip(eps_list, accuracy_list):
            if math.isclose(e, eps, rel_tol=0, abs_tol=1e-9):
                return float(a)
    return None


def attacked_eps(result: dict[str, Any]) -> float | None:
    """The first `--eps` an FGSM result file was made for: the eps its tables report and its masks hold."""
    eps = result.get("eps")
    return float(eps[0]) if isinstance(eps, list) and eps else None


def encode_mask(mask) -> dict[str, Any]:
    """A 1-D boolean mask (tensor or array) as a small JSON object."""
    values = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask, dtype=bool).reshape(-1)
    return {"n": int(values.size), "bits": base64.b64encode(np.packbits(values).tobytes()).decode("ascii")}


def decode_mask(encoded: dict[str, Any]):
    """The boolean numpy array stored by `encode_mask`; a malformed object is a ValueError."""
    try:
        n = int(encoded["n"])
        packed = np.frombuffer(base64.b64decode(encoded["bits"], validate=True), dtype=np.uint8)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"malformed per-example mask: {exc}") from None
    if n < 0 or packed.size != (n + 7) // 8:
        raise ValueError(f"malformed per-example mask: {packed.size} bytes cannot hold {n} flags")
    return np.unpackbits(packed, count=n).astype(bool)
