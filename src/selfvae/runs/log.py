"""The run log (:data:`~selfvae.runs.layout.LOG`): one JSON record a line, for every logged training step and
every validation. Training appends to it (:class:`LogWriter`), a resumed run cuts it back to its checkpoint's step
(:func:`truncate_log`), and curves, comparisons, time budgets and shipping read it (:func:`read_log`), with the
records of older runs brought to today's form in that one place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfvae.runs import layout


class LogWriter:
    """Appends records to a run's log, each flushed as written (a killed run keeps what it logged)."""

    def __init__(self, run_dir: Path) -> None:
        self.file = open(Path(run_dir) / layout.LOG, "a")

    def write(self, rec: dict[str, Any]) -> None:
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def read_log(path: str | Path, frame_ratio: float = 1.0) -> list[dict]:
    """Records of a run's JSON-lines log (missing file: empty list).

    Records carry ``dims``, the dimensions their ``bpd`` is per. Older records lack it and are per
    dimension of the model's (zero-padded) frame; ``frame_ratio`` (frame dims / data dims, 1024/784 for
    MNIST) puts them per dimension of the data's own images like the rest.
    """
    path = Path(path)
    if not path.is_file():
        return []
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for r in recs:
        if "dims" not in r and isinstance(r.get("bpd"), (int, float)):
            r["bpd"] *= frame_ratio
    return recs


def with_train_seconds(recs: list[dict]) -> list[dict]:
    """Records with ``train_seconds`` (training wall clock so far) on every one.

    Newer logs carry the clock; older ones get it summed from the step times of the train records (each
    record's ``sec_per_step`` times the steps since the previous record), marked ``clock_estimated``.
    """
    clock, prev, out = 0.0, 0, []
    for r in recs:
        r = dict(r)
        if "train_seconds" in r:
            clock = r["train_seconds"]
        elif r.get("split") == "train":
            clock += r.get("sec_per_step", 0.0) * (r["step"] - prev)
            r["train_seconds"], r["clock_estimated"] = clock, True
        else:
            r["train_seconds"], r["clock_estimated"] = clock, True
        if r.get("split") == "train":
            prev = r["step"]
        out.append(r)
    return out


def logged_seconds(log: Path, step: int) -> float:
    """The training wall clock a run's log records up to ``step``, summed from its step times where the log
    has no clock (runs from before it was kept)."""
    recs = [r for r in with_train_seconds(read_log(log)) if r["step"] <= step]
    return recs[-1]["train_seconds"] if recs else 0.0



def truncate_log(path: Path, step: int) -> None:
    """Drop log records written after ``step``."""
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
