"""What a model's folder records besides its weights: test bounds, FID and the training the weights had."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfvae.errors import SelfVAEError
from selfvae.runs import layout


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


def write_json(obj: dict[str, Any], path: Path) -> Path:
    """Write ``obj`` to ``path`` (its folder created), indented for people to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def stored_metrics(folder: Path) -> dict[str, Any] | None:
    """Test bounds stored with a model (the first of :data:`layout.METRICS_FILES` that exists), its file name
    under ``source``."""
    for sub in layout.METRICS_FILES:
        m = read_json(Path(folder) / sub)
        if m is not None:
            return {**m, "source": sub}
    return None


def stored_fid(folder: Path, ref: str = "test") -> dict[str, Any] | None:
    """FID against the split ``ref`` stored with a model: the one ``selfvae fid`` wrote (in the model's output
    folder or its own), else an exported model's metrics'."""
    name = layout.fid_file(ref)
    for f in dict.fromkeys([layout.output_dir(Path(folder)) / name, Path(folder) / name]):
        fid = read_json(f)
        if fid is not None and "fid" in fid:
            return fid
    fid = (read_json(Path(folder) / layout.METRICS) or {}).get(layout.fid_key(ref))
    return fid if isinstance(fid, dict) and "fid" in fid else None


def shipped_iw_samples(folder: Path) -> int | None:
    """The S an exported model's card measured (doubling it moved the bound by < 0.005 bits/dim), if any."""
    s = (read_json(Path(folder) / layout.METRICS) or {}).get("iw", {}).get("s_within_0.005")
    return s if isinstance(s, int) and s >= 1 else None


def training_done(folder: Path) -> dict[str, Any]:
    """The training an exported model's weights had, ``{"steps": ..., "seconds": ..., "cpu_seconds": ...}`` (wall
    clock and CPU time; None where not recorded), from its card facts. A run's come with its weights:
    :func:`selfvae.runs.loading.load_trained`."""
    training = (read_json(Path(folder) / layout.METRICS) or {}).get("training", {})
    return {k: training.get(k) for k in ("steps", "seconds", "cpu_seconds")}


def shipped_digest(folder: Path) -> str | None:
    """The weights' SHA-256 an exported model's metrics record (models exported before the weights file kept its
    own), if any."""
    value = (read_json(Path(folder) / layout.METRICS) or {}).get("weights_sha256")
    return value if isinstance(value, str) else None


def per_data_dims(metrics: dict, x_dims: int, padded_dims: int) -> dict:
    """Stored metrics with bits/dim per dimension of the data's own images.

    Metrics written before bits/dim counted the data's own dimensions have no ``dims`` key: their ``bpd_*``
    (all but the joint ones) are per dimension of the model's frame (1024 for zero-padded MNIST); they are
    rescaled, and the frame figures kept as ``bpd_*_padded``. Newer metrics are returned unchanged.
    """
    if "dims" in metrics or x_dims == padded_dims:
        return {**metrics, "dims": metrics.get("dims", x_dims)}
    out = dict(metrics, dims=x_dims, padded_dims=padded_dims)
    for key, value in metrics.items():
        if key.startswith("bpd_") and not key.startswith("bpd_joint") and isinstance(value, (int, float)):
            out[key] = value * padded_dims / x_dims
            if key in ("bpd_elbo", "bpd_iw"):
                out[f"{key}_padded"] = value
    return out
