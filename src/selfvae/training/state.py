"""What a training run carries from step to step (:class:`TrainState`), and how a run starts or resumes.

A checkpoint is ``TrainState.state_dict()``: model, EMA, optimiser, loss scale, the sampler's place, the
counters and clock, and every RNG state, so a resumed run continues exactly where it stopped (bit-exact on the
CPU with ``train.deterministic`` and a fixed ``train.num_threads``).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from selfvae import runtime
from selfvae.config import Config
from selfvae.data import ImageDataset
from selfvae.errors import SelfVAEError
from selfvae.models.build import build_model
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.layers import data_dependent_init, weight_norm_layers
from selfvae.runs import layout
from selfvae.runs.checkpoint import load_latest, rng_state, set_rng_state
from selfvae.runs.loading import load_trained
from selfvae.runs.log import logged_seconds, truncate_log
from selfvae.training import distributed as D
from selfvae.training.batches import EpochSampler, gather


@dataclass
class TrainState:
    """The model, its EMA, the optimiser and loss scale, the sampler and the run's counters."""

    cfg: Config
    model: SelfVAE
    ema: SelfVAE | None
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    sampler: EpochSampler
    step: int = 0
    best: float = math.inf  # the best validation bits/dim so far
    eval_weights: str = "model"  # which weights ("model" or "ema") the last validation found better
    skips_in_row: int = 0
    skips_total: int = 0
    train_seconds: float = 0.0  # training wall clock over all sessions of the run (time-to-quality curves)
    cpu_seconds: float = 0.0  # the CPU time of those steps (all threads; 0 in checkpoints from before it was kept)
    sampler_state: dict[str, int] = field(default_factory=dict)  # the sampler after the last consumed batch

    @classmethod
    def fresh(cls, cfg: Config, n_train: int, device: str) -> TrainState:
        """A new run's state: a freshly built model (not yet initialised), Adamax, the sampler at its start."""
        t = cfg.train
        model = build_model(cfg, device)
        sampler = EpochSampler(n_train, t.batch_size, t.seed)
        return cls(cfg, model, None, torch.optim.Adamax(trainable(model, t.trainable), lr=t.lr),
                   runtime.grad_scaler(device, t.amp), sampler, eval_weights="ema" if t.ema_decay else "model",
                   sampler_state=sampler.state_dict())

    def start_ema(self) -> None:
        """The EMA weights start as a copy of the weights (runs that keep an EMA)."""
        if self.cfg.train.ema_decay:
            self.ema = copy.deepcopy(self.model)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "sampler": self.sampler_state,
            "rng": rng_state(),
            "best": self.best,
            "best_dims": self.model.x_dims,
            "eval_weights": self.eval_weights,
            "skips_total": self.skips_total,
            "train_seconds": self.train_seconds,
            "cpu_seconds": self.cpu_seconds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's state (and the RNGs); checkpoints of older versions are read as well."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.sampler_state = self.sampler.state_dict()
        self.step, self.best = state["step"], state.get("best", math.inf)
        if "best_dims" not in state:  # saved when bits/dim were per dimension of the padded frame
            self.best *= self.model.padded_dims / self.model.x_dims
        self.train_seconds = state.get("train_seconds")
        self.cpu_seconds = state.get("cpu_seconds", 0.0)
        self.eval_weights = state.get("eval_weights", self.eval_weights)
        self.skips_total = state.get("skips_total", 0)
        self.start_ema()  # a run saved without EMA weights starts them from its weights, as a new run does
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])


def trainable(model: SelfVAE, prefixes: str | None) -> list[torch.nn.Parameter]:
    """The parameters a run trains: all (``prefixes`` None), or those whose names start with one of the
    comma-separated ``prefixes`` (``train.trainable``); the others stop needing gradients, so no step computes
    them (a context added to a trained model learns alone, at a fraction of a whole step's cost)."""
    if prefixes is None:
        return list(model.parameters())
    wanted = tuple(p.strip() for p in prefixes.split(",") if p.strip())
    chosen = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(wanted))
        if p.requires_grad:
            chosen.append(p)
    if not chosen:
        raise SelfVAEError(f"train.trainable={prefixes!r}: no parameter of the model starts with it (the model's "
                           f"parts: {', '.join(sorted({n.split('.')[0] for n, _ in model.named_parameters()}))})")
    return chosen


