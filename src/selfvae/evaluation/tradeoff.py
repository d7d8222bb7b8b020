"""Memory/quality trade-off of the reconstruction modes (selfVAE paper Fig. 3, thesis Fig. 7.7).

For each mode: how many values must be sent (inferred latents and/or the given ``y``), their fraction of
the original image's values, and the reconstruction quality over a split (MSE on the 0..255 scale and
PSNR in dB, both averaged per image).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from selfvae.models.ops import memory_cost, modes, reconstruct
from selfvae.models.selfvae import SelfVAE


def mse_psnr(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image MSE (0..255 scale) and PSNR (dB, peak 255) between uint8 batches."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))
    return mse, psnr


@torch.no_grad()
def tradeoff(
    model: SelfVAE, batches: Iterable[Tensor], device: str | torch.device = "cpu", decode: str = "sample"
) -> list[dict[str, float | str]]:
    """One row per reconstruction mode: values sent, fraction of the image, MSE and PSNR."""
    names = modes(model)
    sums = {m: [0.0, 0.0] for m in names}
    n = 0
    for x in batches:
        x = x.to(device)
        for m in names:
            rec = reconstruct(model, x, m, decode=decode)[-1]
            mse, psnr = mse_psnr(rec, x)
            sums[m][0] += float(mse.sum())
            sums[m][1] += float(psnr.sum())
        n += x.shape[0]
    rows = []
    for m in names:
        cost = memory_cost(model, m)
        rows.append({"mode": m, **cost, "mse": sums[m][0] / n, "psnr": sums[m][1] / n, "n_images": n})
    return rows


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def plot_tradeoff(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """PSNR against the fraction of the image's values that are sent, one labelled point per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    xs = [r["fraction"] * 100 for r in rows]
    ys = [r["psnr"] for r in rows]
    ax.plot(xs, ys, "o")
    for r, x, y in zip(rows, xs, ys, strict=True):
        ax.annotate(r["mode"], (x, y), textcoords="offset points", xytext=(5, 4))
    ax.set_xlabel("values sent (% of the image)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title or "memory vs quality")
    ax.grid(alpha=0.3)
    if xs and max(xs) > 0 and min(x for x in xs if x > 0) > 0 and max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale("log")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
