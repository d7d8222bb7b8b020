"""Building and loading models: from a config, or from a run directory's config and checkpoint.

Evaluation, the operations, the report and the demo load models from here, without importing training.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from selfvae.checkpoint import load_latest
from selfvae.config import Config
from selfvae.data import own_shape
from selfvae.errors import SelfVAEError
from selfvae.models.pretrained import is_exported, read_weights, resolve
from selfvae.models.selfvae import SelfVAE


def build_model(cfg: Config, device: str | torch.device = "cpu") -> SelfVAE:
    """A freshly initialised model of ``cfg.model`` on ``device``.

    A config without ``model.data_shape`` gets it from its data set here (MNIST: 28x28 inside the 32x32
    frame), so bits/dim count the data's own dimensions and a run's saved config records them.
    """
    if cfg.model.data_shape is None:
        cfg.model.data_shape = own_shape(cfg.data.name, cfg.model.image_shape, cfg.data.image_size)
    return SelfVAE(cfg.model).to(device)


def frame_ratio(cfg: Config) -> float:
    """Dimensions of the model's frame per dimension of the data's own images (1024 / 784 for MNIST)."""
    data_shape = cfg.model.data_shape or own_shape(cfg.data.name, cfg.model.image_shape, cfg.data.image_size)
    return math.prod(cfg.model.image_shape) / math.prod(data_shape)


def load_run(
    run: str | Path, device: str | torch.device = "cpu", which: str = "best", data_dir: str | None = None
) -> tuple[Config, SelfVAE]:
    """Config and trained model in eval mode, from a run directory (its EMA weights when the run kept them
    and they validated better than the raw ones),
    an exported model folder or the name of a shipped pretrained model (:mod:`selfvae.models.pretrained`).

    ``which`` is a run's checkpoint stem (``best`` or ``last``); a run without it falls back to ``last.pt``.
    ``data_dir`` (given) replaces the folder the config reads its data set from.
    On the CPU the model is put in channels-last memory format, which oneDNN runs faster.
    """
    run_dir = resolve(run)
    cfg = Config.load(run_dir / "config.json")
    if data_dir:
        cfg.data.root = data_dir
    model = build_model(cfg, device)
    if is_exported(run_dir):
        weights = read_weights(run_dir, device)
    else:
        path = run_dir / f"{which}.pt"
        if not path.exists():
            path = run_dir / "last.pt"
        state = load_latest(path, map_location=device)
        use_ema = state.get("ema") and state.get("eval_weights", "ema") == "ema"  # the better on validation
        weights = state["ema"] if use_ema else state["model"]
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a damaged file would otherwise give nan or astronomic bits/dim without a word
        raise SelfVAEError(f"{run_dir}: the weights hold NaN or infinite values ({len(bad)} tensor(s), e.g. "
                           f"{bad[0]}): the file is damaged or the run diverged; use another checkpoint or export")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise SelfVAEError(f"{run_dir}: the weights do not fit the model its config.json describes "
                           f"({str(e).splitlines()[0]})") from e
    model.eval()
    if torch.device(device).type == "cpu":  # 1.4-2x faster convolutions on CPU (oneDNN's NHWC kernels)
        model.to(memory_format=torch.channels_last)
    model.config = cfg  # the whole run config (data set, training), beside model.cfg (the architecture)
    return cfg, model
