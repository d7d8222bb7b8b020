"""Shared fixtures: tiny configs and synthetic data written in the on-disk npz format."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfvae.config import Config, DataConfig, ModelConfig, TrainConfig

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one thread a worker (and its children), never 2 x 2
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
from selfvae.nn.nets import NetSpec

TINY = NetSpec(width=8, growth=8, steps=1, blocks=1)


def blob_images(n: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth synthetic images (a bright Gaussian blob at a random place), uint8 [n, size, size, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(3, size - 3, (2, n))
    r = rng.uniform(1.5, 4, n)
    img = 255 * np.exp(-(((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2)
                          / (2 * r[:, None, None] ** 2)))
    return img.round().clip(0, 255).astype(np.uint8)[..., None]


@pytest.fixture(scope="session")
def blob_npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "blobs.npz"
    np.savez(path, x_train=blob_images(600, seed=1), x_test=blob_images(64, seed=2))
    return path


def tiny_config(root: Path | None, transforms: str = "", prior: str = "realnvp", steps: int = 20) -> Config:
    """A model small enough to train for a few dozen steps in a test."""
    return Config(
        name=f"tiny-{transforms or 'vae'}",
        data=DataConfig(name="npz", root=str(root) if root else None),
        model=ModelConfig(
            image_shape=(1, 16, 16), transforms=transforms, latent_shape=(4, 4, 4), prior=prior,
            prior_kwargs={"mid_channels": 8, "num_blocks": 1, "num_scales": 1} if prior == "realnvp" else {},
            n_mix=3, q_u=TINY, p_y=TINY, q_z=TINY, p_z=TINY, p_x=TINY,
        ),
        train=TrainConfig(batch_size=32, steps=steps, eval_every=10, eval_limit=64, log_every=5,
                          checkpoint_every=5, sample_every=1000, final_iw_samples=4, final_eval_limit=32,
                          init_batch=64),
    )


@pytest.fixture
def rand_images():
    def make(n: int = 8, shape=(1, 16, 16), seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)

    return make


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data beside the repo
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def real_samples(which: str, tmp_path: Path, n_per_class: int = 2) -> torch.Tensor:
    """``n_per_class`` real test images of each class of ``which`` (mnist, fashion-mnist, cifar10), uint8
    ``[N, C, H, W]`` at their own size, read from ../shared/data or Debian's dataset-fashion-mnist; skips with
    the way to get the data when it is absent (CI has both)."""
    import io
    import tarfile

    from PIL import Image

    from selfvae.data import load_dataset

    if which in ("mnist", "fashion-mnist"):
        root = SHARED_DATA if which == "mnist" else FASHION_DIR
        if not root.exists() or (which == "mnist" and not (root / "mnist.npz").exists()):
            pytest.skip(f"{which} not found in {root} (../shared/data beside the repo; "
                        "apt-get install -y dataset-fashion-mnist)")
        ds = load_dataset(which, root, "test", image_size=28)
        idx = torch.cat([torch.nonzero(ds.labels == c)[:n_per_class, 0] for c in range(10)])
        return ds.images[idx]
    tar_path = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not tar_path.exists():
        pytest.skip(f"{tar_path} not found (../shared/data beside the repo)")
    images, seen = [], {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) != 4 or parts[1] != "test" or not member.isfile():
                if parts[1:2] == ["train"]:
                    break
                continue
            if seen.get(parts[2], 0) < n_per_class:
                seen[parts[2]] = seen.get(parts[2], 0) + 1
                im = Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")
                images.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    return torch.stack(images)


TEST_DEVICE = os.environ.get("SELFVAE_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def device() -> str:
    """The device the device-relevant tests run on: ``SELFVAE_TEST_DEVICE`` (default ``cpu``; the GPU session
    of ``tools/gpu_session.py`` sets ``cuda``). Asking for CUDA where there is none is an error, not a skip."""
    if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"SELFVAE_TEST_DEVICE={TEST_DEVICE}: no CUDA device is available here")
    return TEST_DEVICE


def cifar_like_tarball(path: Path) -> None:
    """A few JPEGs in the layout of shared/data/cifar10-jpeg.tar.gz: cifar10-jpeg/{train,test}/<class>/NNNN.jpg."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for part, n in (("train", 8), ("test", 4)):
            for cls in ("cat", "airplane"):  # not in sorted order, as a tar need not be
                for i in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
                    info = tarfile.TarInfo(f"cifar10-jpeg/{part}/{cls}/{i:04d}.jpg")
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))
