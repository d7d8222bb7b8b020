"""The ``selfvae`` command line: one sub-command per use, each a thin layer over the library, declared in
:mod:`selfvae.commands` (options, checks and body side by side); this module builds the parser from that
registry and runs the chosen command.

User mistakes end with one line ``selfvae: error: ...`` (or argparse's ``selfvae COMMAND: error: ...`` for an
option out of its range) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from selfvae.commands import COMMANDS
from selfvae.commands.base import common_options, model_options
from selfvae.errors import SelfVAEError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfvae", description="Self-supervised variational auto-encoders.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS.values():
        s = sub.add_parser(c.name, help=c.help, description=c.description or c.help)
        s.set_defaults(fn=c.run, check=c.check)
        if c.model:
            model_options(s)
        if c.common:
            common_options(s)
        c.options(s)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.check:
            args.check(args)
        args.fn(args)
    except SelfVAEError as e:
        print(f"selfvae: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("selfvae: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `selfvae pretrained | head -1`: the reader left; stop quietly (Python's docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
