"""Exceptions that the CLI turns into one line on stderr and an exit code, never a traceback."""

import dataclasses
import math


class MMRobustError(Exception):
    """A failure with a message meant for the user."""

    exit_code = 1


class UsageError(MMRobustError):
    """A user mistake: a bad value, a missing file, a run that already exists.

    The message names the bad value and what would be valid, on one line.
    """

    exit_code = 2


def check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise UsageError(f"unknown {name} {value!r}; valid: {', '.join(map(str, valid))}")


def check_finite(name: str, value) -> None:
    """NaN and infinities compare false or true against every bound, so they are refused by name first."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")


def check_positive(name: str, value, allow_zero: bool = False) -> None:
    check_finite(name, value)
    bad = value < 0 if allow_zero else value <= 0
    if bad:
        bound = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"{name} must be {bound}, got {value}")


MAX_SEED = 2**32 - 1  # numpy's legacy seeding, used by seed_everything, takes no more


def check_seed(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"{name} must be a whole number from 0 to {MAX_SEED}, got {value!r}")
    check_positive(name, value, allow_zero=True)
    if value > MAX_SEED:
        raise UsageError(f"{name} must be at most {MAX_SEED} (2**32 - 1), got {value}")


def check_whole(name: str, value, minimum: int) -> None:
    """A whole number (not a bool or float) of at least `minimum`."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"{name} must be a whole number of at least {minimum}, got {value!r}")


def check_folder_name(name: str, value: str) -> None:
    """One plain folder name, so a run can never land outside its root (no /, .., absolute or hidden path)."""
    if not isinstance(value, str) or value in ("", ".", "..") or value.startswith(".") or \
            any(c in value for c in "/\\\0") or value != value.strip():
        raise UsageError(f"{name} must be a plain folder name (no /, \\, .., leading dot or surrounding spaces), "
                         f"got {value!r}")


def check_fields_finite(config) -> None:
    """Every float setting of `config` (alone or in a tuple) is finite: the net under each config's own checks."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            check_finite("--" + f.name.replace("_", "-"), item)
