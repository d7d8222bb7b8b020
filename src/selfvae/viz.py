"""Pictures and plots people look at: image grids (PIL) and training curves (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def grid_array(images: Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """uint8 ``[N, C, H, W]`` -> one uint8 ``[H', W', 3]`` array with ``nrow`` images per row."""
    if images.dtype != torch.uint8:
        raise ValueError(f"grid images must be uint8, got {images.dtype}")
    imgs = images.detach().cpu()
    if imgs.shape[1] == 1:
        imgs = imgs.repeat(1, 3, 1, 1)
    n, _, h, w = imgs.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        out[y0 : y0 + h, x0 : x0 + w] = imgs[i].permute(1, 2, 0).numpy()
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None, scale: int = 1) -> Path:
    """Write a PNG grid of uint8 images; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid_array(images, nrow, scale=scale)).save(path)
    return path


def save_rows(rows: list[Tensor], path: str | Path, scale: int = 1) -> Path:
    """Write rows of images (each uint8 ``[N, C, H, W]``, resized by nearest to the largest) as one grid."""
    h = max(r.shape[-1] for r in rows)
    c = max(r.shape[1] for r in rows)
    fixed = []
    for r in rows:
        if r.shape[1] != c:
            r = r.repeat(1, c // r.shape[1], 1, 1)
        if r.shape[-1] != h:
            r = torch.nn.functional.interpolate(r.float(), size=(h, h), mode="nearest").to(torch.uint8)
        fixed.append(r)
    return save_grid(torch.cat(fixed), path, nrow=rows[0].shape[0], scale=scale)


def _font(size: int = 12):  # noqa: ANN202 - a PIL font
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def labelled_columns(columns: list[tuple[str, Tensor]], scale: int = 2, pad: int = 4) -> np.ndarray:
    """One picture of labelled columns: column ``j`` holds the images ``columns[j][1]`` (uint8 ``[N, C, h, w]``,
    the same N; smaller ones nearest-upscaled to the largest size) under the label ``columns[j][0]``."""
    from PIL import ImageDraw

    size = max(t.shape[-1] for _, t in columns)
    n = columns[0][1].shape[0]
    font = _font(12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [label.split("\n") for label, _ in columns]
    text_w = [max(measure.textbbox((0, 0), ln, font=font)[2] for ln in ls) for ls in lines]
    line_h = max(measure.textbbox((0, 0), "Ag", font=font)[3] for _ in [0]) + 2
    head = line_h * max(len(ls) for ls in lines) + pad
    cell = size * scale
    widths = [max(cell, w) for w in text_w]
    canvas = Image.new("RGB", (sum(widths) + pad * (len(columns) + 1), head + n * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    x0 = pad
    for (_, imgs), ls, w in zip(columns, lines, widths, strict=True):
        if imgs.shape[-1] != size:
            imgs = torch.nn.functional.interpolate(imgs.float(), size=(size, size), mode="nearest").to(torch.uint8)
        for k, ln in enumerate(ls):
            draw.text((x0, pad + k * line_h), ln, fill="black", font=font)
        for i in range(n):
            tile = grid_array(imgs[i : i + 1], nrow=1, pad=0, scale=scale)
            canvas.paste(Image.fromarray(tile), (x0 + (w - cell) // 2, head + i * (cell + pad)))
        x0 += w + pad
    return np.asarray(canvas)


def save_columns(columns: list[tuple[str, Tensor]], path: str | Path, scale: int = 2) -> Path:
    """Write :func:`labelled_columns` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labelled_columns(columns, scale)).save(path)
    return path


def kl_series(recs: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """``{"u": (steps, KL), "z1": ...}``: each latent's KL in nats per image over the records that log it."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in recs:
        for key, v in r.items():
            if key.startswith("kl_") and isinstance(v, int | float):
                steps, values = out.setdefault(key[3:], ([], []))
                steps.append(r["step"])
                values.append(float(v))
    return out


def active_units(val: list[dict]) -> dict[str, str]:
    """``{"u": "998/1024 active", "z1": "920/1024 active, 0 informative"}``: each latent's active units, and a
    conditional latent's informative ones, at the last validation that counted them."""
    last = next((r for r in reversed(val) if any(k.startswith("au_") for k in r)), {})
    return {k[3:]: f"{last[k]}/{last.get('units_' + k[3:], '?')} active"
            + (f", {last['iu_' + k[3:]]} informative" if "iu_" + k[3:] in last else "")
            for k in last if k.startswith("au_")}


def _plot_kl(ax, kl: dict[str, tuple[list[int], list[float]]], active: dict[str, str]) -> None:  # noqa: ANN001
    """Each latent's KL against step (symmetric log scale: a collapsed latent's ~0 shows), its active units in
    the legend: the diagnostics of posterior collapse (NVAE's)."""
    for name, (steps, values) in kl.items():
        units = f", {active[name]}" if name in active else ""
        ax.plot(steps, values, lw=1, label=f"KL {name}{units}")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("KL (nats per image)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def plot_curves(recs: list[dict], out: str | Path) -> Path | None:
    """Train/validation bits/dim, learning rate and each latent's KL (with its active units at the last
    validation) against step, from a run's log records (:func:`selfvae.runs.log.read_log`); None if none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in recs if r.get("split") == "train"]
    val = [r for r in recs if r.get("split") == "val"]
    if not train and not val:
        return None
    kl = kl_series(train or val)
    fig, axes = plt.subplots(1, 3 if kl else 2, figsize=(15 if kl else 10, 3.8))
    ax, ax_lr = axes[0], axes[1]
    if kl:
        _plot_kl(axes[2], kl, active_units(val))
    if train:
        ax.plot([r["step"] for r in train], [r["bpd"] for r in train], label="train (-ELBO)", lw=1)
        ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train])
    if val:
        ax.plot([r["step"] for r in val], [r["bpd"] for r in val], "o-", label="validation (-ELBO)")
    ax.set_xlabel("step")
    ax.set_ylabel("bits/dim")
    ys = [r["bpd"] for r in train + val if math.isfinite(r["bpd"])]
    if ys:
        lo = min(ys)
        ax.set_ylim(lo - 0.05 * abs(lo), min(max(ys), lo * 2.5 + 0.5))
    ax.legend()
    ax.grid(alpha=0.3)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("learning rate")
    top = max([r["lr"] for r in train if "lr" in r], default=0.0)
    if top > 0:  # from 0: a 0.06% decay is not a cliff (0.0019988 - 0.0020000)
        ax_lr.set_ylim(0, 1.05 * top)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
