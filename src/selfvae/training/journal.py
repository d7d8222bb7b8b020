"""What a run tells: the progress bar (rate, ETA, live bits/dim), one JSON record per logged step and per
validation (:data:`~selfvae.runs.layout.LOG`) and TensorBoard scalars. Only the main process writes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from selfvae.runs import layout
from selfvae.runs.log import LogWriter


class Journal:
    """The bar, the JSON-lines log and the TensorBoard writer of one training session.

    The bar counts steps; a session under a time budget (``budget``: minutes on the clock named ``clock``)
    counts the budget's minutes instead (from ``spent``, the fraction earlier sessions of the run spent), its
    step in the postfix, so its rate and ETA are the budget's (a budget run's ``train.steps`` is only a ceiling,
    often a million)."""

    def __init__(self, run_dir: Path, name: str, steps: int, first_step: int, resumed: bool, main: bool,
                 progress: bool, budget: float | None = None, clock: str = "wall", spent: float = 0.0) -> None:
        self.main, self.budget = main, budget
        disable = not (progress and main)
        if budget:
            self.bar = tqdm(total=budget, initial=min(spent, 1.0) * budget, unit="min", desc=name, disable=disable,
                            dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:.1f}/{total:g} min of the " + clock
                                       + " budget [{elapsed}<{remaining}{postfix}]")
        else:
            self.bar = tqdm(total=steps, initial=first_step, unit="step", desc=name, disable=disable,
                            dynamic_ncols=True)
        self.log = self.writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / layout.TENSORBOARD), purge_step=first_step if resumed else None)
            self.log = LogWriter(run_dir)

    def say(self, text: str) -> None:
        """A line above the bar."""
        self.bar.write(text)

    def advance(self, bpd: float, skipped: int, step: int, spent: float = 0.0) -> None:
        """One step done: its bits/dim, the skipped steps so far, the step count and the budget's fraction spent."""
        if self.budget:
            self.bar.n = min(spent, 1.0) * self.budget
            self.bar.set_postfix(step=step, bpd=f"{bpd:.4f}", skipped=skipped)  # redraws the bar
            return
        self.bar.update(1)
        self.bar.set_postfix(bpd=f"{bpd:.4f}", skipped=skipped)

    def budget_spent(self) -> None:
        """The time budget is spent: the bar shows it whole."""
        if self.budget:
            self.bar.n = self.budget
            self.bar.refresh()

    def record(self, rec: dict[str, Any]) -> None:
        """One record: to the log, and its finite numbers to TensorBoard (under ``SPLIT/``)."""
        if not self.main:
            return
        self.log.write(rec)
        split = rec["split"]
        if split == "val":
            self.writer.add_scalar("val/bpd", rec["bpd"], rec["step"])
            return
        for k, v in rec.items():
            if k not in ("step", "split") and isinstance(v, float) and math.isfinite(v):
                self.writer.add_scalar(f"{split}/{k}", v, rec["step"])

    def close(self) -> None:
        self.bar.close()
        if self.main:
            self.writer.close()
            self.log.close()
