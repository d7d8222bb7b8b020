"""Bit-exactness of the codec at scale: compress images with a model, decompress, compare every pixel.

Not a test: ``python tools/codec_roundtrip.py (RUN_DIR | --preset NAME [--set k=v ...]) INPUT... [--limit N]``.
Exactness does not need training, so ``--preset`` builds a freshly initialised model (seeded): e.g. an RGB
model for CIFAR-10 images. Prints images/s both ways and the file's bits/dim.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from selfvae.codec import compress, decompress
from selfvae.codec.images import read_inputs
from selfvae.config import apply_overrides
from selfvae.models.build import build_model
from selfvae.presets import get_preset
from selfvae.runs.loading import load_run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="a run directory (or use --preset)")
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--preset")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.preset:
        cfg = get_preset(args.preset)
        apply_overrides(cfg, args.set)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        inputs = [args.model, *args.inputs] if args.model else args.inputs
    else:
        cfg, model = load_run(args.model)
        inputs = args.inputs
    images = read_inputs(inputs, args.limit)
    t = time.perf_counter()
    data, rep = compress(model, images, threads=args.threads, progress=True)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    out = decompress(model, data, threads=args.threads, progress=True)
    dec = time.perf_counter() - t
    exact = all(np.array_equal(a, b.pixels) for a, b in zip(out.images, images, strict=True))
    print(f"{cfg.name}: {len(images)} images, {len(data)} bytes, {rep.bits_per_dim:.4f} bits/dim; "
          f"encode {len(images) / enc:.1f} img/s, decode {len(images) / dec:.1f} img/s ({args.threads} threads); "
          f"bit-exact: {exact}")
    if not exact:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
