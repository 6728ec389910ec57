"""Figures, sections and the machine they were measured on; the JSON and Markdown result files."""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torchvision

from robustbench_mm.common.runtime import git_commit
from robustbench_mm.common.storage import atomic_write_json, atomic_write_text

RESULT_FORMAT = "mm-robust-bench/1"
GOAL_TESTS = {"<=": lambda value, target: value <= target, ">=": lambda value, target: value >= target}


def figure(key: str, label: str, value: float, unit: str, goal: tuple[str, float] | None = None,
           spread: dict[str, float] | None = None) -> dict[str, Any]:
    """One measured number; `goal` is (operator, target), `spread` the per-round min/max of a ratio."""
    entry: dict[str, Any] = {"key": key, "label": label, "value": value, "unit": unit}
    if goal is not None:
        op, target = goal
        entry["goal"] = f"{op} {target:g}"
        entry["met"] = GOAL_TESTS[op](value, target)
    if spread is not None:
        entry.update(min=spread["min"], max=spread["max"], rounds=spread["rounds"])
    return entry


def ratio_figure(key: str, label: str, stats: dict[str, float], goal: tuple[str, float] | None = None):
    return figure(key, label, stats["value"], "ratio", goal, stats)


def section(title: str, settings: dict[str, Any], figures: list[dict[str, Any]], notes: list[str] | None = None,
            seconds: dict[str, list[float]] | None = None) -> dict[str, Any]:
    return {"title": title, "measured": now(), "git_commit": git_commit(), "settings": settings,
            "figures": figures, "notes": notes or [], "seconds": seconds or {}}


def skipped(title: str, reason: str) -> dict[str, Any]:
    return {"title": title, "measured": now(), "skipped": reason}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(device: torch.device) -> dict[str, Any]:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    cores = os.cpu_count() or 1
    tag = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") if gpu else f"cpu-{cores}core"
    return {
        "tag": tag,
        "device": device.type,
        "device_name": gpu or cpu_model(),
        "cpu": cpu_model(),
        "cpu_cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda or "none",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "date": now(),
        # Other work on a shared machine slows some rounds; the interleaving absorbs it, this records it.
        "load_average_1min": os.getloadavg()[0],
    }


def merge_results(path: Path, machine_info: dict[str, Any], profile: dict[str, Any],
                  sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sections measured now replace their earlier versions; the others are kept with their own dates."""
    kept = {}
    if path.is_file():
        try:
            earlier = json.loads(path.read_text())
        except json.JSONDecodeError:
            earlier = {}
        if earlier.get("format") == RESULT_FORMAT:
            kept = earlier.get("sections", {})
    return {"format": RESULT_FORMAT, "machine": machine_info, "profile": profile, "sections": {**kept, **sections}}


def write_results(out_dir: Path, results: dict[str, Any]) -> tuple[Path, Path]:
    tag = results["machine"]["tag"]
    json_path, md_path = out_dir / f"{tag}.json", out_dir / f"{tag}.md"
    atomic_write_json(json_path, results)
    atomic_write_text(md_path, markdown(results))
    return json_path, md_path


def format_value(entry: dict[str, Any]) -> str:
    value, unit = entry["value"], entry["unit"]
    if unit == "ratio":
        return f"{value:.3f}"
    if unit == "%":
        return f"{value:.2f} %"
    if unit in ("s", "ms"):
        return f"{value:.3g} {unit}"
    if unit == "images/s":
        return f"{value:,.0f} images/s"
    return f"{value:,.4g} {unit}"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# Benchmarks on {m['tag']}",
        "",
        f"Device: {m['device_name']} ({m['device']}); CPU: {m['cpu']}, {m['cpu_cores']} cores, "
        f"{m['torch_threads']} torch threads; torch {m['torch']}, torchvision {m['torchvision']}, "
        f"CUDA {m['cuda']}, Python {m['python']}; 1-minute load average {m['load_average_1min']:.1f} at the start.",
        f"Last run {m['date']} at commit {m['git_commit']}, profile `{results['profile']['name']}`. "
        "Ratios are medians of per-round ratios from one interleaved run (variants alternate within "
        "each round); the range column is the per-round minimum and maximum.",
        "",
    ]
    for sec in results["sections"].values():
        lines.append(f"## {sec['title']}")
        lines.append("")
        if "skipped" in sec:
            lines += [f"Not measured: {sec['skipped']}", ""]
            continue
        settings = ", ".join(f"{k}={v}" for k, v in sec["settings"].items())
        took = f" in {sec['wall_seconds']:.0f} s" if "wall_seconds" in sec else ""
        lines += [f"Measured {sec['measured']}{took} at {sec['git_commit']}; {settings}.", "",
                  "| figure | value | goal | range over rounds |", "|---|---|---|---|"]
        for entry in sec["figures"]:
            goal = entry.get("goal", "")
            if goal:
                goal += " (met)" if entry["met"] else " (NOT met)"
            spread = f"{entry['min']:.3f} – {entry['max']:.3f} ({entry['rounds']} rounds)" if "min" in entry else ""
            lines.append(f"| {entry['label']} | {format_value(entry)} | {goal} | {spread} |")
        lines.append("")
        lines += [f"- {note}" for note in sec["notes"]]
        if sec["notes"]:
            lines.append("")
    return "\n".join(lines)
