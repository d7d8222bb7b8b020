"""Time to quality: validation bits/dim against the training clock, and when each run crossed thresholds.

    python tools/time_to_quality.py runs/mnist-vae runs/mnist-srvae --thresholds 1.6 1.4 1.2 1.1 \
        --out docs/figures/time_to_quality_mnist.png
    python tools/time_to_quality.py --train mnist-vae --minutes 120 --out-run runs/ttq-vae ...

With ``--train PRESET`` it first trains (or resumes) ``--out-run`` until ``--minutes`` of this machine's time in
all (`selfvae train ... --set train.max_minutes=M`), then reads the logs. Every run's ``log.jsonl`` gives the
validation bound (ELBO, the run's EMA weights where it keeps them, on ``train.eval_limit`` validation images)
per dimension of the data's own images, and the training clock (``train_seconds``; older logs: summed step
times, marked "~"; ``--clock cpu``: ``cpu_seconds``, the CPU time of the steps, fair where other work shared the
cores). Evaluation time is not counted. A run started from other weights (``train.init``, its ``init.json``)
counts their clock first, and where their folder holds a log its curve comes first. Prints a table; writes the
curves as a PNG.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from selfvae.config import Config
from selfvae.models.build import frame_ratio
from selfvae.runs import layout
from selfvae.runs.log import read_log, with_train_seconds

CLOCK_KEYS = {"wall": ("train_seconds", "seconds"), "cpu": ("cpu_seconds", "cpu_seconds")}


def curve(run: Path, clock: str = "wall") -> tuple[list[tuple[float, float, int]], bool, list[bool]]:
    """``[(hours, val bpd, step)]`` of a run, whether its clock was estimated, and per point whether only the
    EMA was validated (logs from before raw and EMA weights were both scored carry no ``weights``).

    A run started from other weights begins at their clock and step (its ``init.json``), after their curve
    where their folder still holds a log (an exported folder copied with its run's log)."""
    log_key, init_key = CLOCK_KEYS[clock]
    cfg = Config.load(run / layout.CONFIG)
    recs = read_log(run / layout.LOG, frame_ratio(cfg))
    recs = with_train_seconds(recs) if clock == "wall" else recs
    val = [r for r in recs if r.get("split") == "val"]
    if any(log_key not in r for r in val):
        raise SystemExit(f"{run}: its log has no {log_key} (runs log the CPU clock since it was kept)")
    before: tuple[list, bool, list] = ([], False, [])
    offset, step0 = 0.0, 0
    init = run / layout.INIT
    if init.is_file():
        source = json.loads(init.read_text())
        offset, step0 = source.get(init_key) or 0.0, source.get("steps") or 0
        for name in (source.get("folder"), source.get("init")):  # where it was, else as given (a relative path)
            folder = Path(name or "")
            if name and (folder / layout.LOG).is_file() and (folder / layout.CONFIG).is_file():
                before = curve(folder, clock)
                break
    ema_only = [bool(cfg.train.ema_decay) and "weights" not in r for r in val]
    points = [((offset + r[log_key]) / 3600, r["bpd"], step0 + r["step"]) for r in val]
    return (before[0] + points, before[1] or any(r.get("clock_estimated") for r in val), before[2] + ema_only)


def crossing(points: list[tuple[float, float, int]], threshold: float) -> tuple[float, int] | None:
    for hours, bpd, step in points:
        if bpd <= threshold:
            return hours, step
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, help="run directories to read")
    p.add_argument("--train", metavar="PRESET", help="train (or resume) this preset first")
    p.add_argument("--out-run", type=Path, help="run directory for --train (default runs/ttq-PRESET)")
    p.add_argument("--minutes", type=float, default=120.0)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to selfvae train")
    p.add_argument("--thresholds", nargs="+", type=float, default=[1.6, 1.4, 1.2, 1.1, 1.0])
    p.add_argument("--out", type=Path, default=Path("time_to_quality.png"))
    p.add_argument("--clock", choices=sorted(CLOCK_KEYS), default="wall",
                   help="the training clock: wall (seconds passed) or cpu (CPU time of the steps)")
    a = p.parse_args()
    runs = list(a.runs)
    if a.train:
        run = a.out_run or Path(f"runs/ttq-{a.train}")
        cmd = [sys.executable, "-m", "selfvae.cli", "train", "--out", str(run), "--no-progress",
               "--channels-last", "--set", f"train.max_minutes={a.minutes}"]
        if layout.checkpoint(run).exists():
            cmd.append("--resume")
        else:
            cmd += ["--preset", a.train, "--data-dir", a.data_dir, "--steps", "1000000"]
        for item in a.set:
            cmd += ["--set", item]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        runs.append(run)
    if not runs:
        p.error("give run directories or --train PRESET")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    header = "| run | steps | hours | best val bpd | " + " | ".join(f"<= {t}" for t in a.thresholds) + " |"
    print(header)
    print("|" + " --- |" * (4 + len(a.thresholds)))
    for run in runs:
        points, estimated, ema_only = curve(run, a.clock)
        if not points:
            print(f"| {run.name} | no validation records |")
            continue
        mark = "~" if estimated else ""
        cells = []
        for t in a.thresholds:
            c = crossing(points, t)
            cells.append(f"{mark}{c[0]:.2f} h (step {c[1]})" if c else "-")
        print(f"| {run.name} | {points[-1][2]} | {mark}{points[-1][0]:.2f} | {min(b for _, b, _ in points):.4f} | "
              + " | ".join(cells) + " |")
        line = ax.plot([h for h, _, _ in points], [b for _, b, _ in points], "-", lw=1,
                       label=run.name + (" (clock ~ from step times)" if estimated else ""))[0]
        for (h, b, _), only in zip(points, ema_only, strict=True):
            ax.plot([h], [b], "o", ms=5, color=line.get_color(), mfc="white" if only else line.get_color())
    ax.plot([], [], "o", color="grey", mfc="white", label="only the EMA validated (it lagged the weights)")
    for t in a.thresholds:
        ax.axhline(t, color="grey", lw=0.6, ls=":")
    ax.set_xlabel(f"training {'CPU time' if a.clock == 'cpu' else 'wall clock'} (hours, this machine)")
    ax.set_ylabel("validation bits/dim (-ELBO, per data dim)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
