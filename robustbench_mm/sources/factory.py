"""`package.module:factory` -> a freshly built nn.Module, with every failure a one-line UsageError."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

from torch import nn

from robustbench_mm.errors import UsageError


def split_spec(spec: str) -> tuple[str, str]:
    """'package.module:name' -> ('package.module', 'name'), or a UsageError."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise UsageError(f"--model {spec!r} must look like package.module:factory")
    return module_name, attribute


def import_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable named by 'package.module:name' (dots after the colon reach attributes)."""
    module_name, attribute = split_spec(spec)
    # A console script does not put the working directory on sys.path; `python -m` does. Let a
    # model defined next to where the user runs the command import either way.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is a bad --model
        raise UsageError(f"--model {spec!r}: cannot import {module_name!r} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UsageError(f"--model {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(f"--model {spec!r} is not callable (it is a {type(target).__name__}); "
                         "name a function or class that returns an nn.Module")
    return target


def build_from_factory(spec: str) -> nn.Module:
    factory = import_factory(spec)
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"--model {spec!r} failed when called without arguments ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model
