"""A trained VAE or selfVAE with a smaller flow prior p(u), fitted to its own posterior q(u|y_1): to fit a model
with a sub-pixel context into the 8 MB float16 budget of a shipped model (issue 48's photo-* model).

The RealNVP prior of the CIFAR-10 presets (mid 32) is 1.58M of cifar10-vae-ctx's 4.17M parameters (8.43 MB in
float16); a mid-24 flow is about 0.97M. The new flow is fitted by its cross-entropy ``E_q[-log p(u)]`` on the
training images with every other weight frozen (``experiments/z_hybrid.py``'s fit, which cost the srVAE 4.3 nats
of KL_u at mid 14), and the model is written with it (float32 ``config.json`` + ``model.safetensors``), to train on
with ``selfvae train --config OUT/config.json --init OUT``.

    python experiments/refit_prior.py runs/ctx-photo-ctx --out experiments/context/photo-ctx-mid24 \
        --data-dir /usr/share --data photos --mid-channels 24 --minutes 10

Prints the flow's fit: KL_u of the validation images under the model's own flow and under the fitted one.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from z_hybrid import fit_prior, kl_u, posterior_of  # experiments/ is on the path of a script run from it

from selfvae.api import Model
from selfvae.data.datasets import load_split
from selfvae.models.build import build_model
from selfvae.priors import build_prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a run directory, exported folder or shipped model's name")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-dir", required=True, help="the model's data set's root")
    ap.add_argument("--data", help="data.name, where it differs from the model's config")
    ap.add_argument("--mid-channels", type=int, default=24)
    ap.add_argument("--minutes", type=float, default=10.0, help="CPU minutes to fit the flow")
    ap.add_argument("--images", type=int, default=20000, help="training images whose posteriors the flow fits")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    source = Model.from_pretrained(a.model)
    cfg = copy.deepcopy(source.config)
    cfg.data.root = a.data_dir
    if a.data:
        cfg.data.name = a.data
    flow = {**cfg.model.prior_kwargs, "mid_channels": a.mid_channels}
    cfg.model.prior_kwargs = flow
    train, val = (load_split(cfg, s).images for s in ("train", "val"))
    mu, logvar = posterior_of(source, train[: a.images])
    val = val[:512]
    val_mu, val_logvar = posterior_of(source, val)
    prior = build_prior(cfg.model.prior, tuple(cfg.model.latent_shape), **flow)
    steps = fit_prior(prior, mu, logvar, a.minutes)
    prior.eval()
    print(f"flow mid {a.mid_channels}: {sum(p.numel() for p in prior.parameters()) / 1e6:.2f}M parameters (was "
          f"{sum(p.numel() for p in source.p_u.parameters()) / 1e6:.2f}M), {steps} steps; KL_u on {len(val)} "
          f"validation images (mirrored too): own flow {kl_u(source.p_u, val_mu, val_logvar):.1f}, "
          f"fitted {kl_u(prior, val_mu, val_logvar):.1f} nats")
    model = build_model(cfg, cls=Model)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("p_u.")}
    state.update({f"p_u.{k}": v for k, v in prior.state_dict().items()})
    model.load_state_dict(state)  # strict: every weight from the source but the fitted prior
    model.config = cfg
    model.trained = source.trained  # (the flow's fitting not counted: it is not a training of the model)
    model.save_pretrained(a.out)
    print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")


if __name__ == "__main__":
    main()
