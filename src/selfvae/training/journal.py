"""What a run tells: the progress bar (rate, ETA, live bits/dim), one JSON record per logged step and per
validation (:data:`~selfvae.runs.layout.LOG`) and TensorBoard scalars. Only the main process writes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from selfvae.runs import layout


class Journal:
    """The bar, the JSON-lines log and the TensorBoard writer of one training session."""

    def __init__(self, run_dir: Path, name: str, steps: int, first_step: int, resumed: bool, main: bool,
                 progress: bool) -> None:
        self.main = main
        self.bar = tqdm(total=steps, initial=first_step, unit="step", desc=name, disable=not (progress and main),
                        dynamic_ncols=True)
        self.log = self.writer = None
        if main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / layout.TENSORBOARD), purge_step=first_step if resumed else None)
            self.log = open(run_dir / layout.LOG, "a")

    def say(self, text: str) -> None:
        """A line above the bar."""
        self.bar.write(text)

    def advance(self, bpd: float, skipped: int) -> None:
        self.bar.update(1)
        self.bar.set_postfix(bpd=f"{bpd:.4f}", skipped=skipped)

    def record(self, rec: dict[str, Any]) -> None:
        """One record: to the log, and its finite numbers to TensorBoard (under ``SPLIT/``)."""
        if not self.main:
            return
        self.log.write(json.dumps(rec) + "\n")
        self.log.flush()
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
