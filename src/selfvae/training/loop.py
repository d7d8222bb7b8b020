"""Training: a small VDVAE-style step (grad clip, skip of non-finite or huge updates, EMA) and the run loop.

The loop keeps ``last.pt`` (every ``checkpoint_every`` steps and on SIGINT/SIGTERM) and ``best.pt`` (best
validation bound), logs to TensorBoard and ``log.jsonl``, shows a progress bar with rate, ETA and live
bits/dim, and ends with the test bits/dim (ELBO and IW bound) and sample grids in ``RUN_DIR/final``.
A resumed run restores model, EMA, optimiser, step, data order and every RNG state, so on CPU it continues
exactly where it stopped: each micro-batch of each step draws its augmentation and posterior noise from a
generator seeded by ``(seed, step, micro-batch)`` (see :mod:`selfvae.training.distributed`), so neither a
restart nor the number of processes changes the random numbers (bit-exact on CPU with
``train.deterministic`` and a fixed ``train.num_threads``).

Data: with ``train.workers = 0`` batches are gathered in the main process; with ``workers > 0`` a
``DataLoader`` over keys ``(step, micro-batches, sampler state after the batch)`` gathers them in worker
processes (pinned memory on CUDA). Keys come from the :class:`EpochSampler` in order and the checkpoint
stores the sampler state of the last *consumed* key, so prefetching never breaks resume.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from selfvae.allocator import retain_freed_memory
from selfvae.checkpoint import load_latest, rng_state, save_checkpoint, set_rng_state
from selfvae.config import Config
from selfvae.data import ImageDataset, batches_of, load_split
from selfvae.errors import NoSplitError, SelfVAEError
from selfvae.evaluation.bounds import EVAL_BATCH, evaluate
from selfvae.models.loading import build_model, load_run
from selfvae.models.selfvae import SelfVAE, Terms
from selfvae.nn.layers import data_dependent_init
from selfvae.training import distributed as D
from selfvae.viz import plot_curves, read_log, save_grid, with_train_seconds


class EpochSampler:
    """Shuffled mini-batches of indices, reshuffled each epoch from ``seed + epoch`` (resumable)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise SelfVAEError(f"training set has {n} images, fewer than the batch size {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.pos = 0, 0
        self._perm: Tensor | None = None

    def _order(self) -> Tensor:
        if self._perm is None:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            self._perm = torch.randperm(self.n, generator=g)
        return self._perm

    def next(self) -> Tensor:
        if self.pos + self.batch_size > self.n:
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        idx = self._order()[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict[str, int]) -> None:
        self.epoch, self.pos, self._perm = s["epoch"], s["pos"], None


def gather(ds: ImageDataset, idx: Tensor) -> Tensor:
    """A uint8 batch ``[B, C, H, W]`` of dataset items (augmentation applied per item)."""
    return torch.stack([ds[int(i)] for i in idx])


class BatchFetcher(torch.utils.data.Dataset):
    """Maps a key ``(step, [(micro, indices), ...], sampler_state)`` to ``(step, [(micro, uint8 batch)],
    sampler_state)``; augmentation of micro-batch ``j`` draws from a generator seeded by ``(seed, step, j)``,
    so the batch is the same in the main process, in a worker, and on any rank."""

    def __init__(self, ds: ImageDataset, seed: int) -> None:
        self.ds, self.seed = ds, seed

    def __len__(self) -> int:  # keys are not integers; the loader asks only through its sampler
        return len(self.ds)

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        step, micro, state = key
        out = []
        for j, idx in micro:
            if self.ds.augment:
                with D.seeded(D.micro_seed(self.seed + 1, step, j), "cpu"):
                    out.append((j, gather(self.ds, idx)))
            else:
                out.append((j, self.ds.images[idx]))
        return step, out, state


def _identity(b):  # noqa: ANN001, ANN202 - a picklable no-op collate
    return b


class _Keys:
    """The loader's keys from ``start`` to ``stop`` (iterates a private copy of the sampler)."""

    def __init__(self, sampler: EpochSampler, start: int, stop: int, env: D.DistEnv, accum: int) -> None:
        self.state, self.start, self.stop, self.env, self.accum = sampler.state_dict(), start, stop, env, accum
        self.n, self.batch_size, self.seed = sampler.n, sampler.batch_size, sampler.seed

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):  # noqa: ANN204
        s = EpochSampler(self.n, self.batch_size, self.seed)
        s.load_state_dict(self.state)
        for step in range(self.start, self.stop):
            idx = s.next()
            yield step, D.micro_batches(idx, self.env, self.accum), s.state_dict()


