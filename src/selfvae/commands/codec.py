"""``selfvae compress`` and ``selfvae decompress``: the bits-back codec's files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from selfvae.commands.base import THREADS, Args, Command, check_file_output, load, whole
from selfvae.errors import SelfVAEError
from selfvae.runs import layout


def compress_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (PNG, JPEG, PGM, ...), folders, or an .npz (its x_test, or FILE.npz:KEY)")
    s.add_argument("-o", "--output", required=True, help="compressed file to write")
    s.add_argument("--limit", type=whole(1), help="compress only the first N images")
    s.add_argument("--channels", type=int, choices=[1, 3],
                   help="convert the inputs first (1: grey by ITU-R 601 luma; 3: grey repeated): a colour image for "
                        "a grey model; the file then decodes to the converted image")
    s.add_argument("--precision", type=whole(1), help="latent grid 2^-P (default: CodingParams.precision); stored")
    s.add_argument("--chunk", type=whole(1), help="images per network call (default: CodingParams.chunk); stored")
    s.add_argument("--flow-chunk", type=whole(1),
                   help="images per call of a RealNVP prior's couplings (default: CodingParams.flow_chunk); stored")
    s.add_argument("--group", type=whole(1), default=64,
                   help="tiles of the model's frame coded together at most (speed; stored)")
    s.add_argument("--tile", type=whole(1), metavar="N",
                   help="cut images into N x N tiles, a multiple of the model's frame (default: the frame): the "
                        "model runs on larger tiles with its attention pooling locally, seeing more of a "
                        "photograph (0.02 bits/dim less nELBO at 64 or 128 on the photos test set, but the first "
                        "tile, coded without bits back, is larger: pays on large files); stored")
    s.add_argument("--samples", type=whole(1), metavar="S",
                   help="importance samples an image (BB-IS, Ruan et al. 2021): the file costs the IW bound with S "
                        "samples instead of the negative ELBO, for S times the likelihood evaluations (default 1)")
    s.add_argument("--no-mixture-bits-back", action="store_true",
                   help="code every pixel under its whole mixture (slower, the same size; stored)")
    s.add_argument("--initial-bits", action="store_true",
                   help="let the first image pop seeded random words (BB-ANS's initial bits) instead of coding the "
                        "first images with chosen latents and no bits back (larger: for comparison; stored)")
    s.add_argument("--model-only", action="store_true",
                   help="keep the model's file even where a PNG of each image would be smaller (by default the "
                        "file then holds those PNGs, flagged in its header): to measure the model's own coding")
    s.add_argument("--search-steps", type=whole(0), metavar="N",
                   help="gradient steps the encoder spends choosing the latents of the first images, coded without "
                        "bits back (0: the rounded posterior means; default: 60 for files of at most 4 images "
                        "(tiles), where those images weigh, else 0; the decoder does not need it)")
    s.add_argument("--threads", type=THREADS, default=max(1, torch.get_num_threads()),
                   help="worker threads (never changes the file)")
    s.add_argument("--nelbo", action="store_true",
                   help="measure the images' negative ELBO too, to set beside the file (one more pass of the model)")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    s.add_argument("--lossy-z", type=whole(0), metavar="P", help="lossy (a selfVAE): y exactly, z_K on the grid 2^-P")
    s.add_argument("--y-only", action="store_true", help="lossy (a selfVAE): y exactly, x its super-resolution")


def check_compress(args: Args) -> None:
    check_file_output(Path(args.output))
    if args.y_only and args.lossy_z is not None:
        raise SelfVAEError("give --lossy-z or --y-only, not both")


def run_compress(args: Args) -> None:
    from selfvae.codec import CodingParams, QuantisedZ, compress
    from selfvae.codec.images import read_inputs

    _, model = load(args)
    images = read_inputs(args.inputs, args.limit)
    if args.channels:
        from selfvae.codec.images import InputImage
        from selfvae.data.images import convert_channels

        images = [InputImage(im.name, convert_channels(im.pixels[None], args.channels)[0]) for im in images]
    given = {"precision": args.precision, "chunk": args.chunk, "flow_chunk": args.flow_chunk,
             "mixture_bits_back": False if args.no_mixture_bits_back else None, "samples": args.samples,
             "chosen_first": False if args.initial_bits else None}
    params = CodingParams(**{k: v for k, v in given.items() if v is not None})
    lossy = QuantisedZ(args.lossy_z) if args.lossy_z is not None or args.y_only else None
    data, rep = compress(model, images, params, group=args.group, threads=args.threads, progress=not args.json,
                         model_hint=model_hint(args.run_dir), lossy=lossy, search_steps=args.search_steps,
                         png_instead=not args.model_only, tile=args.tile, nelbo=args.nelbo)
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    exact = lossy is None or rep.lossless_instead
    nelbo_bpd = rep.nelbo_bits / rep.dims if exact and rep.nelbo_bits is not None else None  # lossy: none
    result = {**rep.to_dict(), "nelbo_bits_per_dim": nelbo_bpd, "output": str(out),
              "ratio_to_nelbo": None if nelbo_bpd is None else rep.bits_per_dim / nelbo_bpd}
    if args.json:
        print(json.dumps(result))
        return
    if rep.lossless_instead:
        print("selfvae compress: the lossless file is no larger than the lossy one would be; wrote it (exact)",
              file=sys.stderr)
    if rep.png_instead:
        print("selfvae compress: the model's file would have been larger than PNG of these images; the file holds "
              "them as PNG instead (flagged in its header; decompress reads it as any other)", file=sys.stderr)
    print_report(out, rep, nelbo_bpd)


def print_report(out: Path, rep: Any, nelbo_bpd: float | None) -> None:  # noqa: ANN401 - codec CompressReport
    """A compressed file's size, part by part, beside the images' negative ELBO."""
    print(f"{out}: {rep.n_images} images, {rep.file_bytes} bytes, {rep.bits_per_dim:.4f} bits/dim "
          f"(per {rep.dims // rep.n_images if rep.n_images else 0} dims an image on average, every byte counted)")
    for part, b in sorted(rep.parts_bytes.items(), key=part_order):
        print(f"  {part:<8} {b:10.1f} bytes")
    if rep.chosen_images:
        print(f"  of which {rep.chosen_bytes:.1f} bytes for the first {rep.chosen_images} image(s), coded with chosen "
              f"latents and no bits back (nothing to borrow yet)")
    else:
        print(f"  {'initial':<8} {rep.initial_bytes:10.1f} bytes (bits the first image borrows with nothing to borrow)")
    print(f"  {'header':<8} {rep.header_bytes:10d} bytes")
    ideal = rep.ideal_bits / rep.dims
    print(f"information the coder coded (-log2 of its probabilities, net of bits back): {ideal:.4f} bits/dim; "
          f"file / that = {rep.bits_per_dim / ideal:.4f}")
    if nelbo_bpd is not None:
        print(f"negative ELBO of the same images: {nelbo_bpd:.4f} bits/dim; "
              f"file / nELBO = {rep.bits_per_dim / nelbo_bpd:.4f}")


def model_hint(run: str) -> str:
    """What a compressed file names its model by: a shipped model's name, else the folder's absolute path."""
    folder = layout.resolve(run)
    return folder.name if layout.is_packaged(folder) else str(folder.resolve())


def part_order(item: tuple[str, float]) -> tuple[int, str]:
    name = item[0]
    return ({"u": 0, "x": 3}.get(name, 1 if name.startswith("y") else 2), name)


def decompress_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("file", metavar="FILE")
    s.add_argument("-o", "--output", required=True, help="folder for the PNG files (named after the inputs)")
    s.add_argument("--model", help="the run directory that compressed FILE (default: the one FILE names)")
    s.add_argument("--levels", action="store_true",
                   help="also write what each stage of the first group gives (y_1, ..., x) and the bytes it needed")
    s.add_argument("--threads", type=THREADS, default=max(1, torch.get_num_threads()),
                   help="worker threads (any number decodes the same)")


def run_decompress(args: Args) -> None:
    from selfvae.codec import decompress, read_model_hint
    from selfvae.codec.container import read
    from selfvae.codec.images import save_png
    from selfvae.runs.loading import load_run

    data = read(args.file)
    run_dir = args.model or read_model_hint(data, args.file)
    try:
        layout.resolve(run_dir)
    except SelfVAEError:
        raise SelfVAEError(f"{args.file}: was written with the model {run_dir}, which is not here; "
                           f"give it with --model RUN_DIR") from None
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise SelfVAEError(f"-o {out}: is a file; decompress writes PNG files into a folder")
    _, model = load_run(run_dir)
    dec = decompress(model, data, name=str(args.file), threads=args.threads, progress=True)
    out.mkdir(parents=True, exist_ok=True)
    names = unique_names(dec.names)
    for name, pixels in zip(names, dec.images, strict=True):
        save_png(pixels, out / f"{name}.png")
    renamed = sum(a != b for a, b in zip(names, dec.names, strict=True))
    print(f"{out}: {len(dec.images)} images" + (f" ({renamed} renamed: their names were taken, e.g. a/x.png and "
                                                 "b/x.png given as files)" if renamed else ""))
    if args.levels:
        total = len(data)
        for level, n_bytes, tiles in dec.stages:
            path = out / f"stage_{level}.png"
            save_png(mosaic(tiles), path)
            print(f"  {level:<4} known after {n_bytes} of {total} bytes ({100 * n_bytes / total:.1f}%): {path}")


def unique_names(names: list[str]) -> list[str]:
    """``names`` with each repeat made unique by ``_2``, ``_3``, ... (never a name already in the list): two images
    named alike (``a/x.png`` and ``b/x.png``, or ``y.png`` and ``y.bmp``) must not overwrite each other's PNG."""
    taken, out = set(names), []
    seen: set[str] = set()
    for name in names:
        new, k = name, 2
        while new in seen or (new != name and new in taken):
            new, k = f"{name}_{k}", k + 1
        seen.add(new)
        out.append(new)
    return out


def mosaic(tiles) -> Any:  # noqa: ANN001, ANN401 - numpy uint8 [n, C, h, w]
    """uint8 tiles ``[n, C, h, w]`` side by side as one ``[h, n*w, C]`` picture."""
    import numpy as np

    return np.concatenate(list(tiles.transpose(0, 2, 3, 1)), axis=1)


COMMANDS = [
    Command("compress", "lossless bits-back compression of images into one file", compress_options, run_compress,
            check=check_compress),
    Command("decompress", "decode a file written by `selfvae compress` to PNG files", decompress_options,
            run_decompress, model=False, common=False),
]
