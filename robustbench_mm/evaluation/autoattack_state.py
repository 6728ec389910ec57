"""AutoAttack's resumable per-example state: one type that saves, loads and merges itself.

As fra31/auto-attack's `EvaluationState`: after every chunk the attack saves which examples are
done and which are still robust after each stage, tied to the model and the exact settings, so a
killed run resumes where it stopped and the shards of one evaluation merge into the flags of one
run. A finished result file (``autoattack-<eps>.json``) holds the same flags for every example.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustbench_mm.attacks.autoattack import STAGES, AutoAttackFlags
from robustbench_mm.common.storage import atomic_write_json, read_json
from robustbench_mm.errors import MMRobustError
from robustbench_mm.runs.results import as_json, decode_mask, encode_mask


@dataclass(frozen=True)
class AutoAttackState:
    """The flags of one AutoAttack evaluation of `model` with `settings`, over a range of test examples."""

    model: dict[str, Any]
    settings: dict[str, Any]
    device: str  # where the attack ran; a merge of shards records it as a single run would
    flags: AutoAttackFlags

    def save(self, path: Path) -> None:
        flags = self.flags
        masks = {"clean": flags.clean, **flags.after, "done": flags.done}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {
            "model": self.model, "settings": self.settings, "example_range": [flags.start, flags.stop],
            "device": self.device, "seconds": flags.seconds, "example_steps": flags.example_steps,
            "flags": {name: encode_mask(mask) for name, mask in masks.items()}})

    @classmethod
    def load(cls, path: Path, model: dict[str, Any], settings: dict[str, Any]) -> AutoAttackState | None:
        """The state saved at `path` for exactly this model and these settings; None otherwise (start afresh)."""
        if not path.is_file():
            return None
        try:
            saved = read_json(path)
            if saved["model"] != as_json(model) or saved["settings"] != as_json(settings):
                return None
            masks = {name: torch.from_numpy(decode_mask(mask)) for name, mask in saved["flags"].items()}
            start, stop = (int(i) for i in saved["example_range"])
            flags = AutoAttackFlags(start, stop, masks["clean"], {s: masks[s] for s in STAGES}, masks["done"],
                                    {s: float(saved["seconds"].get(s, 0.0)) for s in STAGES},
                                    {s: int(n) for s, n in saved.get("example_steps", {}).items()})
            return cls(model, settings, str(saved.get("device", "cpu")), flags)
        except (MMRobustError, KeyError, TypeError, ValueError):
            return None

    @staticmethod
    def merge(parts: list[AutoAttackState]) -> AutoAttackState:
        """Shards in index order -> the state of one run over all their examples (wall times and passes summed).

        The shards must have run on one device: on different ones their flags are not those of one run."""
        devices = sorted({part.device for part in parts})
        if len(devices) > 1:
            raise MMRobustError(f"AutoAttack shards ran on different devices ({', '.join(devices)}); their flags "
                                "are not those of one run")
        flags = [part.flags for part in parts]
        counted = [s for s in STAGES if any(s in f.example_steps for f in flags)]
        merged = AutoAttackFlags(flags[0].start, flags[-1].stop, torch.cat([f.clean for f in flags]),
                                 {s: torch.cat([f.after[s] for f in flags]) for s in STAGES},
                                 torch.cat([f.done for f in flags]),
                                 {s: sum(f.seconds.get(s, 0.0) for f in flags) for s in STAGES},
                                 {s: sum(f.example_steps.get(s, 0) for f in flags) for s in counted})
        return AutoAttackState(parts[0].model, parts[0].settings, devices[0], merged)


def flags_of_result(result: dict[str, Any], n_examples: int) -> AutoAttackFlags:
    """The flags a finished ``autoattack-<eps>.json`` stores for all `n_examples` it attacked."""
    masks = {name: torch.from_numpy(decode_mask(mask)) for name, mask in result["per_example"]["correct"].items()}
    return AutoAttackFlags(0, n_examples, masks["clean"], {s: masks[s] for s in STAGES},
                           torch.ones(n_examples, dtype=torch.bool),
                           {stage["stage"]: stage["seconds"] for stage in result["stages"]},
                           {stage["stage"]: stage["example_steps"] for stage in result["stages"]
                            if "example_steps" in stage})
