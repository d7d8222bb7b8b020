"""Question: how many nats does a downscaling selfVAE waste on images its ``p(x | y, z)`` could never have
produced?

Answer (2026-11-24, first 500 MNIST test images): a third of ``p(x | y, z)``'s cost. mnist-srvae 163 nats at x
(1.5438 -> 1.2437 bits/dim renormalised), mnist-2lvl 56 nats at y2 and 163 at x (1.6133 -> 1.2111); hence
``model.consistent`` and ``selfvae eval --consistent``.

``y = d(x)`` is a deterministic 2x2 box average (round half up), so the true ``p(x | y)`` lives on the images
whose every 2x2 block sums to ``4y - 2 .. 4y + 1``. The model's per-pixel discretised-logistic likelihood puts
mass on every image; renormalised onto the consistent ones it is a proper distribution whose log-likelihood is
higher by ``-log P(d(x) = y | y, z)``, and the ELBO with it is a valid (tighter) bound on ``log p(x)``. With
one channel the pixels are independent given ``(y, z)``, so that probability is a product over blocks of
``P(block sum in the allowed range)``: the sum's distribution is the convolution of the four pixels' 256-way
tables (``Downscale.log_mass_consistent``; ``model.consistent`` trains with it and ``selfvae eval --consistent``
evaluates with it). This script measures the gain per level on test images, for one posterior sample each.

    python experiments/consistency_gain.py mnist-srvae --n 500 --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import math

import torch

from selfvae.data import load_split
from selfvae.errors import SelfVAEError
from selfvae.runs.loading import load_run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a run directory, exported folder or shipped name of a downscaling selfVAE")
    p.add_argument("--n", type=int, default=500, help="test images")
    p.add_argument("--data-dir")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    cfg, m = load_run(a.model, data_dir=a.data_dir)
    steps = [t.strip() for t in (cfg.model.transforms or "").split(",") if t.strip()]
    if not steps or any(t != "downscale" for t in steps) or cfg.model.image_shape[0] != 1:
        raise SelfVAEError(f"{a.model}: needs a one-channel selfVAE whose transforms are all 'downscale' "
                           f"(has {cfg.model.transforms!r}, {cfg.model.image_shape[0]} channels)")
    x = load_split(cfg, "test").images[: a.n]
    torch.manual_seed(a.seed)
    ln2 = math.log(2)
    with torch.no_grad():
        nelbo = m.terms(x).nelbo.double().mean().item()
        levels = m.levels(x)
        inputs = [m.inp(v) for v in levels]
        total = 0.0
        for k in range(m.K):  # p(level k+1 | level k, z_k+1), with z_k+1 from its posterior
            z = m.gaussian(m.q_z[k](inputs[k + 1])).rsample()
            dlm = m.p_x[k](inputs[k], z)
            m.set_consistent(False)
            re = m.re_level(k, dlm, levels).double().mean().item()
            m.set_consistent(True)
            gain = re - m.re_level(k, dlm, levels).double().mean().item()
            name = "x" if k == m.K - 1 else f"y{k + 2}"
            print(f"{name} | {levels[k].shape[-1]}x{levels[k].shape[-1]} -> {levels[k + 1].shape[-1]}: RE {re:.1f} "
                  f"nats, renormalised {re - gain:.1f} (gain {gain:.1f} nats, {gain / (m.x_dims * ln2):.4f} bits/dim)")
            total += gain
    bpd = nelbo / (m.x_dims * ln2)
    print(f"{cfg.name}, first {len(x)} test images (an independent posterior sample per term): nELBO {bpd:.4f} "
          f"bits/dim; every level renormalised onto d(x) = y: {(nelbo - total) / (m.x_dims * ln2):.4f} "
          f"(gain {total:.1f} nats)")


if __name__ == "__main__":
    main()
