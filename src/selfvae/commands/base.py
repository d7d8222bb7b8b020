"""What every ``selfvae`` command is made of: the :class:`Command` record (its name, options, check and body side
by side), option types that carry their limits, the options many commands share, and the helpers their bodies
share (the device, the model, the output folder, the input images)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selfvae.errors import SelfVAEError
from selfvae.runs import layout

Args = argparse.Namespace


@dataclass(frozen=True)
class Command:
    """One sub-command. ``options`` adds its own options to its parser; ``check`` refuses bad input before any work
    (after parsing, before ``run``); ``run`` is its body. ``model``: it takes ``RUN_DIR`` and ``--data-dir``;
    ``common``: ``--device`` and ``--seed``."""

    name: str
    help: str
    options: Callable[[argparse.ArgumentParser], None]
    run: Callable[[Args], None]
    check: Callable[[Args], None] | None = None
    model: bool = True
    common: bool = True
    description: str | None = None


# ----- option types: a value out of range stops at parsing, naming the option (argparse's "argument -n: ...") --
def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer option's type: at least ``low`` (and at most ``high``, where a larger value would exhaust
    memory)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: must be at least {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value}: at most {high} here")
        return value

    return parse


def positive(text: str) -> float:
    """A real option above 0 (NaN refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value}: must be above 0")
    return value


def samples_or_auto(text: str) -> int | str:
    """``--iw-samples``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        return whole(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer or 'auto'") from None


THREADS = whole(1)


# ----- options many commands share --------------------------------------------------------------------------
def model_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("run_dir", metavar="RUN_DIR",
                   help="a run directory written by `selfvae train`, a folder written by `selfvae export` or the "
                        "name of a pretrained model (`selfvae pretrained`)")
    s.add_argument("--data-dir", help="where the model's data set lives, when the command reads it (default: the "
                                      "folder the model was trained from)")


def common_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--seed", type=int, default=0, help="random seed for sampling")


def picture_options(s: argparse.ArgumentParser, default: str) -> None:
    """``-o`` and the drawing options of a command that writes one picture (``default``: its file name)."""
    s.add_argument("-o", "--output", help=f"PNG file to write (default: {default} in the run's folder, or in "
                                           "./NAME for a shipped model; never over an existing file)")
    s.add_argument("--force", action="store_true", help="write over an existing -o file")
    s.set_defaults(picture_name=default)
    s.add_argument("--scale", type=whole(1), default=2, help="integer zoom of the written grid")
    s.add_argument("--temperature", type=positive, default=1.0)
    s.add_argument("--decode", default="sample", choices=["sample", "mean", "mode"],
                   help="draw pixels from p(x|...) or take its mean/mode")


def check_picture(args: Args) -> None:
    """A picture command's output: ``-o`` (an existing file only with ``--force``) with an extension PIL writes,
    not a folder; else its default name in the model's output folder, numbered past pictures already there."""
    from PIL import Image

    args.output = str(picture_path(args))
    if Path(args.output).suffix.lower() not in Image.registered_extensions():
        raise SelfVAEError(f"-o {args.output}: give the picture a file extension such as .png")
    if Path(args.output).is_dir():
        raise SelfVAEError(f"-o {args.output}: is a folder; give a file name such as {args.output}/out.png")


def picture_path(args: Args) -> Path:
    """Where a picture command writes: ``-o`` (an existing file only with ``--force``), else its default name in
    the model's output folder (:func:`out_dir`), numbered ``_2``, ``_3``, ... past pictures already there."""
    if args.output is not None:
        out = Path(args.output)
        if out.is_file() and not args.force:
            raise SelfVAEError(f"-o {out}: exists; pass --force to write over it, or choose another name")
        return out
    folder = out_dir(args)  # created by the writer (selfvae.viz), once there is a picture to write
    out, k = folder / args.picture_name, 2
    while out.exists():
        out, k = folder / f"{Path(args.picture_name).stem}_{k}{Path(args.picture_name).suffix}", k + 1
    return out


def check_file_output(out: Path) -> None:
    """A file a command will write: not a folder, and in a folder that exists (checked before any work)."""
    if out.is_dir():
        raise SelfVAEError(f"-o {out}: is a folder; give a file name such as {out / 'images.svae'}")
    if not out.parent.is_dir():
        raise SelfVAEError(f"-o {out}: no such folder {out.parent}; create it first or choose another path")


# ----- what command bodies share ----------------------------------------------------------------------------
def device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise SelfVAEError("--device cuda: no CUDA device is available here")
    return name


def load_with_training(args: Args, where: str | torch.device = "cpu") -> tuple[Any, Any, dict]:
    """Config, model (a :class:`selfvae.api.Model`: the commands call its methods, as a Python user does) and the
    training its weights had, of ``args.run_dir`` (a run, an exported model or a pretrained name), with the data set
    read from ``--data-dir`` where the command has it."""
    from selfvae.api import Model
    from selfvae.runs.loading import load_trained

    return load_trained(args.run_dir, where, data_dir=getattr(args, "data_dir", None), cls=Model)


def load(args: Args, where: str | torch.device = "cpu") -> tuple[Any, Any]:
    """Config and model of :func:`load_with_training`."""
    cfg, model, _ = load_with_training(args, where)
    return cfg, model


def out_dir(args: Args) -> Path:
    """Default folder for a command's outputs: the run's own, ``./NAME`` for a shipped model."""
    return layout.output_dir(layout.resolve(args.run_dir))


def split_batches(cfg, split: str, limit: int | None, batch_size: int):  # noqa: ANN001, ANN201
    """Batches of ``split`` (``test``: the validation split where the data set has no test split, as training's
    final evaluation used), their count, the data set and the split's name."""
    from selfvae.data import batches_of, load_split, load_test_split

    ds, split = load_test_split(cfg) if split == "test" else (load_split(cfg, split), split)
    n = len(ds) if limit is None else min(limit, len(ds))
    return batches_of(ds, batch_size, limit), n, ds, split


def print_table(metrics: dict[str, Any]) -> None:
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
