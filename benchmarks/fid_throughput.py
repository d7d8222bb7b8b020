"""Inception (FID) feature throughput on this machine for 32x32 uint8 inputs.

Not a test: run ``python benchmarks/fid_throughput.py [--device cuda] [--batches 4]``. It warms the network up
with one batch, then times a few batches of 50 (each resized to 299x299 inside the extractor) and prints
images/s, i.e. what one FID evaluation of N samples costs (N / throughput seconds, plus the matrix square
root).
"""

from __future__ import annotations

import argparse
import time

import torch

from selfvae.evaluation.fid import InceptionFeatures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()

    extractor = InceptionFeatures(device=args.device, batch_size=args.batch_size)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, 3, args.size, args.size), generator=g, dtype=torch.uint8)
    extractor(images)  # warm-up
    sync = torch.cuda.synchronize if extractor.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(args.batches):
        extractor(images)
    sync()
    elapsed = time.perf_counter() - start
    n = args.batches * args.batch_size
    print(
        f"Inception features: {n / elapsed:.1f} images/s on {args.device} "
        f"({n} images of {args.size}x{args.size} in {elapsed:.1f} s, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()})"
    )


if __name__ == "__main__":
    main()
