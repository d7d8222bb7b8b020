"""Building a model from a config (loading a trained one is :mod:`selfvae.runs.loading`)."""

from __future__ import annotations

import dataclasses
import math

import torch

from selfvae.config import Config, ModelConfig
from selfvae.data import own_shape
from selfvae.models.selfvae import SelfVAE


def model_config(cfg: Config) -> ModelConfig:
    """``cfg.model`` with ``data_shape`` filled in from the data set (MNIST: 28x28 inside the 32x32 frame), so
    bits/dim count the data's own dimensions; ``cfg`` is left as it is."""
    if cfg.model.data_shape is not None:
        return cfg.model
    return dataclasses.replace(cfg.model, data_shape=own_shape(cfg.data.name, cfg.model.image_shape,
                                                                cfg.data.image_size))


def read_inputs(cfg: Config, paths: list[str], resize: bool = True) -> torch.Tensor:
    """Image files as the model's ``x`` ``[B, C, H, W]`` uint8, by its data loader's rule (its frame or its data's
    own size; other sizes cropped or padded square by ``cfg.data.resize`` and resized where ``resize``, else
    refused): what the CLI, the demo and a Python user give the model alike."""
    from selfvae.data.images import read_model_inputs

    return read_model_inputs(paths, tuple(cfg.model.image_shape), tuple(model_config(cfg).data_shape),
                             cfg.data.resize if resize else None)


def resolved(cfg: Config) -> Config:
    """A copy of ``cfg`` whose model records its ``data_shape`` (what a run saves, so that its bits/dim
    are counted the same way whatever the data set's code does later)."""
    return dataclasses.replace(cfg, model=model_config(cfg))


def build_model(cfg: Config, device: str | torch.device = "cpu", cls: type[SelfVAE] = SelfVAE) -> SelfVAE:
    """A freshly initialised model of ``cfg.model`` on ``device`` (see :func:`model_config`); ``cls`` a subclass
    that adds methods, not parameters (:class:`selfvae.api.Model`)."""
    return cls(model_config(cfg)).to(device)


def frame_ratio(cfg: Config) -> float:
    """Dimensions of the model's frame per dimension of the data's own images (1024 / 784 for MNIST)."""
    return math.prod(cfg.model.image_shape) / math.prod(model_config(cfg).data_shape)
