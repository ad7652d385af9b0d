"""The command line documents itself: every option of every command has help text, and ``--version`` works."""

from __future__ import annotations

import argparse

import pytest

import gibench
from gibench.cli import _parser, main


def _all_parsers(parser: argparse.ArgumentParser, path: str = "gibench"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{path} {name}")


def test_every_option_of_every_command_has_help_text():
    undocumented = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, parser in _all_parsers(_parser())
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and not action.help
    ]
    assert undocumented == []
    # the walk really reaches the nested commands
    assert {path for path, _ in _all_parsers(_parser())} >= {"gibench run", "gibench leaderboard build"}


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"gibench {gibench.__version__}"
