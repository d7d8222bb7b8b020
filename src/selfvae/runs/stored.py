"""What a model's folder records besides its weights: test bounds, FID and the training the weights had."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from selfvae.errors import SelfVAEError
from selfvae.runs import layout
from selfvae.runs.records import WeightsUsed, measured_on


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


def stored_fid(folder: Path, ref: str = "test", weights: WeightsUsed | None = None) -> dict[str, Any] | None:
    """FID against the split ``ref`` stored with a model: the one ``selfvae fid`` wrote (in the model's output
    folder or its own), else an exported model's metrics'. With ``weights``, only one measured on those weights
    (:func:`~selfvae.runs.records.measured_on`): a FID of a run's earlier or other weights is not theirs."""
    name = layout.fid_file(ref)
    found = [read_json(f) for f in dict.fromkeys([layout.output_dir(Path(folder)) / name, Path(folder) / name])]
    found.append((read_json(Path(folder) / layout.METRICS) or {}).get(layout.fid_key(ref)))
    for fid in found:
        if isinstance(fid, dict) and "fid" in fid and (weights is None
                                                       or measured_on(fid, weights.sha256, weights.steps)):
            return fid
    return None


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
