"""Commands that draw: ``sample``, ``superres``, ``reconstruct``, ``interpolate`` (each one picture) and ``demo``
(a web page of all of them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from selfvae.commands.base import (
    Args,
    Command,
    check_picture,
    device,
    load,
    picture_options,
    split_batches,
    whole,
)
from selfvae.errors import SelfVAEError
from selfvae.models.build import read_inputs

MODES_HELP = (
    "as the thesis (ch. 5.2, 7) names them: rs1..rs{K+1}, reconstruction RSj: the first j latents (u, z_1, ...) "
    "inferred, the rest sampled, every y generated; cr, conditional reconstruction: y_K = d(x) and z_K given "
    "(alias cond); cg, conditional generation = super-resolution: only y_K given (alias superres); "
    "all (default): x, each y_k and every mode side by side, one labelled column each"
)
INPUT_RULE = ("the size the model was trained on: its frame (32x32 for the MNIST models) or its data's own "
              "(28x28 digits, placed in the frame as training did); other sizes need --resize")
RESIZE_HELP = "crop or pad other sizes square (the run's data.resize) and resize them as its training data were"


def sample_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("-n", type=whole(1, 4096), default=64)
    s.add_argument("--levels", action="store_true", help="also write the generation chain y_1 ... x")
    picture_options(s, "samples.png")


def run_sample(args: Args) -> None:
    from selfvae.viz import save_grid, save_rows

    _, model = load(args, device(args.device))
    levels = model.sample(args.n, args.temperature, levels=True, decode=args.decode, seed=args.seed)
    out = Path(args.output)
    save_grid(levels[-1], out, scale=args.scale)
    print(f"wrote {out}")
    if model.K and args.levels:
        chain = out.with_name(out.stem + "_levels" + out.suffix)
        save_rows([lv[: min(args.n, 10)] for lv in levels], chain, scale=args.scale)
        shown = f"; the first 10 of the {args.n} samples" if args.n > 10 else ""
        print(f"wrote {chain} (rows: y_1 ... y_K, x{shown})")


def superres_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files: of the model's y_K size (a grid of inputs and samples), or of any other size "
                        "(each super-resolved whole, tile by tile, into its own PNG)")
    s.add_argument("--samples", type=whole(1), default=3, help="samples per input (inputs of the y_K size)")
    s.add_argument("--factor", type=int, default=2,
                   help="enlarge by this factor: 2 (from y_K) or, for a 2-level downscaling model, 4 (from y_1, y_2 "
                        "generated too)")
    s.add_argument("--resize", action="store_true", help="resize inputs to the size of the level --factor starts from")
    s.add_argument("--overlap", type=whole(0), default=4,
                   help="low-resolution pixels by which neighbouring tiles overlap and are blended (whole images)")
    picture_options(s, "superres.png")


def run_superres(args: Args) -> None:
    from selfvae.data.images import read_image_file, read_image_files
    from selfvae.viz import save_rows

    where = device(args.device)
    cfg, model = load(args, where)
    if model.K == 0:
        raise SelfVAEError(f"{args.run_dir}: a plain VAE run cannot super-resolve (it has no y)")
    args.level = superres_level(model, args.factor)
    c, h, w = model.shapes[args.level - 1]
    if not args.resize:  # images of another size than the level's: each super-resolved whole, tile by tile
        photos = [read_image_file(p, (c, None, None)) for p in args.images]
        if any(tuple(y.shape[1:]) != (h, w) for y in photos):
            superres_whole(args, model, photos, where)
            return
    y = read_image_files(args.images, (c, h, w), resize=args.resize, policy=cfg.data.resize).to(where)
    torch.manual_seed(args.seed)
    rows = [y]
    for _ in range(args.samples):
        rows.append(model.super_resolve(y, args.factor, args.temperature, decode=args.decode))
    out = Path(args.output)
    save_rows(rows, out, scale=args.scale)
    print(f"wrote {out} (first row: inputs; then {args.samples} sample(s) per input)")


def superres_level(model: Any, factor: int) -> int:
    """The level whose images ``--factor`` enlarges to x: ``y_K`` for the model's last factor, coarser ones for
    products of its factors (a 2-level downscaling model: 2 from y_2, 4 from y_1)."""
    factors = model.enlargements()
    if factor not in factors:
        raise SelfVAEError(f"--factor {factor}: this model enlarges by "
                           + " or ".join(f"{f} (from y_{k})" for f, k in sorted(factors.items())))
    return factors[factor]


def superres_whole(args: Args, model: Any, photos: list[torch.Tensor], where: str) -> None:
    """``superres`` of images of any size: each doubled whole (:func:`selfvae.models.ops.super_resolve_tiled`) and
    written as its own PNG: ``--output`` for one image, ``STEM_N.png`` beside it for several."""
    from selfvae.codec.images import save_png

    out = Path(args.output)
    targets = [out] if len(photos) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(photos))]
    for path, y, target in zip(args.images, photos, targets, strict=True):
        x = model.super_resolve(y.to(where), args.factor, args.temperature, decode=args.decode, seed=args.seed,
                                overlap=args.overlap, progress=True)[0].cpu()
        save_png(x.permute(1, 2, 0).numpy(), target)
        print(f"wrote {target} ({x.shape[2]}x{x.shape[1]}: {Path(path).name} super-resolved tile by tile, "
              f"{args.overlap}-pixel overlaps blended; decode {args.decode})")


def reconstruct_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--mode", default="all", help=MODES_HELP)
    s.add_argument("-n", type=whole(1, 4096), default=8, help="number of test images")
    s.add_argument("--split", default="test", choices=["test", "val", "train"])
    s.add_argument("--images", nargs="+", help=f"image files instead of test images, of {INPUT_RULE}")
    s.add_argument("--resize", action="store_true", help=RESIZE_HELP)
    picture_options(s, "reconstruct.png")


def pick_images(cfg, args: Args, n: int) -> torch.Tensor:  # noqa: ANN001 - Config
    """``--images`` as the model's input, else ``n`` images of ``--split`` drawn by ``--seed``."""
    if getattr(args, "images", None):
        return read_inputs(cfg, args.images, args.resize)
    ds = split_batches(cfg, args.split, None, 1)[2]
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(ds), generator=g)[:n]
    return ds.images[idx]


