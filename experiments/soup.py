"""Question: do two runs trained on from the same weights with different seeds average into a better model than
either (a "model soup", Wortsman et al. 2022)? If so, the core that tests leave idle can train a sibling run, and
the two cores train one model between them.

Each run's evaluation weights (its best checkpoint's EMA, as a ship takes them) and their element-wise mean (with
``--weights``, a weighted one) are measured on the validation images the runs validated on and on the test split,
the same seed for every model; ``--out`` writes the mean as an exported model folder (float32, the first run's
config; ``--dtype float16`` as shipped) for ``scripts/train_pretrained.py --export`` or ``selfvae eval``.

    python experiments/soup.py runs/ctx-vae-gpu-on4 runs/ctx-vae-gpu-on4b \\
        --data-dir ../shared/data/cifar10-official-part.npz --out runs/soup-vae-gpu-on4

``--grid A ...`` asks the fine-tuning form of the question instead (WiSE-FT, Wortsman et al. 2022): two runs, the
weights a fine-tune started from and its end, mixed as ``(1 - a) * first + a * second`` for each ``a`` given; the
``a`` with the best validation bound is chosen (the test figures are printed for the record, never to choose), and
``--out`` writes that mix, with the fine-tune's config. For a photograph model, the start is its refitted CIFAR-10
model:

    python experiments/soup.py runs/photo-ctx6-mid24 runs/ctx-photo-ctx6 --data-dir /usr/share \\
        --grid 0.5 0.75 0.9 1 --out runs/wise-photo-ctx6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from selfvae.api import Model
from selfvae.data import load_split
from selfvae.errors import SelfVAEError
from selfvae.runs.loading import load_trained


def averaged(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weighted mean of state dicts of one architecture (floating tensors; others from the first)."""
    if any(s.keys() != states[0].keys() for s in states):
        raise SelfVAEError("soup: the runs' models differ in their parameters; average runs of one architecture")
    total = sum(weights)
    return {k: sum(w * s[k].double() for w, s in zip(weights, states, strict=True)).div(total).to(v.dtype)
            if v.is_floating_point() else v for k, v in states[0].items()}


def bpd(model: Model, split: str, limit: int | None) -> float:
    """The ELBO in bits/dim over ``split``'s first ``limit`` images (seed 0, batches of 64 as the ship's)."""
    return model.bits_per_dim(load_split(model.config, split).images[:limit], batch_size=64).bpd_elbo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders trained on from the same weights")
    p.add_argument("--data-dir", help="the data set's file or folder")
    p.add_argument("--weights", type=float, nargs="+", help="each run's weight in the mean (default equal)")
    p.add_argument("--grid", type=float, nargs="+", help="two runs: the second's weights in the mix, chosen on "
                   "validation (WiSE-FT)")
    p.add_argument("--val-limit", type=int, default=245, help="validation images (the runs' train.eval_limit)")
    p.add_argument("--out", type=Path, help="write the mean (with --grid: the chosen mix) as an exported model here")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                   help="the written model's weights (float16 as the shipped models are)")
    a = p.parse_args()
    if a.grid and (len(a.runs) != 2 or a.weights):
        raise SelfVAEError("--grid mixes exactly two runs (a fine-tune's start and its end), without --weights")
    mixes = [[1.0 - g, g] for g in a.grid] if a.grid else [a.weights or [1.0] * len(a.runs)]
    if any(len(w) != len(a.runs) for w in mixes):
        raise SelfVAEError(f"--weights: {len(mixes[0])} given for {len(a.runs)} runs")
    models = [load_trained(r, data_dir=a.data_dir, cls=Model)[1] for r in a.runs]
    for run, model in zip(a.runs, models, strict=True):
        print(f"{run}: validation {bpd(model, 'val', a.val_limit):.4f}, test {bpd(model, 'test', None):.4f}",
              flush=True)
    # copies: a state dict holds the live tensors, and loading a mix into the first model would change its own
    states = [{k: v.clone() for k, v in m.state_dict().items()} for m in models]
    soup = models[-1] if a.grid else models[0]  # a mix is written with the fine-tune's config
    soup.trained = None  # a mean of runs has no one run's training record
    best: tuple[float, list[float]] | None = None
    for weights in mixes:
        soup.load_state_dict(averaged(states, weights))
        val = bpd(soup, "val", a.val_limit)
        test = bpd(soup, "test", None)
        print(f"mean {[round(w, 4) for w in weights]}: validation {val:.4f}, test {test:.4f}", flush=True)
        if best is None or val < best[0]:
            best = (val, weights)
    if a.out:
        soup.load_state_dict(averaged(states, best[1]))
        print(f"chosen on validation: {[round(w, 4) for w in best[1]]}; wrote {soup.save_pretrained(a.out, a.dtype)}")


if __name__ == "__main__":
    main()