def batch_stream(ds: ImageDataset, sampler: EpochSampler, start: int, stop: int, cfg: Config,
                 env: D.DistEnv, device: str):
    """``(step, [(micro, batch on device)], sampler_state)`` for steps ``start..stop-1`` (see module doc)."""
    t = cfg.train
    fetch = BatchFetcher(ds, t.seed)
    keys = _Keys(sampler, start, stop, env, t.accum_steps)
    cuda = torch.device(device).type == "cuda"
    if t.workers > 0:
        loader = torch.utils.data.DataLoader(fetch, batch_size=None, sampler=keys, num_workers=t.workers,
                                             pin_memory=cuda, collate_fn=_identity)
        source = iter(loader)
    else:
        source = (fetch[k] for k in keys)
    for step, micro, state in source:
        yield step, [(j, xb.to(device, non_blocking=cuda)) for j, xb in micro], state


LR_SCHEDULES = ("exp", "cosine", "cosine-time")


def learning_rate(cfg: Config, step: int, elapsed: float = 0.0) -> float:
    """The learning rate of ``step``: ``lr_schedule`` "exp" decays per step and is floored at ``lr_min``
    (thesis ch. 6); "cosine" falls from ``lr`` to ``lr_min`` at ``steps`` (stepping ``steps`` up on resume
    stretches the rest of the curve); "cosine-time" falls the same way over the ``max_minutes`` of this process,
    ``elapsed`` (the fraction of them spent) taking the place of ``step / steps``, so runs compared at equal
    wall clock all end annealed whatever their speed. All start with ``lr_warmup_steps`` of linear warm-up."""
    t = cfg.train
    if t.lr_schedule not in LR_SCHEDULES:
        raise SelfVAEError(f"train.lr_schedule={t.lr_schedule!r}: expected one of {', '.join(LR_SCHEDULES)}")
    if t.lr_schedule == "cosine-time" and not t.max_minutes:
        raise SelfVAEError("train.lr_schedule='cosine-time' anneals over train.max_minutes; set it")
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
    opt.zero_grad(set_to_none=True)
    loss_sum, info_sum = 0.0, {}
    for j, xb in micro:
        with D.seeded(D.micro_seed(t.seed, step, j), device), D.autocast(device, t.amp):
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
    warm-up factor ``min(1, step / kl_warmup_steps)`` and each ``z_k``'s KL floored at ``free_bits`` (on
    its batch mean, so the gradient that would shrink a KL already below the floor is zero). The bound
    that is logged and evaluated is always the plain negative ELBO."""
    beta = min(1.0, step / t.kl_warmup_steps) if t.kl_warmup_steps else 1.0
    kl_z = terms.kl_z
    if t.free_bits > 0 and kl_z.shape[1]:
        floor = kl_z.mean(0).clamp(min=t.free_bits)  # [K]
        kl_z = kl_z - kl_z.mean(0) + floor  # per image, with the batch mean replaced by the floored one
    return terms.re.sum(1) + beta * (terms.kl_u + kl_z.sum(1))


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


class _StopFlag:
    """Turns SIGINT/SIGTERM into a request to checkpoint and stop (restores the old handlers after)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def open_datasets(cfg: Config) -> tuple[ImageDataset, ImageDataset]:
    """The training split (augmented as configured) and the validation split, shaped for the model."""
    return load_split(cfg, "train", augment=None), load_split(cfg, "val")


def start_from(model: SelfVAE, cfg: Config, source: str, device: str) -> dict[str, Any]:
    """Load into ``model`` the evaluation weights of ``source`` (run directory, exported folder or pretrained
    name), whose architecture must be ``cfg.model``'s; returns where they came from and the training they had
    (steps, seconds), which ``init.json`` keeps so the new run's card can count the whole clock."""
    from selfvae.models.pretrained import is_exported, resolve

    folder = resolve(source)
    src_cfg, src = load_run(folder, device)
    ours, theirs = asdict(cfg.model), asdict(src_cfg.model)  # nested net specs as dicts, compared as JSON
    differ = [k for k in ours if json.dumps(ours[k], default=str) != json.dumps(theirs.get(k), default=str)]
    if differ:
        raise SelfVAEError(f"train.init={source}: its model differs from this run's in "
                           + ", ".join(f"model.{k} ({theirs.get(k)!r} there, {ours[k]!r} here)" for k in differ))
    model.load_state_dict(src.state_dict())
    provenance: dict[str, Any] = {"init": str(source), "folder": str(folder)}
    if is_exported(folder):
        metrics = folder / "metrics.json"
        training = json.loads(metrics.read_text()).get("training", {}) if metrics.is_file() else {}
        provenance.update(steps=training.get("steps"), seconds=training.get("seconds"))
    else:
        path = folder / "best.pt" if (folder / "best.pt").exists() else folder / "last.pt"
        state = load_latest(path)
        provenance.update(steps=state["step"], seconds=state.get("train_seconds"))
    return provenance


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint a run resumes from (a killed run logs ahead of it)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except (json.JSONDecodeError, AttributeError):  # a line cut by the kill
            continue
    path.write_text("".join(line + "\n" for line in keep))


