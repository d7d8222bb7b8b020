"""Lossless compression of test images with a trained run, beside the model's bounds and classical codecs.

Not a test: ``python benchmarks/codec.py RUN_DIR [--n 1000] [--single 10] [--iw 64] [--threads 2] [--data-dir D]``.

Prints, for the first N test images of the run's data set (as the data set stores them: 28x28 for MNIST,
so bits/dim are per 784 pixels; every byte of every file counted):

* our file for all N images: bits/dim, its parts, the first images' cost (coded with chosen latents, no bits
  back) and header, encode and decode images/s, and that the round trip is bit-exact; beside it the same file
  with BB-ANS's seeded initial bits instead (``--initial-bits``; ``--no-seeded`` skips it); ``--search-steps``
  as ``selfvae compress``'s;
* the model's negative ELBO (one posterior sample) and IW bound (``--iw`` samples, first ``--iw-limit``
  images) on the same images;
* the first ``--single`` images each compressed alone (what a one-image file costs), both ways;
* PNG (optimised), WebP, JPEG-XL and AVIF lossless, one file per image and one mosaic file for the set.

``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from selfvae.codec import CodingParams, compress, decompress, nelbo_bits
from selfvae.codec.classical import LOSSLESS, lossless_size, mosaic
from selfvae.codec.fallback import fallback_png
from selfvae.codec.images import split_images, to_tiles
from selfvae.evaluation.bounds import iw_bound, log_weights
from selfvae.runs.loading import load_run


def iw_bits(model, images, samples: int) -> float:
    tiles = torch.from_numpy(np.concatenate([to_tiles(im.pixels, model.shapes[-1], "") for im in images]))
    torch.manual_seed(0)
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(tiles), 16):
            logw, _ = log_weights(model, tiles[s : s + 16], samples)
            total -= float(iw_bound(logw).sum())
    return total / math.log(2)


def codec_png_smaller(model, images: list, rep) -> bool:
    """Whether ``selfvae compress`` would have written the PNG-instead file (one PNG of the tiles, as the file
    would carry it, smaller than the model's payload): then the file is PNG, never counted as the model's figure."""
    tiles = np.concatenate([to_tiles(im.pixels, model.shapes[-1], "") for im in images])
    png = fallback_png(images, tiles, np.ones(len(tiles), dtype=bool), model.shapes[-1])
    return len(png) < rep.file_bytes - rep.header_bytes


def single_files(model, images: list, threads: int) -> dict[str, float]:
    """Mean bytes of a one-image file of each of ``images``, with chosen latents (the default) and with initial
    bits instead, and the first kind's header and initial bytes."""
    singles = [compress(model, [im], threads=threads)[1] for im in images]
    seeded = [compress(model, [im], CodingParams(chosen_first=False), threads=threads)[1] for im in images]
    return {"single_file_bytes": float(np.mean([r.file_bytes for r in singles])),
            "single_initial_bytes": float(np.mean([r.initial_bytes for r in singles])),
            "single_header_bytes": float(np.mean([r.header_bytes for r in singles])),
            "single_seeded_file_bytes": float(np.mean([r.file_bytes for r in seeded]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-dir", help="the images' data set in place of the model's own: an .npz is read as one "
                                       "(../shared/data/cifar10-official-part.npz: the official CIFAR-10 pixels)")
    ap.add_argument("--single", type=int, default=10)
    ap.add_argument("--iw", type=int, default=64)
    ap.add_argument("--iw-limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=1,
                    help="importance samples an image (BB-IS) in the file of all images; compare with --iw S")
    ap.add_argument("--search-steps", type=int,
                    help="the encoder's search for the first images' latents (default: compress's, by file size)")
    ap.add_argument("--no-seeded", action="store_true", help="skip the same file with initial bits (for large S)")
    ap.add_argument("--no-classical", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()

    cfg, model = load_run(args.run_dir, data_dir=args.data_dir)
    images = split_images(cfg, args.split, args.n)
    n, dims = len(images), sum(im.pixels.size for im in images)
    per = dims / n
    res: dict = {"run": args.run_dir, "preset": cfg.name, "data": cfg.data.name, "n_images": n, "dims_per_image": per}

    t = time.perf_counter()
    res["samples"], res["search_steps"] = args.samples, args.search_steps
    data, rep = compress(model, images, CodingParams(samples=args.samples), threads=args.threads, progress=True,
                         search_steps=args.search_steps, png_instead=False)  # the model's own coding
    res["png_would_be_smaller"] = codec_png_smaller(model, images, rep)
    res["encode_img_s"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    dec = decompress(model, data, threads=args.threads, progress=True)
    res["decode_img_s"] = n / (time.perf_counter() - t)
    res["exact"] = all(np.array_equal(a, b.pixels) for a, b in zip(dec.images, images, strict=True))
    res.update(ours_bpd=rep.bits_per_dim, ours_bytes=rep.file_bytes, header_bytes=rep.header_bytes,
               initial_bytes=rep.initial_bytes, parts_bytes=rep.parts_bytes, chosen_images=rep.chosen_images,
               chosen_bytes=rep.chosen_bytes)
    seeded = None if args.no_seeded else compress(
        model, images, CodingParams(samples=args.samples, chosen_first=False), threads=args.threads)[1]
    if seeded is not None:
        res.update(seeded_bpd=seeded.bits_per_dim, seeded_initial_bytes=seeded.initial_bytes)
    res["nelbo_bpd"] = nelbo_bits(model, images) / dims
    k = min(args.iw_limit, n)
    res["iw_samples"], res["iw_images"] = args.iw, k
    res["iw_bpd"] = iw_bits(model, images[:k], args.iw) / (k * per)
    res["nelbo_bpd_iw_subset"] = nelbo_bits(model, images[:k]) / (k * per)
    if args.single > 0:
        res.update(single_files(model, images[: args.single], args.threads))
    if not args.no_classical:
        pix = [im.pixels for im in images]
        for name in LOSSLESS:
            res[f"{name}_per_image_bpd"] = 8 * sum(lossless_size(name, x) for x in pix) / dims
            res[f"{name}_mosaic_bpd"] = 8 * lossless_size(name, mosaic(pix)) / dims

    print(f"\n{cfg.name} on {n} {cfg.data.name} {args.split} images ({per:.0f} dims each); bits/dim, every byte:")
    print("| codec | one file for all | one file per image |\n| --- | --- | --- |")
    label = "bits back" if args.samples == 1 else f"bits back, S = {args.samples}"
    single = f"{8 * res['single_file_bytes'] / per:.4f} (first {args.single})" if args.single > 0 else "-"
    print(f"| selfvae ({label}) | {rep.bits_per_dim:.4f} | {single} |")
    if not args.no_classical:
        for name in LOSSLESS:
            print(f"| {name} | {res[f'{name}_mosaic_bpd']:.4f} | {res[f'{name}_per_image_bpd']:.4f} |")
    if res["png_would_be_smaller"]:
        print("(one PNG of these images is smaller than the model's file: selfvae compress would write that PNG "
              "file instead; the model's figure above is its own coding, --model-only)")
    print(f"\nnELBO {res['nelbo_bpd']:.4f}; file / nELBO = {rep.bits_per_dim / res['nelbo_bpd']:.4f}; "
          f"IW bound (S={args.iw}, first {k}) {res['iw_bpd']:.4f} vs nELBO {res['nelbo_bpd_iw_subset']:.4f} there")
    print(f"header {rep.header_bytes} B; first {rep.chosen_images} images (chosen latents, no bits back) "
          f"{rep.chosen_bytes:.0f} B; parts (B): " + ", ".join(f"{p} {b:.0f}" for p, b in rep.parts_bytes.items()))
    if seeded is not None:
        print(f"with initial bits instead (--initial-bits): {seeded.bits_per_dim:.4f} bits/dim "
              f"({seeded.initial_bytes:.0f} B of initial bits)")
    if args.single > 0:
        print(f"single-image file: {res['single_file_bytes']:.0f} B (header {res['single_header_bytes']:.0f} B); "
              f"with initial bits instead: {res['single_seeded_file_bytes']:.0f} B")
    print(f"encode {res['encode_img_s']:.1f} img/s, decode {res['decode_img_s']:.1f} img/s "
          f"({args.threads} threads); round trip exact: {res['exact']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
