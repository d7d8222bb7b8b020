"""Loading a trained model: from a run directory's config and checkpoint, an exported folder or a shipped name.

Evaluation, the operations, the codec, the report and the demo load models from here, without importing
training.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import torch

from selfvae.config import Config
from selfvae.data import infer_dataset
from selfvae.errors import SelfVAEError
from selfvae.models.build import build_model
from selfvae.models.selfvae import SelfVAE
from selfvae.runs import layout
from selfvae.runs.checkpoint import load_latest
from selfvae.runs.stored import shipped_digest, training_done
from selfvae.runs.weights import read_weights


def load_config(run: str, data_dir: str | None = None) -> Config:
    """The config of a run, exported folder or shipped name; ``data_dir`` (given) in place of its data root.

    An ``.npz`` file given as ``data_dir`` is read as one (:func:`selfvae.data.infer_dataset`), whatever data set
    the model was trained on: ``selfvae eval cifar10-vae-small --data-dir cifar10-official-part.npz`` measures the
    model on those images instead of failing in the model's own reader."""
    cfg = Config.load(layout.resolve(run) / layout.CONFIG)
    if not data_dir:
        return cfg
    cfg = cfg.with_data_root(data_dir)
    path = Path(data_dir).expanduser()
    if path.is_file() and path.suffix.lower() == ".npz":
        name = infer_dataset(cfg.data.name, data_dir)
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name=name))
    return cfg


def eval_weights(folder, device: str | torch.device = "cpu", which: str = layout.BEST) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """The evaluation weights of a model's folder: an exported model's, else a checkpoint's (its EMA weights
    when the run kept them and they validated better than the raw ones). Non-finite weights are refused."""
    return _weights_and_training(folder, device, which)[0]


def _weights_and_training(folder: Path, device: str | torch.device, which: str) -> tuple[dict[str, torch.Tensor], dict]:
    """:func:`eval_weights` and the training they had (:func:`load_trained`), from one read of the file."""
    if layout.is_exported(folder):
        weights = read_weights(folder, device, expected=shipped_digest(folder))
        training = training_done(folder)
    else:
        state = _checkpoint(folder, which, device)
        use_ema = state.get("ema") and state.get("eval_weights", "ema") == "ema"  # the better on validation
        weights = state["ema"] if use_ema else state["model"]
        training = with_source({"steps": state["step"], "seconds": state.get("train_seconds"),
                                "cpu_seconds": state.get("cpu_seconds")}, folder)
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a damaged file would otherwise give nan or astronomic bits/dim without a word
        raise SelfVAEError(f"{folder}: the weights hold NaN or infinite values ({len(bad)} tensor(s), e.g. "
                           f"{bad[0]}): the file is damaged or the run diverged; use another checkpoint or export")
    return weights, training


def with_source(training: dict, folder: Path) -> dict:
    """A run's own training plus that of the weights it started from (``train.init``: its
    :data:`~selfvae.runs.layout.INIT`, which holds their whole training), so that a chain of runs, each started
    from the last one's export, counts every step and second; None where either is not recorded."""
    init = folder / layout.INIT
    if not init.is_file():
        return training
    source = json.loads(init.read_text())
    return {k: None if v is None or source.get(k) is None else v + source[k] for k, v in training.items()}


def _checkpoint(folder: Path, which: str, device: str | torch.device) -> dict:
    """The checkpoint a run's model is read from; a damaged ``best`` (and its previous copy) falls back to the
    ``last`` one, with a warning."""
    path = layout.checkpoint_to_load(folder, which)
    try:
        return load_latest(path, map_location=device)
    except SelfVAEError as e:
        last = layout.checkpoint(folder, layout.LAST)
        if path == last or not last.exists():
            raise
        warnings.warn(f"{e}; reading the model from {last} instead", stacklevel=3)
        return load_latest(last, map_location=device)


def load_run(
    run, device: str | torch.device = "cpu", which: str = layout.BEST, data_dir: str | None = None  # noqa: ANN001
) -> tuple[Config, SelfVAE]:
    """Config and trained model in eval mode, from a run directory, an exported model folder or the name of a
    shipped pretrained model (:func:`selfvae.runs.layout.resolve`).

    ``which`` is a run's checkpoint stem (``best`` or ``last``); a run without it falls back to ``last``.
    ``data_dir`` (given) replaces the folder the config reads its data set from, in the returned config.
    On the CPU the model is put in channels-last memory format, which oneDNN runs faster.
    """
    cfg, model, _ = load_trained(run, device, which, data_dir)
    return cfg, model


def load_trained(
    run, device: str | torch.device = "cpu", which: str = layout.BEST, data_dir: str | None = None,  # noqa: ANN001
    cls: type[SelfVAE] = SelfVAE,
) -> tuple[Config, SelfVAE, dict]:
    """:func:`load_run`, and the training the model's weights had, ``{"steps", "seconds", "cpu_seconds"}`` (wall
    clock and CPU time; None where not recorded): the checkpoint's (the one the weights came from, read once),
    with the training of the weights a run started from (``train.init``), or an exported model's card facts.
    ``cls``: the model's class (:func:`~selfvae.models.build.build_model`)."""
    folder = layout.resolve(run)
    cfg = load_config(folder, data_dir)
    model = build_model(cfg, device, cls)
    weights, training = _weights_and_training(folder, device, which)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise SelfVAEError(f"{folder}: the weights do not fit the model its {layout.CONFIG} describes "
                           f"({str(e).splitlines()[0]})") from e
    model.eval()
    if torch.device(device).type == "cpu":  # faster convolutions on CPU (oneDNN's NHWC kernels)
        model.to(memory_format=torch.channels_last)
    model.config = cfg  # the whole run config (data set, training), beside model.cfg (the architecture)
    return cfg, model, training