# what train.init may add to a model (selfvae.nn.context), and the weights each adds
CONTEXT_KEYS = {"context_width": "x_context.", "y_context_width": "y_context."}
# every part train.init may add: the contexts and the residual encoder, each starting at zero (the same model)
ADDABLE_KEYS = {**CONTEXT_KEYS, "q_u_residual": "q_u_residual."}
WEIGHTLESS_KEYS = ("consistent",)  # what train.init may change: a renormalised likelihood has the same weights


def init_from(model: SelfVAE, cfg: Config, source: str, device: str) -> dict[str, Any]:
    """Load into ``model`` the evaluation weights of ``source`` (run directory, exported folder or pretrained
    name), whose architecture must be ``cfg.model``'s; returns where they came from and the training they had
    (steps, wall and CPU seconds), which the new run keeps (:data:`~selfvae.runs.layout.INIT`) so that its card
    and curves can count the whole clock."""
    folder = layout.resolve(source)
    src_cfg, src, training = load_trained(folder, device)
    ours, theirs = asdict(cfg.model), asdict(src_cfg.model)  # nested net specs as dicts, compared as JSON
    added = [k for k in ADDABLE_KEYS if not theirs.get(k) and ours[k]]  # parts this run adds
    new_context = any(k in CONTEXT_KEYS for k in added) and not any(theirs.get(k) for k in CONTEXT_KEYS)
    free = set(added) | ({"context_layers"} if new_context else set())
    differ = [k for k in ours if json.dumps(ours[k], default=str) != json.dumps(theirs.get(k), default=str)
              and k not in free and k not in WEIGHTLESS_KEYS]
    if differ:
        raise SelfVAEError(f"train.init={source}: its model differs from this run's in "
                           + ", ".join(f"model.{k} ({theirs.get(k)!r} there, {ours[k]!r} here)" for k in differ))
    # a model without a sub-pixel context (or a residual encoder) starts one with it: its last layer starts at zero,
    # so it is the same model
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=not added)
    new = tuple(ADDABLE_KEYS[k] for k in added)
    if unexpected or any(not k.startswith(new) for k in missing):
        raise SelfVAEError(f"train.init={source}: its weights do not fit this model (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    return {"init": str(source), "folder": str(folder), **training}


def start(state: TrainState, run_dir: Path, train_ds: ImageDataset, device: str, env: D.DistEnv) -> None:
    """Begin a new run: its config saved, its weights from ``train.init`` or the data-dependent
    initialisation on a batch of training images (rank 0's values on every rank), the EMA started."""
    cfg, t = state.cfg, state.cfg.train
    if env.is_main:
        cfg.save(run_dir / layout.CONFIG)
    if t.init:
        provenance = init_from(state.model, cfg, t.init, device)
        if env.is_main:
            (run_dir / layout.INIT).write_text(json.dumps(provenance, indent=1) + "\n")
    if not t.init or not all(bool(m.initialized) for m in weight_norm_layers(state.model)):  # or parts init added
        init_x = gather(train_ds, torch.randperm(len(train_ds))[: t.init_batch]).to(device)
        data_dependent_init(state.model, lambda: state.model.terms(init_x))  # every rank sets its flags ...
        D.broadcast_module(state.model, env)  # ... and rank 0's values win (only uninitialised layers change)
    state.start_ema()


def resume(state: TrainState, run_dir: Path, device: str, env: D.DistEnv) -> None:
    """Continue a run from its last checkpoint (the previous one if that is damaged); the log loses the
    records written after it (a killed run logs ahead of its checkpoint)."""
    state.load_state_dict(load_latest(layout.checkpoint(run_dir, layout.LAST), map_location=device))
    log = run_dir / layout.LOG
    if env.is_main:
        truncate_log(log, state.step)
    if state.train_seconds is None:  # a checkpoint from before the clock was kept
        state.train_seconds = logged_seconds(log, state.step)


def minutes_spent(run_dir: Path, clock: str = "wall") -> float:
    """The training minutes a run's last checkpoint records on ``clock`` ("wall" or "cpu"): what its
    ``train.max_minutes`` counts, so that a caller can resume it for so many minutes more."""
    state = load_latest(layout.checkpoint(run_dir, layout.LAST))
    seconds = state.get("cpu_seconds", 0.0) if clock == "cpu" else state.get("train_seconds")
    if seconds is None:  # a checkpoint from before the clock was kept
        seconds = logged_seconds(run_dir / layout.LOG, state["step"])
    return seconds / 60