def run_reconstruct(args: Args) -> None:
    from selfvae.models.ops import canonical_mode, level_columns, mode_columns, modes
    from selfvae.viz import save_columns

    where = device(args.device)
    cfg, model = load(args, where)
    chosen = modes(model) if args.mode == "all" else [canonical_mode(model, args.mode)]
    x = pick_images(cfg, args, args.n).to(where)
    torch.manual_seed(args.seed)
    columns = level_columns(model, x) + mode_columns(model, x, chosen, args.temperature, args.decode)
    out = Path(args.output)
    save_columns(columns, out, scale=args.scale)
    print(f"wrote {out} (columns: x, {', '.join(f'y{k + 1}' for k in range(model.K))}{', ' if model.K else ''}"
          f"{', '.join(chosen)}; one row per image)")


def interpolate_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("a", metavar="A", help=f"image file of {INPUT_RULE}")
    s.add_argument("b", metavar="B", help="image file, as A")
    s.add_argument("--steps", type=whole(1, 1024), default=8)
    s.add_argument("--slerp", action="store_true", help="spherical instead of linear interpolation")
    s.add_argument("--resize", action="store_true", help=RESIZE_HELP)
    picture_options(s, "interpolation.png")
    s.set_defaults(decode="mean")


def run_interpolate(args: Args) -> None:
    from selfvae.viz import save_grid

    where = device(args.device)
    cfg, model = load(args, where)
    a, b = read_inputs(cfg, [args.a, args.b], args.resize).to(where)
    a, b = a[None], b[None]
    torch.manual_seed(args.seed)
    path = model.interpolate(a, b, args.steps, spherical=args.slerp, decode=args.decode)[0]
    out = Path(args.output)
    save_grid(torch.cat([a.cpu(), path.cpu(), b.cpu()]), out, nrow=args.steps + 2, scale=args.scale)
    print(f"wrote {out} (A, {args.steps} steps in u, B)")


def demo_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("model", nargs="?", metavar="MODEL",
                   help="a run directory (default: the newest trained run under ./runs)")
    s.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=whole(1, 65535), default=7860)
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def run_demo(args: Args) -> None:
    from selfvae.demo import launch

    launch(args.model, host=args.host, port=args.port, device=device(args.device))


COMMANDS = [
    Command("sample", "unconditional samples as a PNG grid", sample_options, run_sample, check=check_picture),
    Command("superres", "super-resolve (conditionally generate from) real low-resolution images", superres_options,
            run_superres, check=check_picture),
    Command("reconstruct", "reconstruct images in one mode or all modes", reconstruct_options, run_reconstruct,
            check=check_picture),
    Command("interpolate", "interpolate between two images in u", interpolate_options, run_interpolate,
            check=check_picture),
    Command("demo", "a local web page to try a model (needs: pip install -e \".[demo]\")", demo_options, run_demo,
            model=False, common=False, description="Serve a web page (Gradio) to try a model: your images, their "
            "y, super-resolution, reconstruction modes, samples and interpolation."),
]
