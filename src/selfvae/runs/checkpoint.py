"""Checkpoints: written atomically, validated on load (their weights against the hash saved with them), the
previous good one kept where asked.

A save writes ``NAME.tmp``, flushes it to disk, hard-links (or copies) the existing ``NAME`` to ``NAME.prev``
(with ``keep_previous``) and renames the temporary file over ``NAME``; each rename is atomic, so a run killed
at any moment (even SIGKILL) leaves a complete ``NAME`` and, after the second save, the previous good one in
``NAME.prev``. The training loop keeps a previous copy of ``last`` (what a run resumes from), not of ``best``
(whose damage falls back to ``last``): three files a run, not four.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfvae.errors import SelfVAEError
from selfvae.runs.layout import previous
from selfvae.runs.weights import digest

# Globals a pre-2026-11 checkpoint's numpy RNG state needs under the weights-only unpickler: array
# reconstruction only (numpy's own recommended allow-list for torch.load), nothing that runs code.
_LEGACY_NUMPY = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]

FORMAT = "selfvae-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("format", "version", "config", "model", "optimizer", "step", "sampler", "rng")


def rng_state() -> dict[str, Any]:
    """Every random state a run draws from, in types ``torch.load(weights_only=True)`` reads (no numpy)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`get_rng_state`'s states; they may have been loaded onto a GPU (``map_location``), and
    PyTorch takes generator states as CPU byte tensors only."""
    torch.set_rng_state(state["torch"].cpu())
    name, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def weights_digest(state: dict[str, Any]) -> str:
    """The SHA-256 of a checkpoint's weights (the model's and the EMA's)."""
    tensors = {f"model.{k}": v for k, v in state["model"].items()}
    tensors.update({f"ema.{k}": v for k, v in (state.get("ema") or {}).items()})
    return digest(tensors)


def save_checkpoint(state: dict[str, Any], path: str | Path, keep_previous: bool = True) -> Path:
    """Atomically write ``state`` (plus format tags and its weights' hash) to ``path``; with ``keep_previous``
    the old file becomes ``path.prev``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"format": FORMAT, "version": FORMAT_VERSION, **state, "weights_sha256": weights_digest(state)}
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    if keep_previous and path.exists():  # ``path`` stays in place until the new file replaces it
        prev = previous(path)
        prev_tmp = prev.with_name(prev.name + ".tmp")
        prev_tmp.unlink(missing_ok=True)
        try:
            os.link(path, prev_tmp)
        except OSError:  # file systems without hard links
            shutil.copyfile(path, prev_tmp)
        os.replace(prev_tmp, prev)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (best effort; not every platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint; a corrupt, truncated or foreign file raises :class:`SelfVAEError`."""
    path = Path(path)
    if not path.is_file():
        raise SelfVAEError(f"{path}: no such checkpoint")
    try:
        # Weights only: the unpickler builds tensors and plain containers, never arbitrary objects, so a
        # tampered file cannot run code. Numpy arrays are allowed for checkpoints written before the RNG
        # state was stored as tensors.
        with torch.serialization.safe_globals(_LEGACY_NUMPY):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise SelfVAEError(f"{path}: refused: the file holds objects other than tensors and plain data "
                           f"(tampered or not a selfvae checkpoint; nothing in it was run): {_first_line(e)}") from e
    except Exception as e:  # torch raises many types for truncated/corrupt archives
        raise SelfVAEError(f"{path}: corrupt or truncated checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SelfVAEError(f"{path}: not a selfvae checkpoint")
    if state.get("version") != FORMAT_VERSION:
        raise SelfVAEError(
            f"{path}: checkpoint format version {state.get('version')} is not supported "
            f"(this selfvae reads version {FORMAT_VERSION})"
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise SelfVAEError(f"{path}: checkpoint is missing {', '.join(missing)}")
    if "weights_sha256" in state and weights_digest(state) != state["weights_sha256"]:
        raise SelfVAEError(f"{path}: the weights do not match the hash saved with them: the file is damaged")
    return state


def _first_line(e: Exception) -> str:
    lines = [ln for ln in str(e).splitlines() if "Unsupported global" in ln or "WeightsUnpickler" in ln]
    return (lines[0] if lines else str(e).splitlines()[0] if str(e) else type(e).__name__).strip()


def load_latest(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load ``path``; if it is corrupt, warn and fall back to ``path.prev`` (the previous good one)."""
    path = Path(path)
    try:
        return load_checkpoint(path, map_location)
    except SelfVAEError as first:
        prev = previous(path)
        if not prev.is_file():
            raise
        warnings.warn(f"{first}; resuming from the previous checkpoint {prev}", stacklevel=2)
        return load_checkpoint(prev, map_location)
