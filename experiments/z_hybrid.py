"""An srVAE whose z carries information, near the shipped srVAE's bits/dim at once: the shipped model's u side joined
to z-paper-ship's z side (issue 49.3).

Why it can work (measured 2026-11-27, 128 official test images): z-paper-ship's p(z|y,u) ignores u (KL_z 277.1
nats with its own u, 278.0 with the shipped model's u, 278.1 with u = 0), so an srVAE is two models that share
only y = d(x): a VAE of y (the u side: q(u|y), p(y|u) and the flow prior p(u)) and a conditional VAE of x given y
(the z side: q(z|x), p(z|y,u), p(x|y,z)). z-paper-ship's z side is alive (KL_z 278, about 290 informative units)
but its thin u side costs 444 nats more than the shipped ``cifar10-srvae-small``'s (2627 for KL_u + re_y on the
official test images), whose z is dead. Joined: the shipped u side (selfvae nets) and the live z side (the
authors' nets, ``model.z_nets = "paper"``). Both do not fit the 8 MB float16 budget with the shipped flow prior
(1.58M parameters), so the prior is a smaller RealNVP (``--mid-channels``, 0.41M at 14) fitted to the shipped
q(u|y) first: its cross-entropy ``E_q[-log p(u)]`` on the training images with q(u|y) frozen (each step fresh
posterior samples of the images and their mirror images), then the whole model trains on.

    python experiments/z_hybrid.py --out experiments/real_pixels/z-hybrid [--minutes 15] [--mid-channels 14]
    python experiments/z_hybrid.py --out DIR --z-side NEWER --prior-from experiments/real_pixels/z-hybrid
    experiments/real_pixels.sh z-hybrid-on      # then the whole model on the official pixels

Prints the flow's fit (KL_u on the validation images under the shipped flow and under the fitted one) and the
joined model's terms on the first 245 official test images beside both parents'; writes the joined model
(float32 ``config.json`` + ``model.safetensors``) to ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

from selfvae.api import Model
from selfvae.config import Config
from selfvae.data.datasets import load_split
from selfvae.models.build import build_model
from selfvae.models.selfvae import SelfVAE
from selfvae.nn.layers import data_dependent_init
from selfvae.priors import build_prior

U_SIDE = ("q_u", "p_y")  # with the prior p_u: the VAE of y
Z_SIDE = ("q_z", "p_z", "p_x", "p_z_y", "p_x_z")  # config fields of the conditional VAE of x given y


def joined_config(u_cfg: Config, z_cfg: Config, flow: dict) -> Config:
    """``u_cfg`` with the z side of ``z_cfg`` (its sizes and net family) and the flow prior options ``flow``."""
    cfg = copy.deepcopy(u_cfg)
    for name in Z_SIDE:
        setattr(cfg.model, name, copy.deepcopy(getattr(z_cfg.model, name)))
    cfg.model.z_nets = z_cfg.model.z_nets or z_cfg.model.nets
    cfg.model.prior_kwargs = dict(flow)
    return cfg


def joined(u_model: SelfVAE, z_model: SelfVAE, cfg: Config, prior: torch.nn.Module) -> Model:
    """The model of ``cfg`` with ``u_model``'s q_u and p_y, ``z_model``'s z side and ``prior`` as p_u."""
    model = build_model(cfg, cls=Model)
    state = {f"p_u.{k}": v for k, v in prior.state_dict().items()}
    state.update({k: v for k, v in u_model.state_dict().items() if k.split(".")[0] in U_SIDE})
    state.update({k: v for k, v in z_model.state_dict().items() if k.split(".")[0] in ("q_z", "p_z", "p_x")})
    model.load_state_dict(state)  # strict: every weight comes from one parent or the fitted prior
    model.config = cfg
    return model.eval()


def posterior_of(model: SelfVAE, images: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance of q(u|y_1) for uint8 ``images`` and their mirror images, stacked."""
    both = torch.cat([images, images.flip(-1)])
    mus, logvars = [], []
    with torch.inference_mode():
        for i in range(0, len(both), batch):
            q = model.q_u_given(model.levels(both[i : i + batch])[0])
            mus.append(q.mu)
            logvars.append(q.logvar)
    return torch.cat(mus), torch.cat(logvars)


