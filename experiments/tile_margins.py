"""Question (issue 48): a photograph whose sides are not multiples of the tile leaves its last row and column of
tiles partly outside it. What should fill that margin, and what does coding it cost?

For each held-out photograph of the ``photos`` data set, whole (3-5% of its tiles' pixels outside it at 32x32):

* the negative ELBO in bits/dim of the photograph's own pixels (one posterior sample, fixed seed) with the margin
  filled with black, the image's edge repeated, or the image mirrored, and counted or left out of the
  reconstruction term (``SelfVAE.terms(..., inside=...)``): ``black, coded`` is what format 9 files spent;
* with ``--files``, the lossless file through the codec as format 9 wrote it (black margins, coded) and as format 10
  writes it (the edge repeated, not coded: ``CodingParams.edge_cover``), each decoded and checked, with the time.

    python experiments/tile_margins.py photo-vae [--split test] [--files]

Answer (2026-11-26, the shipped photo-vae, one thread beside two trainings; docs/CODEC.md "Images of any size"):
left out of the bound, a repeated edge beats black by 0.003-0.023 bits/dim and mirroring by 0.001-0.003 (coded,
black is cheapest: the model's posterior sees any margin, but its likelihood pays for a repeated stripe); the files
(format 9 -> 10): EveningGlow 4.1307 -> 4.1036, LadyBird 3.6593 -> 3.6281, Bridge 2.3592 -> 2.3182, friends
3.3737 -> 3.3396, all exact.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from selfvae.codec.bitsback import CodingParams
from selfvae.codec.files import compress, decompress
from selfvae.codec.images import Cover, InputImage, to_tiles
from selfvae.data.photos import whole_photographs
from selfvae.runs.loading import load_run

FILLS = {"black": "constant", "edge": "edge", "mirror": "symmetric"}  # numpy's np.pad modes


def tiles_filled(pixels: np.ndarray, side: int, mode: str) -> np.ndarray:
    """``[n, C, side, side]`` tiles of ``pixels`` ``[H, W, C]``, the margin filled by ``np.pad``'s ``mode``."""
    h, w, _ = pixels.shape
    padded = np.pad(pixels, ((0, -h % side), (0, -w % side), (0, 0)), mode=mode)
    return to_tiles(padded, (pixels.shape[2], side, side), "")


def nelbo_bits(model: torch.nn.Module, tiles: np.ndarray, inside: np.ndarray | None, batch: int = 64) -> float:
    """The negative ELBO of ``tiles`` in bits, of the pixels ``inside`` (all where None), one seeded sample each."""
    out = 0.0
    with torch.random.fork_rng(), torch.inference_mode():
        torch.manual_seed(0)
        for s in range(0, len(tiles), batch):
            part = None if inside is None else torch.from_numpy(inside[s : s + batch])
            out += float(model.terms(torch.from_numpy(tiles[s : s + batch]), inside=part).nelbo.sum())
    return out / math.log(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--root", type=Path, default=Path("/usr/share"))
    ap.add_argument("--files", action="store_true", help="code each photograph as formats 9 and 10 write it")
    args = ap.parse_args()
    torch.set_num_threads(1)
    _, model = load_run(args.model)
    side = model.shapes[-1][1]
    for name, pixels in whole_photographs(args.root, args.split):
        inside = ~Cover.of([pixels.shape], model.shapes[-1]).outside()
        row = [f"{name} {pixels.shape[1]}x{pixels.shape[0]}:"]
        for label, mode in FILLS.items():
            tiles = tiles_filled(pixels, side, mode)
            coded, left_out = (nelbo_bits(model, tiles, m) / pixels.size for m in (None, inside))
            row.append(f"{label} coded {coded:.4f}, left out {left_out:.4f};")
        if args.files:
            for label, edge in (("black, coded (format 9's way)", False), ("edge, left out (format 10)", True)):
                tic = time.perf_counter()
                data, _ = compress(model, [InputImage(name, pixels)], CodingParams(edge_cover=edge),
                                   png_instead=False)
                took = time.perf_counter() - tic
                exact = np.array_equal(decompress(model, data).images[0], pixels)
                row.append(f"file {label} {8 * len(data) / pixels.size:.4f} ({'exact' if exact else 'WRONG'}, "
                           f"{took:.1f} s);")
        print(" ".join(row), flush=True)


if __name__ == "__main__":
    main()
