"""Where selfvae keeps what it computes once and reuses (FID reference statistics, downscaled photographs), and how
an entry is read and written: ``$SELFVAE_CACHE/KIND`` or ``~/.cache/selfvae/KIND``, each array file written
atomically (a temporary file renamed), so a crash or a concurrent run never leaves half an entry."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def cache_dir(kind: str) -> Path:
    """The folder of one kind of cached entry: ``$SELFVAE_CACHE/kind`` or ``~/.cache/selfvae/kind``."""
    root = os.environ.get("SELFVAE_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "selfvae") / kind


def load_array(path: Path) -> np.ndarray | None:
    """A cached ``.npy`` array, or None where it is missing or unreadable (then it is made again)."""
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def save_array(path: Path, array: np.ndarray) -> bool:
    """Write ``array`` to ``path`` (``.npy``) atomically; False where the folder cannot be written (a read-only
    home: the entry is made again next time)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, array)
        tmp.replace(path)
        return True
    except OSError:
        return False
