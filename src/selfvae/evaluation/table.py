"""The numbers of the papers' tables for one run, and the tables themselves.

srVAE Table 1 / thesis Table 7.2 print per model: nll in bits/dim (IW bound, S = 512), the reconstruction
terms ``RE_x`` and ``RE_y`` (here one per level, ``RE_y1 .. RE_yK``), the regularisation terms ``KL_z`` (one
per level) and ``KL_u`` (nats per image), FID, the number of parameters and (thesis Tables 7.1/7.5) the wall-
clock time to generate 1 and 100 images. This module

* measures what a trained model alone gives (:func:`paper_row`: parameters, generation times, the FID stored
  by ``selfvae fid`` in ``RUN_DIR/final/fid.json``),
* computes FID of a run against its data set (:func:`run_fid`, the ``selfvae fid`` command),
* collects a whole row for a run directory (:func:`run_row`) and formats rows as Markdown/CSV/HTML.

FID uses ``method="eigh"``: ``Tr((S1 S2)^{1/2})`` as ``Tr((S1^{1/2} S2 S1^{1/2})^{1/2})`` with two symmetric
eigendecompositions. It equals scipy's ``sqrtm`` result to round-off (checked in ``tests/test_fid.py``) and
takes about a second for 2048-d features on a CPU instead of tens of seconds.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE

FID_METHOD = "eigh"
MISSING = "-"


# ----- run directories ----------------------------------------------------------------------------------
def check_run_dir(run_dir: str | Path) -> Path:
    """The folder of a run (``config.json`` and a checkpoint), an exported model or a pretrained name,
    else :class:`SelfVAEError`."""
    from selfvae.models.pretrained import WEIGHTS, resolve

    p = resolve(run_dir)
    if not (p / "config.json").is_file():
        raise SelfVAEError(f"{p}: not a selfvae run directory (no config.json)")
    if not any((p / f).is_file() for f in ("best.pt", "last.pt", WEIGHTS)):
        raise SelfVAEError(f"{p}: run directory has no checkpoint (best.pt or last.pt) and no {WEIGHTS}")
    return p


METRICS_FILES = ("final/metrics.json", "metrics.json")  # a run's, an exported model's


def stored_metrics(folder: Path) -> dict[str, Any] | None:
    """Test bounds stored with a model (the first of :data:`METRICS_FILES` that exists), its file name under
    ``source``."""
    for sub in METRICS_FILES:
        m = read_json(Path(folder) / sub)
        if m is not None:
            return {**m, "source": sub}
    return None


def stored_fid(folder: Path) -> dict[str, Any] | None:
    """FID stored with a model: ``final/fid.json`` (written by ``selfvae fid``) or an exported model's metrics."""
    from selfvae.models.pretrained import output_dir

    for f in dict.fromkeys([output_dir(Path(folder)) / "final" / "fid.json", Path(folder) / "final" / "fid.json"]):
        fid = read_json(f)
        if fid is not None and "fid" in fid:
            return fid
    fid = (read_json(Path(folder) / "metrics.json") or {}).get("fid")
    return fid if isinstance(fid, dict) and "fid" in fid else None


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file is missing; a corrupt file is a user error."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SelfVAEError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise SelfVAEError(f"{path}: expected a JSON object")
    return obj


