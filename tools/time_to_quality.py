"""Time to quality: validation bits/dim against training wall clock, and when each run crossed thresholds.

    python tools/time_to_quality.py runs/mnist-vae runs/mnist-srvae --thresholds 1.6 1.4 1.2 1.1 \
        --out docs/figures/time_to_quality_mnist.png
    python tools/time_to_quality.py --train mnist-vae --minutes 120 --out-run runs/ttq-vae ...

With ``--train PRESET`` it first trains (or resumes) ``--out-run`` for ``--minutes`` of this machine's time
(`selfvae train ... --set train.max_minutes=M`), then reads the logs. Every run's ``log.jsonl`` gives the
validation bound (ELBO, the run's EMA weights where it keeps them, on ``train.eval_limit`` validation images)
per dimension of the data's own images, and the training clock (``train_seconds``; older logs: summed step
times, marked "~"). Evaluation time is not counted. Prints a table; writes the curves as a PNG.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from selfvae.config import Config
from selfvae.models.build import frame_ratio
from selfvae.runs import layout
from selfvae.viz import read_log, with_train_seconds


def curve(run: Path) -> tuple[list[tuple[float, float, int]], bool, list[bool]]:
    """``[(hours, val bpd, step)]`` of a run, whether its clock was estimated, and per point whether only the
    EMA was validated (logs from before raw and EMA weights were both scored carry no ``weights``)."""
    cfg = Config.load(run / layout.CONFIG)
    recs = with_train_seconds(read_log(run / layout.LOG, frame_ratio(cfg)))
    val = [r for r in recs if r.get("split") == "val"]
    ema_only = [bool(cfg.train.ema_decay) and "weights" not in r for r in val]
    points = [(r["train_seconds"] / 3600, r["bpd"], r["step"]) for r in val]
    return points, any(r.get("clock_estimated") for r in val), ema_only


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
        points, estimated, ema_only = curve(run)
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
    ax.set_xlabel("training wall clock (hours, this machine)")
    ax.set_ylabel("validation bits/dim (-ELBO, per data dim)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=110)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
