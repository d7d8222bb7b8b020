"""Operators one training step dispatches (forward, backward and the optimiser), ours against the authors' code.

On a GPU a small step is bound by the host, not the arithmetic: each operator is a kernel launch of some
microseconds of Python and dispatcher time, so the count of operators per step bounds its rate whatever the
batch (the first GPU session measured our paper presets' step at 0.30 s for batch 32 and 0.33 s for 128, and
0.47x the authors' images/s). This counts them on the CPU at batch 2 by ``TorchDispatchMode``:

    python benchmarks/op_count.py --authors-src .gpu/srVAE [--top 15] [--as-gpu]

``--as-gpu`` counts our models as a GPU runs them: weight norm fused (:func:`selfvae.nn.layers.fused_weight_norm`)
and every convolution ``F.conv2d`` (the matrix-product weight gradients of :mod:`selfvae.nn.conv` are CPU-only).
"""

from __future__ import annotations

import argparse
from collections import Counter

import bench
import torch
from torch.utils._python_dispatch import TorchDispatchMode


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count(args: argparse.Namespace, name: str) -> Counter[str]:
    _, step = bench._step_fn(args, name)
    step()  # the first step initialises optimiser state
    with _Count() as c:
        step()
    return c.ops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["cifar10-vae-realnvp-paper", "authors-vae-realnvp",
                                                   "cifar10-srvae-paper", "authors-srvae", "cifar10-vae-small",
                                                   "cifar10-srvae-small"])
    p.add_argument("--authors-src", required=True, metavar="DIR")
    p.add_argument("--top", type=int, default=12, help="the most frequent operators of each model")
    p.add_argument("--as-gpu", action="store_true", help="our layers as they run on a GPU (see above)")
    a = p.parse_args()
    if a.as_gpu:
        from selfvae.nn import conv, layers

        layers.WNConv2d.weight = lambda self: layers.fused_weight_norm(self.v, self.g, self.transposed)
        conv.MIN_ROWS = 10**9
    args = argparse.Namespace(device="cpu", batch_size=2, channels_last=False, authors_src=a.authors_src)
    torch.manual_seed(0)
    for name in a.models:
        ops = count(args, name)
        top = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in ops.most_common(a.top))
        print(f"{name:<28} {sum(ops.values()):>6} operators per step; {top}", flush=True)


if __name__ == "__main__":
    main()
