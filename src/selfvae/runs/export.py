"""Exporting a run: the format any run can be written in (and the shipped models are in).

An exported model is a folder holding (file names: :mod:`selfvae.runs.layout`)

- ``config.json``: the run's :class:`~selfvae.config.Config` (how to rebuild the model);
- ``model.safetensors``: the evaluation weights (EMA where the run kept them), float32 or float16
  (:mod:`selfvae.runs.weights`);
- ``metrics.json``: the test bounds measured on these very weights (bits/dim per dimension of the data's
  own images), FID where measured, and the training they had (steps, wall clock and CPU seconds);
- ``card.md``: the model card (data, steps, wall clock, numbers).

The models shipped with the package live in ``selfvae/pretrained/NAME/`` and are found by name after
``pip install .`` as well as in a checkout (:func:`selfvae.runs.layout.resolve`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfvae.errors import SelfVAEError
from selfvae.models.build import resolved
from selfvae.runs import layout
from selfvae.runs.loading import load_trained
from selfvae.runs.records import per_data_dims, weights_used
from selfvae.runs.stored import stored_fid, stored_metrics, write_json
from selfvae.runs.weights import DTYPES, write_weights


def export(run: str | Path, out: str | Path, dtype: str = "float32", which: str = layout.BEST) -> Path:
    """Write the run's model to ``out`` in the exported format; returns ``out``.

    ``dtype`` "float16" halves the file: every tensor in float16 except the layers that output likelihood
    parameters (the last conv of ``p(y_1|u)`` and of each ``p(y_{k+1}|y_k,z_k)``), which stay float32: rounding
    the locations of sharp logistics to float16 cost mnist-srvae 0.0023 bits/dim, keeping those 2k parameters
    in float32 0.0003. Check the bound it gives with ``selfvae eval OUT`` (the shipped models are float16 only
    where the full test set's bound moved by less than 0.002 bits/dim).
    """
    if dtype not in DTYPES:
        raise SelfVAEError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    src = layout.resolve(run)
    cfg, model, training = load_trained(src, which=which)
    out = Path(out)
    if out.resolve() == src.resolve():
        raise SelfVAEError(f"{out}: is the run being exported; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    write_weights(model, out, dtype, cfg.name)
    resolved(cfg).save(out / layout.CONFIG)
    metrics: dict[str, Any] = {}
    stored = stored_metrics(src)
    if stored is not None:
        stored.pop("source")  # which file it came from: a fact about the run folder, not the model
        metrics = per_data_dims(stored, model.x_dims, model.padded_dims)
        metrics["weights"] = "float32 (the run's own; re-measure the exported file with `selfvae eval`)"
    measured = weights_used(model, training)  # before the export's dtype rounds them
    for ref in layout.FID_REFS:
        fid = stored_fid(src, ref, measured)
        if fid is not None:
            metrics[layout.fid_key(ref)] = fid
    if not layout.is_exported(src):  # the training these weights had, so a run started from them counts it
        metrics["training"] = training
    write_json(metrics, out / layout.METRICS)
    return out
