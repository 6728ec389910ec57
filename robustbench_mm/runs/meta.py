"""A run folder's meta.json: what was trained, with which settings, how far, and how it went.

One typed `RunMeta` builds it (the trainer and the authors' importer), and `read_meta` validates it
on every read, so no reader meets a missing key or a wrong type."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustbench_mm.common.runtime import provenance
from robustbench_mm.common.storage import atomic_write_json, read_json
from robustbench_mm.config import MIXUP_METHODS, TrainConfig
from robustbench_mm.errors import UsageError

META_FILE = "meta.json"
META_FORMAT = "mm-robust-checkpoint/1"
REQUIRED_META = {"format": str, "run": str, "config": dict, "epoch": int, "complete": bool, "checkpoints": dict,
                 "history": list}


@dataclass(frozen=True)
class RunMeta:
    """Everything meta.json says about a run; `to_json` is the file's content.

    `checkpoints`: per kind ("last", "best") its file, epoch, test metrics and how it was selected;
    `history`: one entry per evaluated epoch. `imported` says where weights trained elsewhere came from.
    """

    config: TrainConfig
    epoch: int
    checkpoints: dict[str, dict[str, Any]]
    history: list[dict[str, Any]] = field(default_factory=list)
    device: str | None = None
    imported: dict[str, Any] | None = None
    method_details: dict[str, Any] = field(default_factory=dict)  # e.g. adversarial_training, input_encoding

    @property
    def complete(self) -> bool:
        return self.epoch >= self.config.epochs

    def to_json(self) -> dict[str, Any]:
        c = self.config
        return {
            "format": META_FORMAT, "run": c.run_name, "dataset": c.dataset, "method": c.method,
            "alpha": c.alpha if c.method in MIXUP_METHODS else None, "arch": c.arch, "num_classes": c.num_classes,
            "seed": c.seed, "preset": c.preset, "epoch": self.epoch, "epochs": c.epochs, "complete": self.complete,
            "checkpoints": self.checkpoints, "history": self.history, "config": c.to_dict(), **self.method_details,
            **({"device": self.device} if self.device is not None else {}),
            **({"imported": self.imported} if self.imported is not None else {}),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **provenance(),
        }

    def write(self, run_dir: Path) -> None:
        write_meta(run_dir, self.to_json())


def read_meta(run_dir: Path) -> dict[str, Any]:
    """meta.json with every required key present and of the right type."""
    path = Path(run_dir) / META_FILE
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise UsageError(f"invalid {str(path)!r}: expected a JSON object")
    for key, kind in REQUIRED_META.items():
        if key not in meta:
            raise UsageError(f"invalid {str(path)!r}: missing key {key!r}")
        if not isinstance(meta[key], kind) or (kind is int and isinstance(meta[key], bool)):
            raise UsageError(f"invalid {str(path)!r}: {key!r} must be {kind.__name__}, got {type(meta[key]).__name__}")
    if meta["format"] != META_FORMAT:
        raise UsageError(f"invalid {str(path)!r}: format {meta['format']!r}, expected {META_FORMAT!r}")
    for kind, entry in meta["checkpoints"].items():
        if not isinstance(entry, dict) or not _is_int(entry.get("epoch")):
            raise UsageError(f"invalid {str(path)!r}: checkpoints.{kind} must be an object with an integer 'epoch'")
        _check_metrics(path, f"checkpoints.{kind}", entry)
    for index, entry in enumerate(meta["history"]):
        if not isinstance(entry, dict) or not _is_int(entry.get("epoch")):
            raise UsageError(f"invalid {str(path)!r}: history[{index}] must be an object with an integer 'epoch'")
        _check_metrics(path, f"history[{index}]", entry)
    try:
        meta["config"] = TrainConfig.from_dict(meta["config"]).to_dict()
    except UsageError as exc:
        raise UsageError(f"invalid {str(path)!r}: {exc}") from None
    except TypeError as exc:
        raise UsageError(f"invalid {str(path)!r}: bad config ({exc})") from None
    return meta


METRIC_KEYS = ("test_accuracy", "test_nll", "train_loss", "train_accuracy", "lr", "seconds", "images_per_second")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metrics(path: Path, where: str, entry: dict[str, Any]) -> None:
    """The numbers the report and the tables read from an entry are numbers (JSON has no NaN)."""
    for key in METRIC_KEYS:
        value = entry.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UsageError(f"invalid {str(path)!r}: {where}.{key} must be a number, got {value!r}")
    fgsm = entry.get("fgsm")
    if fgsm is not None and not (isinstance(fgsm, dict) and isinstance(fgsm.get("accuracy"), dict)):
        raise UsageError(f"invalid {str(path)!r}: {where}.fgsm must be an object with an 'accuracy' object")


def write_meta(run_dir: Path, meta: dict[str, Any]) -> None:
    atomic_write_json(Path(run_dir) / META_FILE, meta)
