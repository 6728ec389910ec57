"""The options that reproduce a stored result's settings, so a refusal can name the command that matches it.

A refusal that only lists the differing settings ("aa_budget "smoke" -> null") leaves the user to work
out which options made them. Each command describes how its settings come from its config
(`SettingsSource`); `matching_command` maps the stored settings back onto config fields, checks that a
config built from the defaults and those options alone gives exactly the stored settings, and only then
names them. When a setting cannot be mapped back, nothing is named rather than a command that would not
match.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from robustbench_mm.errors import UsageError


def _no_adjustment(config: Any, stored: dict[str, Any]) -> Any:
    return config


@dataclass(frozen=True)
class SettingsSource:
    """How one result's settings come from a command's config.

    `settings_of(config)` gives the settings the command stores for this result; `fields` maps a stored
    setting to the config field it comes from (settings derived from others are absent); `options` maps a
    config field to the command's option; `adjust` sets fields no single setting names (attack: AutoAttack
    on when its settings are stored)."""

    command: str
    config: Any
    settings_of: Callable[[Any], dict[str, Any]]
    fields: Mapping[str, str]
    options: Mapping[str, str]
    adjust: Callable[[Any, dict[str, Any]], Any] = _no_adjustment


def same_named_options(fields) -> dict[str, str]:
    """field -> option for commands whose options are their fields' names (checkpoint is --weights everywhere)."""
    return {field: "--weights" if field == "checkpoint" else "--" + field.replace("_", "-") for field in fields}


def _as_json(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _field_value(current: Any, stored: Any) -> Any:
    """A stored setting as its config field holds it: lists as tuples, one value into a tuple field."""
    if isinstance(stored, list):
        return tuple(stored)
    if isinstance(current, tuple) and not isinstance(stored, tuple):
        return (stored,)
    return stored


def _value_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def option_text(option: str, value: Any) -> str | None:
    """`value` given with `option`, or None when no option value says it (None: the default of 'all')."""
    if value is True:
        return option
    if value is False:
        return f"--no-{option[2:]}"
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return f"{option} {','.join(_value_text(v) for v in value)}"
    return f"{option} {_value_text(value)}"


def _candidate(source: SettingsSource, config: Any, stored: dict[str, Any]) -> Any:
    """`config` with every field a differing stored setting comes from set to the stored value."""
    current = _as_json(source.settings_of(config))
    changes = {}
    for name, value in stored.items():
        if current.get(name) != value and name in source.fields:
            field = source.fields[name]
            changes[field] = _field_value(getattr(config, field), value)
    return source.adjust(dataclasses.replace(config, **changes), stored)


def matching_command(results: list[tuple[dict[str, Any], SettingsSource]]) -> str | None:
    """'`mm-robust <command> <options>`' that gives every stored result in `results` (stored settings, how they
    come from the options) exactly its settings; None when no such options can be said."""
    if not results:
        return None
    first = results[0][1]
    try:
        candidate = first.config
        for stored, source in results:
            candidate = _candidate(source, candidate, stored)
        default = type(first.config)()
        # Only what an option can set comes from the candidate: the command shown is checked as it will run.
        shown = dataclasses.replace(default, **{f: getattr(candidate, f) for f in first.options})
        if any(_as_json(source.settings_of(shown)) != stored for stored, source in results):
            return None
    except (UsageError, TypeError, ValueError, KeyError, StopIteration):
        return None
    options = []
    for field, option in first.options.items():
        value = getattr(shown, field)
        if value != getattr(default, field):
            text = option_text(option, value)
            if text is None:
                return None
            options.append(text)
    return "`" + " ".join([f"mm-robust {first.command}", *options]) + "`"
