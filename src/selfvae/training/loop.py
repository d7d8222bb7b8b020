"""The training loop: start or resume a run, step, validate, checkpoint, and finish with the test bounds.

The loop keeps the ``last`` checkpoint (every ``checkpoint_every`` steps and on SIGINT/SIGTERM) and the ``best``
one (best validation bound), tells its progress (:mod:`selfvae.training.journal`), and ends with the test
bits/dim (ELBO and IW bound) and sample grids in the run's ``final`` folder (:mod:`selfvae.runs.layout`).
A resumed run restores its whole state (:class:`~selfvae.training.state.TrainState`), so on the CPU it continues
exactly where it stopped: each micro-batch of each step draws its augmentation and posterior noise from a
generator seeded by ``(seed, step, micro-batch)`` (see :mod:`selfvae.training.distributed`), so neither a
restart nor the number of processes changes the random numbers.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from selfvae import runtime
from selfvae.config import Config, check_config
from selfvae.data import ImageDataset, batches_of, load_test_split
from selfvae.errors import SelfVAEError
from selfvae.evaluation.bounds import ACTIVE_THRESHOLD, EVAL_BATCH, evaluate
from selfvae.models.build import resolved
from selfvae.models.selfvae import SelfVAE
from selfvae.runs import layout
from selfvae.runs.checkpoint import save_checkpoint
from selfvae.runs.loading import load_trained
from selfvae.runs.log import read_log
from selfvae.runs.records import Provenance, images_used, stamp, weights_used
from selfvae.runs.stored import write_json
from selfvae.training import distributed as D
from selfvae.training import state as S
from selfvae.training.batches import batch_stream, open_datasets
from selfvae.training.journal import Journal
from selfvae.training.step import StepResult, learning_rate, train_step
from selfvae.viz import plot_curves, save_grid


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


def train(
    cfg: Config,
    run_dir: str | Path,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
    final_eval: bool = True,
) -> dict[str, Any]:
    """Train ``cfg`` in ``run_dir`` (resuming from its last checkpoint if asked); returns the final metrics,
    or ``{"stopped": why, "step": n}`` for a run stopped early. ``cfg`` is not changed.

    Under ``torchrun`` (``WORLD_SIZE > 1``) every process calls this; see :mod:`selfvae.training.distributed`.
    """
    run_dir = Path(run_dir)
    env, device = D.init_from_env(device)
    with held(run_dir, env.is_main):
        try:
            check_start(cfg, run_dir, resume, env)
            with runtime.process_settings(cfg.train):
                session = Session(resolved(cfg), run_dir, device, env, resume, progress)
                stopped = session.run()
        finally:
            D.shutdown(env)
        if stopped is not None:
            return {"stopped": stopped, "step": session.state.step}
        if not env.is_main:
            return {"step": session.state.step}
        model = session.state.model
        plot_curves(read_log(run_dir / layout.LOG, model.padded_dims / model.x_dims), run_dir / layout.CURVES)
        if not final_eval:
            return {"step": session.state.step}
        return finish(session.state.cfg, run_dir, device, progress)


@contextmanager
def held(run_dir: Path, main: bool = True) -> Iterator[None]:
    """Hold ``run_dir`` for this process while it trains (an exclusive lock on :func:`~selfvae.runs.layout.lock_file`,
    released when the process ends however it ends): a second training into the same folder, a copy started by
    mistake, is refused at once instead of interleaving its checkpoints and log with the first's (2026-11-28: two
    copies of one run wrote one folder for 15 minutes). Where the platform has no ``fcntl``, nothing is held."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    if not main:
        yield
        return
    lock = layout.lock_file(run_dir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise SelfVAEError(f"{run_dir}: another process ({f.read().strip() or 'unknown'}) is training into it; "
                               f"wait for it to end or stop it first") from None
        f.truncate(0)
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield


def check_start(cfg: Config, run_dir: Path, resume: bool, env: D.DistEnv) -> None:
    """Refuse a run that cannot start, before any work: nothing to resume, a run already there, settings
    out of range (:func:`~selfvae.config.check_config`, the rule the CLI applies) or that do not fit."""
    t = check_config(cfg).train
    has_run = layout.has_run(run_dir)
    if resume and not has_run:
        raise SelfVAEError(f"{run_dir}: nothing to resume (no {layout.checkpoint(run_dir).name})")
    if not resume and has_run:
        raise SelfVAEError(f"{run_dir}: already holds a run; pass --resume to continue it or choose another --out")
    if t.batch_size % (env.world_size * t.accum_steps):
        raise SelfVAEError(f"train.batch_size={t.batch_size} is not divisible by {env.world_size} process(es) "
                           f"x train.accum_steps={t.accum_steps}")


class Session:
    """One training session of a run: its state, data, journal, and the steps until the run ends or stops."""

    def __init__(self, cfg: Config, run_dir: Path, device: str, env: D.DistEnv, resume: bool,
                 progress: bool) -> None:
        self.cfg, self.run_dir, self.device, self.env = cfg, run_dir, device, env
        self.main = env.is_main
        torch.manual_seed(cfg.train.seed)
        self.train_ds, self.val_ds = open_datasets(cfg)
        self.state = S.TrainState.fresh(cfg, len(self.train_ds), device)
        if self.main:  # only now: a run that cannot start leaves no directory behind
            run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            S.resume(self.state, run_dir, device, env)
        else:
            S.start(self.state, run_dir, self.train_ds, device, env)
        for net in (self.state.model, self.state.ema):
            if net is not None:
                runtime.prepare(net, cfg.train)
        self.validated_at = -1
        self.warned: set[str] = set()  # latents already said to have collapsed (warn_collapsed)
        self.journal = Journal(run_dir, cfg.name, cfg.train.steps, self.state.step, resume, self.main, progress,
                               cfg.train.max_minutes, cfg.train.clock, self.budget_spent())
        if resume:
            self.journal.say(self.resumed_at())

    def resumed_at(self) -> str:
        """Where a resumed run stands: its step and, under a time budget, the minutes spent of it."""
        t = self.cfg.train
        text = f"resumed at step {self.state.step} of {t.steps}"
        if t.max_minutes is not None:
            text += f"; {self.clock_seconds() / 60:.1f} of the {t.max_minutes:g} minutes of its {t.clock} budget spent"
        return text

    def clock_seconds(self) -> float:
        """The run's training seconds so far, all sessions, on the clock ``train.clock`` names."""
        st = self.state
        return st.cpu_seconds if self.cfg.train.clock == "cpu" else st.train_seconds

    # ----- the loop ------------------------------------------------------------------------------------
    def run(self) -> str | None:
        """Train until ``train.steps``, the time budget, a signal or too many skipped steps; returns why it
        stopped early (None: it ran to its end or its time budget)."""
        t, st = self.cfg.train, self.state
        first = st.step
        stream = batch_stream(self.train_ds, st.sampler, st.step, t.steps, self.cfg, self.env, self.device)
        try:
            with _StopFlag() as flag:
                while st.step < t.steps:
                    spent = self.budget_spent()
                    if spent > 1.0:
                        self.out_of_time(before=st.step == first > 0)
                        return None
                    res, lr, seconds = self.step(stream, spent)
                    stopped = self.after_step(res, lr, seconds, flag, spent)
                    if stopped is not None:
                        return stopped
            return None
        finally:
            stream.close()
            self.journal.close()

    def budget_spent(self) -> float:
        """The fraction of ``train.max_minutes`` spent (0 without a budget), the same on every rank.

        The budget counts the run's training steps over all its sessions on the clock ``train.clock`` names
        (the ``train_seconds`` or ``cpu_seconds`` its log and time-to-quality curves show), as ``train.steps``
        counts steps: a killed run resumed with the same settings spends only what is left, its "cosine-time"
        schedule going on where it was; a larger ``max_minutes`` on resume extends it."""
        minutes = self.cfg.train.max_minutes
        spent = 0.0
        if minutes is not None:
            spent = self.clock_seconds() / (60 * minutes) if minutes > 0 else math.inf
        return D.all_mean(spent, self.env, self.device)

    def out_of_time(self, before: bool = False) -> None:
        """The budget is spent (``before``: by earlier sessions of the run): validate and save the last state."""
        t = self.cfg.train
        self.journal.budget_spent()
        self.journal.say(f"time budget of {t.max_minutes} minutes ({t.clock} clock) reached at step {self.state.step}"
                         + ("; earlier sessions of this run spent it: a larger train.max_minutes goes on"
                            if before else ""))
        if self.main and self.validated_at != self.state.step:  # the last steps must count for the best
            self.validate()
        self.checkpoint(layout.LAST)

    def step(self, stream, spent: float) -> tuple[StepResult, float, float]:  # noqa: ANN001 - batch_stream
        """One optimisation step on the stream's next batch; returns its result, learning rate and seconds."""
        st = self.state
        wall, cpu = time.perf_counter(), time.process_time()
        lr = learning_rate(self.cfg, st.step, spent)
        for group in st.opt.param_groups:
            group["lr"] = lr
        key_step, micro, next_sampler_state = next(stream)
        assert key_step == st.step, (key_step, st.step)
        tic = time.perf_counter()
        res = train_step(st.model, st.opt, micro, self.cfg, st.ema, step=st.step, env=self.env, scaler=st.scaler)
        st.train_seconds += time.perf_counter() - wall
        st.cpu_seconds += time.process_time() - cpu
        st.step += 1
        st.sampler_state = next_sampler_state
        return res, lr, time.perf_counter() - tic

    def after_step(self, res: StepResult, lr: float, seconds: float, flag: _StopFlag, spent: float = 0.0,
                   ) -> str | None:
        """Count skips, tell (``spent``: the time budget's fraction spent when the step began), validate, sample
        and checkpoint as due; returns why the run must stop, if so."""
        t, st = self.cfg.train, self.state
        stopped = self.count_skip(res)
        self.journal.advance(res.loss, st.skips_total, st.step, spent)
        if st.step % t.log_every == 0 or st.step == t.steps or res.skipped:
            self.journal.record({
                "step": st.step, "split": "train", "bpd": res.loss, "dims": st.model.x_dims,
                "train_seconds": round(st.train_seconds, 1),
                "cpu_seconds": round(st.cpu_seconds, 1), "lr": lr, "grad_norm": res.grad_norm,
                "skipped": res.skipped, "skipped_total": st.skips_total, "sec_per_step": seconds, **res.terms})
        if stopped is not None:
            self.checkpoint(layout.LAST)  # skipped steps changed nothing: this is the last good state
            return stopped
        if self.main and (st.step % t.eval_every == 0 or st.step == t.steps):
            self.validate()
        if self.main and st.step % t.sample_every == 0:
            self.sample_grid()
        if st.step % t.checkpoint_every == 0 or st.step == t.steps:
            self.checkpoint(layout.LAST)
        if D.all_mean(float(flag.signal is not None), self.env, self.device) > 0:
            self.checkpoint(layout.LAST)
            return (f"stopped by signal {flag.signal or 'on another rank'} at step {st.step}; checkpoint saved in "
                    f"{layout.checkpoint(self.run_dir)}; resume with --resume")
        return None

    def count_skip(self, res: StepResult) -> str | None:
        """Keep the skip counters; returns why the run stops after ``max_consecutive_skips`` in a row."""
        st = self.state
        if not res.skipped:
            st.skips_in_row = 0
            return None
        st.skips_in_row += 1
        st.skips_total += 1
        if self.main:
            self.journal.say(f"step {st.step}: skipped (loss {res.loss:.4g}, gradient norm {res.grad_norm:.4g}); "
                             f"{st.skips_total} skipped so far")
        if st.skips_in_row < self.cfg.train.max_consecutive_skips:
            return None
        return (f"stopped: {st.skips_in_row} consecutive steps skipped (loss or gradient not finite or above "
                f"grad_skip) at step {st.step}; the weights were not updated by them; the last good state is in "
                f"{layout.checkpoint(self.run_dir)}")

    # ----- what the loop does now and then -------------------------------------------------------------
    def checkpoint(self, stem: str) -> None:
        """Save the state as the run's ``last`` (its previous copy kept: what a run resumes from) or ``best``."""
        if self.main:
            save_checkpoint(self.state.state_dict(), layout.checkpoint(self.run_dir, stem),
                            keep_previous=stem == layout.LAST)

    def validate(self) -> None:
        """Validation bound of the current weights, raw and EMA; keeps the ``best`` checkpoint up to date.

        Runs that keep an EMA evaluate both: early in a run the average lags far behind the weights, so the
        better of the two is the run's bound at this step, and the checkpoint records which one it was
        (``eval_weights``).
        """
        st, t = self.state, self.cfg.train
        scores = {name: validation_bound(net, self.val_ds, t.seed, t.eval_limit, self.device)
                  for name, net in (("model", st.model), ("ema", st.ema)) if net is not None}
        st.eval_weights = min(scores, key=lambda k: scores[k]["bpd_elbo"])
        m = scores[st.eval_weights]
        rec = {"step": st.step, "split": "val", "bpd": m["bpd_elbo"], "dims": m["dims"], "weights": st.eval_weights,
               "train_seconds": round(st.train_seconds, 1), "cpu_seconds": round(st.cpu_seconds, 1),
               **{k: m[k] for k in m if k[:3] in ("re_", "kl_", "au_", "iu_") or k.startswith("units_")}}
        extra = ""
        if st.ema is not None:
            rec.update(bpd_raw=scores["model"]["bpd_elbo"], bpd_ema=scores["ema"]["bpd_elbo"])
            extra = f" (raw {rec['bpd_raw']:.4f}, EMA {rec['bpd_ema']:.4f})"
        self.journal.record(rec)
        self.journal.say(f"step {st.step}: validation {m['bpd_elbo']:.4f} bits/dim (ELBO){extra}")
        self.validated_at = st.step
        self.warn_collapsed(m)
        if m["bpd_elbo"] < st.best:
            st.best = m["bpd_elbo"]
            self.checkpoint(layout.BEST)

    def warn_collapsed(self, m: dict) -> None:
        """Say once per latent, the first time a validation finds it collapsed (the model ignores it), what it means
        and the settings that counter it: none of its units active, or for a conditional latent none informative
        (its posterior mean, measured from its image-dependent prior's, the same for every image)."""
        for name in sorted(k[3:] for k in m if k.startswith("au_")):
            informative = "iu_" + name in m
            if name in self.warned or m[("iu_" if informative else "au_") + name] > 0:
                continue
            self.warned.add(name)
            kl = m.get("kl_" + name, 0.0)
            follow = f"; {m['au_' + name]} are active by Burda's test, following their image-dependent prior" if (
                informative and m["au_" + name]) else ""
            what = ("is informative (its posterior mean, measured from its prior's in the prior's standard deviations, "
                    f"varies over the validation images by less than {ACTIVE_THRESHOLD} in every unit{follow}"
                    if informative else
                    "is active (the variance of its posterior mean over the validation images is below "
                    f"{ACTIVE_THRESHOLD} in every unit")
            self.journal.say(f"warning: step {self.state.step}: latent {name} has collapsed: none of its "
                             f"{m['units_' + name]} units {what}; KL {kl:.2f} nats an image), so the model "
                             "ignores it; train.kl_warmup_steps and train.free_bits counter this")

    def sample_grid(self) -> None:
        """64 samples of the EMA (else the weights) from the run's seed, as a grid under the run's samples."""
        st = self.state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.train.seed)
            grid = sample_images(st.ema or st.model, 64)
        save_grid(grid, self.run_dir / layout.SAMPLES / f"step_{st.step:07d}.png", nrow=8)


