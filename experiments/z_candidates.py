"""srVAE designs trained from random weights the way the authors train theirs, to find which keeps z carrying
information at a size that ships (issue 49.3).

What is known (docs/RESULTS.md, "Real pixels"): on an H200 the authors' srVAE and our copy of their networks
(``cifar10-srvae-paper``, 39M parameters) both revive z between steps 250 and 500 (KL_z 59-68 nats, 441-710 of 1024
units active at step 500); the shippable ``cifar10-srvae-small`` (3.8M) never did on a CPU (0 units active over 2937
steps), nor with q(z|x) widened to the authors'. The candidates below vary what lies around z:

* ``z-small-dec``: the small preset with the z-decoder inside p(x|y,z) widened at 8x8 (width 64, growth 48; 4.3M);
* ``z-paper-small``: the authors' nets (``model.nets=paper``) thinned to the small preset's sizes (3.7M: ships);
* ``z-paper-half``: their nets with the u side thinned (q_u, p_y, the flow) and the z side (q_z, p_z, p_x) at
  half their growth (5.1M);
* ``z-paper-zside``: the u side thinned, the z side theirs (21.7M): is the z side's width enough? (Yes, on a CPU:
  z revived between steps 325 and 350; z-paper-half too, by step 400.)
* ``z-paper-ship``: z-paper-half within the 8 MB float16 budget (3.76M: a thinner flow prior and p(y|u), a shorter
  z-decoder);
* ``z-paper-px`` / ``z-paper-pz``: as ``z-paper-small`` with p(x|y,z), resp. p(z|y,u), at the authors' size: which of
  the z side's nets must be wide?

Answered on the third H200 (2026-11-27, docs/RESULTS.md "Designs around z"): p(x|y,z) is the net that must be wide
(z-paper-px revived z by step 750, z-paper-pz never did); z-paper-ship revived z there too (KL_z 217 nats, 320
informative units on the test images at step 1250) and goes on from its weights (``GO_ON``). Its p(z|y,u) ignores
u, so its z side joined the shipped srVAE's u side (experiments/z_hybrid.py): 4.9253 bits/dim on the first 245
official test images at once (the shipped srVAE then 4.8775, z-paper-ship 5.1273), z alive (KL_z 280 nats); trained
on, that is the shipped ``cifar10-srvae-small`` since 2026-11-27 (its preset the joined architecture).

``experiments/real_pixels.sh NAME`` trains one on a CPU (one thread); ``tools/gpu_session.py train`` trains those of
``ON_GPU`` beside the shipped models on a lent GPU, where a few minutes give the thousands of steps a CPU-hour does
not.

    python experiments/z_candidates.py NAME          # prints the preset and the --set arguments of one
    python experiments/z_candidates.py NAME --go-on  # the same, going on from its committed weights (GO_ON)
"""

from __future__ import annotations

import sys

# the authors' main.py: batch 32, AdaMax 2e-3 decayed exponentially (the presets' optimiser), no clipping, no EMA
AUTHORS_WAY = ["train.batch_size=32", "train.grad_clip=null", "train.ema_decay=null", "train.lr_schedule=exp"]
# the u side of the small preset in the authors' nets: a thin flow prior, q(u|y) and p(y|u)
_THIN_U = ["model.prior_kwargs.mid_channels=32", "model.prior_kwargs.num_blocks=2", "model.q_u.growth=16",
           "model.p_y.growth=40"]
# each net of the z side at the small preset's sizes: q(z|x), p(z|y,u) (and its y-encoder), p(x|y,z) (and its z-decoder)
_THIN_Q_Z = ["model.q_z.growth=8", "model.q_z.steps=3"]
_THIN_P_Z = ["model.p_z.growth=24", "model.p_z.blocks=1", "model.p_z_y.growth=16", "model.p_z_y.steps=3"]
_THIN_P_X = ["model.p_x.growth=24", "model.p_x.steps=4", "model.p_x.blocks=2", "model.p_x_z.growth=24",
             "model.p_x_z.steps=4"]
