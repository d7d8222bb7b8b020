"""One optimisation step, VDVAE-style: the negative ELBO (KL warm-up and free bits as configured), gradient
clip, skip of non-finite or huge updates, EMA; and the learning-rate schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from selfvae import runtime
from selfvae.config import Config
from selfvae.models.selfvae import SelfVAE, Terms
from selfvae.training import distributed as D


def learning_rate(cfg: Config, step: int, elapsed: float = 0.0) -> float:
    """The learning rate of ``step``: ``lr_schedule`` "exp" decays per step and is floored at ``lr_min``
    (thesis ch. 6); "cosine" falls from ``lr`` to ``lr_min`` at ``steps`` (stepping ``steps`` up on resume
    stretches the rest of the curve); "cosine-time" falls the same way over the run's ``max_minutes`` of
    training (all sessions; ``elapsed``: the fraction of them spent) taking the place of ``step / steps``, so runs
    compared at equal clock all end annealed whatever their speed. All start with ``lr_warmup_steps`` of linear
    warm-up."""
    t = cfg.train  # a config check_config passed: the schedule is one of CHOICES, "cosine-time" has a budget
    if t.lr_schedule.startswith("cosine"):
        frac = min(elapsed, 1.0) if t.lr_schedule == "cosine-time" else min(step, t.steps) / max(t.steps, 1)
        lr = t.lr_min + (t.lr - t.lr_min) * 0.5 * (1.0 + math.cos(math.pi * frac))
    else:
        lr = max(t.lr * t.lr_decay**step, t.lr_min)
    if step < t.lr_warmup_steps:
        lr *= (step + 1) / t.lr_warmup_steps
    return lr


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    skipped: bool
    terms: dict[str, float]


def _as_micro(x: Tensor | list[tuple[int, Tensor]], accum: int) -> list[tuple[int, Tensor]]:
    if isinstance(x, Tensor):
        return D.micro_batches(x, D.DistEnv(), accum)
    return x


def train_step(
    model: SelfVAE,
    opt: torch.optim.Optimizer,
    x: Tensor | list[tuple[int, Tensor]],
    cfg: Config,
    ema: SelfVAE | None,
    step: int = 0,
    env: D.DistEnv | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> StepResult:
    """One optimisation step on the negative ELBO in bits/dim; skips non-finite or too-large updates.

    With ``scaler`` (``--amp fp16``) the loss is scaled before the backward pass and the gradients unscaled
    before averaging and clipping; a step whose gradient overflowed is skipped like any non-finite one, and the
    scale is updated after every step (halved after an overflow).

    ``x`` is a uint8 batch, or this rank's ``(micro-batch number, batch)`` pairs of the global batch
    (:func:`selfvae.training.distributed.micro_batches`). Each micro-batch's gradient is accumulated,
    averaged over ranks, then clipped to ``grad_clip`` (None: no clipping); a step whose loss or gradient
    norm is not finite, or whose norm exceeds ``grad_skip``, leaves weights, optimiser and EMA untouched.
    """
    t = cfg.train
    env = env or D.DistEnv()
    micro = _as_micro(x, t.accum_steps)
    device = micro[0][1].device
    model.train()
    runtime.mark_step(t)
    opt.zero_grad(set_to_none=True)
    loss_sum, info_sum = 0.0, {}
    for j, xb in micro:
        with D.seeded(D.micro_seed(t.seed, step, j), device), runtime.autocast(device, t.amp):
            terms = model.terms(xb)
            loss = model.bpd(terms.nelbo).mean()
            target = model.bpd(objective(terms, t, step)).mean() if _shaped(t) else loss
        scaled = target / len(micro)
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_sum += float(loss.detach()) / len(micro)
        info = {"kl_u": float(terms.kl_u.detach().float().mean())}
        for i, v in enumerate(terms.re.detach().float().mean(0).tolist()):
            info[f"re_{i}"] = v
        for i, v in enumerate(terms.kl_z.detach().float().mean(0).tolist()):
            info[f"kl_z{i + 1}"] = v
        for k, v in info.items():
            info_sum[k] = info_sum.get(k, 0.0) + v / len(micro)
    params = [p for p in model.parameters() if p.grad is not None]
    if scaler is not None:
        scaler.unscale_(opt)
    D.average_gradients(params, env)
    loss_f = D.all_mean(loss_sum, env, device)
    gnorm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip if t.grad_clip else float("inf"))
    gnorm_f = float(gnorm)
    skipped = (
        not math.isfinite(loss_f)
        or not math.isfinite(gnorm_f)
        or (t.grad_skip is not None and gnorm_f > t.grad_skip)
    )
    if not skipped:
        if scaler is not None:
            scaler.step(opt)  # its gradients are finite (checked above): this is opt.step()
        else:
            opt.step()
        if ema is not None:
            _ema_update(ema, model, ema_decay(t.ema_decay, step))
    if scaler is not None:
        scaler.update()
    return StepResult(loss_f, gnorm_f, skipped, info_sum)


def _shaped(t) -> bool:  # noqa: ANN001 - TrainConfig
    return bool(t.kl_warmup_steps) or t.free_bits > 0


def objective(terms: Terms, t, step: int) -> Tensor:  # noqa: ANN001 - TrainConfig
    """What the optimiser minimises, nats per image: the negative ELBO with its KL terms weighted by the
    warm-up factor ``min(1, step / kl_warmup_steps)`` and the KL of each ``z_k`` (``free_bits_per`` "level")
    or of each of its channels ("channel", Kingma et al. 2016's groups of units) floored at ``free_bits`` (on
    its batch mean, so the gradient that would shrink a KL already below the floor is zero). The bound
    that is logged and evaluated is always the plain negative ELBO."""
    beta = min(1.0, step / t.kl_warmup_steps) if t.kl_warmup_steps else 1.0
    kl_z = terms.kl_z
    if t.free_bits > 0 and kl_z.shape[1]:
        groups = [kl_z] if t.free_bits_per == "level" else terms.kl_z_channels  # [B, groups] each
        kl_z = torch.cat([_floored(g, t.free_bits) for g in groups], 1)
    return terms.re.sum(1) + beta * (terms.kl_u + kl_z.sum(1))


def _floored(kl: Tensor, floor: float) -> Tensor:
    """``kl`` ``[B, G]`` per image, each group's batch mean replaced by itself floored at ``floor``."""
    mean = kl.mean(0)
    return kl - mean + mean.clamp(min=floor)


def ema_decay(decay: float, step: int) -> float:
    """The EMA's decay at ``step``: ``min(decay, (1 + step) / (10 + step))``.

    Warm-up as in TensorFlow's ``ExponentialMovingAverage(num_updates=...)``: with a constant 0.999 the average
    still holds ``0.999**step`` of the initial random weights (8% at step 2500), which kept mnist-vae's EMA at
    1.55 bits/dim where its weights had 1.22; early on, the warm-up makes the average follow the weights.
    """
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def _ema_update(ema: SelfVAE, model: SelfVAE, decay: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm, 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)