def cache_dir() -> Path:
    """Where reference statistics are cached: ``$SELFVAE_CACHE/fid`` or ``~/.cache/selfvae/fid``."""
    root = os.environ.get("SELFVAE_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "selfvae") / "fid"


# ----- parameters and generation time --------------------------------------------------------------------
def count_params(model: torch.nn.Module) -> int:
    """Number of parameters (all of them are trained)."""
    return sum(p.numel() for p in model.parameters())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def generation_time(model: SelfVAE, n: int, repeats: int = 3) -> float:
    """Mean wall-clock seconds to generate ``n`` images (all levels) after one warm-up call."""
    from selfvae.models.ops import generate

    device = next(model.parameters()).device
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        generate(model, n)
        _sync(device)
        tic = time.perf_counter()
        for _ in range(repeats):
            generate(model, n)
        _sync(device)
    return (time.perf_counter() - tic) / repeats


def paper_row(
    model: SelfVAE, run_dir: str | Path, device: str | torch.device = "cpu", repeats: tuple[int, int] = (10, 3)
) -> dict[str, Any]:
    """The table columns a trained model gives besides its bounds.

    ``params``; ``gen_time_1_s`` / ``gen_time_100_s``: mean wall-clock seconds to generate 1 / 100 images on
    the model's device after a warm-up (means over ``repeats`` calls; the thesis uses 100 runs on a GPU);
    ``fid``, ``fid_n``, ``fid_ref`` when ``RUN_DIR/final/fid.json`` exists (written by ``selfvae fid``).
    ``device`` is accepted for symmetry with the CLI; the model is timed where it lives.
    """
    del device  # timing happens on the model's own device
    row: dict[str, Any] = {
        "params": count_params(model),
        "gen_time_1_s": generation_time(model, 1, repeats[0]),
        "gen_time_100_s": generation_time(model, 100, repeats[1]),
    }
    fid = stored_fid(Path(run_dir))
    if fid is not None:
        row.update({"fid": float(fid["fid"]), "fid_n": fid.get("n"), "fid_ref": fid.get("ref")})
    return row


# ----- FID of a run --------------------------------------------------------------------------------------
def _dataset_key(cfg, ref: str) -> str:
    """Cache key of a reference split: data set name, split, and a hash of where it lives and how it is split."""
    root = str(Path(cfg.data.root).expanduser().resolve()) if cfg.data.root else ""
    d = cfg.data
    ident = [d.name, root, d.val_fraction, d.split_seed, ref]
    if (d.image_size, d.resize, d.channels) != (None, "crop", None):  # older runs keep their cache key
        ident += [d.image_size, d.resize, d.channels or cfg.model.image_shape[0]]
    ident = json.dumps(ident)
    return f"{cfg.data.name}-{ref}-{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


def _sample_batches(model: SelfVAE, n: int, batch_size: int) -> Iterator[torch.Tensor]:
    from selfvae.models.ops import generate

    done = 0
    while done < n:
        b = min(batch_size, n - done)
        yield generate(model, b)[-1].cpu()
        done += b


def run_fid(
    run_dir: str | Path,
    n: int = 10000,
    ref: str = "test",
    batch_size: int = 100,
    device: str = "cpu",
    weights: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    cache: str | Path | None = None,
    n_ref: int | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """FID of ``n`` samples of the run's best model against its data set; writes ``RUN_DIR/final/fid.json``
    (``./NAME/final/fid.json`` for a shipped model).

    ``ref="test"``: statistics of the whole test split (papers: 10k samples vs test); ``ref="train"``: of the
    first ``n`` training images (papers: 50k samples vs train). ``n_ref`` caps the reference images (the first
    ``n_ref`` of the split) when time is short; FID grows as sample counts shrink, so compare like with like.
    Reference statistics are cached in
    :func:`cache_dir` (or ``cache``), keyed by data set, split, count and Inception weights.
    """
    from selfvae.data import batches_of, load_split
    from selfvae.evaluation import fid as fidlib
    from selfvae.models.loading import load_run

    run_dir = check_run_dir(run_dir)
    if ref not in ("test", "train"):
        raise SelfVAEError(f"--ref {ref}: expected test or train")
    if n < 2:
        raise SelfVAEError(f"--n {n}: FID needs at least 2 samples")
    if batch_size < 1:
        raise SelfVAEError(f"--batch-size {batch_size}: must be >= 1")
    cfg, model = load_run(run_dir, device, data_dir=data_dir)
    extractor = fidlib.InceptionFeatures(weights, device=device)
    d = cfg.data
    ds = load_split(cfg, ref)
    if n_ref is None:
        n_ref = len(ds) if ref == "test" else n
    n_ref = min(n_ref, len(ds))
    if n_ref < 2:
        raise SelfVAEError(f"{d.name} {ref} split: has {len(ds)} image(s); FID needs at least 2")
    real = fidlib.reference_stats(
        _dataset_key(cfg, ref), lambda: batches_of(ds, batch_size, n_ref), n_ref,
        Path(cache) if cache else cache_dir(), extractor, progress=progress,
    )
    torch.manual_seed(seed)
    feats = fidlib.features_from_batches(extractor, _sample_batches(model, n, batch_size), n, progress=progress)
    value = fidlib.fid_score(real, fidlib.gaussian_stats(feats), method=FID_METHOD)
    out = {"fid": value, "n": n, "ref": ref, "n_ref": n_ref, "method": FID_METHOD,
           "weights_sha1": getattr(extractor, "weights_hash", None), "seed": seed}
    from selfvae.models.pretrained import output_dir

    final = output_dir(run_dir) / "final"
    final.mkdir(parents=True, exist_ok=True)
    (final / "fid.json").write_text(json.dumps(out, indent=2))
    out["path"] = str(final / "fid.json")
    return out


# ----- whole rows ----------------------------------------------------------------------------------------
def run_row(
    run_dir: str | Path,
    device: str = "cpu",
    n_eval: int | None = 256,
    iw_samples: int = 16,
    timing: bool = True,
    model: SelfVAE | None = None,
    progress: bool = False,
    seed: int = 0,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Everything the table shows for one run (``data_dir``: where its data set lives, if not where it was
    trained from).

    Bounds come from ``final/metrics.json`` (written at the end of training, S = ``final_iw_samples``); a run
    without it is evaluated on its first ``n_eval`` test images with ``iw_samples`` importance samples
    (``n_eval=None``: not evaluated, the columns show "-"). ``source`` says which.
    """
    from selfvae.models.loading import load_run

    run_dir = check_run_dir(run_dir)
    if model is None:
        cfg, model = load_run(run_dir, device)
    else:
        from selfvae.config import Config

        cfg = Config.load(run_dir / "config.json")
    if data_dir:
        cfg.data.root = data_dir
    row: dict[str, Any] = {"model": run_dir.name, "config": cfg.name, "K": model.K,
                           "transforms": cfg.model.transforms or "none"}
    metrics = stored_metrics(run_dir)
    if metrics is not None:
        from selfvae.evaluation.bounds import per_data_dims

        metrics = per_data_dims(metrics, model.x_dims, model.padded_dims)
        row["source"] = f"{metrics['source']} ({metrics.get('split', 'test')}, S={metrics.get('iw_samples')})"
    elif n_eval:
        from selfvae.data import batches_of, load_split
        from selfvae.evaluation.bounds import evaluate

        ds = load_split(cfg, "test")
        torch.manual_seed(seed)
        n = min(n_eval, len(ds))
        metrics = evaluate(model, batches_of(ds, 64, n), iw_samples, device, total=n, progress=progress)
        row["source"] = f"evaluated now (test, {n} images, S={iw_samples})"
    else:
        metrics = {}
        row["source"] = "not evaluated"
    row.update({k: v for k, v in metrics.items() if k.startswith(("bpd_", "re_", "kl_")) or k == "n_images"})
    if "iw_samples" in metrics:
        row["iw_samples"] = metrics["iw_samples"]
    if timing:
        row.update(paper_row(model, run_dir, device))
    else:
        row["params"] = count_params(model)
        fid = stored_fid(run_dir)
        if fid is not None:
            row.update({"fid": float(fid["fid"]), "fid_n": fid.get("n"), "fid_ref": fid.get("ref")})
    return row


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
    cols += [("kl_u", "KL_u"), ("fid", "FID"), ("params", "params"),
             ("gen_time_1_s", "gen time 1 (s)"), ("gen_time_100_s", "gen time 100 (s)")]
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
    if key == "fid":
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
    "KL is in KL_u (the papers print it under KL_z). FID from `selfvae fid`; generation time: wall clock, mean "
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
