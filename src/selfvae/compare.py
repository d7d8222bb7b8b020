"""Several runs side by side (``selfvae compare``): the papers' table and one plot.

This is how the papers argue VAE vs srVAE vs the 3-level model: one row per run (bounds and FID
stored with it, parameters and generation time), written as Markdown,
CSV and an HTML page, plus a figure with the ELBO and IW bound per run (bars) and the validation bits/dim
against training step for all runs on one axis.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from selfvae.errors import SelfVAEError
from selfvae.evaluation.rows import run_row
from selfvae.evaluation.table import TABLE_NOTE, format_html, format_markdown, write_csv
from selfvae.report import CSS, png_b64
from selfvae.runs.layout import check_run_dir


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def plot_compare(rows: list[dict], run_dirs: list[Path], path: Path) -> Path:
    """Left: bits/dim by ELBO and IW bound per run (missing bounds leave a gap); right: val bpd vs step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selfvae.models.build import frame_ratio
    from selfvae.runs import layout
    from selfvae.runs.loading import load_config
    from selfvae.runs.log import read_log

    fig, (ax, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["model"] for r in rows]
    xs = list(range(len(rows)))
    w = 0.38
    for off, key, label in ((-w / 2, "bpd_elbo", "ELBO"), (w / 2, "bpd_iw", "IW bound")):
        vals = [r.get(key) if _finite(r.get(key)) else math.nan for r in rows]
        bars = ax.bar([x + off for x in xs], vals, w, label=label)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    finite = [r[k] for r in rows for k in ("bpd_elbo", "bpd_iw") if _finite(r.get(k))]
    if finite:
        lo, hi = min(finite), max(finite)
        ax.set_ylim(max(0.0, lo - 0.3 * (hi - lo + 0.05)), hi + 0.2 * (hi - lo + 0.05))
    ax.set_xticks(xs, names, rotation=20, ha="right")
    ax.set_ylabel("bits/dim (test)")
    ax.set_title("negative ELBO vs IW bound")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    any_curve = False
    for name, run in zip(names, run_dirs, strict=True):
        ratio = frame_ratio(load_config(run))
        val = [r for r in read_log(run / layout.LOG, ratio) if r.get("split") == "val" and _finite(r.get("bpd"))]
        if val:
            ax_c.plot([r["step"] for r in val], [r["bpd"] for r in val], "o-", ms=3, label=name)
            any_curve = True
    ax_c.set_xlabel("step")
    ax_c.set_ylabel("validation bits/dim (-ELBO)")
    ax_c.set_title("validation curves")
    if any_curve:
        ax_c.legend()
    ax_c.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(
    run_dirs: list[str | Path],
    out_dir: str | Path = "compare",
    device: str = "cpu",
    n_eval: int | None = 256,
    iw_samples: int = 16,
    timing: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``table.md``, ``table.csv``, ``compare.png`` and ``index.html`` into ``out_dir``.

    Runs without stored test bounds are evaluated on ``n_eval`` test images (``n_eval=None``: shown as
    "-"). Returns the rows and the written paths.
    """
    if not run_dirs:
        raise SelfVAEError("compare: give at least one run directory")
    runs = [check_run_dir(r) for r in run_dirs]
    rows = [run_row(r, device, n_eval=n_eval, iw_samples=iw_samples, timing=timing, seed=seed) for r in runs]
    names = [r["model"] for r in rows]
    if len(set(names)) < len(names):  # two runs with the same folder name: label them by path
        for r, run in zip(rows, runs, strict=True):
            r["model"] = str(run)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = format_markdown(rows)
    (out / "table.md").write_text(md + "\n" + TABLE_NOTE + "\n")
    csv_path = write_csv(rows, out / "table.csv")
    png = plot_compare(rows, runs, out / "compare.png")
    sources = "".join(f"<li>{html.escape(r['model'])}: {html.escape(str(r['source']))}</li>" for r in rows)
    page = out / "index.html"
    page.write_text(
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>selfvae compare</title><style>{CSS}</style></head>'
        f"<body><h1>selfvae compare: {len(rows)} runs</h1>"
        f'<section id="table"><h2>Table</h2>{format_html(rows)}<pre>{html.escape(md)}</pre>'
        f'<p class="note">{html.escape(TABLE_NOTE)}</p><ul class="note">{sources}</ul></section>'
        f'<section id="plot"><h2>Bounds and validation curves</h2>'
        f'<img src="{png_b64(png.read_bytes())}" alt="comparison plot"></section></body></html>',
        encoding="utf-8",
    )
    return {"rows": rows, "markdown": out / "table.md", "csv": csv_path, "plot": png, "html": page}
