"""The config a ``selfvae train`` call runs, and the folder it runs in: one rule for what wins.

Precedence, lowest first:

1. the base: a resumed run's own config (``--resume``), else a config file (``--config``), else the starting
   model's config (``--init`` without ``--preset``), else the preset (``--preset``, default
   :data:`DEFAULT_PRESET`);
2. ``--init`` (the weights a new run starts from);
3. ``--data-dir`` (and, for a new run from a preset, the data set it holds when that is not the preset's);
4. the flags (``--image-size``, ``--batch-size``, ``--amp``, ``--threads``, ...);
5. ``--set section.field=value``, in order;
6. the length: ``--steps`` or ``--epochs`` (the latter counted in the training split's images).

:func:`train_config` applies 2-6 to a base config without touching it; :func:`base_config` reads the base.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfvae.config import Config, apply_overrides, check_config
from selfvae.errors import SelfVAEError
from selfvae.runs import layout

DEFAULT_PRESET = "fashion-mnist-vae"  # what `selfvae train` trains when told nothing


@dataclass(frozen=True)
class TrainRequest:
    """What a ``selfvae train`` call asks for (its options, parsed)."""

    preset: str | None = None
    config_file: str | None = None
    init: str | None = None
    resume: bool = False
    out: str | None = None
    data_dir: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # flags as dotted fields: {"train.amp": "bf16"}
    sets: tuple[str, ...] = ()
    steps: int | None = None
    epochs: int | None = None


def default_out(req: TrainRequest) -> Path:
    """``--out``, else ``runs/PRESET`` (``runs/NAME-tuned`` for a run started from a model NAME)."""
    if req.out:
        return Path(req.out)
    return Path("runs") / (req.preset or (f"{Path(req.init).name}-tuned" if req.init else DEFAULT_PRESET))


def base_config(req: TrainRequest) -> Config:
    """Step 1 of the precedence: the config the request starts from (read from its file or preset)."""
    from selfvae.presets import get_preset

    if req.resume:
        out = default_out(req)
        try:
            return Config.load(out / layout.CONFIG)
        except SelfVAEError as e:
            raise SelfVAEError(f"{out}: cannot resume this run directory: {e}") from e
    if req.config_file:
        return Config.load(Path(req.config_file))
    if req.init and not req.preset:  # the starting model's own config (its data set, its training)
        return Config.load(layout.resolve(req.init) / layout.CONFIG)
    return get_preset(req.preset or DEFAULT_PRESET)


def train_config(
    req: TrainRequest,
    base: Config,
    infer_dataset: Callable[[str, str], str],
    count_train: Callable[[Config], int],
) -> tuple[Config, Path, list[str]]:
    """Steps 2-6 of the precedence on a copy of ``base``: the config to train, its run folder and notes for
    the user. ``infer_dataset(name, data_dir)`` names the data set a folder holds; ``count_train(cfg)`` counts
    its training images (for ``--epochs``). ``base`` is left unchanged."""
    if req.init and req.resume:
        raise SelfVAEError("--init starts a new run; --resume continues one (its weights are in its checkpoint)")
    if req.steps is not None and req.epochs is not None:
        raise SelfVAEError("give --steps or --epochs, not both")
    cfg, out, notes = copy.deepcopy(base), default_out(req), []
    if req.init:
        cfg.train.init = req.init
    if req.data_dir:
        cfg.data.root = req.data_dir
        if not (req.resume or req.config_file or any(s.startswith("data.name=") for s in req.sets)):
            name = infer_dataset(cfg.data.name, req.data_dir)
            if name != cfg.data.name:
                if not req.out:  # a run on the user's images is not named after the preset's data set alone
                    out = out.with_name(f"{out.name}-{Path(req.data_dir).expanduser().resolve().stem}")
                notes.append(f"{req.data_dir} holds no {cfg.data.name} files; training on it as data.name={name} "
                             f"into {out}")
                cfg.data.name, cfg.data.augment = name, None
    for key, value in req.settings.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    apply_overrides(cfg, list(req.sets))
    check_config(cfg)  # before --epochs counts the training images with these settings
    if req.epochs is not None:
        cfg.train.steps = req.epochs * max(1, count_train(cfg) // cfg.train.batch_size)
    elif req.steps is not None:
        cfg.train.steps = req.steps
    return check_config(cfg), out, notes
