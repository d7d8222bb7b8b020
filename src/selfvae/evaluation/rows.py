"""The figures of the papers' tables for one model: its bounds, FID, parameters and generation time.

* :func:`paper_row`: what a trained model alone gives (parameters, generation times, the stored FID);
* :func:`run_row`: a whole row for a run directory, exported folder or shipped name (bounds stored with it,
  or measured now on a few test images).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from selfvae.models.selfvae import SelfVAE
from selfvae.runs import layout
from selfvae.runs.loading import load_config, load_run
from selfvae.runs.records import per_data_dims
from selfvae.runs.stored import stored_fid, stored_metrics


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
    the FIDs ``selfvae fid`` stored (:func:`fid_columns`).
    ``device`` is accepted for symmetry with the CLI; the model is timed where it lives.
    """
    del device  # timing happens on the model's own device
    row: dict[str, Any] = {
        "params": count_params(model),
        "gen_time_1_s": generation_time(model, 1, repeats[0]),
        "gen_time_100_s": generation_time(model, 100, repeats[1]),
    }
    row.update(fid_columns(Path(run_dir)))
    return row


def fid_columns(run_dir: Path) -> dict[str, Any]:
    """``fid``, ``fid_n``, ``fid_ref`` (against test) and ``fid_train``, ``fid_train_n`` where ``selfvae fid``
    stored them (the papers report both)."""
    row: dict[str, Any] = {}
    for ref in layout.FID_REFS:
        fid = stored_fid(run_dir, ref)
        if fid is not None:
            key = layout.fid_key(ref)
            row.update({key: float(fid["fid"]), f"{key}_n": fid.get("n"), f"{key}_ref": fid.get("ref")})
    return row


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

    Bounds come from those stored with the model (at the end of training, S = ``final_iw_samples``); a run
    without it is evaluated on its first ``n_eval`` test images with ``iw_samples`` importance samples
    (``n_eval=None``: not evaluated, the columns show "-"). ``source`` says which.
    """
    run_dir = layout.check_run_dir(run_dir)
    if model is None:
        cfg, model = load_run(run_dir, device, data_dir=data_dir)
    else:
        cfg = load_config(run_dir, data_dir)
    row: dict[str, Any] = {"model": run_dir.name, "config": cfg.name, "K": model.K,
                           "transforms": cfg.model.transforms or "none"}
    metrics = stored_metrics(run_dir)
    if metrics is not None:
        metrics = per_data_dims(metrics, model.x_dims, model.padded_dims)
        row["source"] = f"{metrics['source']} ({metrics.get('split', 'test')}, S={metrics.get('iw_samples')})"
    elif n_eval:
        from selfvae.data import batches_of, load_test_split
        from selfvae.evaluation.bounds import evaluate

        ds, split = load_test_split(cfg)
        torch.manual_seed(seed)
        n = min(n_eval, len(ds))
        metrics = evaluate(model, batches_of(ds, 64, n), iw_samples, device, total=n, progress=progress)
        row["source"] = f"evaluated now ({split}, {n} images, S={iw_samples})"
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
        row.update(fid_columns(run_dir))
    return row


