"""Does a finer sub-pixel order pay? Group 0 of x (a quarter of the pixels, which the 2x2 context leaves to the
decoder alone) split into its own 2x2 groups, three of them given their neighbours two pixels away, measured on a
shipped context model before any codec change.

The model stays frozen; the decoder's parameters at group 0's pixels are computed once per image (the latents
drawn once from q, as the ELBO draws them), and only the new context's three nets learn, on the training images,
``-log p(x_0 | latents)`` under :class:`~selfvae.distributions.SubpixelMixture` over group 0's own grid. What the
nested context takes off group 0, divided by four, is what it takes off x's bits/dim with these latents (the
latents themselves would then give up what it predicts: more, after training every weight).

    python experiments/nested_context.py cifar10-vae-ctx --data-dir ../shared/data/cifar10-official-part.npz \
        --minutes 20
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from selfvae.data.datasets import load_split
from selfvae.distributions import DiscretizedLogisticMixture, SubpixelMixture
from selfvae.errors import SelfVAEError
from selfvae.nn.context import SubpixelContext, group_of
from selfvae.runs.loading import load_trained


def group0_params(model, x: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """The decoder's parameters at group 0 ``[N, P, H/2, W/2]`` (latents drawn once from q) and group 0's pixels
    on the grid in [0, 1] ``[N, C, H/2, W/2]``, for a VAE (``model.K == 0``) with a sub-pixel context."""
    if model.K or model.x_context is None:
        raise SelfVAEError("nested_context: a VAE whose x has a sub-pixel context (a selfVAE's group 0 sees y)")
    params, pixels = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            levels = model.levels(x[i:i + batch])
            u = model.q_u_given(levels[0]).rsample()
            p = model.p_y_given(u)
            params.append(group_of(p.params, 0).float())
            pixels.append(group_of(model.target(levels[0]), 0).float())
    return torch.cat(params), torch.cat(pixels)


def bits(ctx: SubpixelContext, params: torch.Tensor, pixels: torch.Tensor, channels: int, n_mix: int,
         nested: bool = True) -> torch.Tensor:
    """Bits per dimension of group 0's pixels, each image ``[N]``: nested (the 2x2 order on group 0's grid) or under
    the decoder alone."""
    base = DiscretizedLogisticMixture(params, channels, n_mix)
    d = SubpixelMixture(base, ctx) if nested else base
    return -d.log_prob(pixels) / (pixels[0].numel() * math.log(2.0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a shipped VAE with a sub-pixel context, or its run folder")
    p.add_argument("--data-dir", help="the data set's file or folder")
    p.add_argument("--minutes", type=float, default=20.0, help="training time of the nested context (CPU clock)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--clip", type=float, default=10.0, help="gradient norm clipping (1e-3 unclipped diverged)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n-train", type=int, help="the first N training images only (photographs' crops are many)")
    args = p.parse_args()
    torch.manual_seed(0)
    cfg, model, _ = load_trained(args.model, data_dir=args.data_dir)
    model.eval()
    c, m = model.shapes[-1][0], cfg.model.n_mix
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    tic = time.process_time()
    tr_params, tr_pixels = group0_params(model, torch.as_tensor(train.images[:args.n_train]))
    te_params, te_pixels = group0_params(model, torch.as_tensor(test.images))
    print(f"decoder's parameters of {len(tr_params)} training and {len(te_params)} test images: "
          f"{time.process_time() - tic:.0f} CPU-s", flush=True)
    ctx = SubpixelContext(c, DiscretizedLogisticMixture.n_params(c, m), args.width, args.layers)
    with torch.no_grad():
        alone = bits(ctx, te_params, te_pixels, c, m, nested=False).mean()
    print(f"group 0, test: decoder alone {alone:.4f} bits/dim", flush=True)
    opt = torch.optim.Adam(ctx.parameters(), lr=args.lr)
    start, step = time.process_time(), 0
    while time.process_time() - start < 60 * args.minutes:
        idx = torch.randint(0, len(tr_params), (args.batch,))
        loss = bits(ctx, tr_params[idx], tr_pixels[idx], c, m).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ctx.parameters(), args.clip)
        opt.step()
        step += 1
        if step % 500 == 0:
            with torch.no_grad():
                nested = bits(ctx, te_params, te_pixels, c, m).mean()
            print(f"step {step} ({(time.process_time() - start) / 60:.1f} CPU-min): train batch {loss.item():.4f}, "
                  f"group 0 test {nested:.4f} (alone {alone:.4f}): x's bits/dim {(nested - alone) / 4:+.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
