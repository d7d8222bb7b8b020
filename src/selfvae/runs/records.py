"""Measurements that say what they measured.

Every bound or FID a command stores (a run's final metrics, ``selfvae eval --json``, ``selfvae fid``) carries,
beside its figures, a versioned :class:`Provenance`: **which weights** (the SHA-256 of the state dict measured, and
the training steps they had) and **which images** (data set, split, how many and the rule that chose them). Older
records (version 1, before provenance) are read as they are; :func:`measured_on` falls back to their step count and
:func:`per_data_dims` rescales the bits/dim of records from before those were per the data's own dimensions. Record
versions and their migrations live here and nowhere else.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from selfvae.config import Config
from selfvae.runs.weights import digest

RECORD_VERSION = 2  # 1: no "version" and no "provenance" keys (records written before 2026-11-26)
ALL, FIRST = "all", "first"  # the whole split; its first n images in the order it is read in


@dataclass(frozen=True)
class WeightsUsed:
    """The weights a measurement was taken on: :func:`selfvae.runs.weights.digest` of the model's state dict as
    measured (float32 in memory), and the training steps they had (with the runs they started from)."""

    sha256: str
    steps: int | None


@dataclass(frozen=True)
class ImagesUsed:
    """The images measured: data set, split, count and the rule that chose them (:data:`ALL`, :data:`FIRST`, or
    the first in a class-ordered data set's fixed shuffled order: :func:`images_used`)."""

    data: str
    split: str
    n: int
    rule: str = FIRST


@dataclass(frozen=True)
class Provenance:
    weights: WeightsUsed
    images: ImagesUsed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        return cls(WeightsUsed(**d["weights"]), ImagesUsed(**d["images"]))


def weights_used(model: torch.nn.Module, training: dict[str, Any]) -> WeightsUsed:
    """The :class:`WeightsUsed` of ``model`` as loaded (``training``: what :func:`~selfvae.runs.loading.load_trained`
    returned with it)."""
    return WeightsUsed(digest(model.state_dict()), training.get("steps"))


def images_used(cfg: Config, split: str, n: int, of: int) -> ImagesUsed:
    """The :class:`ImagesUsed` of a measurement on the first ``n`` of the ``of`` images of ``split`` of ``cfg``'s data
    set (a class-ordered data set's splits are read in a fixed shuffled order, which the rule names)."""
    from selfvae.data.datasets import ORDER_SEED, get_spec

    if n >= of:
        rule = ALL
    elif get_spec(cfg.data.name).class_ordered:
        rule = f"{FIRST} in the shuffled order of seed {ORDER_SEED}"
    else:
        rule = FIRST
    return ImagesUsed(cfg.data.name, split, n, rule)


def stamp(record: dict[str, Any], provenance: Provenance) -> dict[str, Any]:
    """``record`` with its version and provenance, as every stored measurement is written."""
    return {**record, "version": RECORD_VERSION, "provenance": provenance.to_dict()}


def provenance_of(record: dict[str, Any]) -> Provenance | None:
    """A stored record's provenance; None for a version-1 record, which has none."""
    p = record.get("provenance")
    return Provenance.from_dict(p) if isinstance(p, dict) else None


def measured_on(record: dict[str, Any], sha256: str, steps: int | None) -> bool:
    """Whether ``record`` was measured on the weights of digest ``sha256``. A version-1 record names its weights
    only by their training ``steps`` (FID records did), which is all it can be matched by."""
    p = provenance_of(record)
    if p is not None:
        return p.weights.sha256 == sha256
    return steps is not None and record.get("steps") == steps


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