def cross_entropy(prior: torch.nn.Module, mu: torch.Tensor, logvar: torch.Tensor, seed: int = 0) -> float:
    """``E_q[-log p(u)]`` in nats an image, one posterior sample each (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        u = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=g)
        return float(-prior.log_prob(u).mean())


def kl_u(prior: torch.nn.Module, mu: torch.Tensor, logvar: torch.Tensor) -> float:
    """``KL(q(u) || p(u))`` in nats an image: :func:`cross_entropy` less the entropy of ``N(mu, exp(logvar))``."""
    entropy = float((0.5 * (logvar + 1 + np.log(2 * np.pi))).sum(dim=(1, 2, 3)).mean())
    return cross_entropy(prior, mu, logvar) - entropy


def fit_prior(prior: torch.nn.Module, mu: torch.Tensor, logvar: torch.Tensor, minutes: float, batch: int = 64,
              lr: float = 1e-3, seed: int = 0) -> int:
    """Fit ``prior`` to the posterior ``N(mu, exp(logvar))`` by its cross-entropy for ``minutes`` of CPU time
    (cosine from ``lr``); returns the steps taken."""
    g = torch.Generator().manual_seed(seed)
    data_dependent_init(prior, lambda: prior.log_prob(mu[:256] + torch.exp(0.5 * logvar[:256]) * torch.randn(
        mu[:256].shape, generator=g)))
    opt = torch.optim.Adamax(prior.parameters(), lr=lr)
    start, step = time.process_time(), 0
    while (spent := time.process_time() - start) < 60 * minutes:
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * spent / (60 * minutes)))
        idx = torch.randint(0, len(mu), (batch,), generator=g)
        u = mu[idx] + torch.exp(0.5 * logvar[idx]) * torch.randn(mu[idx].shape, generator=g)
        loss = -prior.log_prob(u).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 500 == 0:
            print(f"  flow step {step}: {loss.item():.1f} nats, {spent / 60:.1f} CPU-min", flush=True)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--u-side", default="cifar10-srvae-small")
    ap.add_argument("--z-side", default="experiments/real_pixels/z-paper-ship")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=15.0, help="CPU minutes to fit the flow prior")
    ap.add_argument("--prior-from", help="a joined model whose fitted prior to take instead of fitting one (its u "
                                         "side must be --u-side's): to join a newer z side")
    ap.add_argument("--mid-channels", type=int, default=14)
    ap.add_argument("--data-dir", default="../shared/data/cifar10-official-part.npz")
    a = ap.parse_args()
    torch.manual_seed(0)
    u_model, z_model = Model.from_pretrained(a.u_side), Model.from_pretrained(a.z_side)
    flow = {"mid_channels": a.mid_channels, "num_blocks": 2, "num_scales": 2}
    cfg = joined_config(u_model.config, z_model.config, flow)
    cfg.data.root = a.data_dir
    train, val = (load_split(cfg, s).images for s in ("train", "val"))
    mu, logvar = posterior_of(u_model, train)
    val_mu, val_logvar = posterior_of(u_model, val)
    if a.prior_from:
        prior, steps = Model.from_pretrained(a.prior_from).p_u, 0
    else:
        prior = build_prior(cfg.model.prior, tuple(cfg.model.latent_shape), **flow)
        steps = fit_prior(prior, mu, logvar, a.minutes)
    prior.eval()
    print(f"flow mid {a.mid_channels}: {sum(p.numel() for p in prior.parameters()) / 1e6:.2f}M parameters, {steps} "
          f"steps; KL_u on {len(val)} validation images (mirrored too): shipped flow "
          f"{kl_u(u_model.p_u, val_mu, val_logvar):.1f}, fitted {kl_u(prior, val_mu, val_logvar):.1f} nats")
    model = joined(u_model, z_model, cfg, prior)
    test = torch.from_numpy(np.load(a.data_dir)["x_test"][:245]).permute(0, 3, 1, 2).contiguous()
    for name, m in (("u side", u_model), ("z side", z_model), ("joined", model)):
        b = m.bits_per_dim(test)
        print(f"{name:>7}: {b.bpd_elbo:.4f} bits/dim on the first 245 official test images; "
              + ", ".join(f"{k} {v:.1f}" for k, v in b.terms.items())
              + f"; informative units of z {b.informative_units.get('z1', (0, 0))[0]}", flush=True)
    model.save_pretrained(a.out)
    print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")


if __name__ == "__main__":
    main()
