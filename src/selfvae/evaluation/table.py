"""The papers' tables: rows of figures (collected by :mod:`selfvae.evaluation.rows`) as Markdown, CSV or HTML.

srVAE Table 1 / thesis Table 7.2 print per model: nll in bits/dim (IW bound, S = 512), the reconstruction
terms ``RE_x`` and ``RE_y`` (here one per level, ``RE_y1 .. RE_yK``), the regularisation terms ``KL_z`` (one
per level) and ``KL_u`` (nats per image), FID, the number of parameters and (thesis Tables 7.1/7.5) the wall-
clock time to generate 1 and 100 images.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MISSING = "-"


# ----- formatting ----------------------------------------------------------------------------------------
def _levels(rows: Sequence[dict], prefix: str) -> list[str]:
    """Keys ``prefix1, prefix2, ...`` present in any row, in level order."""
    keys = {k for r in rows for k in r if k.startswith(prefix) and k[len(prefix):].isdigit()}
    return sorted(keys, key=lambda k: int(k[len(prefix):]))


def columns(rows: Sequence[dict]) -> list[tuple[str, str]]:
    """``(key, header)`` of the table as the papers print it; per-level columns for every level any run has."""
    cols = [("model", "model"), ("bpd_iw", "nll bpd (IWAE)"), ("bpd_elbo", "bpd (ELBO)"), ("re_x", "RE_x")]
    cols += [(k, f"RE_y{k[4:]}") for k in _levels(rows, "re_y")]
    cols += [(k, f"KL_z{k[4:]}") for k in _levels(rows, "kl_z")]
    cols += [("kl_u", "KL_u"), ("fid", "FID")]
    cols += [("fid_train", "FID (train)")] if any("fid_train" in r for r in rows) else []
    cols += [("params", "params"), ("gen_time_1_s", "gen time 1 (s)"), ("gen_time_100_s", "gen time 100 (s)")]
    return cols


def _fmt(key: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return MISSING
    if key == "params" and isinstance(v, (int, float)):
        return f"{v / 1e6:.2f}M" if v >= 1e4 else str(int(v))
    if key.startswith("bpd"):
        return f"{v:.3f}"
    if key.startswith(("re_", "kl_")):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"
    if key in ("fid", "fid_train"):
        return f"{v:.2f}"
    if key.startswith("gen_time"):
        return f"{v:.3g}"
    return str(v)


def table_cells(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells (missing values as "-")."""
    cols = columns(rows)
    body = [[_fmt(k, r.get(k)) for k, _ in cols] for r in rows]
    return [h for _, h in cols], body


TABLE_NOTE = (
    "nll: negative IW bound in bits/dim of x (bound on the joint p(x, y_1..y_K), which bounds -log p(x)); "
    "RE/KL in nats per image; RE_y1 is the coarsest level. For a plain VAE (K = 0) the only latent is u, so its "
    "KL is in KL_u (the papers print it under KL_z). FID from `selfvae fid` (against test; FID (train): against the "
    "training images); generation time: wall clock, mean "
    "after a warm-up, on the device the row was made on."
)


def format_markdown(rows: Sequence[dict]) -> str:
    """The rows as a Markdown table (srVAE Table 1 / thesis Table 7.2 columns)."""
    headers, body = table_cells(rows)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def format_html(rows: Sequence[dict]) -> str:
    """The rows as an HTML ``<table>``."""
    headers, body = table_cells(rows)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body)
    return f'<table class="metrics"><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>'


def write_csv(rows: Sequence[dict], path: str | Path) -> Path:
    """All keys of all rows (raw values, not formatted) as CSV, table columns first."""
    keys = [k for k, _ in columns(rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, restval="")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue())
    return path
