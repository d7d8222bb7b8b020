"""Rate against distortion in real bytes: a selfVAE's lossy files (``y`` alone, ``y`` + quantised ``z``
at several grids) and its lossless file, beside JPEG, WebP, JPEG-XL and AVIF at matched sizes on the
same images. Rates are bytes per image (every byte of the file: header and initial bits included, spread
over the images of the one file); PSNR in dB is averaged per image."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from selfvae.codec.classical import LOSSY, lossy_at_size, psnr
from selfvae.codec.files import compress, decompress
from selfvae.codec.images import InputImage
from selfvae.codec.lossy import QuantisedZ
from selfvae.models.selfvae import SelfVAE

FIELDS = ["codec", "setting", "bytes_per_image", "bits_per_dim", "psnr"]


def rate_distortion(
    model: SelfVAE, images: list[InputImage], z_precisions: tuple[int | None, ...] = (None, 0, 1, 2, 3, 4),
    decode: str = "mean", threads: int = 1, classical: tuple[str, ...] = LOSSY,
) -> list[dict]:
    """Rows of ``FIELDS`` (see the module docstring); ``None`` in ``z_precisions`` is ``y`` alone."""
    n, dims = len(images), sum(im.pixels.size for im in images)
    rows = []
    for p in z_precisions:
        data, _ = compress(model, images, lossy=QuantisedZ(p, decode), threads=threads)
        out = decompress(model, data, threads=threads).images
        rows.append(_row("selfvae", "y" if p is None else f"y+z@2^-{p}", len(data), n, dims,
                         [psnr(a, b.pixels) for a, b in zip(out, images, strict=True)]))
    data, _ = compress(model, images, threads=threads)
    rows.append(_row("selfvae", "lossless", len(data), n, dims, [float("inf")] * n))
    for ours in [r for r in rows if r["setting"] != "lossless"]:
        target = int(ours["bytes_per_image"])
        for name in classical:
            got = [lossy_at_size(name, im.pixels, target) for im in images]
            rows.append(_row(name, f"<= {target} B", sum(b for b, _ in got), n, dims,
                             [psnr(d, im.pixels) for (_, d), im in zip(got, images, strict=True)]))
    return rows


def _row(codec: str, setting: str, total: int, n: int, dims: int, psnrs: list[float]) -> dict:
    finite = [v for v in psnrs if np.isfinite(v)]
    value = float("inf") if len(finite) < len(psnrs) and not finite else float(np.mean(finite or [np.inf]))
    return {"codec": codec, "setting": setting, "bytes_per_image": total / n, "bits_per_dim": 8 * total / dims,
            "psnr": value}


def write_csv(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    return path


def plot(rows: list[dict], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for codec in dict.fromkeys(r["codec"] for r in rows):
        pts = sorted((r["bytes_per_image"], r["psnr"]) for r in rows if r["codec"] == codec and np.isfinite(r["psnr"]))
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=codec, lw=2.5 if codec == "selfvae" else 1.2)
    lossless = [r for r in rows if r["setting"] == "lossless"]
    for r in lossless:
        ax.axvline(r["bytes_per_image"], color="k", ls=":", lw=1)
        ax.text(r["bytes_per_image"], ax.get_ylim()[0], " lossless", rotation=90, va="bottom", fontsize=8)
    ax.set_xlabel("bytes per image (real files)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title or "rate / distortion")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
