"""Explicit configuration: dataclasses for data, model and training, grouped in :class:`Config`.

Presets (:mod:`selfvae.presets`) are named ``Config`` instances; a run directory stores its config as
JSON (``config.json``) so evaluation and sampling rebuild exactly the trained model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfvae.errors import SelfVAEError
from selfvae.nn.nets import NetSpec

CONFIG_VERSION = 1


@dataclass
class DataConfig:
    """Which data set, where, and how it is split and augmented."""

    name: str = "fashion-mnist"
    root: str | None = None
    augment: bool | None = None  # None: the data set's default (paper protocol)
    image_size: int | None = None  # resize to this square side (None: the data set's own size)
    resize: str = "crop"  # how non-square images become square first: "crop" (centre) or "pad" (black bars)
    channels: int | None = None  # 1 (grey) or 3 (RGB); None: the model's image_shape[0]
    val_fraction: float = 0.15
    split_seed: int = 0
    on_bad_file: str = "error"  # unreadable image files in folders: "error" or "skip" (warn and drop)


@dataclass
class ModelConfig:
    """A K-level selfVAE. ``transforms`` is the chain ``d`` from x downwards, e.g. ``"downscale,downscale"``;
    the empty chain gives the plain VAE (K = 0). Each network role has its own size."""

    image_shape: tuple[int, int, int] = (1, 32, 32)
    transforms: str = ""
    latent_shape: tuple[int, int, int] = (16, 8, 8)
    prior: str = "realnvp"
    prior_kwargs: dict[str, Any] = field(default_factory=dict)
    n_mix: int = 10
    q_u: NetSpec = NetSpec()
    p_y: NetSpec = NetSpec()
    q_z: NetSpec = NetSpec()
    p_z: NetSpec = NetSpec()
    p_x: NetSpec = NetSpec()


@dataclass
class TrainConfig:
    """Optimisation (thesis ch. 6: AdaMax, lr 2e-3, per-step exponential decay floored at 1e-4)."""

    batch_size: int = 64
    steps: int = 2000
    lr: float = 2e-3
    lr_decay: float = 0.999999
    lr_min: float = 1e-4
    grad_clip: float | None = 200.0
    grad_skip: float | None = None  # skip steps whose gradient norm exceeds this (VDVAE)
    max_consecutive_skips: int = 50
    ema_decay: float | None = None
    eval_every: int = 500
    eval_limit: int | None = 2000  # validation images per evaluation during training (None: all)
    log_every: int = 25
    checkpoint_every: int = 250
    sample_every: int = 1000
    final_iw_samples: int = 128
    final_eval_limit: int | None = None
    seed: int = 0
    init_batch: int = 256  # images for the data-dependent initialisation
    max_minutes: float | None = None  # stop (as if done) after this much training time in this process
    accum_steps: int = 1  # micro-batches per process per step (gradient accumulation; same global batch)
    num_threads: int | None = None  # torch.set_num_threads for the run (None: torch's default)
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume on CPU)
    amp: str | None = None  # "bf16": the networks run under autocast in bfloat16; likelihoods stay float32
    channels_last: bool = False  # convolutions in channels-last memory format
    compile: bool = False  # torch.compile every network
    workers: int = 0  # data-loading worker processes (0: load batches in the main process)
    flush_denormal: bool = True  # CPU: treat subnormal floats as 0 (avoids slow steps; no effect on the bound)


@dataclass
class Config:
    """Everything a run needs; ``description`` is shown by ``selfvae presets``."""

    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["version"] = CONFIG_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        d = dict(d)
        version = d.pop("version", None)
        if version != CONFIG_VERSION:
            raise SelfVAEError(
                f"config version {version!r} is not supported (this selfvae reads version {CONFIG_VERSION})"
            )
        try:
            m = dict(d["model"])
            for role in ("q_u", "p_y", "q_z", "p_z", "p_x"):
                m[role] = NetSpec(**m[role])
            m["image_shape"] = tuple(m["image_shape"])
            m["latent_shape"] = tuple(m["latent_shape"])
            return cls(
                name=d["name"],
                description=d.get("description", ""),
                data=DataConfig(**d["data"]),
                model=ModelConfig(**m),
                train=TrainConfig(**d["train"]),
            )
        except (KeyError, TypeError) as e:
            raise SelfVAEError(f"config is malformed or from an incompatible version: {e}") from e

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Config:
        if not path.is_file():
            raise SelfVAEError(f"{path}: no such config file (is this a selfvae run directory?)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise SelfVAEError(f"{path}: not valid JSON ({e})") from e
