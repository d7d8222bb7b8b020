"""One self-contained HTML page that shows what a trained run is and can do (``selfvae report``).

Sections (each ``<section id=...>``): ``config`` (the run's JSON), ``table`` (the paper-table row), ``curves``
(train/val bits/dim and learning rate), ``samples``, ``chain`` (generation ``y_1 -> ... -> x``, thesis
Fig. 7.8), ``superres`` (test images reduced by the model's transform chain, then super-resolved),
``reconstructions`` (every reconstruction mode side by side), ``tradeoff`` (memory vs quality of the modes),
``interpolations`` (between pairs of test images in ``u``). Images are embedded as base64 PNG so the page can
be mailed or archived alone. Sections that do not apply (a plain VAE has no chain) or whose inputs are
missing (test data not available here) say so instead of failing the report.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from selfvae.errors import SelfVAEError
from selfvae.evaluation.rows import run_row
from selfvae.evaluation.table import TABLE_NOTE, format_html, format_markdown
from selfvae.runs import layout
from selfvae.viz import grid_array

SECTIONS = (
    ("config", "Configuration"),
    ("table", "Table row"),
    ("curves", "Training curves"),
    ("samples", "Samples"),
    ("chain", "Generation chain"),
    ("superres", "Super-resolution"),
    ("reconstructions", "Reconstruction modes"),
    ("tradeoff", "Memory / quality trade-off"),
    ("interpolations", "Interpolations"),
)

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
pre{background:#f5f5f5;padding:.8em;overflow:auto;font-size:.85em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#eee}td.label{text-align:left;font-family:monospace;white-space:nowrap}
img{image-rendering:pixelated;max-width:100%}.note{color:#666;font-size:.9em}
table.rows td{border:none;vertical-align:middle}
"""


# ----- images --------------------------------------------------------------------------------------------
def png_b64(arr_or_bytes: Any) -> str:
    """``data:`` URI of a PNG from a uint8 ``[H, W, 3]`` array or from PNG bytes."""
    if isinstance(arr_or_bytes, bytes):
        data = arr_or_bytes
    else:
        buf = io.BytesIO()
        Image.fromarray(arr_or_bytes).save(buf, format="PNG")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{html.escape(alt)}">'


