"""How close a training step already runs to what this CPU can do: the ceiling on any speed-up at the same
arithmetic (issue 14 asks for 1.5x the authors' training images/s at their exact architecture).

Measures, with ``--threads`` torch threads:

* the CPU's practical fp32 peak: a large square matrix product (oneDNN/MKL sgemm), GFLOP/s;
* the same for the convolutions the authors' networks are made of (3x3 and 1x1 at their widths, forward and
  backward), GFLOP/s;
* a whole training step (forward, backward, AdaMax) of a preset, its FLOPs counted by
  ``torch.utils.flop_counter`` (multiply-adds x 2), hence the GFLOP/s it sustains and the fraction of the
  sgemm peak; ``peak / sustained`` is the largest speed-up any implementation of the same arithmetic could get.

    python benchmarks/roofline.py --presets cifar10-vae-realnvp-paper --threads 1 --batch-size 16 [--retain-memory]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from selfvae.models.build import build_model
from selfvae.nn.conv import conv2d
from selfvae.nn.layers import data_dependent_init
from selfvae.presets import get_preset
from selfvae.runtime import retain_freed_memory


def best_of(fn, repeats: int) -> float:  # noqa: ANN001
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def sgemm_gflops(n: int, repeats: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_of(lambda: a @ b, repeats) / 1e9


def conv_gflops(c_in: int, c_out: int, k: int, hw: int, batch: int, repeats: int) -> tuple[float, float]:
    """Forward and forward+backward GFLOP/s of one convolution (channels-last, as our presets run; the backward
    as training takes it, :func:`selfvae.nn.conv.conv2d`)."""
    x = torch.randn(batch, c_in, hw, hw).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(c_out, c_in, k, k).to(memory_format=torch.channels_last).requires_grad_()
    flops = 2 * batch * c_out * c_in * k * k * hw * hw
    fwd = best_of(lambda: F.conv2d(x, w, padding=k // 2), repeats)
    both = best_of(lambda: conv2d(x, w, None, padding=k // 2).sum().backward(), repeats)
    return flops / fwd / 1e9, 3 * flops / both / 1e9


def step_gflops(preset: str, batch: int, repeats: int) -> tuple[float, float, float]:
    """FLOPs of one training step of ``preset``, its seconds, and the GFLOP/s it sustains."""
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    shape = tuple(cfg.model.image_shape)
    x = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8)
    data_dependent_init(model, lambda: model.terms(x))
    opt = torch.optim.Adamax(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(x).backward()
        opt.step()

    step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = best_of(step, repeats)
    return flops / batch, seconds, flops / seconds / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["cifar10-vae-realnvp-paper"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--retain-memory", action="store_true",
                   help="glibc keeps freed memory in the process (selfvae.runtime), as selfvae train does")
    a = p.parse_args()
    if a.retain_memory:
        retain_freed_memory()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    print(f"threads {a.threads}, batch {a.batch_size}, best of {a.repeats}")
    sgemm = max(sgemm_gflops(n, a.repeats) for n in (1024, 2048))
    print(f"sgemm (fp32 matrix product, 1024 and 2048 square): {sgemm:.1f} GFLOP/s")
    train_peak = 0.0
    for c_in, c_out, k, hw in ((256, 64, 3, 32), (64, 256, 1, 32), (512, 128, 3, 16), (128, 512, 1, 16)):
        fwd, both = conv_gflops(c_in, c_out, k, hw, a.batch_size, a.repeats)
        train_peak = max(train_peak, both)
        print(f"conv {k}x{k} {c_in}->{c_out} at {hw}x{hw}: forward {fwd:.1f}, forward+backward {both:.1f} GFLOP/s")
    print(f"the best forward+backward convolution: {train_peak:.1f} GFLOP/s  <- what training arithmetic reaches here")
    for preset in a.presets:
        per_image, seconds, sustained = step_gflops(preset, a.batch_size, a.repeats)
        print(f"{preset}: {per_image / 1e9:.2f} GFLOP a training image, {seconds:.2f} s a step of {a.batch_size} "
              f"({a.batch_size / seconds:.2f} img/s): {sustained:.1f} GFLOP/s = {sustained / sgemm:.0%} of sgemm, "
              f"{sustained / train_peak:.0%} of the best convolution; at the same arithmetic at most "
              f"{train_peak / sustained:.2f}x faster (every layer as fast as the best one), "
              f"{max(sgemm, train_peak) / sustained:.2f}x at the matrix-product rate")


if __name__ == "__main__":
    main()
