"""Where x's bits go in a model with a sub-pixel context: bits/dim of each 2x2 group of x's pixels, with the context
and (where not renormalised) under the decoder alone, the latents at their posterior means (a reconstruction term,
not the ELBO: what the likelihood pays once the latents are fixed).

Which groups the context already predicts from their neighbours, and which it cannot: group 0 has no earlier
group, so it is the decoder's alone; what is left there is what a finer sub-pixel order (group 0 itself split into
2x2 groups) could take.

    python experiments/group_bits.py cifar10-vae-ctx --data-dir ../shared/data/cifar10-official-part.npz --n 256
"""

from __future__ import annotations

import argparse
import math

import torch

from selfvae.data.datasets import load_split
from selfvae.distributions import SubpixelMixture
from selfvae.errors import SelfVAEError
from selfvae.nn.context import GROUPS, group_of
from selfvae.runs.loading import load_trained


def bits_per_dim(d, part: torch.Tensor) -> float:  # noqa: ANN001 - a mixture
    """Mean bits per dimension of ``part`` (``[B, C, h, w]`` on the grid in [0, 1]) under ``d``."""
    return float(-d.log_prob(part).mean() / (part[0].numel() * math.log(2.0)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a shipped name or run folder whose x has a sub-pixel context")
    p.add_argument("--data-dir", help="the data set's file or folder")
    p.add_argument("--n", type=int, default=256, help="the first N test images")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg, model, _ = load_trained(args.model, data_dir=args.data_dir)
    model.eval()
    test = load_split(cfg, "test")
    x = test.images[:args.n]
    with torch.no_grad():
        levels = model.levels(x)
        if model.K == 0:
            p_x = model.p_y_given(model.q_u_given(levels[0]).mu)
        else:
            z = model.gaussian_z(model.q_z[-1](model.inp(levels[-1], z_side=True))).mu
            p_x = model.p_x_given(model.K - 1, levels[-2], z)
        if not isinstance(p_x, SubpixelMixture):
            raise SelfVAEError(f"{args.model}: its x has no sub-pixel context (model.context_width is 0)")
        parts = [group_of(model.target(levels[-1]), g) for g in range(GROUPS)]
        print(f"{args.model}, the first {len(x)} test images, latents at their posterior means; bits/dim of each group")
        for g in range(GROUPS):
            alone = ("" if p_x.average is not None  # renormalised: the decoder alone is not a likelihood on y's x
                     else f", decoder alone {bits_per_dim(p_x.base_group(g), parts[g]):.3f}")
            print(f"group {g}: with its context {bits_per_dim(p_x.group(g, parts), parts[g]):.3f}{alone}")


if __name__ == "__main__":
    main()
