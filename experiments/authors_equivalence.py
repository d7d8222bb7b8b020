"""Question: are the ``*-paper`` presets the authors' function? Their model's weights copied into ours, the same
noise, the same images: the negative ELBO of each image by their code and by ours.

Answer (2026-11-23, ioangatop/srVAE at dfee765): yes. 21397.2773 and 26769.7559 nats an image by both codes
(VAE + RealNVP, srVAE), relative difference 0 in float32 and 2e-14 in float64 (docs/RESULTS.md).

    python experiments/authors_equivalence.py --authors-src ~/srVAE     # a checkout of ioangatop/srVAE

Weights are matched conv by conv in module order within each role (theirs: bias, weight_g, weight_v of
``torch.nn.utils.weight_norm``; ours: v, g, b of :class:`selfvae.nn.layers.WNConv2d`), their weight-normed
``Rescale`` becomes our per-channel ``scale``. Their KL terms are Monte Carlo, so ours are taken with
``analytic_kl=False``; both draw the posterior noise u (then z) from the same seed in the same order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the authors' code loader

from authors import load

from selfvae.models.build import build_model
from selfvae.nn.layers import WNConv2d
from selfvae.nn.paper import fuse_units
from selfvae.presets import get_preset
from selfvae.priors import _Coupling

PAIRS = {  # theirs -> (our preset, their role -> our role)
    "authors-vae-realnvp": ("cifar10-vae-realnvp-paper", {"p_z": "p_u", "q_z": "q_u", "p_x": "p_y"}),
    "authors-srvae": ("cifar10-srvae-paper", {"p_u": "p_u", "q_u": "q_u", "p_z": "p_z.0", "q_z": "q_z.0",
                                              "p_y": "p_y", "p_x": "p_x.0"}),
}


def _theirs(module: nn.Module) -> list[tuple[str, nn.Module]]:
    out = []
    for _, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            out.append(("conv", m))
        elif type(m).__name__ == "Rescale":
            out.append(("rescale", m))
    return out


def _ours(module: nn.Module) -> list[tuple[str, nn.Module]]:
    out, inside = [], set()
    for _, m in module.named_modules():
        if isinstance(m, _Coupling):  # their Rescale comes after the coupling's convs
            convs = [c for c in m.net.modules() if isinstance(c, WNConv2d)]
            out += [("conv", c) for c in convs] + [("rescale", m)]
            inside.update(id(c) for c in convs)
        elif isinstance(m, WNConv2d) and id(m) not in inside:
            out.append(("conv", m))
    return out


@torch.no_grad()
def copy_weights(theirs: nn.Module, ours: nn.Module, roles: dict[str, str]) -> int:
    n = 0
    for their_role, our_role in roles.items():
        a, b = _theirs(theirs.get_submodule(their_role)), _ours(ours.get_submodule(our_role))
        if [k for k, _ in a] != [k for k, _ in b]:
            raise SystemExit(f"{their_role} -> {our_role}: {len(a)} vs {len(b)} layers, or in another order")
        for (kind, t), (_, o) in zip(a, b, strict=True):
            if kind == "conv":
                if t.weight_v.shape != o.v.shape:
                    raise SystemExit(f"{their_role}: shapes {tuple(t.weight_v.shape)} vs {tuple(o.v.shape)}")
                o.v.copy_(t.weight_v)
                o.g.copy_(t.weight_g.flatten())
                o.b.copy_(t.bias)
                o.initialized.fill_(True)
            else:
                v, g = t.weight_v, t.weight_g
                o.scale.copy_((g * v / v.abs()).view(1, -1, 1, 1))
            n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--authors-src", required=True, help="a checkout of ioangatop/srVAE")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--model", choices=sorted(PAIRS), nargs="+", default=sorted(PAIRS))
    p.add_argument("--double", action="store_true", help="both in float64 (differences of summation order vanish)")
    a = p.parse_args()
    for name in a.model:
        preset, roles = PAIRS[name]
        theirs = load(a.authors_src, name).model.eval()
        ours = build_model(get_preset(preset)).eval()
        n = copy_weights(theirs, ours, roles)
        dtype = torch.float64 if a.double else torch.float32
        theirs.to(dtype)
        ours.to(dtype)
        torch.manual_seed(1)
        x = torch.randint(0, 256, (a.batch_size, 3, 32, 32), dtype=torch.uint8)
        x01 = x.to(dtype) / 255.0
        with torch.no_grad():
            torch.manual_seed(0)
            out = theirs(x01)
            t = theirs.calculate_elbo(x01, out)[0]  # their mean over the batch
            for composed in (False, True):  # their arithmetic; dense units composed where that pays (the default)
                fuse_units(ours, composed)
                torch.manual_seed(0)
                o = ours.terms(x, analytic_kl=False).nelbo
                rel = abs(float(o.mean()) - float(t)) / abs(float(t))
                print(f"{name} vs {preset}{' (units composed)' if composed else ''} ({dtype}): {n} layers copied; "
                      f"negative ELBO (nats per image, mean of {a.batch_size}): "
                      f"theirs {float(t):.4f}, ours {float(o.mean()):.4f}, relative difference {rel:.2e}")


if __name__ == "__main__":
    main()
