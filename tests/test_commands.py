"""The command registry (selfvae.commands): every command declared in its modules is in the parser, once, and
every numeric option's limit is its argparse type (refused at parsing, naming the option)."""

from __future__ import annotations

import argparse

import pytest

from selfvae.cli import build_parser
from selfvae.commands import COMMANDS, codec, evaluate, pictures, train


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_every_declared_command_is_registered_once_and_parsed():
    declared = [c.name for m in (train, evaluate, pictures, codec) for c in m.COMMANDS]
    assert sorted(declared) == sorted(COMMANDS) and len(declared) == len(set(declared))
    assert list(_subparsers(build_parser())) == list(COMMANDS)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_has_its_body_and_a_help_line(name):
    sub = _subparsers(build_parser())[name]
    assert sub.get_default("fn") is COMMANDS[name].run and COMMANDS[name].help
    ints = [a for a in sub._actions if a.type is int and a.option_strings]
    # a count or size with no lower limit would reach the library as 0 or negative: only --seed and --factor
    # (checked against the model's factors) and --channels (choices) are plain integers
    assert {a.dest for a in ints} <= {"seed", "factor", "channels"}, [a.dest for a in ints]


def test_a_limit_is_checked_at_parsing_and_names_the_option(capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["compress", "m", "x.png", "-o", "f", "--search-steps", "-1"])
    assert e.value.code == 2 and "argument --search-steps: -1: must be at least 0" in capsys.readouterr().err
    assert build_parser().parse_args(["compress", "m", "x.png", "-o", "f", "--search-steps", "0"]).search_steps == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--port", "70000"])
    assert "argument --port: 70000: at most 65535 here" in capsys.readouterr().err
