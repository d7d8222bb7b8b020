"""Question (issue 48.3): does a photograph cost fewer bits/dim when the model sees it whole (or in large tiles)
than in the 32x32 tiles it was trained on, and does the channel attention's global pool need a local form there?

For each held-out photograph of the ``photos`` data set (cropped at the top left to a multiple of the largest tile,
so every variant codes the same pixels), the negative ELBO in bits/dim (one posterior sample, fixed seed):

* ``tiles``: the model's own 32x32 tiles, each alone (what the codec does today);
* ``T local``: tiles of T x T through :func:`selfvae.models.sizes.at_size`, attention pooling a box of the training
  frame's extent; ``whole local``: the photograph in one pass;
* ``whole global``: in one pass, attention left global (pooling the whole photograph).

    python experiments/whole_image.py photo-vae [--split test] [--tiles 64 128 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from selfvae.codec.files import tile_nelbo_bits
from selfvae.data.photos import whole_photographs
from selfvae.models.sizes import at_size
from selfvae.nn.layers import ChannelAttention
from selfvae.runs.loading import load_run


def nelbo_bits(model: torch.nn.Module, x: torch.Tensor, batch: int = 64) -> float:
    """Sum of the negative ELBO over images ``x`` in bits (seeded: one posterior sample each), as the codec
    measures a tile's."""
    return float(tile_nelbo_bits(model, x, batch).sum())


def cut(x: torch.Tensor, t: int) -> torch.Tensor:
    """``[C, H, W]`` (multiples of ``t``) -> ``[n, C, t, t]`` tiles."""
    c, h, w = x.shape
    return x.reshape(c, h // t, t, w // t, t).permute(1, 3, 0, 2, 4).reshape(-1, c, t, t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--split", default="test")
    ap.add_argument("--tiles", type=int, nargs="*", default=[64, 128])
    a = ap.parse_args()
    _, model = load_run(a.model)
    model.eval()
    f = model.shapes[-1][1]
    big = max([f, *a.tiles])
    cols = ["tiles", *(f"{t} local" for t in a.tiles), "whole local", "whole global"]
    print(f"{'photo':<30} {'pixels':>9} " + " ".join(f"{c:>12}" for c in cols), flush=True)
    totals = [0.0] * len(cols)
    dims = 0
    for name, pixels in whole_photographs(Path("/usr/share"), a.split):
        h, w = pixels.shape[0] // big * big, pixels.shape[1] // big * big
        x = torch.from_numpy(pixels[:h, :w]).permute(2, 0, 1).contiguous()
        bits = [nelbo_bits(model, cut(x, f))]
        for t in a.tiles:
            bits.append(nelbo_bits(at_size(model, t, t), cut(x, t), batch=max(1, 64 * f * f // (t * t))))
        whole = at_size(model, h, w)
        bits.append(nelbo_bits(whole, x[None]))
        for m in whole.modules():
            if isinstance(m, ChannelAttention):
                m.window = None
        bits.append(nelbo_bits(whole, x[None]))
        n = x.numel()
        dims += n
        totals = [s + b for s, b in zip(totals, bits, strict=True)]
        print(f"{Path(name).name:<30} {f'{w}x{h}':>9} " + " ".join(f"{b / n:>12.4f}" for b in bits), flush=True)
    print(f"{'all':<30} {'':>9} " + " ".join(f"{b / dims:>12.4f}" for b in totals))


if __name__ == "__main__":
    main()