def _fit(images: Tensor, c: int, h: int, w: int) -> Tensor:
    """uint8 images resized by nearest neighbour to ``h x w`` and repeated to ``c`` channels."""
    images = images.detach().cpu()
    if images.shape[1] != c:
        images = images.repeat(1, c // images.shape[1], 1, 1)
    if tuple(images.shape[-2:]) != (h, w):
        images = torch.nn.functional.interpolate(images.float(), size=(h, w), mode="nearest").to(torch.uint8)
    return images


def _scale_for(h: int) -> int:
    return max(1, min(4, round(64 / h)))


def labelled_rows(rows: list[tuple[str, Tensor]], nrow: int | None = None) -> str:
    """An HTML table: one label and one image strip per row, all rows resized to the largest image size."""
    c = max(r.shape[1] for _, r in rows)
    h = max(r.shape[-2] for _, r in rows)
    w = max(r.shape[-1] for _, r in rows)
    out = []
    for label, imgs in rows:
        arr = grid_array(_fit(imgs, c, h, w), nrow=nrow or imgs.shape[0], scale=_scale_for(h))
        out.append(f'<tr><td class="label">{html.escape(label)}</td><td>{_img(png_b64(arr), label)}</td></tr>')
    return '<table class="rows">' + "".join(out) + "</table>"


def _file_uri(path: Path | None) -> str | None:
    return png_b64(path.read_bytes()) if path is not None and path.is_file() else None


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


# ----- sections ------------------------------------------------------------------------------------------
def _curves(run_dir: Path, ratio: float) -> str:
    from selfvae.runs.log import read_log
    from selfvae.viz import plot_curves

    with tempfile.TemporaryDirectory() as tmp:
        uri = _file_uri(plot_curves(read_log(run_dir / layout.LOG, ratio), Path(tmp) / layout.CURVES))
    if uri is None:
        return _note(f"{layout.LOG} has no train/validation records.")
    return _img(uri, "training curves") + _note(
        "Left: bits/dim (-ELBO) of training batches and of the validation split; middle: learning rate; right "
        "(where the log has them): each latent's KL in nats per image, with its active units at the last validation "
        "(units whose posterior mean varies over the images; none: the model ignores that latent) and, for z, its "
        "informative units (the same measured from z's image-dependent prior: units that only follow it carry "
        "nothing).")


def _tradeoff(run_dir: Path, model, x: Tensor | None, device: str) -> str:
    from selfvae.evaluation.tradeoff import plot_tradeoff, tradeoff

    csv_path = run_dir / "tradeoff" / "tradeoff.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            rows: list[dict[str, Any]] = [
                {k: (v if k == "mode" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)
            ]
        source = f"from {csv_path.relative_to(run_dir)}"
    elif x is not None:
        rows = tradeoff(model, [x[i : i + 100] for i in range(0, x.shape[0], 100)], device)
        source = f"computed now on {x.shape[0]} test images"
    else:
        return _note("No tradeoff/tradeoff.csv and no test images to compute it.")
    with tempfile.TemporaryDirectory() as tmp:
        uri = _file_uri(plot_tradeoff(rows, Path(tmp) / "tradeoff.png"))
    head = "<tr><th>mode</th><th>values sent</th><th>% of x</th><th>MSE</th><th>PSNR (dB)</th></tr>"
    body = "".join(
        f'<tr><td class="label">{html.escape(str(r["mode"]))}</td><td>{int(r["values"])}</td>'
        f'<td>{100 * r["fraction"]:.2f}</td><td>{r["mse"]:.2f}</td><td>{r["psnr"]:.2f}</td></tr>'
        for r in rows
    )
    return (_img(uri or "", "memory vs quality") + f"<table>{head}{body}</table>"
            + _note(f"PSNR of each reconstruction mode against the values it must send ({source})."))


def _test_images(cfg, n: int) -> tuple[Tensor | None, str]:
    from selfvae.data import load_test_split

    try:
        ds, _ = load_test_split(cfg)
    except SelfVAEError as e:
        return None, f"test images not available: {e}"
    return ds.images[: min(n, len(ds))], ""


def _stage_printer(on: bool, tic: float):  # noqa: ANN202 - a callable
    """``say(stage)``: one line on stderr as each part of the report starts (a report takes minutes)."""
    def say(stage: str) -> None:
        if on:
            print(f"report: {stage} ({time.perf_counter() - tic:.0f} s)", file=sys.stderr, flush=True)

    return say


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    n_eval: int = 256,
    iw_samples: int = 16,
    device: str = "cpu",
    seed: int = 0,
    n_tradeoff: int = 256,
    progress: bool = False,
    data_dir: str | None = None,
) -> Path:
    """Write ``index.html`` into ``out_dir`` (default ``RUN_DIR/report``, ``./NAME/report`` for a shipped
    model) and return its path; ``data_dir`` overrides where the model's data set is read from."""
    from selfvae.models.ops import generate, interpolate, mode_label, modes, reconstruct, superres_columns
    from selfvae.runs.loading import load_run

    tic = time.perf_counter()
    say = _stage_printer(progress, tic)
    run_dir = layout.check_run_dir(run_dir)
    out = Path(out_dir) if out_dir is not None else layout.output_dir(run_dir) / layout.REPORT
    import matplotlib

    matplotlib.use("Agg")
    cfg, model = load_run(run_dir, device, data_dir=data_dir)
    x_all, why = _test_images(cfg, max(n_tradeoff, 16))
    x = x_all[:8].to(device) if x_all is not None else None
    body: dict[str, str] = {}

    body["config"] = f"<pre>{html.escape(json.dumps(cfg.to_dict(), indent=2), quote=False)}</pre>"

    say("bounds (ELBO and IW) on test images")
    row = run_row(run_dir, device, n_eval=n_eval if x_all is not None else None, iw_samples=iw_samples,
                  model=model, progress=progress, seed=seed, data_dir=data_dir)
    body["table"] = (format_html([row]) + f"<pre>{html.escape(format_markdown([row]))}</pre>"
                     + _note(f"Bounds: {row['source']}. {TABLE_NOTE}"))

    body["curves"] = _curves(run_dir, model.padded_dims / model.x_dims)

    say("samples and the generation chain")
    torch.manual_seed(seed)
    samples = generate(model, 64)[-1]
    arr = grid_array(samples, nrow=8, scale=_scale_for(samples.shape[-2]))
    body["samples"] = _img(png_b64(arr), "samples") + _note("64 unconditional samples of x (temperature 1).")

    if model.K == 0:
        body["chain"] = _note("A plain VAE (K = 0) generates x directly from u; there is no chain of y's.")
    else:
        torch.manual_seed(seed)
        levels = generate(model, 10)
        names = [f"y_{k + 1} {tuple(lv.shape[1:])}" for k, lv in enumerate(levels[:-1])]
        body["chain"] = labelled_rows(list(zip([*names, "x"], levels, strict=True))) + _note(
            "Ancestral sampling u -> y_1 -> z_1 -> ... -> x, one column per sample (thesis Fig. 7.8).")

    say("super-resolution and reconstructions")
    if model.K == 0:
        body["superres"] = _note("Super-resolution needs a selfVAE (K >= 1); this run is a plain VAE.")
    elif x is None:
        body["superres"] = _note(why)
    else:
        y = model.levels(x)[-2]
        torch.manual_seed(seed)
        srows = [(f"input y_{model.K} = d(x)", y)]
        srows += superres_columns(model, y, 3)
        srows.append(("original x", x))
        body["superres"] = labelled_rows(srows) + _note(
            f"Test images reduced by the model's transform chain ({cfg.model.transforms}) to "
            f"{tuple(y.shape[1:])}, then x ~ p(x | y_{model.K}, ...) three times.")

    if x is None:
        body["reconstructions"] = _note(why)
    else:
        torch.manual_seed(seed)
        rrows = [("original x", x)] + [(f"y{k + 1} = d(x)", y) for k, y in enumerate(model.levels(x)[:-1])]
        rrows += [(mode_label(model, m), reconstruct(model, x, m)[-1]) for m in modes(model)]
        body["reconstructions"] = labelled_rows(rrows) + _note(
            "Modes as the thesis names them (ch. 5.2, 7): RSj, reconstruction from the first j latents (u, z1, ...) "
            "inferred, the rest sampled; CR, conditional reconstruction from the finest y and z; CG, conditional "
            "generation (super-resolution) from the finest y alone.")

    torch.manual_seed(seed)
    say("memory/quality trade-off and interpolations")
    body["tradeoff"] = _tradeoff(run_dir, model, x_all.to(device) if x_all is not None else None, device)

    if x is None:
        body["interpolations"] = _note(why)
    else:
        steps = 8
        a, b = x[:4], x[4:8]
        path = interpolate(model, a, b, steps=steps)
        irows = [(f"pair {i + 1}", torch.cat([a[i : i + 1].cpu(), path[i].cpu(), b[i : i + 1].cpu()]))
                 for i in range(a.shape[0])]
        body["interpolations"] = labelled_rows(irows) + _note(
            f"A, {steps} points on the line between the posterior means of u (decoded with the mean), B.")

    toc = ", ".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in SECTIONS)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>selfvae report: {html.escape(run_dir.name)}</title>',
        f"<style>{CSS}</style></head><body>",
        f"<h1>selfvae report: {html.escape(run_dir.name)}</h1>",
        _note(f"run {run_dir.resolve()} | config {cfg.name} | K = {model.K} | transforms "
              f"{cfg.model.transforms or 'none'} | {time.strftime('%Y-%m-%d %H:%M')}"),
        f"<nav>{toc}</nav>",
    ]
    for sid, title in SECTIONS:
        parts.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body[sid]}</section>')
    parts.append(_note(f"built in {time.perf_counter() - tic:.1f} s") + "</body></html>")
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page