def validation_bound(model: SelfVAE, ds: ImageDataset, seed: int, limit: int | None, device: str) -> dict:
    """The ELBO of ``model`` on the first ``limit`` validation images, with noise from ``seed`` (evaluation
    must not perturb the training RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return evaluate(model, batches_of(ds, EVAL_BATCH, limit), 1, device, progress=False)


@torch.no_grad()
def sample_images(model: SelfVAE, n: int, temperature: float = 1.0) -> Tensor:
    """``n`` unconditional samples of x as uint8 (uses :mod:`selfvae.models.ops`)."""
    from selfvae.models.ops import generate

    model.eval()
    return generate(model, n, temperature)[-1]


def finish(cfg: Config, run_dir: Path, device: str, progress: bool = True) -> dict[str, Any]:
    """Final evaluation of the best model and a sample grid, in the run's ``final`` folder.

    The ELBO (S = 1) over the first ``final_eval_limit`` test images, then the IW bound with
    ``final_iw_samples`` over the first ``final_iw_limit`` of them (its own ``iw_n_images``; the ELBO of that
    subset is ``bpd_elbo_iw_subset``), each with a progress bar. A data set without a test split (an image
    folder without ``test/``) is evaluated on its validation split, and ``split`` says so.
    """
    t = cfg.train
    _, model, training = load_trained(run_dir, device)
    ds, split = load_test_split(cfg)
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
    m = stamp({"split": split, **m}, Provenance(weights_used(model, training), images_used(cfg, split, n, len(ds))))
    write_json(m, run_dir / layout.FINAL_METRICS)
    torch.manual_seed(t.seed)
    save_grid(sample_images(model, 64), run_dir / layout.FINAL_SAMPLES, nrow=8, scale=2)
    return m
