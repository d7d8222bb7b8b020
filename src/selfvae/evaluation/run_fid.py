"""FID of a trained model's samples against its data set (the ``selfvae fid`` command).

FID uses ``method="eigh"``: ``Tr((S1 S2)^{1/2})`` as ``Tr((S1^{1/2} S2 S1^{1/2})^{1/2})`` with two symmetric
eigendecompositions. It equals scipy's ``sqrtm`` result to round-off (checked in ``tests/test_fid.py``) and
takes about a second for 2048-d features on a CPU instead of tens of seconds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from selfvae.cache import cache_dir as selfvae_cache_dir
from selfvae.data.datasets import ORDER_SEED, get_spec
from selfvae.errors import SelfVAEError
from selfvae.models.selfvae import SelfVAE
from selfvae.runs import layout
from selfvae.runs.loading import load_trained
from selfvae.runs.records import Provenance, images_used, stamp, weights_used
from selfvae.runs.stored import write_json

FID_METHOD = "eigh"


def cache_dir() -> Path:
    """Where reference statistics are cached: ``$SELFVAE_CACHE/fid`` or ``~/.cache/selfvae/fid``."""
    return selfvae_cache_dir("fid")


def _dataset_key(cfg, ref: str, part: bool = False) -> str:
    """Cache key of a reference split: data set name, split, and a hash of where it lives and how it is split
    (``part``: statistics of its first images only, which depend on the order it is read in)."""
    root = str(Path(cfg.data.root).expanduser().resolve()) if cfg.data.root else ""
    d = cfg.data
    ident = [d.name, root, d.val_fraction, d.split_seed, ref]
    if (d.image_size, d.resize, d.channels) != (None, "crop", None):  # older runs keep their cache key
        ident += [d.image_size, d.resize, d.channels or cfg.model.image_shape[0]]
    if part and get_spec(d.name).class_ordered:  # its first n images were a few classes before 2026-11-26
        ident += [f"order-{ORDER_SEED}"]
    ident = json.dumps(ident)
    return f"{cfg.data.name}-{ref}-{hashlib.sha1(ident.encode()).hexdigest()[:10]}"


def _sample_batches(model: SelfVAE, n: int, batch_size: int) -> Iterator[torch.Tensor]:
    from selfvae.models.ops import generate

    done = 0
    while done < n:
        b = min(batch_size, n - done)
        yield generate(model, b)[-1].cpu()
        done += b


def run_fid(run_dir: str | Path, n: int = 10000, ref: str = "test", **options: Any) -> dict[str, Any]:
    """FID of ``n`` samples of the run's best model against the ``ref`` split: :func:`run_fids` with one
    reference (``options``: its keyword arguments)."""
    return run_fids(run_dir, n, (ref,), **options)[0]


def run_fids(
    run_dir: str | Path,
    n: int = 10000,
    refs: Sequence[str] = ("test", "train"),
    batch_size: int = 100,
    device: str = "cpu",
    weights: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    cache: str | Path | None = None,
    n_ref: int | None = None,
    data_dir: str | None = None,
    kid: bool = False,
) -> list[dict[str, Any]]:
    """FID of ``n`` samples of the run's best model against its data set, for each of ``refs``; each is written
    to the run's :func:`~selfvae.runs.layout.fid_file` of its ref (under ``./NAME`` for a shipped model).

    The samples are drawn and put through Inception once (the dearer half of each FID), so each value equals
    the one a call with that ref alone gives. ``"test"``: statistics of the whole test split (papers: 10k
    samples vs test; a data set without one: its validation split, as training's final evaluation, and the
    result's ``ref`` says so); ``"train"``: of the first ``n`` training images (papers: 50k samples vs train; a
    class-ordered data set is read in a fixed shuffled order, so they are a sample of every class). ``n_ref`` caps
    the reference images (the first ``n_ref`` of the split) when time is short; FID grows as
    sample counts shrink, so compare like with like. Reference statistics are cached in :func:`cache_dir` (or
    ``cache``), keyed by data set, split, count and Inception weights. ``kid``: the Kernel Inception Distance
    beside each FID (:func:`~selfvae.evaluation.fid.kid_score`: unbiased whatever the counts, so steadier than FID
    against a small reference; the reference's features are cached instead of its statistics).
    """
    from selfvae.evaluation import fid as fidlib

    run_dir = layout.check_run_dir(run_dir)
    bad = [r for r in refs if r not in ("test", "train")]
    if bad or not refs:
        raise SelfVAEError(f"--ref {' '.join(bad)}: expected test or train")
    if n < 2:
        raise SelfVAEError(f"--n {n}: FID needs at least 2 samples")
    if batch_size < 1:
        raise SelfVAEError(f"--batch-size {batch_size}: must be >= 1")
    cfg, model, training = load_trained(run_dir, device, data_dir=data_dir)
    measured = weights_used(model, training)  # the weights sampled: a FID of other weights is not theirs
    extractor = fidlib.InceptionFeatures(weights, device=device)
    refs = list(dict.fromkeys(refs))  # each reference once, in the order given
    real = [_reference(cfg, ref, n, n_ref, batch_size, Path(cache) if cache else cache_dir(), extractor, progress,
                       kid) for ref in refs]
    torch.manual_seed(seed)
    feats = fidlib.features_from_batches(extractor, _sample_batches(model, n, batch_size), n, progress=progress)
    fake = fidlib.gaussian_stats(feats)
    results = []
    for ref, (used, n_used, n_split, stats, ref_feats) in zip(refs, real, strict=True):
        out = {"fid": fidlib.fid_score(stats, fake, method=FID_METHOD), "n": n, "ref": used, "n_ref": n_used,
               "method": FID_METHOD, "weights_sha1": getattr(extractor, "weights_hash", None), "seed": seed,
               "steps": training["steps"]}
        if ref_feats is not None:
            out["kid"], out["kid_std"] = fidlib.kid_score(ref_feats, feats, seed=seed)
            out["kid_subset_size"] = min(fidlib.KID_SUBSET_SIZE, n_used, n)
        out = stamp(out, Provenance(measured, images_used(cfg, used, n_used, n_split)))
        out["path"] = str(write_json(out, layout.output_dir(run_dir) / layout.fid_file(ref)))
        results.append(out)
    return results


def _reference(cfg, ref: str, n: int, n_ref: int | None, batch_size: int, cache: Path, extractor,  # noqa: ANN001
               progress: bool, kid: bool = False) -> tuple[str, int, int, tuple, Any]:
    """The split ``ref`` names (test, else val where there is none), the images counted, the split's size, their
    cached Inception statistics (the whole test split, or the first ``n`` training images; ``n_ref`` caps either)
    and, with ``kid``, their features (else None)."""
    from selfvae.data import batches_of, load_split, load_test_split
    from selfvae.evaluation import fid as fidlib

    ds, used = load_test_split(cfg) if ref == "test" else (load_split(cfg, ref), ref)  # a folder without test/: val
    if n_ref is None:
        n_ref = len(ds) if ref == "test" else n
    n_ref = min(n_ref, len(ds))
    if n_ref < 2:
        raise SelfVAEError(f"{cfg.data.name} {used} split: has {len(ds)} image(s); FID needs at least 2")
    key = _dataset_key(cfg, used, part=n_ref < len(ds))
    if kid:
        feats = fidlib.reference_features(key, lambda: batches_of(ds, batch_size, n_ref), n_ref, cache, extractor,
                                          progress=progress)
        return used, n_ref, len(ds), fidlib.gaussian_stats(feats), feats
    stats = fidlib.reference_stats(key, lambda: batches_of(ds, batch_size, n_ref), n_ref, cache, extractor,
                                   progress=progress)
    return used, n_ref, len(ds), stats, None
