"""Super-resolution of whole photographs tile by tile: quality against the real high-resolution photograph, and
the seam error of the tiling.

Not a test: ``python benchmarks/superres_photo.py cifar10-srvae-small [--photo FILE] [--overlaps 0 4]
[--decode mean sample] [--out DIR]``. The photograph (default: matplotlib's ``grace_hopper.jpg``) is box-downscaled
by the model's factor (the model's own ``d``), super-resolved back whole (:func:`super_resolve_tiled`), and
compared with the original: PSNR, and the **seam error**, the mean absolute step between neighbouring pixels
across the tiles' edges minus the same step elsewhere (0: the edges look like any other column). Bicubic
upscaling is printed beside it. Writes each picture into ``--out``, and ``side_by_side.png``: the same 256 x 256
crop of each at full resolution (original, bicubic, then ours in the order measured), where seams would show.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfvae.models.ops import super_resolve_tiled
from selfvae.runs.loading import load_run


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def seam_error(x: np.ndarray, period: int, offset: int, f: int) -> float:
    """Mean |step| between columns (and rows) that straddle a tile edge, minus the mean over the other columns at
    the same place in the upscaling's ``f``-pixel blocks (steps between blocks are larger than within them, in any
    upscaled image)."""
    steps = []
    for a in (x.astype(np.float64), x.astype(np.float64).transpose(1, 0, 2)):
        d = np.abs(np.diff(a, axis=1)).mean(axis=(0, 2))  # step between column j and j+1
        j = np.arange(len(d)) + 1  # the edge lies before column j
        at = (j - offset) % period == 0
        steps.append(d[at].mean() - d[~at & ((j - offset) % f == 0)].mean())
    return float(np.mean(steps))


def main() -> None:
    import matplotlib

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--photo", type=Path,
                    default=Path(matplotlib.__file__).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg")
    ap.add_argument("--overlaps", type=int, nargs="+", default=[0, 4])
    ap.add_argument("--decode", nargs="+", default=["mean", "sample"])
    ap.add_argument("--out", type=Path, default=Path("superres_photo"))
    a = ap.parse_args()
    _, model = load_run(a.model)
    c, th, _ = model.shapes[-2]
    f = model.shapes[-1][1] // th
    im = Image.open(a.photo).convert("L" if c == 1 else "RGB")
    w, h = (im.size[0] // f) * f, (im.size[1] // f) * f
    hi = np.asarray(im.crop((0, 0, w, h)))
    hi = hi[..., None] if hi.ndim == 2 else hi
    lo = hi.reshape(h // f, f, w // f, f, c).mean(axis=(1, 3)).round().astype(np.uint8)  # the box downscale
    y = torch.from_numpy(lo).permute(2, 0, 1).contiguous()
    a.out.mkdir(parents=True, exist_ok=True)
    bicubic = np.asarray(Image.fromarray(lo.squeeze(2) if c == 1 else lo).resize((w, h), Image.Resampling.BICUBIC))
    bicubic = bicubic[..., None] if bicubic.ndim == 2 else bicubic
    print(f"{a.photo.name}: {w}x{h}x{c} from {w // f}x{h // f}; tiles {th}x{th} low-res")
    print(f"{'method':<22} {'PSNR dB':>8} {'seam error':>10} {'seconds':>8} {'MP/s (out)':>10}")
    print(f"{'bicubic':<22} {psnr(bicubic, hi):>8.2f} {seam_error(bicubic, f * th, 0, f):>10.3f}")
    for decode in a.decode:
        for overlap in a.overlaps:
            torch.manual_seed(0)
            tic = time.perf_counter()
            x = super_resolve_tiled(model, y, overlap=overlap, decode=decode).permute(1, 2, 0).numpy()
            sec = time.perf_counter() - tic
            stride = f * (th - overlap)
            name = f"{decode}, overlap {overlap}"
            print(f"{name:<22} {psnr(x, hi):>8.2f} {seam_error(x, stride, f * overlap if overlap else 0, f):>10.3f} "
                  f"{sec:>8.1f} {w * h / 1e6 / sec:>10.3f}", flush=True)
            Image.fromarray(x.squeeze(2) if c == 1 else x).save(a.out / f"{decode}_overlap{overlap}.png")
    Image.fromarray(hi.squeeze(2) if c == 1 else hi).save(a.out / "original.png")
    Image.fromarray(bicubic.squeeze(2) if c == 1 else bicubic).save(a.out / "bicubic.png")
    names = ["original", "bicubic"] + [f"{d}_overlap{o}" for d in a.decode for o in a.overlaps]
    side_by_side([Image.open(a.out / f"{n}.png") for n in names]).save(a.out / "side_by_side.png")


def side_by_side(images: list[Image.Image], size: int = 256) -> Image.Image:
    """The same ``size`` x ``size`` crop of each image (centred across, at 40% down: a portrait's face), in a row,
    unscaled."""
    w, h = images[0].size
    size = min(size, w, h)
    left, top = (w - size) // 2, max(0, min(h - size, int(0.4 * h) - size // 2))
    row = Image.new(images[0].mode, (size * len(images), size))
    for i, im in enumerate(images):
        row.paste(im.crop((left, top, left + size, top + size)), (i * size, 0))
    return row


if __name__ == "__main__":
    main()
