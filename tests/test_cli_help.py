"""`mm-robust <command> --help` documents every option, with its default where it has one."""

import argparse

import pytest

from robustbench_mm.cli import build_parser

SUBCOMMANDS = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def documented(action: argparse.Action) -> bool:
    """An option is documented when it has help, and that help names the default of an option that has one."""
    if not action.help:
        return False
    has_default = not action.required and action.default not in (None, False, argparse.SUPPRESS)
    return not has_default or "default" in action.help


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_option_is_documented_with_its_default(command):
    undocumented = [a.option_strings[0] for a in SUBCOMMANDS[command]._actions
                    if a.option_strings and not isinstance(a, argparse._HelpAction) and not documented(a)]
    assert not undocumented, f"mm-robust {command} --help: {undocumented}"