# the z side at about half the authors' growth (the z-decoder's steps set by each design)
_HALF_Z = ["model.q_z.growth=8", "model.p_z.growth=32", "model.p_z.blocks=1", "model.p_z_y.growth=16",
           "model.p_z_y.steps=3", "model.p_x.growth=32", "model.p_x.blocks=2", "model.p_x_z.growth=32"]

CANDIDATES: dict[str, tuple[str, list[str]]] = {
    "z-small-dec": ("cifar10-srvae-small", ["model.p_x_z.width=64", "model.p_x_z.growth=48", "model.p_x_z.steps=4"]),
    "z-paper-small": ("cifar10-srvae-paper", [*_THIN_U, *_THIN_Q_Z, *_THIN_P_Z, *_THIN_P_X]),
    "z-paper-half": ("cifar10-srvae-paper", [*_THIN_U, *_HALF_Z, "model.p_x_z.steps=6"]),
    "z-paper-zside": ("cifar10-srvae-paper", list(_THIN_U)),
    # z-paper-half within the 8 MB float16 budget (3.76M): a thinner flow prior (mid 16), p_x_z of 4 steps and p(y|u) at
    # growth 32 (the CPU run of 2026-11-27 had 40: 3.92M, its file 8.17 MB)
    "z-paper-ship": ("cifar10-srvae-paper", [*_THIN_U, "model.p_y.growth=32", "model.prior_kwargs.mid_channels=16",
                                             *_HALF_Z, "model.p_x_z.steps=4"]),
    "z-paper-px": ("cifar10-srvae-paper", [*_THIN_U, *_THIN_Q_Z, *_THIN_P_Z]),  # p(x|y,z) alone at the authors' size
    "z-paper-pz": ("cifar10-srvae-paper", [*_THIN_U, *_THIN_Q_Z, *_THIN_P_X]),  # p(z|y,u) alone at the authors' size
}
# what a lent GPU trains: the others were answered (z-small-dec, z-paper-zside, z-paper-half on a CPU; z-paper-small,
# -px and -pz on the third H200: only the designs with p(x|y,z) wide revive z)
ON_GPU: list[str] = []  # none since the srVAE ships with a live z (cifar10-srvae-small, which a GPU trains on)
# the ones within the 8 MB float16 budget whose weights a GPU session brings back, to go on from
SHIPPABLE = ["z-paper-ship"]
# where each design's latest float16 weights are committed, and how it goes on from them once z is alive: still batch
# 32 without clipping, but EMA and a cosine from 1e-3 over the run's clock (the fine-tunes' recipe), for bits/dim
GO_ON = {"z-paper-ship": "experiments/real_pixels/z-paper-ship"}
GO_ON_SETTINGS = ["train.lr=1e-3", "train.lr_schedule=cosine-time", "train.ema_decay=0.999"]


def train_args(name: str) -> list[str]:
    """``selfvae train`` arguments of candidate ``name``: its preset, then the authors' way and its sizes."""
    if name not in CANDIDATES:
        raise SystemExit(f"z_candidates: unknown candidate {name!r}; known: {', '.join(CANDIDATES)}")
    preset, sizes = CANDIDATES[name]
    return ["--preset", preset, *(arg for item in [*AUTHORS_WAY, *sizes] for arg in ("--set", item))]


def go_on_args(name: str) -> list[str]:
    """``selfvae train`` arguments that take candidate ``name`` on from its committed weights (:data:`GO_ON`)."""
    if name not in GO_ON:
        raise SystemExit(f"z_candidates: {name!r} has no committed weights to go on from; those that do: "
                         f"{', '.join(GO_ON)}")
    return [*train_args(name), "--init", GO_ON[name], *(arg for item in GO_ON_SETTINGS for arg in ("--set", item))]


if __name__ == "__main__":
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    print(" ".join(go_on_args(name) if "--go-on" in sys.argv[2:] else train_args(name)))
