"""Question: how much of a VAE's negative ELBO is its encoder's fault? (The amortization gap, Cremer et al. 2018.)

The VAE's bound is ``E_q[log p(x, u) - log q(u | x)]`` with ``q(u | x)`` from the encoder ``q_u``. Here, for each
test image, ``q(u | x)``'s mean and log-variance are taken from the encoder and then optimised for that image alone
(Adam on the reparameterised bound, the decoder and prior fixed). The bound with the optimised posterior minus the
bound with the encoder's is what a better encoder could gain at most, at this decoder; the importance-weighted bound
is printed beside them (what a better family of posteriors could gain as well).

If the gap is large, a wider ``q_u`` (a few percent of the model's FLOPs) pays; if small, the decoder and prior
are where the bits are. Both bounds are estimated with the same ``--eval-samples`` draws per image and seed.

    python experiments/amortization_gap.py cifar10-vae-ctx --data-dir ../shared/data/cifar10-official-part.npz \\
        --n 64 --steps 150
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from selfvae.data import load_split
from selfvae.distributions import DiagonalGaussian
from selfvae.errors import SelfVAEError
from selfvae.evaluation.bounds import iw_bound
from selfvae.runs.loading import load_run


def nelbo(model: torch.nn.Module, x: torch.Tensor, q: DiagonalGaussian) -> torch.Tensor:
    """A one-sample estimate of the negative ELBO in nats ``[B]`` of a plain VAE under posterior ``q(u | x)``."""
    u = q.rsample()
    p = model.p_y_given(u)
    return -p.log_prob(model.target(x)) + q.log_prob(u) - model.p_u.log_prob(u)


def mean_nelbo(model: torch.nn.Module, x: torch.Tensor, q: DiagonalGaussian, samples: int, seed: int) -> torch.Tensor:
    """The negative ELBO ``[B]`` averaged over ``samples`` draws (the same draws for every ``q`` given one seed)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return torch.stack([nelbo(model, x, q) for _ in range(samples)]).mean(0)


def refined(model: torch.nn.Module, x: torch.Tensor, steps: int, lr: float, samples: int) -> DiagonalGaussian:
    """``q(u | x)`` from the encoder, then its mean and log-variance optimised for each image of ``x``."""
    with torch.no_grad():
        q0 = model.q_u_given(x)
    mu = q0.mu.clone().requires_grad_()
    logvar = q0.logvar.clone().requires_grad_()
    opt = torch.optim.Adam([mu, logvar], lr=lr)
    for _ in range(steps):
        q = DiagonalGaussian(mu, logvar)
        loss = torch.stack([nelbo(model, x, q) for _ in range(samples)]).mean(0).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return DiagonalGaussian(mu.detach(), logvar.detach())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a run folder, exported folder or pretrained name (a plain VAE)")
    p.add_argument("--data-dir", help="the data set's file or folder")
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=64, help="images (the first of the split)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=150, help="Adam steps per batch of posteriors")
    p.add_argument("--lr", type=float, default=3e-2)
    p.add_argument("--samples", type=int, default=2, help="draws per step")
    p.add_argument("--eval-samples", type=int, default=16, help="draws per image for each bound")
    p.add_argument("--iw", type=int, default=0, help="also the IW bound with this many samples (0: not)")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg, model = load_run(a.model, data_dir=a.data_dir)
    if model.K:
        raise SelfVAEError(f"{a.model}: a selfVAE with {model.K} levels; this measures a plain VAE's q(u | x)")
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    ds = load_split(cfg, a.split)
    n = min(a.n, len(ds))
    totals = {"encoder": 0.0, "refined": 0.0, "iw": 0.0}
    start = time.perf_counter()
    for b0 in range(0, n, a.batch):
        x = torch.stack([ds[i] for i in range(b0, min(b0 + a.batch, n))])
        with torch.no_grad():
            q0 = model.q_u_given(x)
        q1 = refined(model, x, a.steps, a.lr, a.samples)
        totals["encoder"] += mean_nelbo(model, x, q0, a.eval_samples, b0).sum().item()
        totals["refined"] += mean_nelbo(model, x, q1, a.eval_samples, b0).sum().item()
        if a.iw:
            torch.manual_seed(b0)
            with torch.no_grad():
                logw = -torch.stack([nelbo(model, x, q0) for _ in range(a.iw)])
            totals["iw"] += -iw_bound(logw).sum().item()
        done = min(b0 + a.batch, n)
        bpd = {k: v / (done * model.x_dims * math.log(2.0)) for k, v in totals.items()}
        print(f"{done}/{n} images, {time.perf_counter() - start:.0f} s: bits/dim ELBO with the encoder's q "
              f"{bpd['encoder']:.4f}, with q optimised per image {bpd['refined']:.4f} (gap "
              f"{bpd['encoder'] - bpd['refined']:.4f})" + (f", IW-{a.iw} {bpd['iw']:.4f}" if a.iw else ""),
              flush=True)


if __name__ == "__main__":
    main()
