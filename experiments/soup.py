"""Question: do two runs trained on from the same weights with different seeds average into a better model than
either (a "model soup", Wortsman et al. 2022)? If so, the core that tests leave idle can train a sibling run, and
the two cores train one model between them.

Each run's evaluation weights (its best checkpoint's EMA, as a ship takes them) and their element-wise mean (with
``--weights``, a weighted one) are measured on the validation images the runs validated on and on the test split,
the same seed for every model; ``--out`` writes the mean as an exported model folder (float32, the first run's
config) for ``scripts/train_pretrained.py --export`` or ``selfvae eval``.

    python experiments/soup.py runs/ctx-vae-gpu-on4 runs/ctx-vae-gpu-on4b \\
        --data-dir ../shared/data/cifar10-official-part.npz --out runs/soup-vae-gpu-on4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from selfvae.data import batches_of, load_split
from selfvae.errors import SelfVAEError
from selfvae.evaluation.bounds import evaluate
from selfvae.models.build import resolved
from selfvae.runs import layout
from selfvae.runs.loading import load_run
from selfvae.runs.weights import write_weights


def averaged(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """The weighted mean of state dicts of one architecture (floating tensors; others from the first)."""
    if any(s.keys() != states[0].keys() for s in states):
        raise SelfVAEError("soup: the runs' models differ in their parameters; average runs of one architecture")
    total = sum(weights)
    return {k: sum(w * s[k].double() for w, s in zip(weights, states, strict=True)).div(total).to(v.dtype)
            if v.is_floating_point() else v for k, v in states[0].items()}


def bpd(model: torch.nn.Module, cfg, split: str, limit: int | None) -> float:  # noqa: ANN001
    ds = load_split(cfg, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    torch.manual_seed(0)
    return evaluate(model, batches_of(ds, 64, n), 1, total=n, progress=False)["bpd_elbo"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run folders trained on from the same weights")
    p.add_argument("--data-dir", help="the data set's file or folder")
    p.add_argument("--weights", type=float, nargs="+", help="each run's weight in the mean (default equal)")
    p.add_argument("--val-limit", type=int, default=245, help="validation images (the runs' train.eval_limit)")
    p.add_argument("--out", type=Path, help="write the mean as an exported model folder here")
    a = p.parse_args()
    weights = a.weights or [1.0] * len(a.runs)
    if len(weights) != len(a.runs):
        raise SelfVAEError(f"--weights: {len(weights)} given for {len(a.runs)} runs")
    loaded = [load_run(r, data_dir=a.data_dir) for r in a.runs]
    cfg, soup = loaded[0]
    for run, (c, model) in zip(a.runs, loaded, strict=True):
        print(f"{run}: validation {bpd(model, c, 'val', a.val_limit):.4f}, test {bpd(model, c, 'test', None):.4f}",
              flush=True)
    soup.load_state_dict(averaged([m.state_dict() for _, m in loaded], weights))
    print(f"mean {weights}: validation {bpd(soup, cfg, 'val', a.val_limit):.4f}, test "
          f"{bpd(soup, cfg, 'test', None):.4f}", flush=True)
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        write_weights(soup, a.out, "float32", cfg.name)
        resolved(cfg).save(a.out / layout.CONFIG)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