@contextlib.contextmanager
def _performance_setup(t):  # noqa: ANN001, ANN202
    """Threads and deterministic algorithms for the run; the process's settings are restored after (but for
    ``retain_memory``, which stays: :func:`selfvae.allocator.retain_freed_memory`)."""
    if t.accum_steps < 1 or t.workers < 0:
        raise SelfVAEError(f"train.accum_steps={t.accum_steps} must be >= 1 and train.workers={t.workers} >= 0")
    threads, determ = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        if t.flush_denormal:
            torch.set_flush_denormal(True)
        if t.retain_memory:
            retain_freed_memory()
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        if t.deterministic:
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(determ)
        if t.flush_denormal:
            torch.set_flush_denormal(False)


def train(
    cfg: Config,
    run_dir: str | Path,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    final_eval: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (resuming from ``last.pt`` if asked); returns the final metrics.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every process calls this; see :mod:`selfvae.training.distributed`.
    """
    env, device = D.init_from_env(device)
    try:
        with _performance_setup(cfg.train):
            return _train(cfg, Path(run_dir), device, resume, progress, final_eval, env)
    finally:
        D.shutdown(env)


def _train(cfg: Config, run_dir: Path, device: str, resume: bool, progress: bool, final_eval: bool,
           env: D.DistEnv) -> dict[str, Any]:
    last = run_dir / "last.pt"
    has_run = last.exists() or last.with_name("last.pt.prev").exists()
    if resume and not has_run:
        raise SelfVAEError(f"{run_dir}: nothing to resume (no last.pt)")
    if not resume and has_run:
        raise SelfVAEError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    t = cfg.train
    learning_rate(cfg, 0)  # refuses an unknown schedule before any work
    if t.batch_size % (env.world_size * t.accum_steps):
        raise SelfVAEError(f"train.batch_size={t.batch_size} is not divisible by {env.world_size} process(es) "
                           f"x train.accum_steps={t.accum_steps}")
    main = env.is_main
    torch.manual_seed(t.seed)
    train_ds, val_ds = open_datasets(cfg)
    model = build_model(cfg, device)
    if main:  # only now: a run that cannot start leaves no directory behind
        run_dir.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.Adamax(model.parameters(), lr=t.lr)
    scaler = D.grad_scaler(device, t.amp)
    sampler = EpochSampler(len(train_ds), t.batch_size, t.seed)
    step, best, skips_in_row, skips_total = 0, math.inf, 0, 0
    train_seconds = 0.0  # training wall clock over all sessions of the run (time-to-quality curves)
    eval_weights = "ema" if t.ema_decay else "model"  # which weights the last validation found better
    ema: SelfVAE | None = None
    if resume:
        state = load_latest(last, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        sampler.load_state_dict(state["sampler"])
        step, best = state["step"], state.get("best", math.inf)
        if "best_dims" not in state:  # saved when bits/dim were per dimension of the padded frame
            best *= model.padded_dims / model.x_dims
        train_seconds = state.get("train_seconds")
        eval_weights = state.get("eval_weights", eval_weights)
        skips_total = state.get("skips_total", 0)
        if t.ema_decay:  # a run saved without EMA weights starts them from its weights, as a new run does
            ema = copy.deepcopy(model)
            if state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        if main:
            _truncate_log(run_dir / "log.jsonl", step)
        if train_seconds is None:  # a checkpoint from before the clock was kept: sum the logged step times
            recs = with_train_seconds(read_log(run_dir / "log.jsonl"))
            train_seconds = recs[-1]["train_seconds"] if recs else 0.0
    else:
        if main:
            cfg.save(run_dir / "config.json")
        if t.init:
            provenance = start_from(model, cfg, t.init, device)
            if main:
                (run_dir / "init.json").write_text(json.dumps(provenance, indent=1) + "\n")
        else:
            init_x = gather(train_ds, torch.randperm(len(train_ds))[: t.init_batch]).to(device)
            data_dependent_init(model, lambda: model.terms(init_x))  # every rank: sets the "initialized" flags
            D.broadcast_module(model, env)  # ... and rank 0's values win
        if t.ema_decay:
            ema = copy.deepcopy(model)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
        if ema is not None:
            ema.to(memory_format=torch.channels_last)
    if t.amp:
        D.install_fp32_outputs(model)
        if ema is not None:
            D.install_fp32_outputs(ema)
    if t.compile:
        D.compile_nets(model)
    sampler_state = sampler.state_dict()

    def checkpoint(path: Path) -> None:
        if not main:
            return
        save_checkpoint(
            {
                "config": cfg.to_dict(),
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "step": step,
                "sampler": sampler_state,
                "rng": rng_state(),
                "best": best,
                "best_dims": model.x_dims,
                "eval_weights": eval_weights,
                "skips_total": skips_total,
                "train_seconds": train_seconds,
            },
            path,
        )

    writer = log = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=step if resume else None)
        log = open(run_dir / "log.jsonl", "a")
    bar = tqdm(total=t.steps, initial=step, unit="step", desc=cfg.name, disable=not (progress and main),
               dynamic_ncols=True)
    stop_reason = None
    validated_at = -1

    def validate() -> None:
        """Validation bound of the current weights, raw and EMA; keeps ``best.pt`` up to date.

        Runs that keep an EMA evaluate both: early in a run the average lags far behind the weights
        (mnist-vae at step 2000 of a 0.999 EMA: 1.18 bits/dim raw, 1.52 averaged), so the better of the
        two is the run's bound at this step, and ``best.pt`` records which one it was (``eval_weights``).
        """
        nonlocal best, validated_at, eval_weights
        scores = {}
        for name, net in (("model", model), ("ema", ema)):
            if net is None:
                continue
            with torch.random.fork_rng(devices=[]):  # evaluation must not perturb the training RNG
                torch.manual_seed(t.seed)
                scores[name] = evaluate(net, batches_of(val_ds, EVAL_BATCH, t.eval_limit), 1, device,
                                        progress=False)
        eval_weights = min(scores, key=lambda k: scores[k]["bpd_elbo"])
        m = scores[eval_weights]
        rec = {"step": step, "split": "val", "bpd": m["bpd_elbo"], "dims": m["dims"], "weights": eval_weights,
               "train_seconds": round(train_seconds, 1), **{k: m[k] for k in m if k[:3] in ("re_", "kl_")}}
        if ema is not None:
            rec.update(bpd_raw=scores["model"]["bpd_elbo"], bpd_ema=scores["ema"]["bpd_elbo"])
        log.write(json.dumps(rec) + "\n")
        log.flush()
        writer.add_scalar("val/bpd", m["bpd_elbo"], step)
        extra = (f" (raw {scores['model']['bpd_elbo']:.4f}, EMA {scores['ema']['bpd_elbo']:.4f})"
                 if ema is not None else "")
        bar.write(f"step {step}: validation {m['bpd_elbo']:.4f} bits/dim (ELBO){extra}")
        validated_at = step
        if m["bpd_elbo"] < best:
            best = m["bpd_elbo"]
            checkpoint(run_dir / "best.pt")

    started = time.monotonic()
    stream = batch_stream(train_ds, sampler, step, t.steps, cfg, env, device)
    with _StopFlag() as flag:
        while step < t.steps:
            elapsed = 0.0  # the fraction of the time budget spent
            if t.max_minutes is not None:
                spent = time.monotonic() - started
                elapsed = spent / (60 * t.max_minutes) if t.max_minutes > 0 else math.inf
            elapsed = D.all_mean(elapsed, env, device)  # every rank has the same rate and stops at the same step
            time_up = elapsed > 1.0
            if time_up:
                bar.write(f"time budget of {t.max_minutes} minutes reached at step {step}")
                if main and validated_at != step:  # the last steps must count for best.pt
                    validate()
                checkpoint(last)
                break
            wall = time.perf_counter()
            lr = learning_rate(cfg, step, elapsed)
            for group in opt.param_groups:
                group["lr"] = lr
            key_step, micro, next_sampler_state = next(stream)
            assert key_step == step, (key_step, step)
            tic = time.perf_counter()
            res = train_step(model, opt, micro, cfg, ema, step=step, env=env, scaler=scaler)
            train_seconds += time.perf_counter() - wall
            step += 1
            sampler_state = next_sampler_state
            if res.skipped:
                skips_in_row += 1
                skips_total += 1
                if main:
                    bar.write(f"step {step}: skipped (loss {res.loss:.4g}, gradient norm {res.grad_norm:.4g}); "
                              f"{skips_total} skipped so far")
                if skips_in_row >= t.max_consecutive_skips:
                    stop_reason = (
                        f"stopped: {skips_in_row} consecutive steps skipped (loss or gradient not finite or "
                        f"above grad_skip) at step {step}; the weights were not updated by them; the last good "
                        f"state is in {last}"
                    )
            else:
                skips_in_row = 0
            bar.update(1)
            bar.set_postfix(bpd=f"{res.loss:.4f}", skipped=skips_total)
            if main and (step % t.log_every == 0 or step == t.steps or res.skipped):
                rec = {"step": step, "split": "train", "bpd": res.loss, "dims": model.x_dims,
                       "train_seconds": round(train_seconds, 1), "lr": lr, "grad_norm": res.grad_norm,
                       "skipped": res.skipped, "skipped_total": skips_total,
                       "sec_per_step": time.perf_counter() - tic, **res.terms}
                log.write(json.dumps(rec) + "\n")
                log.flush()
                for k, v in rec.items():
                    if k not in ("step", "split") and isinstance(v, float) and math.isfinite(v):
                        writer.add_scalar(f"train/{k}", v, step)
            if stop_reason is not None:
                checkpoint(last)  # skipped steps changed nothing: this is the last good state
                break
            if main and (step % t.eval_every == 0 or step == t.steps):
                validate()
            if main and step % t.sample_every == 0:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(t.seed)
                    grid = sample_images(ema or model, 64)
                save_grid(grid, run_dir / "samples" / f"step_{step:07d}.png", nrow=8)
            if step % t.checkpoint_every == 0 or step == t.steps:
                checkpoint(last)
            signalled = D.all_mean(float(flag.signal is not None), env, device) > 0
            if signalled:
                checkpoint(last)
                stop_reason = (f"stopped by signal {flag.signal or 'on another rank'} at step {step}; "
                               f"checkpoint saved in {last}; resume with --resume")
                break
    stream.close()
    bar.close()
    if main:
        writer.close()
        log.close()
    if stop_reason is not None:
        return {"stopped": stop_reason, "step": step}
    if not main:
        return {"step": step}
    plot_curves(run_dir / "log.jsonl", run_dir / "curves.png", model.padded_dims / model.x_dims)
    if not final_eval:
        return {"step": step}
    return finish(cfg, run_dir, device, progress)


@torch.no_grad()
def sample_images(model: SelfVAE, n: int, temperature: float = 1.0) -> Tensor:
    """``n`` unconditional samples of x as uint8 (uses :mod:`selfvae.models.ops`)."""
    from selfvae.models.ops import generate

    model.eval()
    return generate(model, n, temperature)[-1]


def finish(cfg: Config, run_dir: Path, device: str, progress: bool = True) -> dict[str, Any]:
    """Final evaluation of the best model and sample grids, in ``run_dir/final``.

    The ELBO (S = 1) over the first ``final_eval_limit`` test images, then the IW bound with
    ``final_iw_samples`` over the first ``final_iw_limit`` of them (its own ``iw_n_images``; the ELBO of that
    subset is ``bpd_elbo_iw_subset``), each with a progress bar. A data set without a test split (an image
    folder without ``test/``) is evaluated on its validation split, and ``split`` says so.
    """
    t = cfg.train
    _, model = load_run(run_dir, device)
    split = "test"
    try:
        ds = load_split(cfg, split)
    except NoSplitError as e:
        split = "val"
        ds = load_split(cfg, split)
        print(f"{e}: final evaluation on the validation split instead", file=sys.stderr)
    n = min(len(ds), t.final_eval_limit or len(ds))
    torch.manual_seed(t.seed)
    m = evaluate(model, batches_of(ds, EVAL_BATCH, n), 1, device, total=n, progress=progress)
    m["iw_n_images"] = n
    n_iw = min(n, len(ds) if t.final_iw_limit is None else t.final_iw_limit)
    if t.final_iw_samples > 1 and n_iw > 0:
        torch.manual_seed(t.seed)
        iw = evaluate(model, batches_of(ds, EVAL_BATCH, n_iw), t.final_iw_samples, device, total=n_iw,
                      progress=progress)
        m.update({k: iw[k] for k in ("bpd_iw", "bpd_joint_iw", "nll_iw_nats", "iw_samples", "bpd_iw_padded")
                  if k in iw})
        m.update(iw_n_images=n_iw, bpd_elbo_iw_subset=iw["bpd_elbo"])
    out = run_dir / "final"
    out.mkdir(exist_ok=True)
    m = {"split": split, **m}
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    torch.manual_seed(t.seed)
    save_grid(sample_images(model, 64), out / "samples.png", nrow=8, scale=2)
    return m
