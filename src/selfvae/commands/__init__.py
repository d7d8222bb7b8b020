"""The ``selfvae`` sub-commands, one module per group, each command a :class:`~selfvae.commands.base.Command`
that declares its options (with their limits, as argparse types), its checks and its body side by side.

:data:`COMMANDS` is the registry :mod:`selfvae.cli` builds its parser from, in the order ``selfvae --help`` lists
them. A new command is a ``Command`` in one of these modules (or a new module added here)."""

from __future__ import annotations

from selfvae.commands import codec, evaluate, pictures, train
from selfvae.commands.base import Command

_ORDER = ("presets", "train", "eval", "sample", "superres", "reconstruct", "interpolate", "tradeoff", "fid", "report",
          "compress", "decompress", "export", "pretrained", "compare", "demo")
_ALL = {c.name: c for module in (train, evaluate, pictures, codec) for c in module.COMMANDS}
COMMANDS: dict[str, Command] = {name: _ALL[name] for name in _ORDER}  # tests/test_commands.py: none left out

__all__ = ["COMMANDS", "Command"]
